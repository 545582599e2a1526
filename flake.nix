{
  description = "poolpilot: an autoscaling appliance for Exoscale instance pools";

  # nixos-26.05 (rustc 1.95), pinned in flake.lock; `nix flake update` moves it. Needs Nix >= 2.18.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      lib = nixpkgs.lib;

      poolpilot = pkgs.rustPlatform.buildRustPackage {
        pname = "poolpilot";
        version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
        src = lib.cleanSourceWith {
          src = ./.;
          filter = path: type:
            let base = baseNameOf path; in
            !(lib.elem base [ "target" "demo-out" ".git" "result" ]);
        };
        cargoLock.lockFile = ./Cargo.lock;
        # The integration tests need ../shared/reference, Prometheus and the network namespace
        # of a developer machine; `cargo test` runs them (see README). The unit tests run here.
        cargoTestFlags = [ "--lib" ];
        meta = {
          description = "Autoscaling appliance for Exoscale instance pools";
          mainProgram = "poolpilot";
          license = lib.licenses.asl20;
          platforms = lib.platforms.linux;
        };
      };

      nixosModules = {
        poolpilot = import ./nixos-modules/poolpilot.nix;
        monitor = import ./nixos-modules/monitor.nix;
        pool-node = import ./nixos-modules/pool-node.nix;
      };

      # The package the modules default to.
      withPackage = { lib, ... }: {
        services.poolpilot.package = lib.mkDefault poolpilot;
      };

      mkSystem = role: nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [
          withPackage
          nixosModules.poolpilot
          nixosModules.${role}
          ./images/exoscale.nix
          { poolpilot.role = role; }
        ];
      };

      nixosConfigurations = {
        monitor = mkSystem "monitor";
        pool-node = mkSystem "pool-node";
      };

      image = name: nixosConfigurations.${name}.config.system.build.exoscaleImage;
    in
    {
      packages.${system} = {
        inherit poolpilot;
        default = poolpilot;
        monitor-image = image "monitor";
        pool-node-image = image "pool-node";
      };

      inherit nixosModules nixosConfigurations;

      checks.${system} = {
        autoscaling = import ./checks/vm-autoscaling.nix { inherit pkgs self; };
        sandbox = import ./checks/vm-sandbox.nix { inherit pkgs self; };
        package = poolpilot;
      };

      apps.${system} = {
        default = { type = "app"; program = "${poolpilot}/bin/poolpilot"; };
        demo = {
          type = "app";
          program = toString (pkgs.writeShellScript "poolpilot-demo" ''
            export PATH=${lib.makeBinPath [ pkgs.prometheus pkgs.prometheus-alertmanager ]}:$PATH
            exec ${poolpilot}/bin/poolpilot demo "$@"
          '');
        };
      };

      devShells.${system}.default = pkgs.mkShell {
        inputsFrom = [ poolpilot ];
        packages = [
          pkgs.cargo
          pkgs.rustc
          pkgs.clippy
          pkgs.rustfmt
          pkgs.prometheus
          pkgs.prometheus-alertmanager
          pkgs.prometheus-node-exporter
          pkgs.wrk
          pkgs.terraform
          pkgs.nixpkgs-fmt
        ];
      };

      formatter.${system} = pkgs.nixpkgs-fmt;
    };
}
