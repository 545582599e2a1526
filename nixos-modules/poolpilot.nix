# services.poolpilot: the discovery agent, the autoscaler and the slow app as hardened systemd
# units. Settings are typed options rendered to one TOML file per unit (the same keys as
# `poolpilot --config`); the fixed part of each command line comes from ./units.json, which
# `poolpilot demo` reads too. Secrets (API key and secret, webhook and drain tokens) come from
# `environmentFile`, read by systemd as root before the unit drops to its dynamic user: they
# never enter the Nix store.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;
  cfg = config.services.poolpilot;
  units = builtins.fromJSON (builtins.readFile ./units.json);
  toml = pkgs.formats.toml { };

  # Drops nulls so that unset options fall back to poolpilot's defaults (or the environment).
  clean = lib.filterAttrsRecursive (_: v: v != null);

  configFile = name: settings: toml.generate "poolpilot-${name}.toml" (clean settings);

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

  unit = { name, description, settings, extraService ? { } }: {
    inherit description;
    wantedBy = [ "multi-user.target" ];
    wants = [ "network-online.target" ];
    after = [ "network-online.target" ];
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
      EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
      ExecStart = lib.escapeShellArgs ([
        (lib.getExe cfg.package)
        "--config"
        "${configFile name settings}"
      ] ++ units.${name});
    } // extraService;
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
      description = "The instance pool id; null takes EXOSCALE_INSTANCEPOOL_ID from the environment file (the images do: the pool id is only known once Terraform created it).";
    };
  };
in
{
  options.services.poolpilot = {
    package = mkOption {
      type = types.package;
      description = "The poolpilot package.";
    };
    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = "/etc/poolpilot/env";
      example = "/run/secrets/poolpilot.env";
      description = ''
        KEY=VALUE lines read by systemd as root: EXOSCALE_API_KEY, EXOSCALE_API_SECRET (or the
        course's EXOSCALE_KEY, EXOSCALE_SECRET), EXOSCALE_ZONE, EXOSCALE_INSTANCEPOOL_ID,
        POOLPILOT_WEBHOOK_TOKEN, POOLPILOT_DRAIN_TOKEN. On the images, cloud-init writes it from
        the user-data. Never put it in the Nix store.
      '';
    };

    discovery = {
      enable = mkEnableOption "the poolpilot service-discovery agent";
      settings = common // {
        outputDir = mkOption {
          type = types.str;
          default = "/run/poolpilot-discovery";
          description = "Where the file_sd file goes (a runtime directory owned by the unit; /srv/service-discovery links to it).";
        };
        interval = mkOption { type = types.str; default = "10s"; description = "How often to read the pool."; };
        metricsListen = mkOption { type = types.str; default = "127.0.0.1:9111"; description = "/metrics and /healthz."; };
      };
    };

    autoscaler = {
      enable = mkEnableOption "the poolpilot autoscaler";
      settings = common // {
        listen = mkOption { type = types.str; default = "127.0.0.1:8090"; description = "Webhooks, decisions, metrics."; };
        min = mkOption { type = types.ints.unsigned; default = 1; description = "Lower bound of the pool size."; };
        max = mkOption { type = types.ints.positive; default = 4; description = "Upper bound of the pool size."; };
        interval = mkOption { type = types.str; default = "60s"; description = "At most one change per interval."; };
        settleTimeout = mkOption { type = types.str; default = "10m"; description = "How long a busy pool may hold a change back."; };
        drainWait = mkOption {
          type = types.str;
          default = "35s";
          description = "Between draining a member and evicting it: the NLB's check interval x retries plus the longest request (10 s).";
        };
        dryRun = mkOption { type = types.bool; default = false; description = "Decide and log without scaling."; };
      };
    };

    app = {
      enable = mkEnableOption "the deliberately slow app";
      settings = {
        listen = mkOption { type = types.str; default = "0.0.0.0:8080"; description = "The app's address."; };
        loadSeconds = mkOption { type = types.str; default = "10s"; description = "How long /load keeps every core busy."; };
      };
    };
  };

  config = lib.mkMerge [
    (mkIf cfg.discovery.enable {
      assertions = [{
        assertion = cfg.discovery.settings.outputDir != "";
        message = "services.poolpilot.discovery.settings.outputDir must be set";
      }];
      systemd.services.poolpilot-discovery = unit {
        name = "discovery";
        description = "poolpilot service discovery (Exoscale pool -> Prometheus file_sd)";
        settings = with cfg.discovery.settings; {
          inherit zone pool;
          discovery = {
            output = "${outputDir}/config.json";
            inherit interval;
            metrics-listen = metricsListen;
          };
        };
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
      assertions = [{
        assertion = cfg.autoscaler.settings.min <= cfg.autoscaler.settings.max;
        message = "services.poolpilot.autoscaler.settings: min must not exceed max";
      }];
      systemd.services.poolpilot-autoscaler = unit {
        name = "autoscaler";
        description = "poolpilot autoscaler (alert webhooks -> bounded pool scaling)";
        settings = with cfg.autoscaler.settings; {
          inherit zone pool;
          autoscaler = {
            inherit listen min max interval;
            settle-timeout = settleTimeout;
            drain-wait = drainWait;
            dry-run = dryRun;
          };
        };
      };
    })

    (mkIf cfg.app.enable {
      systemd.services.poolpilot-app = unit {
        name = "app";
        description = "poolpilot app (the deliberately slow web app)";
        settings = {
          app = {
            inherit (cfg.app.settings) listen;
            load-seconds = cfg.app.settings.loadSeconds;
          };
        };
        # The /load burners lower their own priority (setpriority), which @resources holds.
        extraService.SystemCallFilter = [ "@system-service" "~@privileged" "setpriority" ];
      };
    })
  ];
}
