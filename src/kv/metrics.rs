//! `poolpilot kv`'s exporter: requests and their latency by route, method and status, and Redis
//! failures by side and kind. Label values come from enums, never from the request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::store::{Side, StoreError};
use crate::telemetry::metrics;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Route {
    root,
    item,
    items,
    metrics,
    healthz,
    ui,
    other,
}

impl Route {
    fn from_path(p: Option<&str>) -> Self {
        match p {
            Some("/") => Route::root,
            Some("/item") => Route::item,
            Some("/items") => Route::items,
            Some("/metrics") => Route::metrics,
            Some("/healthz") => Route::healthz,
            Some("/ui") => Route::ui,
            _ => Route::other,
        }
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    OTHER,
}

impl HttpMethod {
    fn from_method(m: &Method) -> Self {
        match *m {
            Method::GET => HttpMethod::GET,
            Method::HEAD => HttpMethod::HEAD,
            Method::POST => HttpMethod::POST,
            Method::PUT => HttpMethod::PUT,
            Method::DELETE => HttpMethod::DELETE,
            _ => HttpMethod::OTHER,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: HttpMethod,
    code: u16,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum FailureKind {
    unavailable,
    refused,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    side: Side,
    kind: FailureKind,
}

/// The exporter's families and the registry that serves them.
pub struct KvMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    redis_failures: Family<FailureLabels, Counter>,
    pub registry: Arc<Registry>,
}

impl KvMetrics {
    pub fn new() -> Self {
        let mut registry = metrics::registry("kv");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms (a GET answered from a local replica) to 10 s (past any Redis timeout).
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        let redis_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "poolpilot_kv_http_requests",
            "HTTP requests answered, by route, method and status code",
            requests.clone(),
        );
        registry.register_with_unit(
            "poolpilot_kv_http_request_duration",
            "Time to answer an HTTP request, by route, method and status code",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "poolpilot_kv_redis_failures",
            "Redis calls that failed, by side (primary or replica) and kind (unavailable: \
             unreachable, timed out or not ready; refused: Redis answered an error)",
            redis_failures.clone(),
        );
        Self {
            requests,
            duration,
            redis_failures,
            registry: Arc::new(registry),
        }
    }

    pub fn failed(&self, e: &StoreError) {
        let kind = match e {
            StoreError::Unavailable { .. } => FailureKind::unavailable,
            StoreError::Refused { .. } => FailureKind::refused,
        };
        self.redis_failures
            .get_or_create(&FailureLabels {
                side: e.side(),
                kind,
            })
            .inc();
    }
}

impl Default for KvMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The middleware that counts and times every request.
pub async fn observe(State(m): State<Arc<KvMetrics>>, req: Request, next: Next) -> Response {
    let route = Route::from_path(req.extensions().get::<MatchedPath>().map(|m| m.as_str()));
    let method = HttpMethod::from_method(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    let labels = RequestLabels {
        route,
        method,
        code: resp.status().as_u16(),
    };
    m.duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    m.requests.get_or_create(&labels).inc();
    resp
}
