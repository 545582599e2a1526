# `nix build .#front-image`: the front template (`poolpilot front` on port 80 and the Elastic IP
# on lo, both from the user-data). Without the flake, as images/monitor.nix says:
#   nix-build images/front.nix -A image -I nixpkgs=PATH \
#     --arg poolpilot '(builtins.getFlake (toString ./.)).packages.x86_64-linux.poolpilot'
{ nixpkgs ? <nixpkgs>, poolpilot }:
let
  system = (import "${nixpkgs}/nixos/lib/eval-config.nix" {
    system = "x86_64-linux";
    modules = [
      ../nixos-modules/poolpilot.nix
      ../nixos-modules/front.nix
      ./exoscale.nix
      { poolpilot.role = "front"; services.poolpilot.package = poolpilot; }
    ];
  });
in
{ image = system.config.system.build.exoscaleImage; }
