//! The simulator's admin API (unsigned, outside `/v2`): out-of-band changes, health overrides,
//! fault injection and the request log. It exists only on the simulator's loopback listener.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State as Ax};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::state::ApiError;
use super::{ErrorFault, Sim};
use crate::config::Dur;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/state", get(state))
        .route("/pool/{id}/size", put(set_size))
        .route("/instance/{id}/kill", post(kill))
        .route("/instance/{id}/health", put(set_health))
        .route("/faults", post(add_faults).delete(clear_faults))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/template-downloads", put(hold_downloads))
        .route(
            "/load-balancer/{id}/address",
            put(set_load_balancer_address),
        )
}

fn uuid(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("`{raw}` is not a UUID")))
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

async fn state(Ax(sim): Ax<Arc<Sim>>) -> Response {
    sim.with_state(|s| {
        let instances: Vec<_> = s
            .instances
            .values()
            .map(|i| {
                json!({"id": i.id, "name": i.name, "pool": i.pool, "state": i.state,
                       "public-ip": i.ip, "healthy": s.is_healthy(i)})
            })
            .collect();
        axum::Json(json!({
            "zone": s.zone.name(),
            "backend": s.backend_name(),
            "instance-pools": s.pools_view(),
            "instances": instances,
            "load-balancers": s.load_balancers_view(),
        }))
        .into_response()
    })
}

#[derive(Deserialize)]
struct SizeBody {
    size: u64,
}

async fn set_size(
    Ax(sim): Ax<Arc<Sim>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = uuid(&id)?;
    let b: SizeBody = parse(&body)?;
    let now = tokio::time::Instant::now();
    sim.with_state(|s| s.set_size(now, id, b.size))?;
    Ok(axum::Json(json!({"size": b.size})).into_response())
}

async fn kill(Ax(sim): Ax<Arc<Sim>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = uuid(&id)?;
    let now = tokio::time::Instant::now();
    sim.with_state(|s| s.kill(now, id))?;
    Ok(axum::Json(json!({"killed": id})).into_response())
}

#[derive(Deserialize)]
struct HealthBody {
    healthy: bool,
}

async fn set_health(
    Ax(sim): Ax<Arc<Sim>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = uuid(&id)?;
    let b: HealthBody = parse(&body)?;
    sim.with_state(|s| s.set_health(id, b.healthy))?;
    Ok(axum::Json(json!({"healthy": b.healthy})).into_response())
}

/// `{"status": 503, "count": 2, "retry-after": 1}` fails the next 2 API requests;
/// `{"status": 403, "path": "/v2/load-balancer"}` fails the next request to that path (a key
/// without the rights for one operation); `{"latency": "2s", "count": 1}` delays the
/// next one.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FaultBody {
    status: Option<u16>,
    count: Option<u32>,
    retry_after: Option<u64>,
    latency: Option<Dur>,
    path: Option<String>,
}

async fn add_faults(Ax(sim): Ax<Arc<Sim>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let b: FaultBody = parse(&body)?;
    let count = b.count.unwrap_or(1);
    let mut f = sim.faults.lock().expect("faults lock");
    match (b.status, b.latency) {
        (Some(status), None) => {
            if !(400..=599).contains(&status) {
                return Err(ApiError::bad_request("status: must be 400 to 599"));
            }
            for _ in 0..count {
                f.errors.push_back(ErrorFault {
                    status,
                    retry_after: b.retry_after,
                    path: b.path.clone(),
                });
            }
        }
        (None, Some(_)) if b.path.is_some() => {
            return Err(ApiError::bad_request("path: only with `status`"));
        }
        (None, Some(d)) => f.latency = Some((d.get(), count)),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `status` or `latency`",
            ));
        }
    }
    Ok(axum::Json(json!({"queued-errors": f.errors.len()})).into_response())
}

async fn clear_faults(Ax(sim): Ax<Arc<Sim>>) -> Response {
    let mut f = sim.faults.lock().expect("faults lock");
    f.errors.clear();
    f.latency = None;
    axum::Json(json!({"queued-errors": 0})).into_response()
}

async fn requests(Ax(sim): Ax<Arc<Sim>>) -> Response {
    axum::Json(sim.requests()).into_response()
}

async fn clear_requests(Ax(sim): Ax<Arc<Sim>>) -> Response {
    sim.requests.lock().expect("request log lock").clear();
    axum::Json(json!({"cleared": true})).into_response()
}

#[derive(Deserialize)]
struct HoldBody {
    hold: bool,
}

/// `PUT /admin/template-downloads {"hold": true}` makes template downloads wait (registrations
/// stay pending) until `{"hold": false}`: a test can change an image after its registration.
async fn hold_downloads(
    Ax(sim): Ax<Arc<Sim>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: HoldBody = parse(&body)?;
    sim.downloads_held.send_replace(b.hold);
    Ok(axum::Json(json!({"hold": b.hold})).into_response())
}

/// `PUT /admin/load-balancer/{id}/address {"ip": "127.0.0.1", "port": 18080}`: moves an NLB (a
/// new address, its services on another port), as a re-created NLB would be; either field may
/// be left out. A test points the NLB at a real local listener, then moves it.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct AddressBody {
    ip: Option<std::net::Ipv4Addr>,
    port: Option<u16>,
}

async fn set_load_balancer_address(
    Ax(sim): Ax<Arc<Sim>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = uuid(&id)?;
    let b: AddressBody = parse(&body)?;
    sim.with_state(|s| {
        let lb = s
            .load_balancers
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found("load balancer", id))?;
        if let Some(ip) = b.ip {
            lb.ip = ip;
        }
        if let Some(port) = b.port {
            for svc in &mut lb.services {
                svc.port = port;
            }
        }
        Ok(axum::Json(
            json!({"ip": lb.ip, "ports": lb.services.iter().map(|s| s.port).collect::<Vec<_>>()}),
        )
        .into_response())
    })
}
