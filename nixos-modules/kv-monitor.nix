# The monitor of the key-value appliance (Terraform's profile = "redis"): monitor.nix, with
#
# - one autoscaler over two pools, named as the user-data's EXOSCALE_INSTANCEPOOL_ID names them
#   (replicas=ZONE:ID,api=ZONE:ID), each with its production policy (examples/policies/kv-*.toml,
#   copied to the store): the replicas track Redis commands per second, the API members
#   requests per second; both drain through port 8080 (the sidecar, the kv API);
# - discovery over both pools (the same list), each member listed on node=9100, app=8080 (the kv
#   API or the replica's sidecar) and redis=9121 (the Redis exporter);
# - Prometheus: the `node` and `app` jobs as ever, and a `redis` job for the exporters: the
#   replicas' (discovery lists 9121 for the API members too, where nothing listens: the job keeps
#   the replica pool's members, named <prefix>-replicas-..., by Terraform's instance_prefix) and
#   the primary's. The primary is no pool member: /etc/poolpilot/redis-primary.json, a file_sd
#   file cloud-init writes from Terraform's user-data, lists its node_exporter and its exporter.
{ config, lib, pkgs, ... }:

let
  monitoring = ../monitoring;
in
{
  imports = [ ./monitor.nix ];

  services.poolpilot.discovery.extraTargetPorts = [ "redis=9121" ];

  services.poolpilot.autoscaler.pools = {
    replicas = { policy = ../examples/policies/kv-replicas.toml; drainPort = 8080; };
    api = { policy = ../examples/policies/kv-api.toml; drainPort = 8080; };
  };

  # The shipped file, the primary's targets and the `redis` job: ./kv-prometheus.nix.
  services.prometheus.configText = lib.mkForce (import ./kv-prometheus.nix {
    inherit monitoring;
    alertmanager = config.poolpilot.monitor.alertmanager.enable;
  });

  # The primary's targets: cloud-init writes the file before Prometheus starts (monitor.nix
  # orders Prometheus after cloud-init).
}
