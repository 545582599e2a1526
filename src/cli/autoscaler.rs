//! `poolpilot autoscaler`: configuration, wiring, the stop signal. One process drives one or
//! several pools (`--pool [NAME=][ZONE:]POOL_ID`, repeated): [`pools`] resolves each pool's
//! settings (`[autoscaler.pools.NAME]` over the shared ones) and builds its control loop.

mod pools;

pub use pools::{PoolConfig, PoolFile};

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tracing::{info, warn};

use super::{ApiArgs, CliError, FileConfig};
use crate::autoscaler::pools::{self as multi, Pools};
use crate::autoscaler::server::{self, ServerState};
use crate::autoscaler::{Bounds, Metrics};
use crate::config::{self, ConfigError, Dur, Layer, PoolRef, Secret};
use crate::exoscale::{ApiMetrics, Client};
use crate::{shutdown, telemetry};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8090";

#[derive(Debug, Args)]
pub struct AutoscalerArgs {
    /// A pool to drive: `POOL_ID` (in --zone), `ZONE:POOL_ID` (named after its zone) or
    /// `NAME=[ZONE:]POOL_ID`; repeat it (or separate them with commas) for several pools, each
    /// with its own control loop, `/webhook/NAME` and `[autoscaler.pools.NAME]` settings. A
    /// plain id is named `default`.
    #[arg(
        long,
        value_name = "[NAME=][ZONE:]ID",
        env = config::env::POOL,
        value_delimiter = ','
    )]
    pub pool: Vec<String>,
    /// Address for webhooks, decisions, metrics and health (the course's LISTEN_PORT sets the port).
    #[arg(long, value_name = "ADDR", env = config::env::AUTOSCALER_LISTEN)]
    pub listen: Option<SocketAddr>,
    /// The smallest size the autoscaler will set.
    #[arg(long, value_name = "N", env = config::env::MIN)]
    pub min: Option<u64>,
    /// The largest size the autoscaler will set.
    #[arg(long, value_name = "N", env = config::env::MAX)]
    pub max: Option<u64>,
    /// How often to decide (at most one change per interval).
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<Dur>,
    /// How long a wanted change may wait for a busy pool (scaling, members starting).
    #[arg(long, value_name = "DURATION")]
    pub settle_timeout: Option<Dur>,
    /// Require this token on webhooks (Bearer, or a basic-auth password). Prefer the
    /// environment variable: flags show in `ps`.
    #[arg(long, value_name = "TOKEN", env = config::env::WEBHOOK_TOKEN, hide_env_values = true)]
    pub webhook_token: Option<Secret>,
    /// Decide and log, but never call the API to change the pool.
    #[arg(long)]
    pub dry_run: bool,
    /// Decide with this policy (a file, see `poolpilot policy check`, or a built-in name:
    /// default, course, target-tracking, hpa, office-hours) instead of the course's one-step rule; its
    /// min and max apply unless --min or --max (or their variables or config keys) are given: the
    /// deployment's bounds win over the policy's.
    #[arg(long, value_name = "FILE|NAME", env = config::env::POLICY)]
    pub policy: Option<String>,
    /// Prometheus' address, for policies that read metrics (target-tracking, threshold).
    #[arg(long, value_name = "URL", env = config::env::PROMETHEUS_URL)]
    pub prometheus: Option<url::Url>,
    /// Basic auth for --prometheus (its web config's `basic_auth_users`): the password...
    #[arg(
        long,
        value_name = "PASSWORD",
        env = config::env::PROMETHEUS_PASSWORD,
        hide_env_values = true
    )]
    pub prometheus_password: Option<Secret>,
    /// ...and the user (default: prometheus).
    #[arg(long, value_name = "USER", env = config::env::PROMETHEUS_USER)]
    pub prometheus_user: Option<String>,
    /// Without Prometheus: scrape the discovery agent's targets in this file_sd file directly
    /// (`node` targets for CPU, `app` targets for requests in flight).
    #[arg(
        long,
        value_name = "FILE",
        env = config::env::SCRAPE_FILE_SD,
        conflicts_with = "prometheus"
    )]
    pub scrape: Option<std::path::PathBuf>,
    /// The rate window of the direct scrape (like Prometheus' `rate(...[1m])`).
    #[arg(long, value_name = "DURATION")]
    pub scrape_window: Option<Dur>,
    /// Scale in gracefully: drain the oldest member through the app's drain switch with this
    /// token, wait --drain-wait, then evict it (the app's POOLPILOT_DRAIN_TOKEN).
    #[arg(
        long,
        value_name = "TOKEN",
        env = config::env::DRAIN_TOKEN,
        hide_env_values = true
    )]
    pub drain_token: Option<Secret>,
    /// The app's port on each member, for draining.
    #[arg(long, value_name = "PORT")]
    pub drain_port: Option<u16>,
    /// How long a drained member keeps running before eviction: the NLB's check interval x
    /// retries, plus the longest request. Then, for at most as long again, until no NLB in front
    /// of the pool reports it healthy.
    #[arg(long, value_name = "DURATION", env = config::env::DRAIN_WAIT)]
    pub drain_wait: Option<Dur>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `[autoscaler]` in the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AutoscalerFile {
    pub listen: Option<SocketAddr>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub interval: Option<Dur>,
    pub settle_timeout: Option<Dur>,
    pub dry_run: Option<bool>,
    pub drain_port: Option<u16>,
    pub drain_wait: Option<Dur>,
    /// A policy file or a built-in name, as `--policy` takes it.
    pub policy: Option<String>,
    /// Prometheus' address (http or https), as `--prometheus` takes it.
    pub prometheus: Option<String>,
    /// A file_sd file to scrape directly, as `--scrape` takes it.
    pub scrape: Option<std::path::PathBuf>,
    pub scrape_window: Option<Dur>,
    /// `[autoscaler.pools.NAME]`: one pool's settings over the ones above.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolFile>,
}

/// Where a policy reads its metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsFrom {
    Prometheus(url::Url),
    /// The discovery agent's file_sd file, scraped directly.
    Scrape(std::path::PathBuf),
}

/// The metric source: one given by flag or environment replaces the file's; the file may name
/// only one.
fn metrics_from(
    args: &AutoscalerArgs,
    f: &AutoscalerFile,
) -> Result<Option<MetricsFrom>, ConfigError> {
    if let Some(u) = &args.prometheus {
        return prometheus_url(u.clone()).map(Some);
    }
    if let Some(p) = &args.scrape {
        return Ok(Some(MetricsFrom::Scrape(p.clone())));
    }
    match (&f.prometheus, &f.scrape) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            "prometheus",
            "and `scrape` are two metric sources: give one",
        )),
        (Some(u), None) => {
            let url = url::Url::parse(u.trim()).map_err(|e| {
                ConfigError::invalid("prometheus", format!("must be a URL, got `{u}`: {e}"))
            })?;
            prometheus_url(url).map(Some)
        }
        (None, Some(p)) if p.as_os_str().is_empty() => {
            Err(ConfigError::invalid("scrape", "must be a file path"))
        }
        (None, Some(p)) => Ok(Some(MetricsFrom::Scrape(p.clone()))),
        (None, None) => Ok(None),
    }
}

fn prometheus_url(url: url::Url) -> Result<MetricsFrom, ConfigError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            "prometheus",
            format!("must be an http or https URL, got `{url}`"),
        ));
    }
    Ok(MetricsFrom::Prometheus(url))
}

/// A validated configuration: what the process shares, and each pool's own.
#[derive(Debug)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    /// Where the policies read their metrics (None: webhooks only).
    pub metrics: Option<MetricsFrom>,
    /// Basic auth for Prometheus (user, password), when it asks for one.
    pub prometheus_auth: Option<(String, Secret)>,
    pub scrape_window: Duration,
    /// In `--pool` order.
    pub pools: Vec<PoolConfig>,
}

impl Resolved {
    /// Whether this process drives several pools (each source then reads its pool's members).
    pub fn several(&self) -> bool {
        self.pools.len() > 1
    }
}

/// The pools from `--pool` (or its variable, comma-separated), else the file's `pool`.
pub fn pool_refs(args: &AutoscalerArgs, file: &FileConfig) -> Result<Vec<PoolRef>, ConfigError> {
    let raws: Vec<String> = if args.pool.iter().any(|p| !p.trim().is_empty()) {
        args.pool.clone()
    } else {
        file.pool.iter().cloned().collect()
    };
    PoolRef::parse_all("pool", &raws, args.api.zone(file), true)
}

pub fn resolve(args: &AutoscalerArgs, file: &FileConfig) -> Result<Resolved, ConfigError> {
    let f = &file.autoscaler;
    let refs = pool_refs(args, file)?;
    if let Some(extra) = f.pools.keys().find(|k| !refs.iter().any(|r| &r.name == *k)) {
        let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
        return Err(ConfigError::invalid(
            format!("autoscaler.pools.{extra}"),
            format!(
                "names no pool given by --pool (pools: {}); name one NAME=[ZONE:]ID",
                names.join(", ")
            ),
        ));
    }
    let listen = match (args.listen, std::env::var(config::env::LISTEN_PORT).ok()) {
        (Some(l), _) => l,
        (None, Some(port)) if !port.trim().is_empty() => {
            let port: u16 = port.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                ConfigError::invalid(
                    config::env::LISTEN_PORT,
                    format!("must be a port number, got `{port}`"),
                )
            })?;
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
        }
        _ => f
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
    };
    let token = match args.webhook_token.as_ref().map(|t| t.expose().trim()) {
        None | Some("") => None,
        Some(t) if t.len() < 16 => {
            return Err(ConfigError::invalid(
                "webhook-token",
                "must be at least 16 characters (or unset)",
            ));
        }
        Some(t) => Some(Secret::new(t)),
    };
    let metrics = metrics_from(args, f)?;
    let prometheus_auth = match args.prometheus_password.as_ref().map(|p| p.expose()) {
        None | Some("") => None,
        Some(p) => {
            let user = args
                .prometheus_user
                .as_deref()
                .unwrap_or("prometheus")
                .trim();
            if user.is_empty() || user.contains(':') {
                return Err(ConfigError::invalid(
                    "prometheus-user",
                    "must be a non-empty name without `:`",
                ));
            }
            Some((user.to_owned(), Secret::new(p)))
        }
    };
    let scrape_window = args
        .scrape_window
        .pick(f.scrape_window, Dur::secs(60))
        .get();
    if scrape_window < Duration::from_secs(1) || scrape_window > Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            "scrape-window",
            "must be between 1s and 1h",
        ));
    }
    let several = refs.len() > 1;
    let pools = refs
        .into_iter()
        .map(|r| pools::resolve_pool(args, f, r, metrics.as_ref(), several))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(m) = &metrics
        && pools.iter().all(|p| p.policy.is_none())
    {
        let field = match m {
            MetricsFrom::Prometheus(_) => "prometheus",
            MetricsFrom::Scrape(_) => "scrape",
        };
        return Err(ConfigError::invalid(
            field,
            "is read only by a policy: set --policy (or `policy` in [autoscaler])",
        ));
    }
    Ok(Resolved {
        listen,
        token,
        metrics,
        prometheus_auth,
        scrape_window,
        pools,
    })
}

/// Bounds given explicitly (flags, `POOLPILOT_MIN`/`MAX`, `[autoscaler]`): the deployment's
/// (Terraform's `pool_min`/`pool_max`, the NixOS module's) win over a policy's, so one policy
/// file serves pools of any size and the budget's cap holds whatever the policy says.
#[derive(Clone, Copy, Debug, Default)]
pub struct BoundsOverride {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

impl BoundsOverride {
    pub fn apply(
        self,
        mut p: crate::policy::file::PolicyFile,
    ) -> Result<crate::policy::file::PolicyFile, ConfigError> {
        let min = self.min.unwrap_or(p.policy.min);
        let max = self.max.unwrap_or(p.policy.max);
        Bounds::new(min, max).map_err(|e| {
            ConfigError::invalid(
                e.field,
                format!(
                    "{} (the policy `{}` gives min {} and max {})",
                    e.rule, p.policy.name, p.policy.min, p.policy.max
                ),
            )
        })?;
        p.policy.min = min;
        p.policy.max = max;
        Ok(p)
    }
}

/// One API client per zone the pools are in (the credentials and the client's patience are
/// shared; `EXOSCALE_API_ENDPOINT` may give each zone its own endpoint).
fn clients(
    args: &AutoscalerArgs,
    file: &FileConfig,
    cfg: &Resolved,
    api_metrics: &ApiMetrics,
) -> Result<BTreeMap<&'static str, Client>, ConfigError> {
    let mut out = BTreeMap::new();
    for p in &cfg.pools {
        let zone = p.pool.zone;
        if out.contains_key(zone.name()) {
            continue;
        }
        let mut api = args.api.clone();
        api.zone = Some(zone);
        let client = api.client(file)?.with_metrics(api_metrics.clone());
        out.insert(zone.name(), client);
    }
    Ok(out)
}

pub async fn run(args: AutoscalerArgs, file: FileConfig) -> Result<(), CliError> {
    let cfg = resolve(&args, &file)?;
    let mut registry = telemetry::metrics::registry("autoscaler");
    let api_metrics = ApiMetrics::register(&mut registry);
    let clients = clients(&args, &file, &cfg, &api_metrics)?;
    let metrics = Metrics::register(&mut registry);

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let names: Vec<String> = cfg
        .pools
        .iter()
        .map(|p| format!("{}={}:{}", p.pool.name, p.pool.zone, p.pool.id))
        .collect();
    info!(
        pools = ?names,
        token = cfg.token.is_some(),
        addr = %listener.local_addr().context("listener address")?,
        "autoscaler starting"
    );
    if cfg.token.is_none() && !cfg.listen.ip().is_loopback() {
        warn!("webhooks are accepted without a token from anyone who can reach this port");
    }
    let (stop, stopping) = crate::shutdown::stop_switch();
    let mut handles = Vec::new();
    let mut loops = Vec::new();
    for p in &cfg.pools {
        let client = clients[p.pool.zone.name()].clone();
        let (handle, run) = pools::build(&cfg, p, client, metrics.clone(), stopping.clone())?;
        handles.push(handle);
        loops.push(run);
    }
    let router = server::router(ServerState {
        pools: Pools::new(handles),
        metrics,
        registry: Arc::new(registry),
        token: cfg.token,
        body_timeout: server::BODY_TIMEOUT,
    });
    let combined = telemetry::Heartbeat::default();
    let liveness = multi::combined_liveness(combined.clone());
    shutdown::serve_while_stopping(
        listener,
        router,
        multi::run_all(loops, combined),
        stop,
        liveness,
    )
    .await
    .context("server")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: AutoscalerArgs,
    }

    const POOL: &str = "11111111-2222-3333-4444-555555555555";

    fn resolve_args(extra: &[&str]) -> Result<Resolved, ConfigError> {
        let mut argv = vec!["autoscaler", "--pool", POOL, "--scrape", "/run/sd.json"];
        argv.extend_from_slice(extra);
        resolve(&Cli::parse_from(argv).a, &FileConfig::default())
    }

    fn bounds(r: &Resolved) -> (u64, u64, u64, u64) {
        let p = r.pools[0].policy.as_ref().unwrap();
        let b = r.pools[0].controller.bounds;
        (b.min, b.max, p.policy.min, p.policy.max)
    }

    #[test]
    fn a_policy_gives_the_bounds_unless_the_deployment_does() {
        // `default` says min 1, max 10.
        let r = resolve_args(&["--policy", "default"]).unwrap();
        assert_eq!(bounds(&r), (1, 10, 1, 10));
        // Terraform's pool_max (POOLPILOT_MAX) wins, in the controller and in the policy.
        let r = resolve_args(&["--policy", "default", "--max", "3"]).unwrap();
        assert_eq!(bounds(&r), (1, 3, 1, 3));
        let r = resolve_args(&["--policy", "default", "--min", "2", "--max", "20"]).unwrap();
        assert_eq!(bounds(&r), (2, 20, 2, 20));
        // A min above the policy's max only with a max that allows it.
        let e = resolve_args(&["--policy", "default", "--min", "12"]).unwrap_err();
        assert!(e.to_string().contains("min"), "{e}");
        let r = resolve_args(&["--policy", "default", "--min", "12", "--max", "15"]).unwrap();
        assert_eq!(bounds(&r), (12, 15, 12, 15));
        let e = resolve_args(&["--policy", "default", "--max", "1001"]).unwrap_err();
        assert!(e.to_string().contains("max"), "{e}");
    }

    const OTHER: &str = "66666666-2222-3333-4444-555555555555";

    fn resolve_with(argv: &[&str], toml_text: &str) -> Result<Resolved, ConfigError> {
        let mut all = vec!["autoscaler"];
        all.extend_from_slice(argv);
        let file: FileConfig = toml::from_str(toml_text).expect("valid TOML");
        resolve(&Cli::parse_from(all).a, &file)
    }

    fn pool_bounds(r: &Resolved) -> Vec<(&str, u64, u64)> {
        r.pools
            .iter()
            .map(|p| {
                let b = p.controller.bounds;
                (p.pool.name.as_str(), b.min, b.max)
            })
            .collect()
    }

    #[test]
    fn several_pools_in_several_zones_each_take_a_name() {
        let gva = format!("ch-gva-2:{POOL}");
        let fra = format!("web=de-fra-1:{OTHER}");
        let r = resolve_with(&["--pool", &gva, "--pool", &fra], "").unwrap();
        let pools: Vec<_> = r
            .pools
            .iter()
            .map(|p| (p.pool.name.as_str(), p.pool.zone, p.pool.id.to_string()))
            .collect();
        assert_eq!(
            pools,
            [
                ("ch-gva-2", config::Zone::ChGva2, POOL.to_owned()),
                ("web", config::Zone::DeFra1, OTHER.to_owned())
            ]
        );
        assert!(r.several());
        // One comma-separated value, as EXOSCALE_INSTANCEPOOL_ID holds it.
        let both = format!("{gva},{fra}");
        assert_eq!(resolve_with(&["--pool", &both], "").unwrap().pools.len(), 2);
        // The file's `pool` takes the same list.
        let r = resolve_with(&[], &format!("pool = \"{both}\"")).unwrap();
        assert_eq!(r.pools.len(), 2);
        // A plain id keeps today's meaning: the zone from --zone, the name `default`.
        let r = resolve_with(&["--pool", POOL, "--zone", "at-vie-1"], "").unwrap();
        assert_eq!(r.pools[0].pool.name, "default");
        assert_eq!(r.pools[0].pool.zone, config::Zone::AtVie1);
        assert!(!r.several());
    }

    #[test]
    fn bad_or_repeated_pools_are_refused_naming_pool() {
        for argv in [
            vec!["--pool", "not-a-uuid"],
            vec!["--pool", "Web=11111111-2222-3333-4444-555555555555"],
            vec!["--pool", "mars-1:11111111-2222-3333-4444-555555555555"],
            vec!["--pool", POOL, "--pool", POOL],
            // Two plain ids would both be `default`.
            vec!["--pool", POOL, "--pool", OTHER],
        ] {
            let e = resolve_with(&argv, "").unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { field, .. } if field == "pool"),
                "{argv:?}: {e}"
            );
        }
        let e = resolve_with(&[], "").unwrap_err().to_string();
        assert!(e.contains("`pool`") && e.contains("required"), "{e}");
    }

    #[test]
    fn a_pools_table_overrides_the_shared_settings_for_that_pool_only() {
        let gva = format!("gva=ch-gva-2:{POOL}");
        let fra = format!("fra=de-fra-1:{OTHER}");
        let argv = ["--pool", gva.as_str(), "--pool", fra.as_str()];
        let file = "[autoscaler]\nmin = 1\nmax = 4\n[autoscaler.pools.fra]\nmin = 2\nmax = 3\n";
        let r = resolve_with(&argv, file).unwrap();
        assert_eq!(pool_bounds(&r), [("gva", 1, 4), ("fra", 2, 3)]);
        // --max (POOLPILOT_MAX) beats [autoscaler] for every pool, but not a pool's own table.
        let mut with_max = argv.to_vec();
        with_max.extend(["--max", "6"]);
        let r = resolve_with(&with_max, file).unwrap();
        assert_eq!(pool_bounds(&r), [("gva", 1, 6), ("fra", 2, 3)]);
        // A pool's policy: its bounds unless given; the other pool keeps the one-step rule.
        let file = "[autoscaler.pools.gva]\npolicy = \"course\"\n";
        let r = resolve_with(&argv, file).unwrap();
        assert!(r.pools[0].policy.is_some() && r.pools[1].policy.is_none());
        // A pool's own drain port.
        let file = "[autoscaler]\ndrain-port = 8081\n[autoscaler.pools.fra]\ndrain-port = 9000\n";
        let mut drained = argv.to_vec();
        drained.extend(["--drain-token", "a-long-enough-token"]);
        let r = resolve_with(&drained, file).unwrap();
        let ports: Vec<u16> = r
            .pools
            .iter()
            .map(|p| p.drain.as_ref().unwrap().port)
            .collect();
        assert_eq!(ports, [8081, 9000]);
    }

    #[test]
    fn a_pools_table_must_name_a_pool_and_hold_valid_values() {
        let fra = format!("fra=de-fra-1:{OTHER}");
        let e = resolve_with(&["--pool", &fra], "[autoscaler.pools.gva]\nmax = 3\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "autoscaler.pools.gva"),
            "{e}"
        );
        let e = resolve_with(
            &["--pool", &fra],
            "[autoscaler.pools.fra]\nmin = 4\nmax = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`min`") && e.contains("pool `fra`"), "{e}");
        let e = resolve_with(
            &["--pool", &fra],
            "[autoscaler.pools.fra]\npolicy = \"nope\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`policy`") && e.contains("pool `fra`"), "{e}");
        // Unknown keys in a pool's table are refused when the file is read.
        let bad: Result<FileConfig, _> = toml::from_str("[autoscaler.pools.fra]\nmaxx = 3\n");
        assert!(bad.is_err());
    }
}
