# `nix build .#kv-node-image`: the key-value appliance's kv-node template (Terraform's
# profile = "redis"). Without the flake, as images/monitor.nix says:
#   nix-build images/kv-node.nix -A image -I nixpkgs=PATH \
#     --arg poolpilot '(builtins.getFlake (toString ./.)).packages.x86_64-linux.poolpilot'
{ nixpkgs ? <nixpkgs>, poolpilot }:
let
  system = (import "${nixpkgs}/nixos/lib/eval-config.nix" {
    system = "x86_64-linux";
    modules = [
      ../nixos-modules/poolpilot.nix
      ../nixos-modules/kv-node.nix
      ./exoscale.nix
      { poolpilot.role = "kv-node"; services.poolpilot.package = poolpilot; }
    ];
  });
in
{ image = system.config.system.build.exoscaleImage; }
