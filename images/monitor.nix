# `nix build .#monitor-image`: the monitor template (discovery, autoscaler, Prometheus, Grafana).
# The flake builds it from nixosConfigurations.monitor; this file is the same system for
# `nix-build images/monitor.nix -A image` users with their own nixpkgs.
{ nixpkgs ? <nixpkgs>, poolpilot }:
let
  system = (import "${nixpkgs}/nixos/lib/eval-config.nix" {
    system = "x86_64-linux";
    modules = [
      ../nixos-modules/poolpilot.nix
      ../nixos-modules/monitor.nix
      ./exoscale.nix
      { poolpilot.role = "monitor"; services.poolpilot.package = poolpilot; }
    ];
  });
in
{ image = system.config.system.build.exoscaleImage; }
