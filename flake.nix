{
  description = "poolpilot: an autoscaling appliance for Exoscale instance pools";

  # nixos-26.05 (rustc 1.95), pinned in flake.lock; `nix flake update` moves it. Needs Nix >= 2.18.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      lib = nixpkgs.lib;

      # Test targets (tests/*.rs) that need a program the build sandbox lacks: Debian's
      # Prometheus, promtool and amtool, which .ci/run installs and runs them with (the VM tests
      # cover the NixOS side). Every other target runs in the check phase: they use 127.0.0.0/8
      # sockets only (the sandbox has a loopback interface) and read files inside the source.
      needOutsideTools = {
        targets = [
          "monitoring" # promtool and amtool check the shipped Prometheus and Alertmanager files
          "grafana" # promtool parses the rules' PromQL; nix-instantiate evaluates monitor.nix
          "policy_prometheus" # the Prometheus source against a real Prometheus
          "template" # moto's S3 server (python3 -m moto.server, from PyPI)
        ];
        # Single tests of otherwise self-contained targets (exact names, see checkFlags).
        tests = [
          "the_exporter_counts_every_route" # app: promtool check metrics
          "bad_requests_are_refused_and_scale_nothing" # autoscaler: promtool check metrics
          "metrics_pass_promtool_and_healthz_answers" # discovery: promtool check metrics
          "prometheus_discovers_the_members_and_follows_a_scale_from_1_to_4" # discovery: Prometheus
          "a_backend_answering_500_gets_exactly_eleven_requests_and_every_client_gets_200" # front: promtool check metrics
          "kv_metrics_pass_promtool" # kv: promtool check metrics
          "health_follows_the_replication_link_and_the_drain_switch" # replica: promtool check metrics
        ];
      };
      testTargets = map (lib.removeSuffix ".rs") (lib.attrNames (lib.filterAttrs
        (name: type: type == "regular" && lib.hasSuffix ".rs" name)
        (builtins.readDir ./tests)));
      sandboxTargets = lib.subtractLists needOutsideTools.targets testTargets;

      poolpilot = pkgs.rustPlatform.buildRustPackage {
        pname = "poolpilot";
        version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
        src = lib.cleanSourceWith {
          src = ./.;
          # Everything but build output: reference/ (the spec, signing vectors and webhook bodies
          # the tests read), examples/, monitoring/ and nixos-modules/ are compiled in or read.
          filter = path: type:
            let base = baseNameOf path; in
            !(lib.elem base [ "target" "demo-out" ".git" "result" ]);
        };
        cargoLock.lockFile = ./Cargo.lock;
        # The check phase: the lib tests and every test target that needs nothing outside the
        # source (needOutsideTools above names the rest, and why). A new target runs here by
        # default, so one that needs a tool fails loudly instead of being skipped unnoticed.
        cargoTestFlags = [ "--lib" ] ++ lib.concatMap (t: [ "--test" t ]) sandboxTargets;
        checkFlags = [ "--exact" ] ++ map (t: "--skip=${t}") needOutsideTools.tests;
        # tests/kv.rs and tests/replica.rs run real redis-server (and redis-cli) processes, and
        # tests/kv.rs the binary under `setpriv --pdeathsig`.
        nativeCheckInputs = [ pkgs.redis pkgs.util-linux ];
        meta = {
          description = "Autoscaling appliance for Exoscale instance pools";
          mainProgram = "poolpilot";
          license = lib.licenses.mit;
          platforms = lib.platforms.linux;
        };
      };

      # The package the modules default to: this flake's, built for the system being evaluated.
      withPackage = { lib, pkgs, ... }: {
        # One copy however many of the modules below a system imports.
        key = "poolpilot-flake-package-default";
        services.poolpilot.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.poolpilot;
      };

      # For other flakes: each module brings services.poolpilot with its package default.
      nixosModules = {
        poolpilot = { imports = [ ./nixos-modules/poolpilot.nix withPackage ]; };
        monitor = { imports = [ ./nixos-modules/poolpilot.nix ./nixos-modules/monitor.nix withPackage ]; };
        pool-node = { imports = [ ./nixos-modules/poolpilot.nix ./nixos-modules/pool-node.nix withPackage ]; };
        front = { imports = [ ./nixos-modules/poolpilot.nix ./nixos-modules/front.nix withPackage ]; };
        # The key-value appliance (Terraform's profile = "redis").
        kv-monitor = { imports = [ ./nixos-modules/poolpilot.nix ./nixos-modules/kv-monitor.nix withPackage ]; };
        redis-primary = { imports = [ ./nixos-modules/poolpilot.nix ./nixos-modules/redis-primary.nix withPackage ]; };
        redis-replica = { imports = [ ./nixos-modules/poolpilot.nix ./nixos-modules/redis-replica.nix withPackage ]; };
        kv-node = { imports = [ ./nixos-modules/poolpilot.nix ./nixos-modules/kv-node.nix withPackage ]; };
      };

      mkSystem = role: nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [
          nixosModules.${role}
          ./images/exoscale.nix
          { poolpilot.role = role; }
        ] ++ lib.optional (role == "monitor" || role == "kv-monitor") ./images/monitor-firewall.nix;
      };

      nixosConfigurations = {
        monitor = mkSystem "monitor";
        pool-node = mkSystem "pool-node";
        front = mkSystem "front";
        kv-monitor = mkSystem "kv-monitor";
        redis-primary = mkSystem "redis-primary";
        redis-replica = mkSystem "redis-replica";
        kv-node = mkSystem "kv-node";
      };

      image = name: nixosConfigurations.${name}.config.system.build.exoscaleImage;
    in
    {
      packages.${system} = {
        inherit poolpilot;
        default = poolpilot;
        monitor-image = image "monitor";
        pool-node-image = image "pool-node";
        front-image = image "front";
        kv-monitor-image = image "kv-monitor";
        redis-primary-image = image "redis-primary";
        redis-replica-image = image "redis-replica";
        kv-node-image = image "kv-node";
      };

      inherit nixosModules nixosConfigurations;

      checks.${system} = {
        autoscaling = import ./checks/vm-autoscaling.nix { inherit pkgs self; };
        sandbox = import ./checks/vm-sandbox.nix { inherit pkgs self; };
        package = poolpilot;
      };

      apps.${system} = {
        default = {
          type = "app";
          program = "${poolpilot}/bin/poolpilot";
          meta.description = "poolpilot: sim, app, discovery, autoscaler, demo, simulate";
        };
        demo = {
          type = "app";
          # promtool is in prometheus' `cli` output; amtool in alertmanager's `out`.
          program = toString (pkgs.writeShellScript "poolpilot-demo" ''
            export PATH=${lib.makeBinPath [ pkgs.prometheus pkgs.prometheus.cli pkgs.prometheus-alertmanager ]}:$PATH
            exec ${poolpilot}/bin/poolpilot demo "$@"
          '');
          meta.description = "The whole autoscaling loop on this machine, with Prometheus and Alertmanager";
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
          pkgs.prometheus.cli # promtool (tests/monitoring.rs, the demo)
          pkgs.prometheus-alertmanager
          pkgs.prometheus-node-exporter
          pkgs.wrk
          # OpenTofu, not Terraform: nixpkgs' terraform is BSL-1.1 (unfree), which this flake's
          # nixpkgs refuses to evaluate. terraform/ uses nothing OpenTofu lacks; `tofu init`,
          # `tofu plan` and `tofu apply` replace the terraform commands.
          pkgs.opentofu
          pkgs.nixpkgs-fmt
        ];
      };

      formatter.${system} = pkgs.nixpkgs-fmt;
    };
}
