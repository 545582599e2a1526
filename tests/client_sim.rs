//! The API client against the in-process simulator: every operation, each fault kind, and the
//! signature checks. Real sockets on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::*;
use poolpilot::exoscale::{
    Credentials, ErrorKind, HealthStatus, InstanceState, OperationState, PoolState,
    RegisterTemplate, sign,
};
use serde_json::json;

async fn admin_post(url: String, body: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "admin call failed: {}", r.status());
}

#[tokio::test]
async fn every_operation_works_against_the_simulator() {
    // Operations pending long enough that the pool is read `scaling-up` however slow the machine.
    let t = start(
        1,
        poolpilot::sim::Timing {
            operation_delay: Duration::from_secs(2),
            ..quick()
        },
    )
    .await;
    let c = t.client();

    let zones = c.list_zones().await.unwrap();
    assert_eq!(zones[0].name, "ch-gva-2");

    let pools = c.list_instance_pools().await.unwrap();
    assert_eq!(pools.len(), 1);
    let pool = c.get_instance_pool(t.pool).await.unwrap();
    assert_eq!((pool.size, pool.state), (1, PoolState::Running));

    let op = c.scale_instance_pool(t.pool, 3).await.unwrap();
    assert_eq!(op.state, OperationState::Pending);
    assert_eq!(
        c.get_instance_pool(t.pool).await.unwrap().state,
        PoolState::ScalingUp
    );
    let done = c.wait_operation(&op).await.unwrap();
    assert_eq!(done.state, OperationState::Success);
    assert_eq!(done.reference.unwrap().id, Some(t.pool));

    tokio::time::sleep(Duration::from_millis(250)).await;
    let members = c.list_pool_members(t.pool).await.unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m.state == InstanceState::Running));
    for m in &members {
        let ip = m.public_ip.unwrap().octets();
        assert_eq!(&ip[..3], &[198, 51, 100], "documentation range");
        assert_eq!(m.manager.as_ref().unwrap().id, t.pool);
        assert_eq!(c.get_instance(m.id).await.unwrap().id, m.id);
    }

    let victim = members[1].id;
    let op = c
        .evict_instance_pool_members(t.pool, &[victim])
        .await
        .unwrap();
    c.wait_operation(&op).await.unwrap();
    let after = c.list_pool_members(t.pool).await.unwrap();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|m| m.id != victim));
    assert_eq!(c.get_instance_pool(t.pool).await.unwrap().size, 2);

    let lb = c.get_load_balancer(t.load_balancer).await.unwrap();
    let svc = &lb.services[0];
    assert_eq!(
        (svc.port, svc.target_port, svc.instance_pool.id),
        (80, 8080, t.pool)
    );
    assert_eq!(svc.healthcheck_status.len(), 2);
    assert!(
        svc.healthcheck_status
            .iter()
            .all(|h| h.status == HealthStatus::Success)
    );
    assert_eq!(c.list_load_balancers().await.unwrap().len(), 1);

    let types = c.list_instance_types().await.unwrap();
    assert!(types.iter().any(|t| t.name() == "standard.micro"));

    assert!(c.list_templates("private").await.unwrap().is_empty());
    let image = b"QFI\xfb a small stand-in for a qcow2 image".to_vec();
    let checksum = md5_hex(&image);
    let url = serve_bytes(image.clone());
    let op = c
        .register_template(&RegisterTemplate {
            name: "poolpilot-pool".into(),
            url,
            checksum: checksum.clone(),
            ssh_key_enabled: true,
            password_enabled: false,
            boot_mode: Some("legacy".into()),
            default_user: Some("root".into()),
            description: None,
        })
        .await
        .unwrap();
    let done = c.wait_operation(&op).await.unwrap();
    let id = done.reference.unwrap().id.unwrap();
    let tpl = c.get_template(id).await.unwrap();
    assert_eq!(tpl.name, "poolpilot-pool");
    assert_eq!(tpl.checksum.as_deref(), Some(checksum.as_str()));
    assert_eq!(tpl.size, Some(image.len() as u64));
    assert_eq!(c.list_templates("private").await.unwrap().len(), 1);

    let op = c.delete_template(id).await.unwrap();
    c.wait_operation(&op).await.unwrap();
    assert!(c.list_templates("private").await.unwrap().is_empty());
    let e = c.get_template(id).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
}

#[tokio::test]
async fn a_registration_whose_image_does_not_match_its_checksum_fails_and_leaves_no_template() {
    let t = start(1, quick()).await;
    let c = t.client();
    let url = serve_bytes(b"the image as it really is".to_vec());
    let register = |url: String, checksum: String| RegisterTemplate {
        name: "poolpilot-pool".into(),
        url,
        checksum,
        ssh_key_enabled: true,
        password_enabled: false,
        boot_mode: None,
        default_user: None,
        description: None,
    };
    let wrong = md5_hex(b"another image");
    let op = c
        .register_template(&register(url, wrong.clone()))
        .await
        .unwrap();
    let e = c.wait_operation(&op).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("failure") && msg.contains("checksum mismatch"),
        "{msg}"
    );
    assert!(msg.contains(&wrong), "{msg}");
    let done = c.get_operation(op.id).await.unwrap();
    assert_eq!(done.reason.as_deref(), Some("incorrect"));
    assert!(c.list_templates("private").await.unwrap().is_empty());
    let id = op.reference.unwrap().id.unwrap();
    assert_eq!(c.get_template(id).await.unwrap_err().status(), Some(404));

    // An image nowhere on this machine: the simulator does not reach out, it refuses.
    let op = c
        .register_template(&register(
            "https://sos-ch-gva-2.exo.io/images/pool.qcow2".into(),
            wrong,
        ))
        .await
        .unwrap();
    let msg = c.wait_operation(&op).await.unwrap_err().to_string();
    assert!(msg.contains("loopback"), "{msg}");
    assert!(c.list_templates("private").await.unwrap().is_empty());
}

#[tokio::test]
async fn public_templates_cannot_be_deleted_and_unknown_ones_are_not_found() {
    let t = start(1, quick()).await;
    let c = t.client();
    let public = c.list_templates("public").await.unwrap();
    let e = c.delete_template(public[0].id).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let e = c.delete_template(uuid::Uuid::new_v4()).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert_eq!(
        c.list_templates("public").await.unwrap().len(),
        public.len()
    );
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_retry_after_delay() {
    let t = start(1, quick()).await;
    admin_post(
        t.admin("/faults"),
        json!({"status": 429, "count": 1, "retry-after": 1}),
    )
    .await;
    let started = Instant::now();
    let pool = t.client().get_instance_pool(t.pool).await.unwrap();
    assert_eq!(pool.id, t.pool);
    // Our backoff in this client is 10 ms: waiting a second can only come from Retry-After.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let path = format!("/v2/instance-pool/{}", t.pool);
    assert_eq!(t.requests_to("GET", &path), 2);
}

#[tokio::test]
async fn server_errors_are_retried_and_the_scale_happens_once() {
    let t = start(1, quick()).await;
    admin_post(t.admin("/faults"), json!({"status": 500, "count": 2})).await;
    let op = t.client().scale_instance_pool(t.pool, 2).await.unwrap();
    assert_eq!(op.state, OperationState::Pending);
    let path = format!("/v2/instance-pool/{}:scale", t.pool);
    let statuses: Vec<u16> = t
        .sim()
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![500, 500, 200]);
    assert_eq!(t.client().get_instance_pool(t.pool).await.unwrap().size, 2);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_four_retries() {
    let t = start(1, quick()).await;
    admin_post(t.admin("/faults"), json!({"status": 503, "count": 10})).await;
    let e = t.client().get_instance_pool(t.pool).await.unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert_eq!(e.kind(), ErrorKind::Server);
    assert_eq!(
        t.requests_to("GET", &format!("/v2/instance-pool/{}", t.pool)),
        5
    );
}

#[tokio::test]
async fn not_implemented_is_not_retried() {
    let t = start(1, quick()).await;
    admin_post(t.admin("/faults"), json!({"status": 501, "count": 3})).await;
    let e = t.client().get_instance_pool(t.pool).await.unwrap_err();
    assert_eq!(e.status(), Some(501));
    assert_eq!(
        t.requests_to("GET", &format!("/v2/instance-pool/{}", t.pool)),
        1
    );
}

#[tokio::test]
async fn a_slow_read_times_out_and_is_retried() {
    let t = start(1, quick()).await;
    admin_post(t.admin("/faults"), json!({"latency": "2s", "count": 1})).await;
    let mut cfg = t.client().config().clone();
    cfg.request_timeout = Duration::from_millis(300);
    let c = poolpilot::exoscale::Client::new(cfg).unwrap();
    let pool = c.get_instance_pool(t.pool).await.unwrap();
    assert_eq!(pool.id, t.pool);
}

#[tokio::test]
async fn a_slow_eviction_times_out_and_is_not_repeated() {
    let t = start(2, quick()).await;
    let victim = t.client().list_pool_members(t.pool).await.unwrap()[0].id;
    admin_post(t.admin("/faults"), json!({"latency": "1s", "count": 5})).await;
    let mut cfg = t.client().config().clone();
    cfg.request_timeout = Duration::from_millis(300);
    let c = poolpilot::exoscale::Client::new(cfg).unwrap();
    let e = c
        .evict_instance_pool_members(t.pool, &[victim])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        t.requests_to("PUT", &format!("/v2/instance-pool/{}:evict", t.pool)),
        1
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_changes_nothing() {
    let t = start(1, quick()).await;
    let bad = client_for(
        &t.running.endpoint(),
        Credentials::new(KEY, "not-the-secret"),
    );
    let e = bad.scale_instance_pool(t.pool, 5).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("signature"), "{e}");
    assert!(!e.to_string().contains("not-the-secret"));
    // Authentication failures are final: one request only.
    assert_eq!(
        t.requests_to("PUT", &format!("/v2/instance-pool/{}:scale", t.pool)),
        1
    );
    assert_eq!(t.client().get_instance_pool(t.pool).await.unwrap().size, 1);

    let unknown = client_for(&t.running.endpoint(), Credentials::new("EXOnobody", SECRET));
    let e = unknown.list_zones().await.unwrap_err();
    assert!(e.to_string().contains("invalid API key"), "{e}");
}

#[tokio::test]
async fn an_expired_signature_is_refused() {
    let t = start(1, quick()).await;
    let url = url::Url::parse(&format!(
        "{}/instance-pool/{}:scale",
        t.running.endpoint(),
        t.pool
    ))
    .unwrap();
    let body = br#"{"size":4}"#;
    let expired = 1_000_000_000; // 2001
    let auth = sign::authorization(KEY, SECRET, "PUT", &url, body, expired);
    let r = reqwest::Client::new()
        .put(url.clone())
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["message"], "request expired");

    // The same request with a tampered body and a fresh expiry: the signature no longer matches.
    let fresh = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let auth = sign::authorization(KEY, SECRET, "PUT", &url, body, fresh);
    let r = reqwest::Client::new()
        .put(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(r#"{"size":9}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(t.client().get_instance_pool(t.pool).await.unwrap().size, 1);
}

#[tokio::test]
async fn missing_pools_are_not_found() {
    let t = start(1, quick()).await;
    let e = t
        .client()
        .get_instance_pool(uuid::Uuid::new_v4())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("not found"), "{e}");
}

#[tokio::test]
async fn out_of_band_changes_show_in_the_api() {
    let t = start(2, quick()).await;
    let r = reqwest::Client::new()
        .put(t.admin(&format!("/pool/{}/size", t.pool)))
        .json(&json!({"size": 4}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let c = t.client();
    assert_eq!(c.get_instance_pool(t.pool).await.unwrap().size, 4);
    assert_eq!(c.list_pool_members(t.pool).await.unwrap().len(), 4);
    let victim = c.list_pool_members(t.pool).await.unwrap()[0].id;
    admin_post(t.admin(&format!("/instance/{victim}/kill")), json!({})).await;
    let members = c.list_pool_members(t.pool).await.unwrap();
    assert_eq!(members.len(), 4);
    assert!(members.iter().all(|m| m.id != victim));
}

#[tokio::test]
async fn a_request_in_flight_across_a_log_clear_keeps_its_status_to_itself() {
    let t = start(1, quick()).await;
    let url = format!("{}/zone", t.running.endpoint());
    // A: delayed in the simulator, so it is still in flight when the log is cleared.
    admin_post(t.admin("/faults"), json!({"latency": "1s", "count": 1})).await;
    let a = tokio::spawn({
        let url = url.clone();
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.sim().requests().is_empty() {
        assert!(Instant::now() < deadline, "A never reached the simulator");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = reqwest::Client::new()
        .delete(t.admin("/requests"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // B: logged after the clear, answered at once with an injected 503.
    admin_post(t.admin("/faults"), json!({"status": 503})).await;
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 503);
    // A ends (unsigned: 403) after B; its status must not land on B's entry.
    assert_eq!(a.await.unwrap(), 403);
    let log = t.sim().requests();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status, 503, "{log:?}");
}

#[tokio::test]
async fn a_fault_with_a_path_fails_only_requests_to_that_path() {
    let t = start(1, quick()).await;
    let c = t.client();
    admin_post(
        t.admin("/faults"),
        json!({"status": 403, "path": "/v2/load-balancer"}),
    )
    .await;
    // Other operations pass the queued fault by.
    assert_eq!(c.get_instance_pool(t.pool).await.unwrap().size, 1);
    let e = c.list_load_balancers().await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert_eq!(c.list_load_balancers().await.unwrap().len(), 1);
}
