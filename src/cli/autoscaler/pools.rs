//! Each pool's settings and control loop. A pool's `[autoscaler.pools.NAME]` table sets its
//! `policy`, `min`, `max` and `drain-port` over everything else; without one, the shared values
//! apply to every pool in the usual order (flag, then variable, then `[autoscaler]`, then the
//! policy's bounds, then the defaults).

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::{AutoscalerArgs, AutoscalerFile, BoundsOverride, MetricsFrom, Resolved};
use crate::autoscaler::pools::{Loop, PoolHandle};
use crate::autoscaler::source::{AnySource, Prometheus, PrometheusSource, ScrapeSource};
use crate::autoscaler::target::Drain;
use crate::autoscaler::{
    Bounds, Controller, ControllerConfig, ExoscalePool, Inbox, Metrics, Shared, Strategy,
    WebhookSource, WebhookStep,
};
use crate::config::{ConfigError, Dur, Layer, PoolRef};
use crate::exoscale::Client;
use crate::telemetry::{Heartbeat, Liveness};

/// `[autoscaler.pools.NAME]`: one pool's own settings, over the `[autoscaler]` ones and over
/// `--min`/`--max`/`--policy`/`--drain-port` (and their variables).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PoolFile {
    /// A policy file or a built-in name, as `--policy` takes it.
    pub policy: Option<String>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub drain_port: Option<u16>,
}

/// One pool, validated.
#[derive(Debug)]
pub struct PoolConfig {
    pub pool: PoolRef,
    pub controller: ControllerConfig,
    pub drain: Option<Drain>,
    pub policy: Option<crate::policy::file::PolicyFile>,
    /// The bounds given explicitly (the pool's table, flags, variables, `[autoscaler]`), which
    /// win over its policy's (applied to `policy` already, and to every reload).
    pub bounds_override: BoundsOverride,
    /// Where the policy came from (its file, for reloads).
    pub policy_source: Option<crate::policy::builtin::Source>,
}

/// `e` with the pool named in its rule, when that helps (several pools, or the pool's table).
fn in_pool(name: &str, say: bool) -> impl Fn(ConfigError) -> ConfigError + '_ {
    move |e| match e {
        ConfigError::Invalid { field, rule } if say => ConfigError::Invalid {
            field,
            rule: format!("{rule} (pool `{name}`)"),
        },
        other => other,
    }
}

pub(super) fn resolve_pool(
    args: &AutoscalerArgs,
    f: &AutoscalerFile,
    pool: PoolRef,
    metrics: Option<&MetricsFrom>,
    several: bool,
) -> Result<PoolConfig, ConfigError> {
    let own = f.pools.get(&pool.name).cloned().unwrap_or_default();
    let say = several || f.pools.contains_key(&pool.name);
    let pool_name = pool.name.clone();
    let named = in_pool(&pool_name, say);
    let min_given = own.min.or(args.min).or(f.min);
    let max_given = own.max.or(args.max).or(f.max);
    let policy_arg = own
        .policy
        .as_ref()
        .or(args.policy.as_ref())
        .or(f.policy.as_ref());
    let (min, max) = (min_given.unwrap_or(1), max_given.unwrap_or(5));
    // With a policy, its bounds fill in what is not given (`BoundsOverride::apply` checks them).
    if policy_arg.is_none() {
        Bounds::new(min, max).map_err(|e| named(ConfigError::invalid(e.field, e.rule)))?;
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
    let source = match policy_arg {
        None => None,
        Some(arg) => Some(
            crate::policy::builtin::load(arg)
                .map_err(|e| named(ConfigError::invalid("policy", e)))?,
        ),
    };
    let policy = match &source {
        None => None,
        Some(src) => {
            let p = src
                .parse()
                .map_err(|e| named(ConfigError::invalid("policy", e)))?;
            let needs_metrics = p
                .checks
                .iter()
                .any(|c| !matches!(c, crate::policy::file::Check::WebhookStep));
            if needs_metrics && metrics.is_none() {
                return Err(named(ConfigError::invalid(
                    "prometheus",
                    "(or --scrape) is required by the policy's target-tracking or threshold checks",
                )));
            }
            Some(p)
        }
    };
    let drain = match args.drain_token.as_ref().map(|t| t.expose().trim()) {
        None | Some("") => None,
        Some(t) => {
            let port = own
                .drain_port
                .or(args.drain_port)
                .or(f.drain_port)
                .unwrap_or(8080);
            if port == 0 {
                return Err(named(ConfigError::invalid(
                    "drain-port",
                    "must be a port number",
                )));
            }
            let wait = args.drain_wait.pick(f.drain_wait, Dur::secs(35)).get();
            if wait > Duration::from_secs(3600) {
                return Err(ConfigError::invalid("drain-wait", "must be at most 1h"));
            }
            Some(Drain {
                token: crate::config::Secret::new(t),
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
        min: min_given,
        max: max_given,
    };
    let policy = policy
        .map(|p| overrides.apply(p))
        .transpose()
        .map_err(&named)?;
    let (min, max) = match &policy {
        Some(p) => (p.policy.min, p.policy.max),
        None => (min, max),
    };
    Ok(PoolConfig {
        policy,
        bounds_override: overrides,
        policy_source: source,
        drain,
        controller: ControllerConfig {
            bounds: Bounds { min, max },
            interval,
            dry_run: args.dry_run || f.dry_run.unwrap_or(false),
            settle_timeout: settle,
        },
        pool,
    })
}

/// How long a pool's loop may go without a step before it counts as stuck (the watchdog then
/// stops pinging): the interval between ticks plus the longest one step may take, which is
/// waiting for an operation (the poll timeout) or a drain and its API calls, each call with its
/// retries and backoff.
fn stall_limit(c: &crate::exoscale::ClientConfig, p: &PoolConfig) -> Duration {
    let retries = c.retry.max_retries;
    let call = c.request_timeout * (retries + 1) + c.retry.max * retries;
    let drain = p.drain.as_ref().map_or(Duration::ZERO, |d| d.wait);
    let step = (c.poll.timeout + call).max(call * 4 + drain);
    p.controller.interval + step + Duration::from_secs(60)
}

/// One pool's HTTP handle and control loop: its target in its zone, its source (narrowed to its
/// own members when the process drives several pools) and its strategy.
pub(super) fn build(
    cfg: &Resolved,
    p: &PoolConfig,
    client: Client,
    metrics: Metrics,
    stopping: crate::shutdown::Stopping,
) -> anyhow::Result<(PoolHandle, Loop<impl Future<Output = ()> + Send + use<>>)> {
    use anyhow::Context as _;
    let name = p.pool.name.as_str();
    let stall = stall_limit(client.config(), p);
    let mut target = ExoscalePool::new(client, p.pool.id);
    if let Some(d) = p.drain.clone() {
        let order: Vec<&str> = d.victims.iter().map(|o| o.as_str()).collect();
        info!(pool = name, port = d.port, wait_ms = d.wait.as_millis() as u64, victims = ?order,
            "scale-in drains the member before evicting it");
        target = target.with_drain(d);
    }
    let bounds = p.controller.bounds;
    info!(
        pool = name,
        pool_id = %p.pool.id,
        zone = %p.pool.zone,
        min = bounds.min,
        max = bounds.max,
        interval_ms = p.controller.interval.as_millis() as u64,
        dry_run = p.controller.dry_run,
        "pool"
    );
    let inbox = Arc::new(Inbox::default());
    let shared = Arc::new(Shared::new(bounds, p.controller.dry_run));
    let own = cfg.several().then_some(p.pool.id);
    // One source and one strategy, chosen here; the controller is the same for all.
    let (source, strategy): (AnySource, Box<dyn Strategy>) = match &p.policy {
        None => (
            AnySource::Webhook(WebhookSource::new(inbox.clone())),
            Box::new(WebhookStep),
        ),
        Some(policy) => {
            let src = p.policy_source.as_ref().expect("a policy has a source");
            let gauge = policy.gauge_metric().and_then(|m| m.gauge());
            let strategy = crate::policy::strategy::PolicyStrategy::new(policy.clone());
            match &src.path {
                Some(path) => {
                    let overrides = p.bounds_override;
                    crate::policy::strategy::spawn_reload(
                        path.clone(),
                        strategy.reload_slot(),
                        move |p| overrides.apply(p).map_err(|e| e.to_string()),
                    )
                    .context("installing the SIGHUP handler")?
                }
                None => {
                    info!(pool = name, policy = %src.label, "a built-in policy is not reloaded on SIGHUP")
                }
            }
            let source = match &cfg.metrics {
                Some(MetricsFrom::Prometheus(url)) => {
                    info!(pool = name, policy = %src.label, prometheus = %url, "deciding with a policy; metrics from Prometheus");
                    let mut prom = Prometheus::new(url.clone(), Duration::from_secs(5));
                    if let Some((user, password)) = &cfg.prometheus_auth {
                        prom = prom.with_basic_auth(user.clone(), password.clone());
                    }
                    let mut s = PrometheusSource::new(inbox.clone(), prom, gauge);
                    if let Some(id) = own {
                        s = s.with_pool(id);
                    }
                    AnySource::Prometheus(s)
                }
                Some(MetricsFrom::Scrape(file)) => {
                    info!(pool = name, policy = %src.label, file_sd = %file.display(), window_ms = cfg.scrape_window.as_millis() as u64, "deciding with a policy; metrics scraped from the discovery targets");
                    let mut s =
                        ScrapeSource::new(inbox.clone(), file.clone(), cfg.scrape_window, gauge);
                    if let Some(id) = own {
                        s = s.with_pool(id);
                    }
                    AnySource::Scrape(s)
                }
                None => {
                    info!(pool = name, policy = %src.label, "deciding with a policy; webhooks only");
                    AnySource::Webhook(WebhookSource::new(inbox.clone()))
                }
            };
            (source, Box::new(strategy))
        }
    };
    let target = target.with_stop(stopping.clone());
    let heartbeat = Heartbeat::default();
    let controller = Controller::new(
        p.controller.clone(),
        source,
        strategy,
        target,
        shared.clone(),
        metrics,
    )
    .with_pool(name, Some(p.pool.id))
    .with_heartbeat(heartbeat.clone());
    let handle = PoolHandle {
        name: name.to_owned(),
        id: Some(p.pool.id),
        zone: Some(p.pool.zone),
        inbox,
        shared,
    };
    let run = Loop {
        run: controller.run(stopping),
        liveness: Liveness { heartbeat, stall },
    };
    Ok((handle, run))
}
