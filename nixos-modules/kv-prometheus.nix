# The kv monitor's Prometheus configuration (nixos-modules/kv-monitor.nix): the shipped file
# (monitoring/prometheus/prometheus.yml) with the Redis primary's file_sd file beside
# discovery's and a `redis` job appended to scrape_configs (the shipped file ends with that
# list), then `alerting` when Alertmanager runs. Builtins only, so checks/terraform_test.py
# evaluates it with nix-instantiate and runs promtool on the result.
{ monitoring ? ../monitoring, primaryTargets ? "/etc/poolpilot/redis-primary.json", alertmanager ? false }:

let
  discovered = "- files: ['/srv/service-discovery/*.json']";
  withPrimary = "- files: ['/srv/service-discovery/*.json', '${primaryTargets}']";
  lines = builtins.concatStringsSep "\n";
  # The replicas' exporters (discovery lists 9121 for the API members too, where nothing
  # listens: keep the replica pool's members, named <prefix>-replicas-... by Terraform's
  # instance_prefix) and the primary's.
  redisJob = lines [
    "  - job_name: redis"
    "    file_sd_configs:"
    "      ${withPrimary}"
    "        refresh_interval: 30s"
    "    relabel_configs:"
    "      - source_labels: [exoscale_target_name]"
    "        regex: redis"
    "        action: keep"
    "      - source_labels: [exoscale_instance_name]"
    "        regex: 'redis-primary|.+-replicas-.+'"
    "        action: keep"
    ""
  ];
  alerting = lines [
    "alerting:"
    "  alertmanagers:"
    "    - static_configs:"
    "        - targets: ['127.0.0.1:9093']"
    ""
  ];
  base = builtins.readFile (monitoring + "/prometheus/prometheus.yml");
in
builtins.replaceStrings [ discovered ] [ withPrimary ] base
+ redisJob
+ (if alertmanager then alerting else "")
