//! `poolpilot autoscaler`: configuration, wiring, the stop signal.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tracing::{info, warn};

use super::{ApiArgs, CliError, FileConfig};
use crate::autoscaler::server::{self, ServerState};
use crate::autoscaler::source::{AnySource, Prometheus, PrometheusSource, ScrapeSource};
use crate::autoscaler::target::Drain;
use crate::autoscaler::{
    Bounds, Controller, ControllerConfig, ExoscalePool, Inbox, Metrics, Shared, Strategy,
    WebhookSource, WebhookStep,
};
use crate::config::{self, ConfigError, Dur, Layer, Secret};
use crate::exoscale::ApiMetrics;
use crate::{shutdown, telemetry};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8090";

#[derive(Debug, Args)]
pub struct AutoscalerArgs {
    /// The instance pool's id.
    #[arg(long, value_name = "ID", env = config::env::POOL)]
    pub pool: Option<String>,
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
    /// retries, plus the longest request.
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

/// A validated configuration.
#[derive(Debug)]
pub struct Resolved {
    pub pool: uuid::Uuid,
    pub listen: SocketAddr,
    pub controller: ControllerConfig,
    pub token: Option<Secret>,
    pub drain: Option<Drain>,
    pub policy: Option<crate::policy::file::PolicyFile>,
    /// The bounds given by flags, variables or the config file, which win over a policy's
    /// (applied to `policy` already, and to every reload).
    pub bounds_override: BoundsOverride,
    /// Where the policy came from (its file, for reloads).
    pub policy_source: Option<crate::policy::builtin::Source>,
    /// Where the policy reads its metrics (None: webhooks only).
    pub metrics: Option<MetricsFrom>,
    /// Basic auth for Prometheus (user, password), when it asks for one.
    pub prometheus_auth: Option<(String, Secret)>,
    pub scrape_window: Duration,
}

pub fn resolve(args: &AutoscalerArgs, file: &FileConfig) -> Result<Resolved, ConfigError> {
    let f = &file.autoscaler;
    let pool = config::parse_pool_id("pool", args.pool.clone().or(file.pool.clone()).as_deref())?;
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
    let min = args.min.or(f.min).unwrap_or(1);
    let max = args.max.or(f.max).unwrap_or(5);
    // With a policy, its bounds fill in what is not given (`BoundsOverride::apply` checks them).
    let with_policy = args.policy.is_some() || f.policy.is_some();
    if !with_policy {
        Bounds::new(min, max).map_err(|e| ConfigError::invalid(e.field, e.rule))?;
    }
    let interval = args.interval.pick(f.interval, Dur::secs(60)).get();
    if interval < Duration::from_secs(1) || interval > Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            "interval",
            "must be between 1s and 1h",
        ));
    }
    let settle = args
        .settle_timeout
        .pick(f.settle_timeout, Dur::secs(600))
        .get();
    if settle > Duration::from_secs(24 * 3600) {
        return Err(ConfigError::invalid(
            "settle-timeout",
            "must be at most 24h",
        ));
    }
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
    let source = match args.policy.as_ref().or(f.policy.as_ref()) {
        None => {
            if let Some(m) = &metrics {
                let field = match m {
                    MetricsFrom::Prometheus(_) => "prometheus",
                    MetricsFrom::Scrape(_) => "scrape",
                };
                return Err(ConfigError::invalid(
                    field,
                    "is read only by a policy: set --policy (or `policy` in [autoscaler])",
                ));
            }
            None
        }
        Some(arg) => {
            Some(crate::policy::builtin::load(arg).map_err(|e| ConfigError::invalid("policy", e))?)
        }
    };
    let policy = match &source {
        None => None,
        Some(src) => {
            let p = src.parse().map_err(|e| ConfigError::invalid("policy", e))?;
            let needs_metrics = p
                .checks
                .iter()
                .any(|c| !matches!(c, crate::policy::file::Check::WebhookStep));
            if needs_metrics && metrics.is_none() {
                return Err(ConfigError::invalid(
                    "prometheus",
                    "(or --scrape) is required by the policy's target-tracking or threshold checks",
                ));
            }
            Some(p)
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
    let drain = match args.drain_token.as_ref().map(|t| t.expose().trim()) {
        None | Some("") => None,
        Some(t) => {
            let port = args.drain_port.or(f.drain_port).unwrap_or(8080);
            if port == 0 {
                return Err(ConfigError::invalid("drain-port", "must be a port number"));
            }
            let wait = args.drain_wait.pick(f.drain_wait, Dur::secs(35)).get();
            if wait > Duration::from_secs(3600) {
                return Err(ConfigError::invalid("drain-wait", "must be at most 1h"));
            }
            Some(Drain {
                token: Secret::new(t),
                port,
                wait,
                victims: policy
                    .as_ref()
                    .map(|p| p.victims())
                    .unwrap_or_else(crate::autoscaler::target::victims::default_orders),
            })
        }
    };
    let overrides = BoundsOverride {
        min: args.min.or(f.min),
        max: args.max.or(f.max),
    };
    let policy = policy.map(|p| overrides.apply(p)).transpose()?;
    let (min, max) = match &policy {
        Some(p) => (p.policy.min, p.policy.max),
        None => (min, max),
    };
    Ok(Resolved {
        policy,
        bounds_override: overrides,
        policy_source: source,
        metrics,
        prometheus_auth,
        scrape_window,
        drain,
        pool,
        listen,
        controller: ControllerConfig {
            bounds: Bounds { min, max },
            interval,
            dry_run: args.dry_run || f.dry_run.unwrap_or(false),
            settle_timeout: settle,
        },
        token,
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

/// How long the control loop may go without a step before it counts as stuck (the watchdog
/// then stops pinging): the interval between ticks plus the longest one step may take, which
/// is waiting for an operation (the poll timeout) or a drain and its API calls, each call with
/// its retries and backoff.
fn stall_limit(c: &crate::exoscale::ClientConfig, cfg: &Resolved) -> Duration {
    let retries = c.retry.max_retries;
    let call = c.request_timeout * (retries + 1) + c.retry.max * retries;
    let drain = cfg.drain.as_ref().map_or(Duration::ZERO, |d| d.wait);
    let step = (c.poll.timeout + call).max(call * 4 + drain);
    cfg.controller.interval + step + Duration::from_secs(60)
}

pub async fn run(args: AutoscalerArgs, file: FileConfig) -> Result<(), CliError> {
    let cfg = resolve(&args, &file)?;
    let mut registry = telemetry::metrics::registry("autoscaler");
    let api_metrics = ApiMetrics::register(&mut registry);
    let client = args.api.client(&file)?.with_metrics(api_metrics);
    let metrics = Metrics::register(&mut registry);

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let stall = stall_limit(client.config(), &cfg);
    let mut target = ExoscalePool::new(client, cfg.pool);
    if let Some(d) = cfg.drain.clone() {
        info!(
            port = d.port,
            wait_ms = d.wait.as_millis() as u64,
            "scale-in drains the member before evicting it"
        );
        target = target.with_drain(d);
    }
    let bounds = cfg.controller.bounds;
    info!(
        pool = %cfg.pool,
        zone = %args.api.zone(&file),
        min = bounds.min,
        max = bounds.max,
        interval_ms = cfg.controller.interval.as_millis() as u64,
        dry_run = cfg.controller.dry_run,
        token = cfg.token.is_some(),
        addr = %listener.local_addr().context("listener address")?,
        "autoscaler starting"
    );
    if cfg.token.is_none() && !cfg.listen.ip().is_loopback() {
        warn!("webhooks are accepted without a token from anyone who can reach this port");
    }
    let inbox = Arc::new(Inbox::default());
    let shared = Arc::new(Shared::new(bounds, cfg.controller.dry_run));
    if let Some(d) = &cfg.drain {
        let order: Vec<&str> = d.victims.iter().map(|o| o.as_str()).collect();
        info!(victims = ?order, "scale-in victim order");
    }
    // One source and one strategy, chosen here; the controller is the same for all.
    let (source, strategy): (AnySource, Box<dyn Strategy>) = match cfg.policy {
        None => (
            AnySource::Webhook(WebhookSource::new(inbox.clone())),
            Box::new(WebhookStep),
        ),
        Some(p) => {
            let src = cfg.policy_source.expect("a policy has a source");
            let in_flight = p.uses(crate::policy::file::Metric::LoadInFlight);
            let strategy = crate::policy::strategy::PolicyStrategy::new(p);
            match &src.path {
                Some(path) => crate::policy::strategy::spawn_reload(
                    path.clone(),
                    strategy.reload_slot(),
                    move |p| cfg.bounds_override.apply(p).map_err(|e| e.to_string()),
                )
                .context("installing the SIGHUP handler")?,
                None => info!(policy = %src.label, "a built-in policy is not reloaded on SIGHUP"),
            }
            let source = match &cfg.metrics {
                Some(MetricsFrom::Prometheus(url)) => {
                    info!(policy = %src.label, prometheus = %url, "deciding with a policy; metrics from Prometheus");
                    let mut prom = Prometheus::new(url.clone(), Duration::from_secs(5));
                    if let Some((user, password)) = &cfg.prometheus_auth {
                        prom = prom.with_basic_auth(user.clone(), password.clone());
                    }
                    AnySource::Prometheus(PrometheusSource::new(inbox.clone(), prom, in_flight))
                }
                Some(MetricsFrom::Scrape(file)) => {
                    info!(policy = %src.label, file_sd = %file.display(), window_ms = cfg.scrape_window.as_millis() as u64, "deciding with a policy; metrics scraped from the discovery targets");
                    AnySource::Scrape(ScrapeSource::new(
                        inbox.clone(),
                        file.clone(),
                        cfg.scrape_window,
                        in_flight,
                    ))
                }
                None => {
                    info!(policy = %src.label, "deciding with a policy; webhooks only");
                    AnySource::Webhook(WebhookSource::new(inbox.clone()))
                }
            };
            (source, Box::new(strategy))
        }
    };
    let (stop, stopping) = crate::shutdown::stop_switch();
    let target = target.with_stop(stopping.clone());
    let heartbeat = telemetry::Heartbeat::default();
    let controller = Controller::new(
        cfg.controller,
        source,
        strategy,
        target,
        shared.clone(),
        metrics.clone(),
    )
    .with_heartbeat(heartbeat.clone());
    let router = server::router(ServerState {
        inbox,
        shared,
        metrics,
        registry: Arc::new(registry),
        token: cfg.token,
        body_timeout: server::BODY_TIMEOUT,
    });
    let liveness = telemetry::Liveness { heartbeat, stall };
    shutdown::serve_while_stopping(listener, router, controller.run(stopping), stop, liveness)
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
        let p = r.policy.as_ref().unwrap();
        let b = r.controller.bounds;
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
}
