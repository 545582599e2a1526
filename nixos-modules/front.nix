# The front VM: `poolpilot front` on port 80 over every zone's NLB, answering on the Elastic IP
# (the service's static address). Terraform creates the NLBs and the Elastic IP after the image
# is built, so both come from the user-data: cloud-init writes /etc/poolpilot/env with
# POOLPILOT_FRONT_BACKENDS (`ZONE=http://NLB:80`, comma-separated) and POOLPILOT_ELASTIC_IP.
# The Exoscale security group Terraform creates opens port 80 only; the host firewall opens 80
# (services.poolpilot.front) and 22 (services.openssh.openFirewall), which the group closes
# unless admin_cidrs asks.
{ config, lib, pkgs, ... }:

let
  envFile = config.services.poolpilot.environmentFile;
  ip = "${pkgs.iproute2}/bin/ip";
in
{
  services.poolpilot.front = {
    enable = true;
    backendsFromEnvironment = true;
  };

  # A manual Elastic IP's traffic arrives addressed to the Elastic IP itself: the guest must hold
  # the address, or the kernel drops it. It goes on `lo` (a /32, so nothing is routed through
  # it); the front listens on 0.0.0.0:80 and answers on it. Outbound traffic keeps leaving from
  # the native address, the one the pools' security group admits.
  systemd.services.poolpilot-elastic-ip = {
    description = "The front's Elastic IP on lo (POOLPILOT_ELASTIC_IP from ${envFile})";
    wantedBy = [ "multi-user.target" ];
    before = [ "poolpilot-front.service" ];
    after = lib.optional config.services.cloud-init.enable "cloud-init.service";
    wants = lib.optional config.services.cloud-init.enable "cloud-init.service";
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      EnvironmentFile = envFile;
      # systemd expands ${VAR} inside a word (the environment file is read as root).
      ExecStart = "${ip} address replace \${POOLPILOT_ELASTIC_IP}/32 dev lo";
      ExecStop = "${ip} address del \${POOLPILOT_ELASTIC_IP}/32 dev lo";
    };
  };

  networking.firewall.enable = true;
}
