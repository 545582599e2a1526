# NixOS VM test: a monitor, two pool nodes, and `poolpilot sim` standing in for Exoscale, with
# the test VMs as the pool's members. The discovery file lists the nodes, Prometheus scrapes
# them, a CPU burn on both makes Grafana call the autoscaler's /up, and the pool size rises.
# Runs with `nix flake check` or `nix build .#checks.x86_64-linux.autoscaling` (needs KVM).
{ pkgs, self }:

let
  key = "EXOtest0000000000000000000";
  secret = "test-secret-0123456789";
  pool = "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
  webhookToken = "vm-test-webhook-token-0123";
  poolpilot = self.packages.x86_64-linux.poolpilot;
in
pkgs.testers.runNixOSTest {
  name = "poolpilot-autoscaling";

  nodes = {
    sim = { nodes, ... }: {
      networking.firewall.allowedTCPPorts = [ 8079 ];
      systemd.services.poolpilot-sim = {
        wantedBy = [ "multi-user.target" ];
        environment = {
          POOLPILOT_SIM_API_KEY = key;
          POOLPILOT_SIM_API_SECRET = secret;
        };
        serviceConfig = {
          ExecStart = pkgs.lib.escapeShellArgs [
            "${poolpilot}/bin/poolpilot" "--config" (pkgs.writeText "sim.toml" ''
              [[sim.pool]]
              id = "${pool}"
              name = "vm-test"
              size = 2
            '')
            "sim" "--listen" "0.0.0.0:8079" "--operation-delay" "1s" "--boot-delay" "2s"
            "--member-address" nodes.node1.networking.primaryIPAddress
            "--member-address" nodes.node2.networking.primaryIPAddress
            # A third member for the scale-up: no VM answers there, which the test tolerates.
            "--member-address" "192.0.2.3"
          ];
          Type = "notify";
          DynamicUser = true;
        };
      };
    };

    monitor = { ... }: {
      imports = [ self.nixosModules.monitor ];
      services.poolpilot.package = poolpilot;
      services.poolpilot.autoscaler.settings = { min = 1; max = 4; interval = "10s"; };
      # This test follows Grafana's alert to the webhook and the course's one-step rule (size 3
      # exactly); the image's default policy on Prometheus is covered by tests/nixos_settings.rs
      # (configuration) and tests/policy_prometheus.rs (the source), not by a VM.
      services.poolpilot.autoscaler = { policy = null; prometheus = null; };
      poolpilot.monitor.adminCidr = "0.0.0.0/0";
      # Test-only settings; on Exoscale cloud-init writes them from the user-data.
      environment.etc."poolpilot/env".text = ''
        EXOSCALE_API_ENDPOINT=http://sim:8079/v2
        EXOSCALE_API_KEY=${key}
        EXOSCALE_API_SECRET=${secret}
        EXOSCALE_ZONE=ch-gva-2
        EXOSCALE_INSTANCEPOOL_ID=${pool}
      '';
      # The autoscaler's own settings (the discovery agent does not read them).
      environment.etc."poolpilot/autoscaler.env".text = ''
        POOLPILOT_WEBHOOK_TOKEN=${webhookToken}
        POOLPILOT_PROMETHEUS_PASSWORD=vm-test-prometheus-pw
      '';
      environment.etc."poolpilot/webhook-token".text = webhookToken;
      # Grafana's credentials (LoadCredential in the monitor module): fixed test values, where
      # Terraform generates the secret key once per deployment.
      environment.etc."poolpilot/grafana-secret-key" = { text = "vm-test-grafana-secret-key-0123"; mode = "0600"; };
      environment.etc."poolpilot/grafana-admin-password" = { text = "vm-test-admin"; mode = "0600"; };
      # Prometheus' password and its web config (bcrypt of it, cost 6, as Terraform writes it).
      environment.etc."poolpilot/prometheus-password" = { text = "vm-test-prometheus-pw"; mode = "0600"; };
      environment.etc."poolpilot/prometheus-web.yml" = {
        text = "basic_auth_users:\n  prometheus: '$2a$06$tYLIwGkHemOiiC46bjCim.plRoxhxtQVJZzawBB0e2ff4SQXfCplu'\n";
        mode = "0600";
      };
      virtualisation.memorySize = 2048;
    };

    node1 = { ... }: {
      imports = [ self.nixosModules.pool-node ];
      services.poolpilot.package = poolpilot;
      services.poolpilot.environmentFile = null;
    };
    node2 = { ... }: {
      imports = [ self.nixosModules.pool-node ];
      services.poolpilot.package = poolpilot;
      services.poolpilot.environmentFile = null;
    };
  };

  testScript = { nodes, ... }: ''
    import json

    start_all()
    sim.wait_for_unit("poolpilot-sim.service")
    for node in [node1, node2]:
        node.wait_for_unit("poolpilot-app.service")
        node.wait_for_unit("prometheus-node-exporter.service")
        node.wait_for_open_port(8080)
        node.wait_for_open_port(9100)

    monitor.wait_for_unit("poolpilot-discovery.service")
    monitor.wait_for_unit("poolpilot-autoscaler.service")
    monitor.wait_for_unit("prometheus.service")
    monitor.wait_for_unit("grafana.service")

    # The discovery file lists both nodes, on both ports.
    n1 = "${nodes.node1.networking.primaryIPAddress}"
    n2 = "${nodes.node2.networking.primaryIPAddress}"
    monitor.wait_until_succeeds(f"grep -q '{n1}:9100' /srv/service-discovery/config.json", timeout=60)
    monitor.wait_until_succeeds(f"grep -q '{n2}:9100' /srv/service-discovery/config.json", timeout=60)

    # Prometheus asks for its password, and scrapes them.
    monitor.succeed("test $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9090/api/v1/query?query=1) = 401")
    monitor.wait_until_succeeds(
        "curl -sf -u prometheus:vm-test-prometheus-pw 'http://127.0.0.1:9090/api/v1/query?query=count(up%7Bjob%3D%22node%22%7D%3D%3D1)'"
        " | grep -q '\"2\"'",
        timeout=120,
    )

    # Burn every core of both nodes: the pool average passes 80 %, Grafana's rule fires after
    # 1 m, its contact point calls /up, the autoscaler scales at its next tick.
    for node in [node1, node2]:
        node.succeed("systemd-run --unit burn sh -c 'for i in $(seq $(nproc)); do (while :; do :; done) & done; wait'")
    def size():
        return json.loads(sim.succeed("curl -sf http://127.0.0.1:8079/admin/state"))["instance-pools"][0]["size"]
    monitor.wait_until_succeeds(
        "curl -sf http://127.0.0.1:8090/v1/decisions | grep -q '\"outcome\":\"scaled\"'",
        timeout=300,
    )
    assert size() == 3, f"pool size {size()}"
    decisions = json.loads(monitor.succeed("curl -sf http://127.0.0.1:8090/v1/decisions"))
    assert any("grafana-unified" in i["source"] for d in decisions for i in d["intents"]["recent"]), decisions
  '';
}
