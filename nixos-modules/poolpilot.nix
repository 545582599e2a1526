# services.poolpilot: the discovery agent, the autoscaler, the slow app, the front, the
# key-value API and the Redis replica sidecar as hardened systemd units. Settings are typed options rendered to one TOML file per unit (the same keys as
# `poolpilot --config`): their defaults and key names come from ./settings.json, which
# tests/nixos_settings.rs parses with poolpilot's own config structs. The fixed part of each
# command line comes from ./units.json, which `poolpilot demo` reads too. Secrets (API key and secret, webhook and drain tokens) come from
# `environmentFile`, read by systemd as root before the unit drops to its dynamic user: they
# never enter the Nix store.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;
  cfg = config.services.poolpilot;
  units = lib.importJSON ./units.json;
  shared = lib.importJSON ./settings.json;
  defaults = shared.defaults;
  toml = pkgs.formats.toml { };

  # Drops nulls so that unset options fall back to poolpilot's defaults (or the environment).
  clean = lib.filterAttrsRecursive (_: v: v != null);

  configFile = name: settings: toml.generate "poolpilot-${name}.toml" (clean settings);

  # Every key a unit's TOML gets is one settings.json has (and so one poolpilot's config structs
  # accept: tests/nixos_settings.rs): a key renamed on one side only fails evaluation here.
  keysKnown = table: settings: {
    assertion = lib.attrNames settings.${table} == lib.attrNames defaults.${table}
      && lib.all (k: defaults ? ${k}) (lib.attrNames (removeAttrs settings [ table ]));
    message = "nixos-modules/poolpilot.nix writes [${table}] keys ${toString (lib.attrNames settings.${table})}, but settings.json has ${toString (lib.attrNames defaults.${table})}";
  };

  hardening = {
    DynamicUser = true;
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    # /proc/stat is hidden too: process_start_time_seconds takes the boot time from the clocks.
    ProcSubset = "pid";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" "~@privileged" ];
    SystemCallErrorNumber = "EPERM";
    UMask = "0022";
  };

  # environmentOptional: the unit starts without the environment file (the app: its only
  # secret, the drain token, is optional); the others need their credentials and fail at once.
  # wrapper: a script that runs the command line it is given (`exec "$@" ...`), adding flags
  # from the environment (the front's backends).
  unit = { name, description, settings, environmentOptional ? false, extraEnvironmentFiles ? [ ], extraService ? { }, wrapper ? null, extraArgs ? [ ] }: {
    inherit description;
    wantedBy = [ "multi-user.target" ];
    # With cloud-init (the Exoscale images), the environment file is written by it.
    wants = [ "network-online.target" ] ++ lib.optional config.services.cloud-init.enable "cloud-init.service";
    after = [ "network-online.target" ] ++ lib.optional config.services.cloud-init.enable "cloud-init.service";
    # The course's variable names and ours are both accepted; EXOSCALE_API_ENDPOINT may point
    # at a simulator.
    environment.POOLPILOT_LOG_FORMAT = "journald";
    serviceConfig = hardening // {
      Type = "notify";
      NotifyAccess = "main";
      WatchdogSec = "30s";
      Restart = "on-failure";
      RestartSec = "5s";
      # Exit 64 is a configuration error: restarting will not fix it.
      RestartPreventExitStatus = "64";
      TimeoutStopSec = "10s";
      EnvironmentFile = lib.optional (cfg.environmentFile != null)
        "${lib.optionalString environmentOptional "-"}${cfg.environmentFile}"
      ++ extraEnvironmentFiles;
      # The metadata server hands the user-data (every secret) to any local process that asks;
      # no unit needs it (cloud-init has read it as root).
      IPAddressDeny = [ "169.254.169.254" ];
      ExecStart = lib.optionalString (wrapper != null) "${wrapper} " + lib.escapeShellArgs ([
        (lib.getExe cfg.package)
        "--config"
        "${configFile name settings}"
      ] ++ units.${name} ++ extraArgs);
    } // extraService;
  };

  # What each unit's TOML file holds (nulls are dropped when it is written).
  discoverySettings = with cfg.discovery.settings; {
    inherit zone pool;
    discovery = {
      output = "${outputDir}/config.json";
      inherit interval;
      metrics-listen = metricsListen;
    };
  };
  autoscalerSettings = with cfg.autoscaler.settings; {
    inherit zone pool;
    autoscaler = {
      inherit listen min max interval;
      settle-timeout = settleTimeout;
      drain-wait = drainWait;
      dry-run = dryRun;
      inherit (cfg.autoscaler) policy prometheus scrape;
      scrape-window = scrapeWindow;
      # [autoscaler.pools.NAME]: each pool's own settings over the ones above.
      pools = lib.mapAttrs (_: p: {
        inherit (p) policy min max;
        drain-port = p.drainPort;
      }) cfg.autoscaler.pools;
    };
  };

  # A pool's own settings: services.poolpilot.autoscaler.pools.<name>.
  poolOptions = {
    options = {
      policy = mkOption {
        type = types.nullOr (types.either (types.enum shared.policies) types.path);
        default = null;
        description = "This pool's policy (as `policy`); null: the shared one.";
      };
      min = mkOption { type = types.nullOr types.ints.unsigned; default = null; description = "This pool's lower bound; null: the shared one (POOLPILOT_MIN, `settings.min` or the policy's)."; };
      max = mkOption { type = types.nullOr types.ints.positive; default = null; description = "This pool's upper bound; null: the shared one (POOLPILOT_MAX, `settings.max` or the policy's)."; };
      drainPort = mkOption { type = types.nullOr types.port; default = null; description = "The app's port on this pool's members, for draining; null: the shared one (8080)."; };
    };
  };
  frontSettings = with cfg.front.settings; {
    front = {
      inherit listen backends cooldown;
      admin-listen = adminListen;
      eject-after = ejectAfter;
      eject-mode = ejectMode;
      try-timeout = tryTimeout;
    };
  };
  # front.backendsFromEnvironment: each `[NAME=]URL` of POOLPILOT_FRONT_BACKENDS (comma-separated)
  # becomes a --backend flag, which wins over the file's backends; none at all, and poolpilot
  # exits 64 naming `backend`. (poolpilot reads no environment variable for --backend.)
  frontBackendsFromEnvironment = pkgs.writeShellScript "poolpilot-front-backends" ''
    set -eu -o noglob
    args=()
    IFS=,
    for b in ''${POOLPILOT_FRONT_BACKENDS-}; do
      if [ -n "$b" ]; then args+=(--backend "$b"); fi
    done
    unset IFS
    exec "$@" "''${args[@]}"
  '';
  appSettings = {
    app = {
      inherit (cfg.app.settings) listen;
      load-seconds = cfg.app.settings.loadSeconds;
    };
  };
  # The primary's and the replicas' URLs are no settings here: REDIS_URL and
  # REDIS_REPLICAS_URL come from `environmentFile` (known at deploy time; a URL may hold a
  # password, which the store must not).
  kvSettings = with cfg.kv.settings; {
    kv = {
      inherit listen;
      redis-timeout = redisTimeout;
      replica-connections = replicaConnections;
      replica-reconnect = replicaReconnect;
    };
  };
  replicaSettings = with cfg.replica.settings; {
    replica = {
      inherit listen redis;
      max-last-io = maxLastIo;
    };
  };

  common = {
    zone = mkOption {
      type = types.nullOr (types.enum [ "ch-gva-2" "ch-dk-2" "de-fra-1" "de-muc-1" "at-vie-1" "at-vie-2" "bg-sof-1" "hr-zag-1" ]);
      default = null;
      description = "The Exoscale zone; null takes EXOSCALE_ZONE from the environment file.";
    };
    pool = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The instance pool id, or several comma-separated `[NAME=][ZONE:]ID` (a plain id is in `zone` and named `default`; `ZONE:ID` is named after its zone); null takes EXOSCALE_INSTANCEPOOL_ID (same syntax) from the environment file (the images do: the pool id is only known once Terraform created it).";
    };
  };
in
{
  options.services.poolpilot = {
    package = lib.mkPackageOption pkgs "poolpilot" {
      default = null;
      extraDescription = "poolpilot is not in nixpkgs: the flake's `nixosModules` default this to the flake's own package; with this file alone, set it.";
    };
    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = "/etc/poolpilot/env";
      example = "/run/secrets/poolpilot.env";
      description = ''
        KEY=VALUE lines read by systemd as root, for every poolpilot unit: EXOSCALE_API_KEY,
        EXOSCALE_API_SECRET (or the course's EXOSCALE_KEY, EXOSCALE_SECRET), EXOSCALE_ZONE,
        EXOSCALE_INSTANCEPOOL_ID; on a pool member POOLPILOT_DRAIN_TOKEN. Secrets of the autoscaler
        alone go to `autoscaler.environmentFile`. On the images, cloud-init writes both from the
        user-data. Never put them in the Nix store.
      '';
    };

    discovery = {
      enable = mkEnableOption "the poolpilot service-discovery agent";
      settings = common // {
        outputDir = mkOption {
          type = types.str;
          default = dirOf defaults.discovery.output;
          description = "Where the file_sd file (config.json) goes: a directory under /run/, which the unit owns as its RuntimeDirectory; /srv/service-discovery links to it.";
        };
        interval = mkOption { type = types.str; default = defaults.discovery.interval; description = "How often to read the pool."; };
        metricsListen = mkOption { type = types.str; default = defaults.discovery."metrics-listen"; description = "/metrics and /healthz."; };
      };
      extraTargetPorts = mkOption {
        type = types.listOf (types.strMatching "[a-z][a-z0-9_-]*=[0-9]+");
        default = [ ];
        example = [ "redis=9121" ];
        description = "`NAME=PORT` targets listed for every member besides units.json's (node=9100, app=8080), each a --target-port; Prometheus' jobs keep theirs by `exoscale_target_name`.";
      };
    };

    autoscaler = {
      enable = mkEnableOption "the poolpilot autoscaler";
      environmentFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/etc/poolpilot/autoscaler.env";
        description = ''
          A second environment file, for the autoscaler only (the discovery agent never reads
          it): POOLPILOT_WEBHOOK_TOKEN, POOLPILOT_DRAIN_TOKEN, POOLPILOT_PROMETHEUS_PASSWORD,
          POOLPILOT_MIN, POOLPILOT_MAX, POOLPILOT_DRAIN_WAIT. Never put it in the Nix store.
        '';
      };
      policy = mkOption {
        type = types.nullOr (types.either (types.enum shared.policies) types.path);
        default = defaults.autoscaler.policy;
        example = "default";
        description = ''
          How the autoscaler decides: a built-in policy by name (${lib.concatStringsSep ", " shared.policies};
          see examples/policies/), or a policy file (`poolpilot policy check FILE` validates one; a
          file outside the store is re-read on SIGHUP). Its min and max replace `settings.min` and
          `settings.max`. null: the course's rule, one step per webhook alert. A policy with
          target-tracking or threshold checks needs `prometheus` or `scrape`.
        '';
      };
      prometheus = mkOption {
        type = types.nullOr types.str;
        default = defaults.autoscaler.prometheus;
        example = "http://127.0.0.1:9090";
        description = "The Prometheus the policy's metrics come from (http or https). Set this or `scrape`, not both.";
      };
      pools = mkOption {
        type = types.attrsOf (types.submodule poolOptions);
        default = { };
        example = literalExpression ''{ ch-gva-2 = { min = 1; max = 4; }; de-fra-1 = { policy = "hpa"; max = 8; }; }'';
        description = ''
          Per-pool settings, rendered as `[autoscaler.pools.NAME]`: each overrides the shared
          `policy`, `min`, `max` and drain port for the pool NAME of `pool` (or
          EXOSCALE_INSTANCEPOOL_ID, e.g. `ch-gva-2:ID,de-fra-1:ID`). A pool's own value wins over
          POOLPILOT_MIN/MAX, which win over `settings`. A name that no pool has is refused at start
          (exit 64).
        '';
      };
      scrape = mkOption {
        type = types.nullOr types.str;
        default = defaults.autoscaler.scrape;
        example = "/run/poolpilot-discovery/config.json";
        description = "Without Prometheus: the discovery agent's file_sd file, whose `node` (CPU) and `app` (requests in flight) targets the autoscaler scrapes itself. Set this or `prometheus`, not both.";
      };
      settings = common // {
        listen = mkOption { type = types.str; default = defaults.autoscaler.listen; description = "Webhooks, decisions, metrics."; };
        min = mkOption { type = types.ints.unsigned; default = defaults.autoscaler.min; description = "Lower bound of the pool size (without a policy)."; };
        max = mkOption { type = types.ints.positive; default = defaults.autoscaler.max; description = "Upper bound of the pool size (without a policy)."; };
        interval = mkOption { type = types.str; default = defaults.autoscaler.interval; description = "At most one change per interval."; };
        settleTimeout = mkOption { type = types.str; default = defaults.autoscaler."settle-timeout"; description = "How long a busy pool may hold a change back."; };
        drainWait = mkOption {
          type = types.str;
          default = defaults.autoscaler."drain-wait";
          description = "Between draining a member and evicting it: the NLB's check interval x retries plus the longest request (10 s); then, for at most as long again, until the NLB reports the member failing.";
        };
        dryRun = mkOption { type = types.bool; default = defaults.autoscaler."dry-run"; description = "Decide and log without scaling."; };
        scrapeWindow = mkOption {
          type = types.nullOr types.str;
          default = defaults.autoscaler."scrape-window";
          example = "1m";
          description = "The rate window of `scrape` (like Prometheus' `rate(...[1m])`); null: 1m.";
        };
      };
    };

    front = {
      enable = mkEnableOption "the poolpilot front (one entry point over several zones' NLBs)";
      settings = {
        listen = mkOption { type = types.str; default = defaults.front.listen; description = "Where clients connect (the service's port 80)."; };
        adminListen = mkOption { type = types.str; default = defaults.front."admin-listen"; description = "The status page (/v1/backends), /metrics and /healthz."; };
        backends = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "ch-gva-2=http://198.51.100.10" "de-fra-1=http://198.51.100.20" ];
          description = "`[NAME=]http://HOST:PORT`: each zone's NLB.";
        };
        ejectAfter = mkOption { type = types.ints.positive; default = defaults.front."eject-after"; description = "A backend is ejected after more than this many failures."; };
        ejectMode = mkOption { type = types.enum [ "total" "consecutive" ]; default = defaults.front."eject-mode"; description = "Failures since admission (total) or in a row (consecutive)."; };
        cooldown = mkOption { type = types.str; default = defaults.front.cooldown; description = "Out of rotation this long after the first ejection, n times it after the n-th."; };
        tryTimeout = mkOption { type = types.str; default = defaults.front."try-timeout"; description = "How long one attempt may take to start answering (longer than the app's /load)."; };
      };
      backendsFromEnvironment = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Also take backends from POOLPILOT_FRONT_BACKENDS in `environmentFile`: `[NAME=]URL`
          entries separated by commas, each passed as --backend (they replace `settings.backends`).
          For an image built before the backends exist: on Exoscale, cloud-init writes each
          zone's NLB there from Terraform's user-data (nixos-modules/front.nix).
        '';
      };
    };

    kv = {
      enable = mkEnableOption "the key-value API (`poolpilot kv`: writes to the Redis primary, reads from its replicas)";
      settings = {
        listen = mkOption { type = types.str; default = defaults.kv.listen; description = "The API's address (/item, /health for the NLB, /metrics, /admin/drain)."; };
        redisTimeout = mkOption { type = types.nullOr types.str; default = defaults.kv."redis-timeout"; description = "The bound on every Redis call; null: poolpilot's default."; };
        replicaConnections = mkOption { type = types.nullOr types.ints.positive; default = defaults.kv."replica-connections"; description = "Connections to each replica address; null: poolpilot's default."; };
        replicaReconnect = mkOption {
          type = types.str;
          default = defaults.kv."replica-reconnect";
          description = "Each replica connection is replaced after this long, so that behind the replicas' TCP NLB reads follow its rotation (new replicas get some, drained ones lose theirs).";
        };
      };
    };

    replica = {
      enable = mkEnableOption "the Redis replica sidecar (`poolpilot replica`: /health says in sync and not drained, /metrics the replica's rates)";
      settings = {
        listen = mkOption { type = types.str; default = defaults.replica.listen; description = "The sidecar's address (/health for the NLB, /metrics, /admin/drain)."; };
        redis = mkOption { type = types.str; default = defaults.replica.redis; description = "The local replica's URL."; };
        maxLastIo = mkOption {
          type = types.str;
          default = defaults.replica."max-last-io";
          description = "The longest silence from the primary a replica in sync may show: above the replica's `repl-ping-replica-period` (10 s by default; nixos-modules/redis-replica.nix sets 1 s and this to 3 s).";
        };
      };
    };

    app = {
      enable = mkEnableOption "the deliberately slow app";
      settings = {
        listen = mkOption { type = types.str; default = defaults.app.listen; description = "The app's address."; };
        loadSeconds = mkOption { type = types.str; default = defaults.app."load-seconds"; description = "How long /load keeps every core busy."; };
      };
    };
  };

  config = lib.mkMerge [
    (mkIf cfg.discovery.enable {
      assertions = [
        {
          # systemd's RuntimeDirectory= is relative to /run: a directory elsewhere cannot be
          # the unit's own.
          assertion = builtins.match "/run/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*" cfg.discovery.settings.outputDir != null
            && !(lib.hasInfix "/../" "${cfg.discovery.settings.outputDir}/");
          message = "services.poolpilot.discovery.settings.outputDir must be a directory under /run/ (it is the unit's RuntimeDirectory), got `${cfg.discovery.settings.outputDir}`";
        }
        (keysKnown "discovery" discoverySettings)
      ];
      systemd.services.poolpilot-discovery = unit {
        name = "discovery";
        description = "poolpilot service discovery (Exoscale pool -> Prometheus file_sd)";
        settings = discoverySettings;
        extraArgs = lib.concatMap (t: [ "--target-port" t ]) cfg.discovery.extraTargetPorts;
        extraService = {
          RuntimeDirectory = lib.removePrefix "/run/" cfg.discovery.settings.outputDir;
          RuntimeDirectoryMode = "0755";
          RuntimeDirectoryPreserve = true;
        };
      };
      # The course's path.
      systemd.tmpfiles.rules = [ "L+ /srv/service-discovery - - - - ${cfg.discovery.settings.outputDir}" ];
    })

    (mkIf cfg.autoscaler.enable {
      assertions = [
        {
          assertion = cfg.autoscaler.settings.min <= cfg.autoscaler.settings.max;
          message = "services.poolpilot.autoscaler.settings: min must not exceed max";
        }
        {
          assertion = cfg.autoscaler.prometheus == null || cfg.autoscaler.scrape == null;
          message = "services.poolpilot.autoscaler: set prometheus or scrape, not both (one metric source)";
        }
        {
          assertion = cfg.autoscaler.policy != null
            || (cfg.autoscaler.prometheus == null && cfg.autoscaler.scrape == null);
          message = "services.poolpilot.autoscaler.prometheus and .scrape are read only by a policy: set services.poolpilot.autoscaler.policy";
        }
        {
          assertion = cfg.autoscaler.prometheus == null
            || builtins.match "https?://.+" cfg.autoscaler.prometheus != null;
          message = "services.poolpilot.autoscaler.prometheus must be an http or https URL, got `${toString cfg.autoscaler.prometheus}`";
        }
        {
          assertion = cfg.autoscaler.scrape == null || lib.hasPrefix "/" cfg.autoscaler.scrape;
          message = "services.poolpilot.autoscaler.scrape must be an absolute path, got `${toString cfg.autoscaler.scrape}`";
        }
        {
          assertion = lib.all (n: builtins.match "[a-z0-9][a-z0-9-]{0,31}" n != null) (lib.attrNames cfg.autoscaler.pools);
          message = "services.poolpilot.autoscaler.pools: names are 1 to 32 of a-z, 0-9 and `-` (as in --pool NAME=...), got ${toString (lib.attrNames cfg.autoscaler.pools)}";
        }
        {
          assertion = lib.all (p: p.min == null || p.max == null || p.min <= p.max) (lib.attrValues cfg.autoscaler.pools);
          message = "services.poolpilot.autoscaler.pools: a pool's min must not exceed its max";
        }
        (keysKnown "autoscaler" autoscalerSettings)
      ];
      systemd.services.poolpilot-autoscaler = unit {
        name = "autoscaler";
        description = "poolpilot autoscaler (alert webhooks or a policy -> bounded pool scaling)";
        settings = autoscalerSettings;
        extraEnvironmentFiles = lib.optional (cfg.autoscaler.environmentFile != null) cfg.autoscaler.environmentFile;
      };
    })

    (mkIf cfg.front.enable {
      assertions = [
        {
          assertion = cfg.front.settings.backends != [ ] || cfg.front.backendsFromEnvironment;
          message = "services.poolpilot.front.settings.backends: give at least one backend (each zone's NLB), or set services.poolpilot.front.backendsFromEnvironment";
        }
        (keysKnown "front" frontSettings)
      ];
      systemd.services.poolpilot-front = unit {
        name = "front";
        description = "poolpilot front (one entry point over several zones)";
        settings = frontSettings;
        environmentOptional = true;
        wrapper = if cfg.front.backendsFromEnvironment then frontBackendsFromEnvironment else null;
        # Port 80 without root: the one capability it needs.
        extraService = {
          AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
          CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" ];
        };
      };
      networking.firewall.allowedTCPPorts = [ (lib.toInt (lib.last (lib.splitString ":" cfg.front.settings.listen))) ];
    })

    (mkIf cfg.kv.enable {
      assertions = [ (keysKnown "kv" kvSettings) ];
      # REDIS_URL (the primary), REDIS_REPLICAS_URL and POOLPILOT_DRAIN_TOKEN: without the
      # primary's URL poolpilot exits 64 naming redis-url, so the file is required.
      systemd.services.poolpilot-kv = unit {
        name = "kv";
        description = "poolpilot kv (the key-value API over the Redis primary and its replicas)";
        settings = kvSettings;
      };
    })

    (mkIf cfg.replica.enable {
      assertions = [ (keysKnown "replica" replicaSettings) ];
      # Only the drain token from the environment file (optional, as for the app).
      systemd.services.poolpilot-replica = unit {
        name = "replica";
        description = "poolpilot replica (health and metrics of the local Redis replica)";
        settings = replicaSettings;
        environmentOptional = true;
      };
    })

    (mkIf cfg.app.enable {
      assertions = [ (keysKnown "app" appSettings) ];
      # The /load burners lower their own priority: setpriority is in @resources, which
      # @system-service includes and ~@privileged leaves alone, so the common filter allows it.
      systemd.services.poolpilot-app = unit {
        name = "app";
        description = "poolpilot app (the deliberately slow web app)";
        settings = appSettings;
        environmentOptional = true;
      };
    })
  ];
}
