//! The `/v2` handlers: the subset of Exoscale's API that poolpilot uses, answering the same
//! shapes as the spec (checked by `tests/contract.rs`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as Ax};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::state::{ApiError, SimInstance, State};
use super::{Sim, api_error};
use crate::exoscale::models::*;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/zone", get(list_zones))
        .route("/instance-pool", get(list_pools))
        .route("/instance-pool/{id}", get(get_pool).put(pool_action))
        .route("/instance", get(list_instances))
        .route("/instance/{id}", get(get_instance))
        .route("/operation/{id}", get(get_operation))
        .route("/load-balancer", get(list_load_balancers))
        .route("/load-balancer/{id}", get(get_load_balancer))
        .route("/instance-type", get(list_instance_types))
        .route("/template", get(list_templates).post(register_template))
        .route("/template/{id}", get(get_template).delete(delete_template))
        .fallback(|| async { api_error(404, "no such API operation in the simulator") })
}

fn json(v: impl serde::Serialize) -> Response {
    axum::Json(v).into_response()
}

fn uuid(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("{what}: `{raw}` is not a UUID")))
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn now_state<R>(sim: &Sim, f: impl FnOnce(&mut State, Instant) -> R) -> R {
    sim.at(Instant::now(), f)
}

async fn list_zones(Ax(sim): Ax<Arc<Sim>>) -> Response {
    now_state(&sim, |s, _| {
        let z = s.zone;
        json(json!({"zones": [{
            "name": z.name(),
            "api-endpoint": format!("https://api-{}.exoscale.com", z.name()),
            "sos-endpoint": format!("https://sos-{}.exo.io", z.name()),
        }]}))
    })
}

async fn list_pools(Ax(sim): Ax<Arc<Sim>>) -> Response {
    now_state(&sim, |s, _| {
        json(InstancePoolList {
            instance_pools: s.pools_view(),
        })
    })
}

async fn get_pool(Ax(sim): Ax<Arc<Sim>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = uuid(&id, "id")?;
    now_state(&sim, |s, _| s.pool_view(id).map(json))
}

#[derive(Deserialize)]
struct ScaleBody {
    size: Option<i64>,
}

#[derive(Deserialize)]
struct EvictBody {
    instances: Option<Vec<String>>,
}

/// `PUT /instance-pool/{id}` carries the action after a colon: `{id}:scale`, `{id}:evict`.
async fn pool_action(
    Ax(sim): Ax<Arc<Sim>>,
    Path(raw): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let (id, action) = raw.split_once(':').unwrap_or((raw.as_str(), ""));
    let id = uuid(id, "id")?;
    match action {
        "scale" => {
            let b: ScaleBody = body(&bytes)?;
            let size = b
                .size
                .ok_or_else(|| ApiError::bad_request("size: required"))?;
            let size =
                u64::try_from(size).map_err(|_| ApiError::bad_request("size: must be >= 0"))?;
            now_state(&sim, |s, now| s.scale(now, id, size).map(json))
        }
        "evict" => {
            let b: EvictBody = body(&bytes)?;
            let ids = b
                .instances
                .unwrap_or_default()
                .iter()
                .map(|i| uuid(i, "instances"))
                .collect::<Result<Vec<_>, _>>()?;
            now_state(&sim, |s, now| s.evict(now, id, &ids).map(json))
        }
        "" => Err(ApiError::new(
            501,
            "updating an instance pool is not implemented by the simulator",
        )),
        other => Err(ApiError::not_found("operation", format!("`:{other}`"))),
    }
}

#[derive(Deserialize)]
struct InstanceFilter {
    #[serde(rename = "manager-id")]
    manager_id: Option<String>,
    #[serde(rename = "manager-type")]
    manager_type: Option<String>,
}

fn instance_json(s: &State, i: &SimInstance) -> Value {
    let mut v = json!({
        "id": i.id,
        "name": i.name,
        "state": i.state,
        "public-ip": i.ip,
        "public-ip-assignment": "inet4",
        "created-at": i.created_at.format(&time::format_description::well_known::Rfc3339).expect("valid time"),
        "template": {"id": i.template},
        "labels": {},
    });
    if let Some(t) = s.instance_type(i.instance_type) {
        v["instance-type"] = serde_json::to_value(t).expect("serializable");
    }
    if let Some(p) = i.pool {
        v["manager"] = json!({"id": p, "type": "instance-pool"});
    }
    v
}

async fn list_instances(
    Ax(sim): Ax<Arc<Sim>>,
    Query(f): Query<InstanceFilter>,
) -> Result<Response, ApiError> {
    let manager = f
        .manager_id
        .as_deref()
        .map(|m| uuid(m, "manager-id"))
        .transpose()?;
    if let Some(t) = f.manager_type.as_deref()
        && t != "instance-pool"
        && t != "sks-nodepool"
    {
        return Err(ApiError::bad_request(format!(
            "manager-type: must be instance-pool or sks-nodepool, got `{t}`"
        )));
    }
    Ok(now_state(&sim, |s, _| {
        let list: Vec<Value> = s
            .instances_managed_by(manager)
            .into_iter()
            .map(|i| instance_json(s, i))
            .collect();
        json(json!({ "instances": list }))
    }))
}

async fn get_instance(Ax(sim): Ax<Arc<Sim>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = uuid(&id, "id")?;
    now_state(&sim, |s, _| {
        let i = s.instance(id)?;
        Ok(json(instance_json(s, i)))
    })
}

async fn get_operation(
    Ax(sim): Ax<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = uuid(&id, "id")?;
    now_state(&sim, |s, _| s.operation(id).map(json))
}

async fn list_load_balancers(Ax(sim): Ax<Arc<Sim>>) -> Response {
    now_state(&sim, |s, _| {
        json(LoadBalancerList {
            load_balancers: s.load_balancers_view(),
        })
    })
}

async fn get_load_balancer(
    Ax(sim): Ax<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = uuid(&id, "id")?;
    now_state(&sim, |s, _| s.load_balancer_view(id).map(json))
}

async fn list_instance_types(Ax(sim): Ax<Arc<Sim>>) -> Response {
    now_state(&sim, |s, _| {
        json(InstanceTypeList {
            instance_types: s.instance_types.clone(),
        })
    })
}

#[derive(Deserialize)]
struct TemplateFilter {
    visibility: Option<String>,
    family: Option<String>,
}

async fn list_templates(
    Ax(sim): Ax<Arc<Sim>>,
    Query(f): Query<TemplateFilter>,
) -> Result<Response, ApiError> {
    let visibility = f.visibility.unwrap_or_else(|| "public".into());
    if visibility != "public" && visibility != "private" {
        return Err(ApiError::bad_request(format!(
            "visibility: must be public or private, got `{visibility}`"
        )));
    }
    Ok(now_state(&sim, |s, _| {
        let templates: Vec<Template> = s
            .templates
            .values()
            .filter(|t| t.visibility.as_deref() == Some(visibility.as_str()))
            .filter(|t| f.family.is_none() || t.family == f.family)
            .cloned()
            .collect();
        json(TemplateList { templates })
    }))
}

/// Registers the template and, in the background, downloads its image and checks its MD5, as
/// Exoscale does; the operation ends when the download does.
async fn register_template(Ax(sim): Ax<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let req: RegisterTemplate = body(&bytes)?;
    let (op, pending) = now_state(&sim, |s, now| s.register_template(now, req))?;
    let sim = sim.clone();
    tokio::spawn(async move {
        let mut held = sim.downloads_held.subscribe();
        let _ = held.wait_for(|h| !*h).await;
        let fetched = super::download::fetch(&pending.url, sim.download_limits).await;
        if let Err(e) = &fetched {
            tracing::info!(operation = %pending.operation, error = %e, "template registration failed");
        }
        now_state(&sim, |s, now| {
            s.finish_download(now, pending.operation, fetched)
        });
    });
    Ok(json(op))
}

async fn delete_template(
    Ax(sim): Ax<Arc<Sim>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = uuid(&id, "id")?;
    now_state(&sim, |s, now| s.delete_template(now, id).map(json))
}

async fn get_template(Ax(sim): Ax<Arc<Sim>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = uuid(&id, "id")?;
    now_state(&sim, |s, _| {
        s.templates
            .get(&id)
            .cloned()
            .map(json)
            .ok_or_else(|| ApiError::not_found("template", id))
    })
}
