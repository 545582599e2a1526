//! The autoscaler's HTTP side: webhooks in, decisions and health out.
//!
//! | route | |
//! |---|---|
//! | `GET /up`, `GET /down` | the course checker's plain trigger, no body |
//! | `POST`/`PUT /up`, `/down` | a Grafana (unified or legacy) or Alertmanager body; the route gives the direction |
//! | `POST`/`PUT /webhook` | the same bodies; each firing alert's `scale` label gives the direction |
//! | `/up/NAME`, `/down/NAME`, `/webhook/NAME` | the same, for the pool named NAME (`--pool NAME=...`) |
//! | `GET /v1/decisions` | every pool's last 100 decisions, oldest first (each names its pool) |
//! | `GET /v1/decisions/NAME` | one pool's |
//! | `GET /metrics`, `/healthz`, `/readyz` | metrics; alive; ready once every pool was read |
//!
//! With one pool the routes without a name act on it. With several, a body's firing alerts are
//! routed each by its `pool` label (a name) or its `exoscale_instance_pool_id` label (an id); a
//! firing alert with neither, or naming no configured pool, gets 422 for the whole request and
//! nothing is recorded (a plain `GET /up` too: it cannot say which pool). An unknown NAME: 404.
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
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::Metrics;
use super::pools::{PoolHandle, Pools};
use super::source::webhook::{self, Direction, Firing, Format, Route};
use crate::exoscale::Secret;
use crate::telemetry;

/// Larger bodies get 413 (Grafana's and Alertmanager's are a few KiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A body not received whole within this gets 408: a sender that trickles bytes (a slow-loris)
/// cannot hold a request open. Grafana's and Alertmanager's arrive in milliseconds.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone)]
pub struct ServerState {
    pub pools: Pools,
    pub metrics: Metrics,
    pub registry: Arc<Registry>,
    pub token: Option<Secret>,
    /// [`BODY_TIMEOUT`] (shorter in tests).
    pub body_timeout: std::time::Duration,
}

/// Which pool a request is for: named in the path, or any (the only one, or by label).
enum Which {
    Any,
    Named(String),
}

pub fn router(state: ServerState) -> Router {
    const UP: Route = Route::Fixed(Direction::Up);
    const DOWN: Route = Route::Fixed(Direction::Down);
    Router::new()
        .route("/up", any(|s, m, h, b| hook(s, m, h, b, UP, Which::Any)))
        .route(
            "/down",
            any(|s, m, h, b| hook(s, m, h, b, DOWN, Which::Any)),
        )
        .route(
            "/webhook",
            any(|s, m, h, b| hook(s, m, h, b, Route::Labelled, Which::Any)),
        )
        .route(
            "/up/{pool}",
            any(|s, Path(p), m, h, b| hook(s, m, h, b, UP, Which::Named(p))),
        )
        .route(
            "/down/{pool}",
            any(|s, Path(p), m, h, b| hook(s, m, h, b, DOWN, Which::Named(p))),
        )
        .route(
            "/webhook/{pool}",
            any(|s, Path(p), m, h, b| hook(s, m, h, b, Route::Labelled, Which::Named(p))),
        )
        .route("/v1/decisions", get(decisions))
        .route("/v1/decisions/{pool}", get(pool_decisions))
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

/// Where a request's firing alerts go: one pool (by path, or the only one), or by label.
fn targets<'a>(
    pools: &'a Pools,
    which: &Which,
    firing: &[Firing],
    get_without_body: bool,
) -> Result<Vec<&'a PoolHandle>, (StatusCode, String)> {
    if let Which::Named(name) = which {
        return pools.by_name(name).map(|p| vec![p; firing.len()]).ok_or((
            StatusCode::NOT_FOUND,
            format!("no pool named `{name}` (pools: {})", pools.names()),
        ));
    }
    if let Some(p) = pools.only() {
        return Ok(vec![p; firing.len()]);
    }
    let several = || {
        format!(
            "this autoscaler drives several pools ({}): use /webhook/NAME, or give each firing \
             alert a `pool` (name) or `exoscale_instance_pool_id` label",
            pools.names()
        )
    };
    if get_without_body {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, several()));
    }
    firing
        .iter()
        .map(|f| match &f.pool {
            None => Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the alert `{}` names no pool; {}", f.name, several()),
            )),
            Some(l) => pools.by_label(l).ok_or_else(|| {
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "the alert `{}` names a pool ({l:?}) that is not one of {}",
                        f.name,
                        pools.names()
                    ),
                )
            }),
        })
        .collect()
}

/// The pool a request's metrics count for before its alerts are read.
fn early_pool<'a>(pools: &'a Pools, which: &Which) -> &'a str {
    match which {
        Which::Named(n) => pools.by_name(n).map_or("", |p| p.name.as_str()),
        Which::Any => pools.only().map_or("", |p| p.name.as_str()),
    }
}

async fn hook(
    State(s): State<ServerState>,
    method: Method,
    headers: HeaderMap,
    body: Body,
    route: Route,
    which: Which,
) -> Response {
    let name = route_name(route);
    let pool = early_pool(&s.pools, &which).to_owned();
    if let Some(token) = &s.token
        && !authorized(token, &headers)
    {
        s.metrics.webhook(&pool, name, "unknown", "unauthorized");
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
        s.metrics
            .webhook(&pool, name, "unknown", "method_not_allowed");
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
        s.metrics.webhook(&pool, name, "unknown", "timeout");
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
            s.metrics.webhook(&pool, name, "unknown", "too_large");
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {BODY_LIMIT} bytes"),
            );
        }
        Err(BodyError::Read(e)) => {
            s.metrics.webhook(&pool, name, "unknown", "bad_request");
            return refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}"));
        }
    };
    let plain = method == Method::GET || body.is_empty();
    let (format, firing, ignored) = if plain {
        match route {
            Route::Fixed(direction) => (
                Format::Plain,
                vec![Firing {
                    direction,
                    name: format!("{method} {name}"),
                    pool: None,
                }],
                vec![],
            ),
            Route::Labelled => {
                s.metrics.webhook(&pool, name, "unknown", "bad_request");
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "/webhook needs a Grafana or Alertmanager body",
                );
            }
        }
    } else {
        if is_json(&headers) == Some(false) {
            s.metrics
                .webhook(&pool, name, "unknown", "unsupported_media_type");
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (Content-Type: application/json)",
            );
        }
        match webhook::parse(&body, route) {
            Ok(p) => (p.format, p.firing, p.ignored),
            Err(reason) => {
                s.metrics.webhook(&pool, name, "unknown", "bad_request");
                return refuse(StatusCode::BAD_REQUEST, reason);
            }
        }
    };
    let to = match targets(&s.pools, &which, &firing, plain) {
        Ok(t) => t,
        Err((status, why)) => {
            let result = if status == StatusCode::NOT_FOUND {
                "unknown_pool"
            } else {
                "no_pool"
            };
            s.metrics.webhook(&pool, name, format.as_str(), result);
            return refuse(status, why);
        }
    };
    // Every alert has its pool: record them, pool by pool.
    let mut reports = Vec::new();
    let mut touched: Vec<&PoolHandle> = Vec::new();
    for t in &to {
        if !touched.iter().any(|p| p.name == t.name) {
            touched.push(t);
        }
    }
    if touched.is_empty() {
        // Nothing firing: answered for the path's pool (or the only one), counted without one.
        if let Some(p) = match &which {
            Which::Named(n) => s.pools.by_name(n),
            Which::Any => s.pools.only(),
        } {
            touched.push(p);
        }
    }
    for p in &touched {
        let mine: Vec<Firing> = firing
            .iter()
            .zip(&to)
            .filter(|(_, t)| t.name == p.name)
            .map(|(f, _)| f.clone())
            .collect();
        p.inbox.record(format, &mine);
        let result = if mine.is_empty() {
            "ignored"
        } else {
            "recorded"
        };
        s.metrics.webhook(&p.name, name, format.as_str(), result);
        reports.push(report(p, &mine));
    }
    if touched.is_empty() {
        s.metrics.webhook("", name, format.as_str(), "ignored");
    }
    let up = firing
        .iter()
        .filter(|f| f.direction == Direction::Up)
        .count();
    let down = firing.len() - up;
    let dry_run = s.pools.all()[0].shared.dry_run;
    let mut answer = json!({
        "format": format.as_str(),
        "recorded": { "up": up, "down": down },
        "ignored": ignored,
        "dry-run": dry_run,
    });
    match reports.as_slice() {
        [(one, note)] => {
            answer["pool"] = one.clone();
            answer["note"] = json!(note);
        }
        _ => {
            let note = if firing.is_empty() {
                "nothing firing: nothing recorded"
            } else {
                "recorded for each pool's next tick"
            };
            answer["pools"] = reports.iter().map(|(r, _)| r.clone()).collect();
            answer["note"] = json!(note);
        }
    }
    axum::Json(answer).into_response()
}

/// One pool's part of a webhook answer: its size and bounds, and what the next tick will make
/// of the alerts recorded for it.
fn report(p: &PoolHandle, firing: &[Firing]) -> (serde_json::Value, String) {
    let up = firing
        .iter()
        .filter(|f| f.direction == Direction::Up)
        .count();
    let down = firing.len() - up;
    let bounds = p.shared.bounds;
    let size = p.shared.last_size();
    let note = match size {
        Some(n) if up > 0 && n >= bounds.max => format!(
            "the pool is at its maximum ({}): the next tick will not scale up",
            bounds.max
        ),
        Some(n) if up == 0 && down > 0 && n <= bounds.min => format!(
            "the pool is at its minimum ({}): the next tick will not scale down",
            bounds.min
        ),
        _ if firing.is_empty() => "nothing firing: nothing recorded".to_owned(),
        _ => "recorded for the next tick".to_owned(),
    };
    let value = json!({
        "name": p.name,
        "id": p.id,
        "size": size,
        "min": bounds.min,
        "max": bounds.max,
        "recorded": { "up": up, "down": down },
    });
    (value, note)
}

async fn decisions(State(s): State<ServerState>) -> Response {
    let mut all: Vec<_> = s
        .pools
        .all()
        .iter()
        .flat_map(|p| p.shared.decisions())
        .collect();
    // Stable: one pool's decisions keep their order.
    all.sort_by_key(|d| d.at);
    axum::Json(all).into_response()
}

async fn pool_decisions(State(s): State<ServerState>, Path(name): Path<String>) -> Response {
    match s.pools.by_name(&name) {
        Some(p) => axum::Json(p.shared.decisions()).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("no pool named `{name}` (pools: {})", s.pools.names()),
        ),
    }
}

async fn readyz(State(s): State<ServerState>) -> Response {
    let waiting: Vec<&str> = s
        .pools
        .all()
        .iter()
        .filter(|p| !p.shared.ready())
        .map(|p| p.name.as_str())
        .collect();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not read yet: pool {}\n", waiting.join(", ")),
        )
            .into_response()
    }
}

async fn metrics_text(State(s): State<ServerState>) -> Response {
    telemetry::metrics::handler(State(s.registry)).await
}
