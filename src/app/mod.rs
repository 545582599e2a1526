//! The deliberately slow app that pool members run: a drop-in for the course's
//! http-load-generator, with an exporter and a drain switch for graceful scale-in.
//!
//! | route | answer |
//! |---|---|
//! | `/health` | `OK` (503 `draining` while drained) |
//! | `/load` | keeps every core busy for `--load-seconds`, then `Load generation done.` |
//! | `/metrics` | Prometheus metrics |
//! | `/homersimpson` | an SVG drawing of Homer Simpson |
//! | `/covilha` | the current time in Covilhã, Portugal |
//! | `/admin/drain` | `POST` drains, `DELETE` undrains, `GET` tells (token required) |
//!
//! Any method is accepted on the course's routes, as the original did.

pub mod burn;
pub mod drain;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::exoscale::Secret;
use crate::telemetry::metrics;

/// The course app's exact answers.
pub const HEALTH_BODY: &str = "OK";
pub const LOAD_BODY: &str = "Load generation done.";
pub use drain::DRAINING_BODY;

const HOMER_SVG: &str = include_str!("homer.svg");

/// What the app needs to run.
#[derive(Clone, Debug)]
pub struct AppConfig {
    pub listen: SocketAddr,
    /// How long one `/load` keeps the cores busy.
    pub load_duration: Duration,
    /// The cores `/load` keeps busy (every core by default; fractional in the local mode).
    pub capacity: f64,
    /// Required in `Authorization: Bearer` for `/admin/drain`; without it, draining is disabled.
    pub drain_token: Option<Secret>,
}

/// A source of the current time, injectable for tests.
pub type WallClock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Route {
    health,
    load,
    metrics,
    homersimpson,
    covilha,
    drain,
    other,
}

impl Route {
    fn from_path(p: Option<&str>) -> Self {
        match p {
            Some("/health") => Route::health,
            Some("/load") => Route::load,
            Some("/metrics") => Route::metrics,
            Some("/homersimpson") => Route::homersimpson,
            Some("/covilha") => Route::covilha,
            Some("/admin/drain") => Route::drain,
            _ => Route::other,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Route,
}

struct AppMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabel, Histogram>,
    load_in_flight: Gauge,
}

struct AppState {
    cfg: AppConfig,
    drain: Arc<drain::Drain>,
    metrics: AppMetrics,
    registry: Arc<Registry>,
    clock: WallClock,
    burner: burn::Burner,
}

/// The app's router with the system clock.
pub fn router(cfg: AppConfig) -> Router {
    router_with_clock(cfg, Arc::new(Utc::now))
}

/// The app's router; tests pass a fixed clock.
pub fn router_with_clock(cfg: AppConfig, clock: WallClock) -> Router {
    let burner = burn::Burner::new(cfg.capacity);
    router_with_burner(cfg, clock, burner)
}

/// The app's router with its `/load` burner (the local mode's node stand-in reads it too).
pub fn router_with_burner(cfg: AppConfig, clock: WallClock, burner: burn::Burner) -> Router {
    let mut registry = metrics::registry("app");
    let m = AppMetrics {
        requests: Family::default(),
        duration: Family::new_with_constructor(|| {
            // 1 ms to ~65 s: /health is fast, /load takes its load duration.
            Histogram::new([
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
            ])
        }),
        load_in_flight: Gauge::default(),
    };
    registry.register(
        "poolpilot_app_http_requests",
        "HTTP requests answered, by route and status code",
        m.requests.clone(),
    );
    registry.register_with_unit(
        "poolpilot_app_http_request_duration",
        "Time to answer an HTTP request, by route",
        prometheus_client::registry::Unit::Seconds,
        m.duration.clone(),
    );
    registry.register(
        "poolpilot_app_load_in_flight",
        "/load requests burning CPU now",
        m.load_in_flight.clone(),
    );
    let drain = drain::Drain::new(cfg.drain_token.clone());
    registry.register(
        "poolpilot_app_draining",
        "1 while drained: /health fails so the load balancer sends nothing new",
        drain.gauge(),
    );
    let state = Arc::new(AppState {
        cfg,
        burner,
        drain: drain.clone(),
        metrics: m,
        registry: Arc::new(registry),
        clock,
    });
    Router::new()
        .route("/health", any(health))
        .route("/load", any(load))
        .route("/homersimpson", any(homer))
        .route("/covilha", any(covilha))
        .route("/metrics", get(metrics_text))
        .merge(drain.routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn observe(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = Route::from_path(req.extensions().get::<MatchedPath>().map(|m| m.as_str()));
    let started = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .duration
        .get_or_create(&RouteLabel { route })
        .observe(started.elapsed().as_secs_f64());
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            code: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, DRAINING_BODY).into_response()
    } else {
        HEALTH_BODY.into_response()
    }
}

async fn load(State(s): State<Arc<AppState>>) -> Response {
    s.metrics.load_in_flight.inc();
    // Decrement even if the client goes away mid-burn and this future is dropped.
    struct InFlight<'a>(&'a Gauge);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let _guard = InFlight(&s.metrics.load_in_flight);
    s.burner.hold(s.cfg.load_duration).await;
    LOAD_BODY.into_response()
}

async fn homer() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], HOMER_SVG).into_response()
}

/// The local time in Covilhã (Europe/Lisbon, from the time-zone database bundled in the binary).
pub fn covilha_time(now: DateTime<Utc>) -> String {
    let local = now.with_timezone(&chrono_tz::Europe::Lisbon);
    format!(
        "Covilhã, Portugal: {}",
        local.format("%Y-%m-%d %H:%M:%S %Z (UTC%:z)")
    )
}

async fn covilha(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        covilha_time((s.clock)()),
    )
        .into_response()
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    metrics::handler(State(s.registry.clone())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn covilha_follows_lisbon_across_the_spring_change() {
        // 2026-03-29 01:00 UTC: Portugal moves from WET (UTC+0) to WEST (UTC+1).
        let before = Utc.with_ymd_and_hms(2026, 3, 29, 0, 59, 59).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
        assert_eq!(
            covilha_time(before),
            "Covilhã, Portugal: 2026-03-29 00:59:59 WET (UTC+00:00)"
        );
        assert_eq!(
            covilha_time(after),
            "Covilhã, Portugal: 2026-03-29 02:00:00 WEST (UTC+01:00)"
        );
    }

    #[test]
    fn covilha_follows_lisbon_across_the_autumn_change() {
        // 2026-10-25 01:00 UTC: back from WEST to WET; 01:xx local happens twice.
        let before = Utc.with_ymd_and_hms(2026, 10, 25, 0, 59, 59).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 10, 25, 1, 0, 0).unwrap();
        assert_eq!(
            covilha_time(before),
            "Covilhã, Portugal: 2026-10-25 01:59:59 WEST (UTC+01:00)"
        );
        assert_eq!(
            covilha_time(after),
            "Covilhã, Portugal: 2026-10-25 01:00:00 WET (UTC+00:00)"
        );
    }
}
