# The Redis primary of the key-value appliance (Terraform's profile = "redis"): one fixed
# instance holding the data, on 6379, with the Redis exporter on 9121 and node_exporter on 9100.
# The replicas replicate from it and the kv API members write to it; Terraform's security
# group admits 6379 from those two groups only, 9100 and 9121 from the monitor.
#
# No password: the security group is the gate (nixos-modules/redis-replica.nix and the kv
# members would need it too, and Redis' replication and the kv API would then carry it in
# their environment files). protected-mode is off for that reason: with no password Redis
# would otherwise refuse every client but localhost.
{ config, lib, pkgs, ... }:

{
  services.redis.servers."" = {
    enable = true;
    bind = "0.0.0.0";
    port = 6379;
    # It holds the data: every write in the append-only file, fsynced each second (a crash
    # loses at most a second), beside the RDB snapshots the default `save` schedule takes.
    appendOnly = true;
    appendFsync = "everysec";
    # The host firewall opens 6379 (below); the security group narrows it.
    openFirewall = false;
    settings = {
      "protected-mode" = false;
      # Replicas come and go with the autoscaler: a new one needs a full sync, so keep a
      # backlog that lets a replica whose link blinked resume instead (64 MiB).
      "repl-backlog-size" = "64mb";
      "repl-backlog-ttl" = 3600;
      # Pings to the replicas every second: their sidecars call a replica out of sync when the
      # primary has been silent longer than --max-last-io (3 s there).
      "repl-ping-replica-period" = 1;
      "repl-timeout" = 5;
    };
  };

  services.prometheus.exporters.redis = {
    enable = true;
    port = 9121;
    listenAddress = "0.0.0.0";
  };

  services.prometheus.exporters.node = {
    enable = true;
    port = 9100;
    listenAddress = "0.0.0.0";
    enabledCollectors = [ "systemd" ];
  };

  # SSH's port is opened by services.openssh.openFirewall (default true).
  networking.firewall = {
    enable = true;
    allowedTCPPorts = [ 6379 9100 9121 ];
  };
}
