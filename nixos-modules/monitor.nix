# The monitor VM: the discovery agent and the autoscaler, Prometheus with the file_sd job and the
# project's rules, Grafana with the provisioned datasource, dashboard, alert rules, contact points
# and policies, and optionally Alertmanager. Every file comes from ../monitoring, the same files
# `poolpilot demo` runs.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkIf types;
  cfg = config.poolpilot.monitor;
  monitoring = ../monitoring;
  # The monitor's autoscaler settings, shared with tests/nixos_settings.rs.
  shared = lib.importJSON ./settings.json;
  # Prometheus alerts go to Alertmanager only when it runs (else every idle pool would log
  # notifier errors).
  alerting = ''
    alerting:
      alertmanagers:
        - static_configs:
            - targets: ['127.0.0.1:9093']
  '';
in
{
  options.poolpilot.monitor = {
    adminCidr = mkOption {
      type = types.str;
      example = "203.0.113.7/32";
      description = ''
        Who may reach Grafana (3000) and Prometheus (9090), both behind a password. No default:
        choose it. The Exoscale image sets 0.0.0.0/0, because it is built before anyone's address
        is known; there Terraform's security group (its `admin_cidrs`) is the gate.
      '';
    };
    prometheusWebConfig = mkOption {
      type = types.str;
      default = "/etc/poolpilot/prometheus-web.yml";
      description = ''
          Prometheus' web config (its `basic_auth_users`: user `prometheus` with a bcrypt hash),
          handed to Prometheus as a credential; root-only, outside the store. On Exoscale,
          cloud-init writes it from Terraform's user-data, beside
          /etc/poolpilot/prometheus-password, the password Grafana and the autoscaler send.
      '';
    };
    alertmanager.enable = mkOption {
      type = types.bool;
      default = false;
      description = "Also run Alertmanager with monitoring/alertmanager/alertmanager.yml (Prometheus alerting to /webhook), besides Grafana's alerting.";
    };
  };

  config = {
    services.poolpilot.discovery.enable = true;
    services.poolpilot.autoscaler = {
      enable = true;
      # The project's default policy, on the metrics of this machine's Prometheus.
      policy = lib.mkDefault shared.monitor.autoscaler.policy;
      prometheus = lib.mkDefault shared.monitor.autoscaler.prometheus;
      # Its tokens and Prometheus' password, which the discovery agent does not get.
      environmentFile = lib.mkDefault "/etc/poolpilot/autoscaler.env";
    };

    environment.etc."poolpilot/prometheus/rules.yml".source = "${monitoring}/prometheus/rules.yml";
    environment.etc."poolpilot/grafana/dashboards/poolpilot.json".source = "${monitoring}/grafana/dashboards/poolpilot.json";

    services.prometheus = {
      enable = true;
      listenAddress = "0.0.0.0";
      port = 9090;
      # The shipped file (plus `alerting` with Alertmanager); its rule file lives in /etc, outside
      # the build sandbox, so the build-time check covers the syntax (tests/monitoring.rs runs the
      # full promtool check).
      configText = builtins.readFile "${monitoring}/prometheus/prometheus.yml"
        + lib.optionalString cfg.alertmanager.enable alerting;
      checkConfig = "syntax-only";
      retentionTime = "15d";
      # Basic auth on every endpoint (Grafana and the autoscaler send the password); the file
      # is a credential of the unit (below).
      webConfigFile = "/run/credentials/prometheus.service/web-config";
      alertmanager = mkIf cfg.alertmanager.enable {
        enable = true;
        listenAddress = "127.0.0.1";
        port = 9093;
        configText = builtins.readFile "${monitoring}/alertmanager/alertmanager.yml";
        # amtool check-config at build time: it does not read the credentials file.
        checkConfig = true;
      };
    };
    # Prometheus watches the discovery directory, which is the agent's RuntimeDirectory: start
    # after the agent so the directory exists and the watch sees the first file at once.
    systemd.services.prometheus = {
      after = [ "poolpilot-discovery.service" ] ++ lib.optional config.services.cloud-init.enable "cloud-init.service";
      wants = [ "poolpilot-discovery.service" ] ++ lib.optional config.services.cloud-init.enable "cloud-init.service";
      serviceConfig.LoadCredential = [ "web-config:${cfg.prometheusWebConfig}" ];
      serviceConfig.IPAddressDeny = [ "169.254.169.254" ];
    };
    systemd.services.alertmanager = mkIf cfg.alertmanager.enable {
      # The webhook token, from the settings file, as a credential only this unit can read.
      serviceConfig.LoadCredential = [ "webhook-token:/etc/poolpilot/webhook-token" ];
      serviceConfig.IPAddressDeny = [ "169.254.169.254" ];
      # On Exoscale, cloud-init writes the token file.
      after = lib.optional config.services.cloud-init.enable "cloud-init.service";
      wants = lib.optional config.services.cloud-init.enable "cloud-init.service";
    };

    services.grafana = {
      enable = true;
      settings = {
        server = { http_addr = "0.0.0.0"; http_port = 3000; };
        # Secrets come from credential files (LoadCredential below), never the store.
        security = {
          admin_user = "admin";
          admin_password = "$__file{/run/credentials/grafana.service/admin-password}";
          # Encrypts the secure fields in grafana.db (the contact points' token). It must stay
          # the same for the life of /var/lib/grafana: Terraform generates it once per deployment.
          secret_key = "$__file{/run/credentials/grafana.service/secret-key}";
        };
        analytics = {
          reporting_enabled = false;
          check_for_updates = false;
          check_for_plugin_updates = false;
        };
        # Grafana >= 12 downloads a default plugin list at every start; the monitor needs none.
        plugins.preinstall_disabled = true;
        "unified_alerting".enabled = true;
      };
      provision = {
        enable = true;
        datasources.path = "${monitoring}/grafana/provisioning/datasources/prometheus.yaml";
        dashboards.path = "${monitoring}/grafana/provisioning/dashboards/poolpilot.yaml";
        alerting = {
          rules.path = "${monitoring}/grafana/provisioning/alerting/rules.yaml";
          contactPoints.path = "${monitoring}/grafana/provisioning/alerting/contact-points.yaml";
          policies.path = "${monitoring}/grafana/provisioning/alerting/policies.yaml";
        };
      };
    };
    # Grafana's secrets as credentials only this unit can read, each from its own root-only file
    # (cloud-init writes them on Exoscale). A missing file stops the unit before Grafana starts.
    # No EnvironmentFile: the settings file holds the Exoscale API secret, which Grafana never needs.
    systemd.services.grafana.serviceConfig.LoadCredential = [
      "webhook-token:/etc/poolpilot/webhook-token"
      "secret-key:/etc/poolpilot/grafana-secret-key"
      "admin-password:/etc/poolpilot/grafana-admin-password"
      "prometheus-password:/etc/poolpilot/prometheus-password"
    ];
    # The metadata server would hand Grafana the whole user-data; it never needs it.
    systemd.services.grafana.serviceConfig.IPAddressDeny = [ "169.254.169.254" ];

    # SSH: services.openssh.openFirewall (default true) opens 22.
    networking.firewall = {
      enable = true;
      extraCommands = ''
        iptables -A nixos-fw -p tcp -s ${cfg.adminCidr} -m multiport --dports 3000,9090 -j nixos-fw-accept
      '';
      extraStopCommands = ''
        iptables -D nixos-fw -p tcp -s ${cfg.adminCidr} -m multiport --dports 3000,9090 -j nixos-fw-accept || true
      '';
    };
  };
}
