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
use prometheus_client::metrics::gauge::Gauge;
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
    health,
    drain,
    ui,
    other,
}

impl Route {
    /// The API's own routes: what a client asks, not the operators' and balancers' checks.
    fn is_api(self) -> bool {
        matches!(self, Route::root | Route::item | Route::items | Route::ui)
    }

    fn from_path(p: Option<&str>) -> Self {
        match p {
            Some("/") => Route::root,
            Some("/item") => Route::item,
            Some("/items") => Route::items,
            Some("/metrics") => Route::metrics,
            Some("/healthz") => Route::healthz,
            Some("/health") => Route::health,
            Some("/admin/drain") => Route::drain,
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
    per_second: Gauge,
    recent: Recent,
    pub registry: Arc<Registry>,
}

/// API requests counted per wall-clock second over the last [`Recent::SECONDS`] seconds.
#[derive(Debug, Default)]
pub struct Recent(std::sync::Mutex<std::collections::VecDeque<(u64, u64)>>);

impl Recent {
    /// The whole seconds the rate is taken over.
    pub const SECONDS: u64 = 5;

    pub fn hit(&self, second: u64) {
        let mut q = self.0.lock().expect("recent lock");
        match q.back_mut() {
            Some((s, n)) if *s == second => *n += 1,
            _ => q.push_back((second, 1)),
        }
        while q.front().is_some_and(|(s, _)| *s + Self::SECONDS < second) {
            q.pop_front();
        }
    }

    /// Requests per second over the [`Self::SECONDS`] whole seconds before `second`.
    pub fn rate(&self, second: u64) -> f64 {
        let q = self.0.lock().expect("recent lock");
        let from = second.saturating_sub(Self::SECONDS);
        let n: u64 = q
            .iter()
            .filter(|(s, _)| *s >= from && *s < second)
            .map(|(_, n)| n)
            .sum();
        n as f64 / Self::SECONDS as f64
    }
}

fn unix_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl KvMetrics {
    /// `draining`: the drain switch's gauge.
    pub fn new(draining: Gauge) -> Self {
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
        let per_second = Gauge::default();
        registry.register(
            "poolpilot_kv_http_requests_per_second",
            "API requests (not /metrics, /health, /healthz, /admin/drain) per second over the last \
             5 whole seconds: the member's load, what the autoscaler tracks",
            per_second.clone(),
        );
        registry.register(
            "poolpilot_kv_draining",
            "1 while drained: /health fails so the load balancer sends nothing new",
            draining,
        );
        Self {
            requests,
            duration,
            redis_failures,
            per_second,
            recent: Recent::default(),
            registry: Arc::new(registry),
        }
    }

    /// Sets the per-second gauge from the recent counts (before each scrape).
    pub fn refresh(&self) {
        self.per_second
            .set(self.recent.rate(unix_second()).round() as i64);
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

/// The middleware that counts and times every request.
pub async fn observe(State(m): State<Arc<KvMetrics>>, req: Request, next: Next) -> Response {
    let route = Route::from_path(req.extensions().get::<MatchedPath>().map(|m| m.as_str()));
    let method = HttpMethod::from_method(req.method());
    let started = Instant::now();
    if route.is_api() {
        m.recent.hit(unix_second());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_over_the_last_five_whole_seconds() {
        let r = Recent::default();
        for (second, hits) in [(100, 3), (101, 5), (102, 0), (103, 7), (104, 5), (105, 9)] {
            for _ in 0..hits {
                r.hit(second);
            }
        }
        // 100..=104: 3 + 5 + 0 + 7 + 5 = 20 in 5 s; 105 is not over yet.
        assert_eq!(r.rate(105), 4.0);
        // 101..=105 = 26.
        assert_eq!(r.rate(106), 5.2);
        // Long quiet: nothing.
        assert_eq!(r.rate(200), 0.0);
        r.hit(200);
        assert_eq!(r.0.lock().unwrap().len(), 1, "old seconds are dropped");
    }
}
