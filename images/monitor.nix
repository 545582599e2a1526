# `nix build .#monitor-image`: the monitor template (discovery, autoscaler, Prometheus, Grafana).
# The flake builds it from nixosConfigurations.monitor; this file is the same system for users
# of their own nixpkgs, who pass the poolpilot derivation (the flake's, or their own build):
#   nix-build images/monitor.nix -A image -I nixpkgs=PATH \
#     --arg poolpilot '(builtins.getFlake (toString ./.)).packages.x86_64-linux.poolpilot'
{ nixpkgs ? <nixpkgs>, poolpilot }:
let
  system = (import "${nixpkgs}/nixos/lib/eval-config.nix" {
    system = "x86_64-linux";
    modules = [
      ../nixos-modules/poolpilot.nix
      ../nixos-modules/monitor.nix
      ./exoscale.nix
      ./monitor-firewall.nix
      { poolpilot.role = "monitor"; services.poolpilot.package = poolpilot; }
    ];
  });
in
{ image = system.config.system.build.exoscaleImage; }
