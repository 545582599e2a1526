//! The drain switch a pool member serves at `/admin/drain`, so the autoscaler can take it out of
//! the load balancer's rotation before it evicts it: `POST` drains, `DELETE` undrains, `GET`
//! tells, each with the drain token in `Authorization: Bearer`. While drained, the member's
//! health check answers 503 and the load balancer sends it nothing new.
//!
//! The app and the Redis replica's sidecar (`poolpilot replica`) serve the same switch, so one
//! drain path in the autoscaler serves every kind of member.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::gauge::Gauge;

use crate::exoscale::Secret;
use crate::telemetry::metrics;

/// What a drained member's health check answers.
pub const DRAINING_BODY: &str = "draining";

/// One member's drain switch.
#[derive(Debug)]
pub struct Drain {
    token: Option<Secret>,
    on: AtomicBool,
    gauge: Gauge,
}

impl Drain {
    /// Without a token, draining is disabled: every call to the switch gets 403.
    pub fn new(token: Option<Secret>) -> Arc<Self> {
        Arc::new(Self {
            token,
            on: AtomicBool::new(false),
            gauge: Gauge::default(),
        })
    }

    /// 1 while drained (register it in the member's registry).
    pub fn gauge(&self) -> Gauge {
        self.gauge.clone()
    }

    pub fn is_draining(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// `/admin/drain`, to merge into the member's router.
    pub fn routes<S: Clone + Send + Sync + 'static>(self: &Arc<Self>) -> Router<S> {
        Router::new()
            .route(
                "/admin/drain",
                get(drain_status).post(drain).delete(undrain),
            )
            .with_state(self.clone())
    }

    /// `None` when the request carries the drain token, else the refusal to send.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let Some(token) = &self.token else {
            return Some(
                (
                    StatusCode::FORBIDDEN,
                    "draining is disabled: start the member with a drain token",
                )
                    .into_response(),
            );
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if token.matches(given) {
            None
        } else {
            Some((StatusCode::UNAUTHORIZED, "a valid drain token is required").into_response())
        }
    }

    fn set(&self, on: bool) -> Response {
        self.on.store(on, Ordering::SeqCst);
        metrics::flag(&self.gauge, on);
        tracing::info!(draining = on, "drain switch");
        body(on)
    }
}

fn body(on: bool) -> Response {
    axum::Json(serde_json::json!({ "draining": on })).into_response()
}

async fn drain(State(d): State<Arc<Drain>>, headers: HeaderMap) -> Response {
    d.refusal(&headers).unwrap_or_else(|| d.set(true))
}

async fn undrain(State(d): State<Arc<Drain>>, headers: HeaderMap) -> Response {
    d.refusal(&headers).unwrap_or_else(|| d.set(false))
}

async fn drain_status(State(d): State<Arc<Drain>>, headers: HeaderMap) -> Response {
    d.refusal(&headers).unwrap_or_else(|| body(d.is_draining()))
}
