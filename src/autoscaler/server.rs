//! The autoscaler's HTTP side: webhooks in, decisions and health out.
//!
//! | route | |
//! |---|---|
//! | `GET /up`, `GET /down` | the course checker's plain trigger, no body |
//! | `POST`/`PUT /up`, `/down` | a Grafana (unified or legacy) or Alertmanager body; the route gives the direction |
//! | `POST`/`PUT /webhook` | the same bodies; each firing alert's `scale` label gives the direction |
//! | `GET /v1/decisions` | the last 100 decisions, oldest first |
//! | `GET /metrics`, `/healthz`, `/readyz` | metrics; alive; ready once the pool was read |
//!
//! Answers: 200 with what was recorded (also at a bound, so that senders do not retry); 400 with
//! the reason for a malformed body; 401 without the token when one is set (Bearer, or the
//! password of basic auth); 405 for other methods; 408 for a body not received within 10 s;
//! 413 over 1 MiB; 415 for a body whose `Content-Type` is not JSON. Request headers must arrive
//! within 30 s and at most 1024 connections are open at once ([`crate::shutdown::Limits`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::source::webhook::{self, Direction, Firing, Format, Route};
use super::{Inbox, Metrics, Shared};
use crate::exoscale::Secret;
use crate::telemetry;

/// Larger bodies get 413 (Grafana's and Alertmanager's are a few KiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A body not received whole within this gets 408: a sender that trickles bytes (a slow-loris)
/// cannot hold a request open. Grafana's and Alertmanager's arrive in milliseconds.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone)]
pub struct ServerState {
    pub inbox: Arc<Inbox>,
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
    pub registry: Arc<Registry>,
    pub token: Option<Secret>,
    /// [`BODY_TIMEOUT`] (shorter in tests).
    pub body_timeout: std::time::Duration,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route(
            "/up",
            any(|s, m, h, b| hook(s, m, h, b, Route::Fixed(Direction::Up))),
        )
        .route(
            "/down",
            any(|s, m, h, b| hook(s, m, h, b, Route::Fixed(Direction::Down))),
        )
        .route(
            "/webhook",
            any(|s, m, h, b| hook(s, m, h, b, Route::Labelled)),
        )
        .route("/v1/decisions", get(decisions))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Past the limit the rest of the body is still read (up to this much) and thrown away, so that
/// the sender finishes writing and reads the 413 instead of a reset connection.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

enum BodyError {
    TooLarge,
    Read(String),
}

async fn read_limited(mut body: Body) -> Result<Bytes, BodyError> {
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= BODY_LIMIT {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                return Err(BodyError::TooLarge);
            }
        }
    }
    if seen > BODY_LIMIT {
        Err(BodyError::TooLarge)
    } else {
        Ok(Bytes::from(buf))
    }
}

fn route_name(route: Route) -> &'static str {
    match route {
        Route::Fixed(Direction::Up) => "/up",
        Route::Fixed(Direction::Down) => "/down",
        Route::Labelled => "/webhook",
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn authorized(token: &Secret, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given: Option<String> = if let Some(t) = value.strip_prefix("Bearer ") {
        Some(t.trim().to_owned())
    } else if let Some(b) = value.strip_prefix("Basic ") {
        base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, p)| p.to_owned()))
    } else {
        None
    };
    given.is_some_and(|g| token.matches(&g))
}

fn is_json(headers: &HeaderMap) -> Option<bool> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(essence == "application/json" || essence.ends_with("+json"))
}

async fn hook(
    State(s): State<ServerState>,
    method: Method,
    headers: HeaderMap,
    body: Body,
    route: Route,
) -> Response {
    let name = route_name(route);
    if let Some(token) = &s.token
        && !authorized(token, &headers)
    {
        s.metrics.webhook(name, "unknown", "unauthorized");
        let mut r = refuse(
            StatusCode::UNAUTHORIZED,
            "a valid webhook token is required",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"poolpilot\""),
        );
        return r;
    }
    let plain_allowed = matches!(route, Route::Fixed(_));
    let allowed =
        method == Method::POST || method == Method::PUT || (plain_allowed && method == Method::GET);
    if !allowed {
        s.metrics.webhook(name, "unknown", "method_not_allowed");
        let allow = if plain_allowed {
            "GET, POST, PUT"
        } else {
            "POST, PUT"
        };
        let mut r = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not accepted here (use {allow})"),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        return r;
    }
    let Ok(read) = tokio::time::timeout(s.body_timeout, read_limited(body)).await else {
        s.metrics.webhook(name, "unknown", "timeout");
        return refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} ms",
                s.body_timeout.as_millis()
            ),
        );
    };
    let body = match read {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            s.metrics.webhook(name, "unknown", "too_large");
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {BODY_LIMIT} bytes"),
            );
        }
        Err(BodyError::Read(e)) => {
            s.metrics.webhook(name, "unknown", "bad_request");
            return refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}"));
        }
    };
    let (format, firing, ignored) = if method == Method::GET || body.is_empty() {
        match route {
            Route::Fixed(direction) => (
                Format::Plain,
                vec![Firing {
                    direction,
                    name: format!("{method} {name}"),
                }],
                vec![],
            ),
            Route::Labelled => {
                s.metrics.webhook(name, "unknown", "bad_request");
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "/webhook needs a Grafana or Alertmanager body",
                );
            }
        }
    } else {
        if is_json(&headers) == Some(false) {
            s.metrics.webhook(name, "unknown", "unsupported_media_type");
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (Content-Type: application/json)",
            );
        }
        match webhook::parse(&body, route) {
            Ok(p) => (p.format, p.firing, p.ignored),
            Err(reason) => {
                s.metrics.webhook(name, "unknown", "bad_request");
                return refuse(StatusCode::BAD_REQUEST, reason);
            }
        }
    };
    s.inbox.record(format, &firing);
    let up = firing
        .iter()
        .filter(|f| f.direction == Direction::Up)
        .count();
    let down = firing.len() - up;
    s.metrics.webhook(
        name,
        format.as_str(),
        if firing.is_empty() {
            "ignored"
        } else {
            "recorded"
        },
    );
    let bounds = s.shared.bounds;
    let size = s.shared.last_size();
    let note = match size {
        Some(n) if up > 0 && n >= bounds.max => Some(format!(
            "the pool is at its maximum ({}): the next tick will not scale up",
            bounds.max
        )),
        Some(n) if up == 0 && down > 0 && n <= bounds.min => Some(format!(
            "the pool is at its minimum ({}): the next tick will not scale down",
            bounds.min
        )),
        _ if firing.is_empty() => Some("nothing firing: nothing recorded".to_owned()),
        _ => Some("recorded for the next tick".to_owned()),
    };
    axum::Json(json!({
        "format": format.as_str(),
        "recorded": { "up": up, "down": down },
        "ignored": ignored,
        "pool": { "size": size, "min": bounds.min, "max": bounds.max },
        "dry-run": s.shared.dry_run,
        "note": note,
    }))
    .into_response()
}

async fn decisions(State(s): State<ServerState>) -> Response {
    axum::Json(s.shared.decisions()).into_response()
}

async fn readyz(State(s): State<ServerState>) -> Response {
    if s.shared.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the pool has not been read yet\n",
        )
            .into_response()
    }
}

async fn metrics_text(State(s): State<ServerState>) -> Response {
    telemetry::metrics::handler(State(s.registry)).await
}
