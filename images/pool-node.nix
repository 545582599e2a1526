# `nix build .#pool-node-image`: the pool member template (the app and node_exporter). Without
# the flake, as images/monitor.nix says:
#   nix-build images/pool-node.nix -A image -I nixpkgs=PATH \
#     --arg poolpilot '(builtins.getFlake (toString ./.)).packages.x86_64-linux.poolpilot'
{ nixpkgs ? <nixpkgs>, poolpilot }:
let
  system = (import "${nixpkgs}/nixos/lib/eval-config.nix" {
    system = "x86_64-linux";
    modules = [
      ../nixos-modules/poolpilot.nix
      ../nixos-modules/pool-node.nix
      ./exoscale.nix
      { poolpilot.role = "pool-node"; services.poolpilot.package = poolpilot; }
    ];
  });
in
{ image = system.config.system.build.exoscaleImage; }
