# `nix build .#kv-monitor-image`: the key-value appliance's kv-monitor template (Terraform's
# profile = "redis"). Without the flake, as images/monitor.nix says:
#   nix-build images/kv-monitor.nix -A image -I nixpkgs=PATH \
#     --arg poolpilot '(builtins.getFlake (toString ./.)).packages.x86_64-linux.poolpilot'
{ nixpkgs ? <nixpkgs>, poolpilot }:
let
  system = (import "${nixpkgs}/nixos/lib/eval-config.nix" {
    system = "x86_64-linux";
    modules = [
      ../nixos-modules/poolpilot.nix
      ../nixos-modules/kv-monitor.nix
      ./exoscale.nix
      ./monitor-firewall.nix
      { poolpilot.role = "kv-monitor"; services.poolpilot.package = poolpilot; }
    ];
  });
in
{ image = system.config.system.build.exoscaleImage; }
