//! Contract test: every body the simulator sends for the covered operations validates against
//! the matching response schema of Exoscale's own OpenAPI spec, so the simulator cannot drift
//! from the real API. Schemas are tightened (no undocumented properties) and formats
//! (uuid, ipv4, date-time) are checked.

mod common;

use std::time::Duration;

use common::*;
use poolpilot::exoscale::{Client, Idempotency};
use reqwest::Method;
use serde_json::{Value, json};

fn spec() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/reference/exoscale-openapi.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference/exoscale-openapi.json"))
        .unwrap()
}

/// Turns OpenAPI 3.0 schema dialect into JSON Schema 2020-12 (boolean `exclusiveMinimum`,
/// `nullable`) and forbids properties the spec does not document, on every object schema that
/// lists its own.
fn tighten(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(exclusive)) = map.get(flag).cloned() {
                    map.remove(flag);
                    if exclusive && let Some(b) = map.remove(bound) {
                        map.insert(flag.into(), b);
                    }
                }
            }
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([t, "null"]));
            }
            for (_, child) in map.iter_mut() {
                tighten(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tighten),
        _ => {}
    }
}

struct Contract {
    spec: Value,
    components: Value,
}

impl Contract {
    fn new() -> Self {
        let spec = spec();
        let mut components = spec["components"].clone();
        tighten(&mut components);
        Self { spec, components }
    }

    fn validator(&self, path: &str, method: &str) -> jsonschema::Validator {
        let op = &self.spec["paths"][path][method];
        assert!(op.is_object(), "the spec has no {method} {path}");
        let mut response = op["responses"]["200"]["content"]["application/json"]["schema"].clone();
        tighten(&mut response);
        let schema = json!({"allOf": [response], "components": self.components});
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("schema for {method} {path}: {e}"))
    }

    fn check(&self, path: &str, method: &str, body: &[u8]) {
        let instance: Value = serde_json::from_slice(body).expect("JSON body");
        let v = self.validator(path, method);
        let errors: Vec<String> = v
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} drifted from the spec:\n{}\nbody: {instance}",
            errors.join("\n")
        );
    }
}

async fn raw(
    c: &Client,
    method: Method,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) -> Vec<u8> {
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    c.send(method, path, query, body, Idempotency::Unsafe)
        .await
        .unwrap()
        .body
}

/// Waits for the operation to end (whatever its state) and returns its raw body.
async fn wait_done(c: &Client, id: &str) -> Vec<u8> {
    let id: uuid::Uuid = id.parse().unwrap();
    if let Ok(op) = c.get_operation(id).await {
        let _ = c.wait_operation(&op).await;
    }
    raw(c, Method::GET, &format!("/operation/{id}"), &[], None).await
}

#[test]
fn the_contract_check_can_fail() {
    let c = Contract::new();
    let bad = br#"{"id":"not-a-uuid","size":-1,"state":"running","instances":[]}"#;
    let instance: Value = serde_json::from_slice(bad).unwrap();
    let v = c.validator("/instance-pool/{id}", "get");
    let errs: Vec<String> = v.iter_errors(&instance).map(|e| e.to_string()).collect();
    assert!(
        errs.len() >= 2,
        "bad uuid and negative size must be caught: {errs:?}"
    );
    let extra: Value = json!({"id": "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6", "invented": 1});
    assert!(
        !v.is_valid(&extra),
        "undocumented properties must be caught"
    );
    let bad_ip = json!({"instances": [{"id": "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6", "public-ip": "999.1.1.1"}]});
    assert!(
        !c.validator("/instance", "get").is_valid(&bad_ip),
        "formats must be checked"
    );
}

#[tokio::test]
async fn every_simulator_response_follows_the_spec() {
    let contract = Contract::new();
    let t = start(2, quick()).await;
    let c = t.client();
    let pool = t.pool.to_string();
    let check = |p: &str, m: &str, b: &[u8]| contract.check(p, m, b);

    check(
        "/zone",
        "get",
        &raw(&c, Method::GET, "/zone", &[], None).await,
    );
    check(
        "/instance-pool",
        "get",
        &raw(&c, Method::GET, "/instance-pool", &[], None).await,
    );
    let scale = raw(
        &c,
        Method::PUT,
        &format!("/instance-pool/{pool}:scale"),
        &[],
        Some(json!({"size": 3})),
    )
    .await;
    check("/instance-pool/{id}:scale", "put", &scale);
    // While scaling: pool state and member states differ from the steady state.
    check(
        "/instance-pool/{id}",
        "get",
        &raw(
            &c,
            Method::GET,
            &format!("/instance-pool/{pool}"),
            &[],
            None,
        )
        .await,
    );
    let members = raw(
        &c,
        Method::GET,
        "/instance",
        &[("manager-id", &pool), ("manager-type", "instance-pool")],
        None,
    )
    .await;
    check("/instance", "get", &members);
    let op: Value = serde_json::from_slice(&scale).unwrap();
    let op_id = op["id"].as_str().unwrap();
    check(
        "/operation/{id}",
        "get",
        &raw(&c, Method::GET, &format!("/operation/{op_id}"), &[], None).await,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    check(
        "/operation/{id}",
        "get",
        &raw(&c, Method::GET, &format!("/operation/{op_id}"), &[], None).await,
    );
    check(
        "/instance-pool/{id}",
        "get",
        &raw(
            &c,
            Method::GET,
            &format!("/instance-pool/{pool}"),
            &[],
            None,
        )
        .await,
    );

    let members: Value = serde_json::from_slice(&members).unwrap();
    let first = members["instances"][0]["id"].as_str().unwrap().to_owned();
    check(
        "/instance/{id}",
        "get",
        &raw(&c, Method::GET, &format!("/instance/{first}"), &[], None).await,
    );
    let evict = raw(
        &c,
        Method::PUT,
        &format!("/instance-pool/{pool}:evict"),
        &[],
        Some(json!({"instances": [first]})),
    )
    .await;
    check("/instance-pool/{id}:evict", "put", &evict);
    check(
        "/instance",
        "get",
        &raw(&c, Method::GET, "/instance", &[], None).await,
    );

    check(
        "/load-balancer",
        "get",
        &raw(&c, Method::GET, "/load-balancer", &[], None).await,
    );
    let lb = t.load_balancer.to_string();
    check(
        "/load-balancer/{id}",
        "get",
        &raw(&c, Method::GET, &format!("/load-balancer/{lb}"), &[], None).await,
    );
    check(
        "/instance-type",
        "get",
        &raw(&c, Method::GET, "/instance-type", &[], None).await,
    );
    check(
        "/template",
        "get",
        &raw(
            &c,
            Method::GET,
            "/template",
            &[("visibility", "public")],
            None,
        )
        .await,
    );
    let image = b"a stand-in for a qcow2 image".to_vec();
    let reg = raw(
        &c,
        Method::POST,
        "/template",
        &[],
        Some(
            json!({"name": "poolpilot-monitor", "url": serve_bytes(image.clone()),
                    "checksum": md5_hex(&image), "ssh-key-enabled": true,
                    "password-enabled": false, "boot-mode": "legacy"}),
        ),
    )
    .await;
    check("/template", "post", &reg);
    let reg: Value = serde_json::from_slice(&reg).unwrap();
    let op = reg["id"].as_str().unwrap();
    let done = wait_done(&c, op).await;
    check("/operation/{id}", "get", &done);
    let tid = reg["reference"]["id"].as_str().unwrap();
    check(
        "/template/{id}",
        "get",
        &raw(&c, Method::GET, &format!("/template/{tid}"), &[], None).await,
    );
    check(
        "/template",
        "get",
        &raw(
            &c,
            Method::GET,
            "/template",
            &[("visibility", "private")],
            None,
        )
        .await,
    );
    let del = raw(&c, Method::DELETE, &format!("/template/{tid}"), &[], None).await;
    check("/template/{id}", "delete", &del);
    let del: Value = serde_json::from_slice(&del).unwrap();
    assert_eq!(del["reference"]["id"], tid);
    let done: Value =
        serde_json::from_slice(&wait_done(&c, del["id"].as_str().unwrap()).await).unwrap();
    assert_eq!(done["state"], "success", "{done}");

    // A registration refused for its checksum: the failed operation's shape.
    let reg = raw(
        &c,
        Method::POST,
        "/template",
        &[],
        Some(
            json!({"name": "poolpilot-monitor", "url": serve_bytes(image.clone()),
                    "checksum": md5_hex(b"not the image"), "ssh-key-enabled": true,
                    "password-enabled": false}),
        ),
    )
    .await;
    let reg: Value = serde_json::from_slice(&reg).unwrap();
    let failed = wait_done(&c, reg["id"].as_str().unwrap()).await;
    check("/operation/{id}", "get", &failed);
    let failed: Value = serde_json::from_slice(&failed).unwrap();
    assert_eq!(
        (failed["state"].as_str(), failed["reason"].as_str()),
        (Some("failure"), Some("incorrect")),
        "{failed}"
    );
}
