# A Redis replica, member of the replica pool of the key-value appliance (Terraform's
# profile = "redis"): Redis on 6379 replicating the primary, `poolpilot replica` on 8080 (the
# replicas' NLB checks its /health: in sync and not drained; the monitor scrapes its /metrics
# and drains through it), the Redis exporter on 9121 and node_exporter on 9100.
#
# The primary's address is only known once Terraform created it: cloud-init writes it to
# /etc/poolpilot/env (POOLPILOT_REDIS_PRIMARY), and a oneshot unit turns it into the
# `replicaof` line of a file Redis includes, before Redis starts. Without it Redis does not
# start, and the sidecar's /health keeps the member out of the NLB.
{ config, lib, pkgs, ... }:

let
  replicaof = "/run/poolpilot-redis/replicaof.conf";
in
{
  services.poolpilot.replica = {
    enable = true;
    # Redis pings its replicas every second here (repl-ping-replica-period 1 on the primary
    # and below): three silent seconds mean the link is gone.
    settings.maxLastIo = "3s";
  };

  services.redis.servers."" = {
    enable = true;
    bind = "0.0.0.0";
    port = 6379;
    # A replica holds a copy: no persistence. A restarted replica syncs from the primary.
    appendOnly = false;
    save = [ ];
    openFirewall = false;
    settings = {
      include = replicaof;
      # No password (the security group admits the API members only): see redis-primary.nix.
      "protected-mode" = false;
      # While it syncs or has lost the primary a replica answers reads with an error, never
      # stale data (the kv API then tries another; the sidecar already says unhealthy).
      "replica-serve-stale-data" = false;
      "replica-read-only" = true;
      "repl-ping-replica-period" = 1;
      "repl-timeout" = 5;
      # Load the primary's snapshot straight from the socket: no disk write on a small member.
      "repl-diskless-load" = "on-empty-db";
    };
  };

  # POOLPILOT_REDIS_PRIMARY -> `replicaof ADDRESS 6379`. Only an IPv4 address is accepted, so
  # the user-data cannot add other Redis directives.
  systemd.services.poolpilot-redis-primary = {
    description = "poolpilot: the Redis primary's address for the local replica";
    wantedBy = [ "multi-user.target" ];
    requiredBy = [ "redis.service" ];
    before = [ "redis.service" ];
    wants = lib.optional config.services.cloud-init.enable "cloud-init.service";
    after = lib.optional config.services.cloud-init.enable "cloud-init.service";
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      EnvironmentFile = config.services.poolpilot.environmentFile;
      RuntimeDirectory = "poolpilot-redis";
      RuntimeDirectoryMode = "0755";
      RuntimeDirectoryPreserve = true;
      DynamicUser = false;
      PrivateNetwork = true;
      IPAddressDeny = [ "any" ];
    };
    script = ''
      set -eu
      primary="''${POOLPILOT_REDIS_PRIMARY-}"
      if ! printf '%s' "$primary" | ${pkgs.gnugrep}/bin/grep -Eqx '([0-9]{1,3}\.){3}[0-9]{1,3}'; then
        echo "POOLPILOT_REDIS_PRIMARY in ${toString config.services.poolpilot.environmentFile} must be the primary's IPv4 address, got '$primary'" >&2
        exit 1
      fi
      printf 'replicaof %s 6379\n' "$primary" > ${replicaof}.tmp
      chmod 0644 ${replicaof}.tmp
      mv ${replicaof}.tmp ${replicaof}
    '';
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

  networking.firewall = {
    enable = true;
    allowedTCPPorts = [ 6379 8080 9100 9121 ];
  };
}
