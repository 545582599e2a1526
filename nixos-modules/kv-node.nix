# A member of the key-value API pool (Terraform's profile = "redis"): `poolpilot kv` on 8080
# (the API NLB's port 80 sends here and checks /health) and node_exporter on 9100. Where Redis
# is comes from /etc/poolpilot/env, which cloud-init writes from Terraform's user-data:
# REDIS_URL (the primary, for writes), REDIS_REPLICAS_URL (the replicas' NLB, for reads) and
# POOLPILOT_DRAIN_TOKEN.
{ config, lib, pkgs, ... }:

{
  services.poolpilot.kv.enable = true;

  services.prometheus.exporters.node = {
    enable = true;
    port = 9100;
    listenAddress = "0.0.0.0";
    enabledCollectors = [ "systemd" ];
  };

  networking.firewall = {
    enable = true;
    allowedTCPPorts = [ 8080 9100 ];
  };
}
