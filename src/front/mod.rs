//! `poolpilot front`: one entry point over several backends (pools in several zones, each
//! behind its own zonal NLB), so that every request gets a successful answer while one backend
//! (a zone) is down.
//!
//! ```text
//!  client ──► front :80 ──► pick (round robin over backends in rotation)
//!                   │            │ non-200 / timeout / refused ──► record ──► eject after N
//!                   │            └──► retry on another backend (attempt limit, retry budget)
//!                   └─ admin :9180  GET /v1/backends, /metrics, /healthz
//!  prober: every ejected backend, once its cool-down is over, GET /health ──► 200 re-admits
//! ```
//!
//! The parts: [`backend`] (the ejection state machine, on a clock passed in), [`budget`] (how
//! many retries the load allows), [`pool`] (each backend's keep-alive connections and its
//! address), [`proxy`] (forwarding one request), [`nlb`] (`--pool`: the pools' NLBs found and
//! followed through the API). The main listener ([`serve`]) has the other daemons' limits
//! (header timeout, connection limit, graceful stop on SIGTERM), so a slow client holds one
//! connection slot and nothing else.
//!
//! Anchors: Envoy's outlier detection (consecutive 5xx, ejection time growing with each
//! ejection, max ejection percent) and retry budgets, HAProxy's `observe layer7`/`error-limit`
//! and `retry-on`/`redispatch`, Linkerd's failure accrual.

pub mod backend;
pub mod budget;
pub mod nlb;
pub mod pool;
pub mod proxy;
mod serve;

pub use serve::serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::info;

use crate::shutdown::{self, Limits};
use crate::telemetry;
use backend::{Backends, Ejection, Outcome, State as BackendState};
use budget::RetryBudget;

/// A validated configuration (see `cli::front` for the flags and defaults).
#[derive(Clone, Debug)]
pub struct FrontConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// (name, base URL without a trailing slash)
    pub backends: Vec<(String, String)>,
    pub ejection: Ejection,
    /// Retries after the first attempt, each on another backend.
    pub retries: u32,
    /// Retries under way may be this fraction of the requests under way, at least `retry_min`.
    pub retry_ratio: f64,
    pub retry_min: u64,
    /// Also retry POST and PATCH (their bodies are kept for it, as the others').
    pub retry_non_idempotent: bool,
    /// Bodies up to this size are kept for retries; a larger one on a retryable method is 413.
    pub retry_body_limit: usize,
    pub try_timeout: Duration,
    pub connect_timeout: Duration,
    pub probe_interval: Duration,
    pub health_path: String,
    pub limits: Limits,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    backend: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

/// The front's metrics.
#[derive(Debug)]
pub struct Metrics {
    responses: Family<CodeLabel, Counter>,
    /// `responses{code="200"}`, resolved once: nearly every response.
    responses_ok: Counter,
    attempts: Family<AttemptLabels, Counter>,
    /// Each backend's attempt counters by outcome (ok, non200, timeout, error), resolved once:
    /// the hot path increments without building labels.
    attempt_counters: Vec<[Counter; 4]>,
    ejections: Family<BackendLabel, Counter>,
    ejected: Family<BackendLabel, Gauge>,
    all_failing: Gauge,
    pub retries: Counter,
    pub retries_denied: Counter,
    pub duration: Histogram,
    /// `--pool`: failed listings of a zone's load balancers, and NLB address changes followed.
    pub pool_lookup_errors: Counter,
    pub pool_address_changes: Counter,
}

impl Metrics {
    fn new(registry: &mut Registry, backends: &[(String, String)]) -> Self {
        let attempts: Family<AttemptLabels, Counter> = Family::default();
        let attempt_counters = backends
            .iter()
            .map(|(name, _)| {
                [
                    Outcome::Ok,
                    Outcome::Non200,
                    Outcome::Timeout,
                    Outcome::Error,
                ]
                .map(|o| {
                    attempts
                        .get_or_create(&AttemptLabels {
                            backend: name.clone(),
                            outcome: o.label().to_owned(),
                        })
                        .clone()
                })
            })
            .collect();
        let responses: Family<CodeLabel, Counter> = Family::default();
        let responses_ok = responses.get_or_create(&CodeLabel { code: 200 }).clone();
        let m = Self {
            responses,
            responses_ok,
            attempts,
            attempt_counters,
            ejections: Family::default(),
            ejected: Family::default(),
            all_failing: Gauge::default(),
            retries: Counter::default(),
            retries_denied: Counter::default(),
            duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
            ]),
            pool_lookup_errors: Counter::default(),
            pool_address_changes: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("poolpilot_front");
        r.register(
            "responses",
            "Responses to clients, by status code",
            m.responses.clone(),
        );
        r.register(
            "backend_attempts",
            "Attempts on each backend, by outcome (ok, non200, timeout, error)",
            m.attempts.clone(),
        );
        r.register(
            "backend_ejections",
            "Ejections of each backend",
            m.ejections.clone(),
        );
        r.register(
            "backend_ejected",
            "1 while the backend is ejected (out of rotation)",
            m.ejected.clone(),
        );
        r.register(
            "all_backends_failing",
            "1 while no backend is healthy (the least bad keeps the traffic)",
            m.all_failing.clone(),
        );
        r.register(
            "retries",
            "Attempts after the first, on another backend",
            m.retries.clone(),
        );
        r.register(
            "retries_denied",
            "Retries the retry budget refused",
            m.retries_denied.clone(),
        );
        r.register(
            "pool_lookup_errors",
            "--pool: failed listings of a zone's load balancers (the last known addresses stay)",
            m.pool_lookup_errors.clone(),
        );
        r.register(
            "pool_address_changes",
            "--pool: a pool's NLB address changed and the backend followed it",
            m.pool_address_changes.clone(),
        );
        r.register(
            "request_duration_seconds",
            "From a client's request to the start of the answer",
            m.duration.clone(),
        );
        m
    }

    fn client_response(&self, status: StatusCode) {
        if status == StatusCode::OK {
            self.responses_ok.inc();
            return;
        }
        self.responses
            .get_or_create(&CodeLabel {
                code: status.as_u16(),
            })
            .inc();
    }

    fn attempt(&self, backend: usize, outcome: Outcome) {
        let k = match outcome {
            Outcome::Ok => 0,
            Outcome::Non200 => 1,
            Outcome::Timeout => 2,
            Outcome::Error => 3,
        };
        self.attempt_counters[backend][k].inc();
    }

    fn ejections(&self, backend: &str) {
        self.ejections
            .get_or_create(&BackendLabel {
                backend: backend.to_owned(),
            })
            .inc();
    }

    fn refresh(&self, backends: &Backends) {
        for s in backends.status(Instant::now()) {
            self.ejected
                .get_or_create(&BackendLabel { backend: s.name })
                .set(i64::from(s.state == BackendState::Ejected));
        }
        telemetry::metrics::flag(&self.all_failing, backends.all_failing());
    }
}

/// Everything a request handler needs.
pub struct Front {
    pub cfg: FrontConfig,
    pub backends: Backends,
    pub budget: RetryBudget,
    pub metrics: Metrics,
}

impl Front {
    pub fn new(cfg: FrontConfig, registry: &mut Registry) -> Self {
        let backends = Backends::new(cfg.backends.clone(), cfg.ejection, cfg.connect_timeout);
        let metrics = Metrics::new(registry, &cfg.backends);
        metrics.refresh(&backends);
        Self {
            budget: RetryBudget::new(cfg.retry_ratio, cfg.retry_min),
            backends,
            metrics,
            cfg,
        }
    }

    /// The client-facing router: every path goes to a backend.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(proxy::forward)
            .with_state(self.clone())
    }

    /// Probes the ejected backends whose cool-down is over, every `probe_interval`, until
    /// `stop` says so; closes the idle backend connections unused for too long.
    pub async fn probe_loop(self: Arc<Self>, mut stop: shutdown::Stopping) {
        let mut tick = tokio::time::interval(self.cfg.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait() => return,
                _ = tick.tick() => {}
            }
            for i in self.backends.due_for_probe(Instant::now()) {
                let b = self.backends.get(i);
                let ok = matches!(
                    tokio::time::timeout(self.cfg.try_timeout, self.probe(b)).await,
                    Ok(Ok(true))
                );
                if ok {
                    self.backends.readmit(i);
                    info!(backend = %b.name, "backend answered its health check: back in rotation");
                }
            }
            let now = Instant::now();
            for i in 0..self.backends.len() {
                self.backends.get(i).upstream.reap(now);
            }
            self.metrics.refresh(&self.backends);
        }
    }

    /// One health check: `GET health_path` answered 200 (its body read, so the connection
    /// is kept).
    async fn probe(&self, b: &backend::Backend) -> Result<bool, pool::UpstreamError> {
        let conn = b.upstream.checkout().await?;
        let uri = format!("{}{}", conn.target.prefix, self.cfg.health_path)
            .parse::<axum::http::Uri>()
            .map_err(|_| pool::UpstreamError::Target(conn.target.base.clone()))?;
        let req = axum::http::Request::get(uri)
            .header(axum::http::header::HOST, conn.target.host.clone())
            .body(pool::kept(bytes::Bytes::new()))
            .expect("a probe request");
        let resp = b.upstream.send(conn, req).await?;
        let ok = resp.status() == StatusCode::OK;
        let _ = http_body_util::Limited::new(resp.into_body(), 1 << 16)
            .collect()
            .await;
        Ok(ok)
    }
}

async fn backends_status(State(front): State<Arc<Front>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "all-failing": front.backends.all_failing(),
        "backends": front.backends.status(Instant::now()),
    }))
}

/// The admin listener: the status page, metrics, liveness.
pub fn admin_router(front: Arc<Front>, registry: Arc<Registry>) -> axum::Router {
    axum::Router::new()
        .route("/v1/backends", get(backends_status).with_state(front))
        .route(
            "/metrics",
            get(telemetry::metrics::handler).with_state(registry),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Finds the pools' NLBs (`pools`, appended to the backends as `name=http://NLB:PORT`), binds
/// both listeners, serves until SIGTERM, then lets requests under way finish.
pub async fn run(mut cfg: FrontConfig, pools: Option<nlb::Pools>) -> anyhow::Result<()> {
    let first_pool = cfg.backends.len();
    if let Some(p) = &pools {
        for (spec, base) in p.pools.iter().zip(nlb::resolve(p).await?) {
            info!(backend = %spec.name, pool = %spec.pool, zone = spec.zone.name(), url = %base, "found the pool's NLB");
            cfg.backends.push((spec.name.clone(), base));
        }
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let admin = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.admin_listen))?;
    let mut registry = telemetry::metrics::registry("front");
    let limits = cfg.limits;
    let front = Arc::new(Front::new(cfg, &mut registry));
    info!(
        addr = %listener.local_addr().context("listener address")?,
        admin = %admin.local_addr().context("admin address")?,
        backends = front.backends.len(),
        "front serving"
    );
    let (stop, stopping) = shutdown::stop_switch();
    let prober = tokio::spawn(front.clone().probe_loop(stopping.clone()));
    let follower =
        pools.map(|p| tokio::spawn(nlb::follow(front.clone(), p, first_pool, stopping.clone())));
    let admin_app = admin_router(front.clone(), Arc::new(registry));
    let mut admin_stop = stopping.clone();
    let admin_task = tokio::spawn(async move {
        shutdown::serve_until(admin, admin_app, async move { admin_stop.wait().await }).await
    });
    telemetry::notify_ready();
    let _watchdog = telemetry::spawn_watchdog();
    let served = serve(
        front.clone(),
        listener,
        async move {
            shutdown::signal().await;
            stop.stop();
        },
        limits,
    )
    .await;
    let _ = prober.await;
    if let Some(f) = follower {
        let _ = f.await;
    }
    let _ = admin_task.await;
    served.context("front server")
}
