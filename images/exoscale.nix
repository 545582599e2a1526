# What makes a NixOS system an Exoscale template: a qcow2 disk of 10 GiB with legacy (BIOS) boot
# that grows to the instance's disk, and cloud-init with the Exoscale datasource. The user-data
# Terraform writes carries settings only (pool id, zone, API key and secret, tokens) as
# cloud-config `write_files`; nothing is installed at boot.
{ config, lib, pkgs, modulesPath, ... }:

let
  role = config.poolpilot.role;
in
{
  imports = [ "${modulesPath}/profiles/qemu-guest.nix" ];

  options.poolpilot.role = lib.mkOption {
    type = lib.types.enum [ "monitor" "pool-node" "front" "kv-monitor" "redis-primary" "redis-replica" "kv-node" ];
    description = "Which appliance this image is.";
  };

  config = {
    boot.loader.grub.enable = true;
    boot.loader.grub.device = "/dev/vda";
    boot.growPartition = true;
    boot.kernelParams = [ "console=ttyS0" ];
    fileSystems."/" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "ext4";
      autoResize = true;
    };

    services.cloud-init = {
      enable = true;
      network.enable = false;
      settings = {
        datasource_list = [ "Exoscale" "None" ];
        # The settings files only; no package installs, no commands.
        cloud_init_modules = [ "write_files" "set_hostname" "update_hostname" "ssh" ];
        cloud_config_modules = [ ];
        cloud_final_modules = [ "ssh-authkey-fingerprints" "final-message" ];
      };
    };
    networking.useDHCP = true;
    networking.hostName = lib.mkDefault "poolpilot-${role}";

    services.openssh = {
      enable = true;
      settings = { PasswordAuthentication = false; PermitRootLogin = "prohibit-password"; };
    };

    # The units read files cloud-init writes from the user-data. The poolpilot units and
    # Alertmanager order themselves after cloud-init (their modules, when cloud-init is on);
    # Grafana is ordered here, only where it runs, so no unit is created without its service.
    systemd.services.grafana = lib.mkIf config.services.grafana.enable {
      after = [ "cloud-init.service" ];
      wants = [ "cloud-init.service" ];
    };

    nix.settings.experimental-features = [ "nix-command" "flakes" ];
    documentation.enable = false;
    system.stateVersion = "25.05";

    system.build.exoscaleImage = import "${modulesPath}/../lib/make-disk-image.nix" {
      inherit lib config pkgs;
      name = "poolpilot-${role}";
      # Still QCOW2 (compressed clusters), which Exoscale's template registration takes; the
      # upload to object storage is smaller.
      format = "qcow2-compressed";
      diskSize = 10240;
      partitionTableType = "legacy";
      # No nixpkgs source in the image: it is a flake system, updated by rebuilding the image.
      copyChannel = false;
    };
  };
}
