//! `poolpilot kv`: a stateless key-value HTTP API in front of a Redis primary (every write) and
//! its read replicas (every read), so API members and replicas can each be scaled on their own.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | `Hello from <instance id>` (to see the balancing) |
//! | `GET /item?id=K` | `{"id":K,"val":V}` from a replica; 404 when there is no such key |
//! | `POST /item` `{"id":K,"val":V}` | `SET` on the primary, answers `ok` |
//! | `DELETE /item` `{"id":K}` (or `?id=K`) | `DEL` on the primary: `ok`, or 404 when there was no such key |
//! | `GET /items` | `{"keys":[...],"truncated":false}` by `SCAN` on a replica, sorted, at most 10,000 |
//! | `GET /metrics` | Prometheus metrics (requests and latency by route, method and status) |
//! | `GET /healthz` | 200 `{"status":"ok",...}` with whether each Redis address answers a `PING` |
//! | `GET /ui` | a static page listing the keys and editing values |
//! | `GET /health` | `OK`, or 503 `draining` while drained: the load balancer's check |
//! | `/admin/drain` | the drain switch ([`crate::app::drain`]), as the app's |
//!
//! Errors are JSON `{"error": "..."}`: 400 for a missing or invalid id, value or body, 413 for a
//! body over [`BODY_LIMIT`], 503 when Redis is unreachable, times out or is not ready, 502 when
//! Redis answers with an error. A write is one `SET` or `DEL`, so it happens whole or not at all;
//! a 503 after a timeout means Redis may or may not have applied it (it was never acknowledged).

pub mod metrics;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub use store::{RedisUrl, ReplicaConns, Store, StoreError};

/// The longest id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// The longest value, in bytes (UTF-8).
pub const MAX_VAL_BYTES: usize = 64 * 1024;
/// The largest request body read (JSON escapes may make a value's body up to six times longer).
pub const BODY_LIMIT: usize = 512 * 1024;

const UI_HTML: &str = include_str!("ui.html");

/// What the API needs to run.
#[derive(Clone, Debug)]
pub struct KvConfig {
    /// Shown by `GET /`: the host name unless given.
    pub instance_id: String,
    pub primary: RedisUrl,
    /// One address or more (reads go to each in turn); the primary's when not given.
    pub replicas: Vec<RedisUrl>,
    /// The bound on every Redis call (connecting included).
    pub timeout: Duration,
    /// How reads use each replica address (connections, their age).
    pub replica_conns: ReplicaConns,
    /// Required in `Authorization: Bearer` for `/admin/drain`; without it, draining is disabled.
    pub drain_token: Option<crate::config::Secret>,
}

struct Kv {
    instance_id: String,
    store: Store,
    metrics: Arc<metrics::KvMetrics>,
    /// Whether the last call to each side failed: failures are logged when they start and end,
    /// not once per request.
    primary_down: AtomicBool,
    replica_down: AtomicBool,
    drain: Arc<crate::app::drain::Drain>,
}

/// The API's router. No connection is made here (each is made on first use).
pub fn router(cfg: &KvConfig) -> Result<Router, String> {
    let store = Store::new(&cfg.primary, &cfg.replicas, cfg.timeout, cfg.replica_conns)?;
    let drain = crate::app::drain::Drain::new(cfg.drain_token.clone());
    let m = Arc::new(metrics::KvMetrics::new(drain.gauge()));
    let state = Arc::new(Kv {
        instance_id: cfg.instance_id.clone(),
        store,
        metrics: m.clone(),
        primary_down: AtomicBool::new(false),
        replica_down: AtomicBool::new(false),
        drain: drain.clone(),
    });
    Ok(Router::new()
        .route("/", get(greet))
        .route("/item", get(read).post(write).delete(remove))
        .route("/items", get(list))
        .route("/healthz", get(healthz))
        .route("/health", get(health))
        .route("/ui", get(ui))
        .route(
            "/metrics",
            get(|State(s): State<Arc<Kv>>| async move {
                s.metrics.refresh();
                crate::telemetry::metrics::handler(State(s.metrics.registry.clone())).await
            }),
        )
        .merge(drain.routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(m, metrics::observe))
        .with_state(state))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn ok() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

impl Kv {
    fn flag(&self, side: store::Side) -> &AtomicBool {
        match side {
            store::Side::primary => &self.primary_down,
            store::Side::replica => &self.replica_down,
        }
    }

    /// Notes a side answering again (logged once, when it was failing).
    fn answered(&self, side: store::Side) {
        if self.flag(side).swap(false, Ordering::Relaxed) {
            tracing::info!(side = side.name(), "redis answers again");
        }
    }

    fn failure(&self, e: StoreError) -> Response {
        self.metrics.failed(&e);
        if !self.flag(e.side()).swap(true, Ordering::Relaxed) {
            tracing::warn!(side = e.side().name(), redis = e.addr(), error = %e, "redis call failed");
        }
        let status = match e {
            StoreError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Refused { .. } => StatusCode::BAD_GATEWAY,
        };
        (
            status,
            axum::Json(json!({ "error": e.to_string(), "redis": e.side().name() })),
        )
            .into_response()
    }
}

/// An id is 1 to [`MAX_ID_BYTES`] bytes with no control character.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("`id` must not be empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!("`id` is longer than {MAX_ID_BYTES} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err("`id` must not contain control characters".into());
    }
    Ok(())
}

fn id_from_query(query: Option<&str>) -> Result<String, String> {
    let id = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.into_owned())
        .ok_or("`id` is required: ?id=KEY")?;
    check_id(&id)?;
    Ok(id)
}

/// The JSON object of a body, or why not.
fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

fn string_field(m: &serde_json::Map<String, Value>, name: &str) -> Result<String, String> {
    match m.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{name}` must be a string")),
        None => Err(format!("`{name}` is required")),
    }
}

async fn greet(State(s): State<Arc<Kv>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Hello from {}", s.instance_id),
    )
        .into_response()
}

async fn read(State(s): State<Arc<Kv>>, RawQuery(q): RawQuery) -> Response {
    let id = match id_from_query(q.as_deref()) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match s.store.get(&id).await {
        Ok(Some(v)) => {
            s.answered(store::Side::replica);
            axum::Json(json!({ "id": id, "val": String::from_utf8_lossy(&v) })).into_response()
        }
        Ok(None) => {
            s.answered(store::Side::replica);
            error(StatusCode::NOT_FOUND, format!("no such id: {id}"))
        }
        Err(e) => s.failure(e),
    }
}

async fn write(State(s): State<Arc<Kv>>, body: Bytes) -> Response {
    let parsed = object(&body).and_then(|m| {
        let id = string_field(&m, "id")?;
        check_id(&id)?;
        let val = string_field(&m, "val")?;
        if val.len() > MAX_VAL_BYTES {
            return Err(format!("`val` is longer than {MAX_VAL_BYTES} bytes"));
        }
        Ok((id, val))
    });
    let (id, val) = match parsed {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match s.store.set(&id, &val).await {
        Ok(()) => {
            s.answered(store::Side::primary);
            ok()
        }
        Err(e) => s.failure(e),
    }
}

async fn remove(State(s): State<Arc<Kv>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    // The reference sends `{id}` in the body; `?id=` is accepted when the body is empty.
    let id = if body.iter().all(u8::is_ascii_whitespace) {
        id_from_query(q.as_deref())
    } else {
        object(&body)
            .and_then(|m| string_field(&m, "id"))
            .and_then(|id| check_id(&id).map(|()| id))
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match s.store.delete(&id).await {
        Ok(existed) => {
            s.answered(store::Side::primary);
            if existed {
                ok()
            } else {
                error(StatusCode::NOT_FOUND, format!("no such id: {id}"))
            }
        }
        Err(e) => s.failure(e),
    }
}

async fn list(State(s): State<Arc<Kv>>) -> Response {
    match s.store.keys().await {
        Ok((keys, truncated)) => {
            s.answered(store::Side::replica);
            let keys: Vec<String> = keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            axum::Json(json!({ "keys": keys, "truncated": truncated })).into_response()
        }
        Err(e) => s.failure(e),
    }
}

async fn healthz(State(s): State<Arc<Kv>>) -> Response {
    let (primary, replicas) = s.store.ping().await;
    let word = |up: bool| if up { "up" } else { "down" };
    axum::Json(json!({
        "status": "ok",
        "instance": s.instance_id,
        "primary": word(primary),
        "replicas": replicas.into_iter().map(word).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// The load balancer's check: `OK`, or 503 `draining` while drained (Redis is not asked: a
/// Redis outage hits every member alike, and the API answers it with 503s of its own).
async fn health(State(s): State<Arc<Kv>>) -> Response {
    if s.drain.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            crate::app::drain::DRAINING_BODY,
        )
            .into_response()
    } else {
        crate::app::HEALTH_BODY.into_response()
    }
}

async fn ui() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        UI_HTML,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_printable() {
        assert!(check_id("user:42").is_ok());
        assert!(check_id("ü 空白").is_ok());
        assert!(check_id(&"x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(check_id("").unwrap_err().contains("empty"));
        assert!(check_id(&"x".repeat(MAX_ID_BYTES + 1)).is_err());
        assert!(check_id("a\nb").unwrap_err().contains("control"));
    }

    #[test]
    fn the_id_comes_from_the_query_decoded() {
        assert_eq!(id_from_query(Some("id=a%20b&x=1")).unwrap(), "a b");
        assert!(id_from_query(None).unwrap_err().contains("required"));
        assert!(id_from_query(Some("id=")).unwrap_err().contains("empty"));
    }

    #[test]
    fn the_page_uses_only_the_api() {
        for route in ["/items", "/item"] {
            assert!(UI_HTML.contains(&format!("'{route}")), "{route}");
        }
        assert!(!UI_HTML.contains("<script src"), "no external script");
    }
}
