//! The local mode's parts with real processes: instances as `poolpilot app` on 127.0.1.x, the
//! node_exporter stand-in, the NLB's health checks, round-robin and drain.

mod common;

use std::time::{Duration, Instant};

use poolpilot::exoscale::HealthStatus;

const DRAIN: &str = "drain-token-for-tests";

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The app's 200s for `route` on the member at `addr`.
async fn served(addr: std::net::Ipv4Addr, route: &str) -> f64 {
    common::served(&format!("http://{addr}:8080"), route).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_serve_behind_a_health_checked_round_robin_nlb_and_drain() {
    let dir = tempfile::tempdir().unwrap();
    let backend = common::local_backend(dir.path(), Duration::from_millis(1500), DRAIN, 1);
    // Generous health-check timeout and 3 retries: a probe answered late by a loaded machine
    // must not flip membership in the middle of the round-robin count; the drain below is
    // waited for.
    let common::PoolBehindNlb { sim, nlb, pool, lb } = common::pool_behind_nlb(
        backend.clone(),
        Duration::from_millis(300),
        "local",
        2,
        8080,
        3,
    );
    let checks = tokio::spawn(nlb.clone().run_health_checks());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = nlb.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    // Both members boot (processes start, the API says running) and pass their checks.
    until("two healthy members", Duration::from_secs(20), || {
        nlb.members().iter().filter(|m| m.healthy).count() == 2
    })
    .await;
    let members = nlb.members();
    assert!(members.iter().all(|m| m.addr.octets()[..3] == [127, 0, 1]));

    // Round-robin, per request.
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let r = http.get(format!("{base}/covilha")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for m in &members {
        assert_eq!(served(m.addr, "covilha").await, 10.0, "{}", m.addr);
    }

    // The node stand-in: under /load, the instance's CPU approaches its half core.
    let a = members[0].addr;
    let node = |a| async move {
        let t = reqwest::get(format!("http://{a}:9100/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        poolpilot::autoscaler::source::scrape::parse_node_cpu(&t).unwrap()
    };
    let (b0, t0) = node(a).await;
    http.get(format!("http://{a}:8080/load"))
        .send()
        .await
        .unwrap();
    let (b1, t1) = node(a).await;
    let utilisation = (b1 - b0) / (t1 - t0);
    assert!(
        utilisation > 0.3 && utilisation <= 1.05,
        "utilisation {utilisation} during /load"
    );

    // Drain the first member: the NLB takes it out, tells the API, and requests still succeed.
    let r = http
        .post(format!("http://{a}:8080/admin/drain"))
        .bearer_auth(DRAIN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    until(
        "the drained member out of rotation",
        Duration::from_secs(5),
        || nlb.members().iter().any(|m| m.addr == a && !m.healthy),
    )
    .await;
    let status = sim
        .with_state(|s| s.load_balancer_view(lb))
        .unwrap()
        .services[0]
        .healthcheck_status
        .iter()
        .find(|s| s.public_ip == a)
        .unwrap()
        .status;
    assert_eq!(status, HealthStatus::Failure);
    let before = served(members[1].addr, "covilha").await;
    for _ in 0..10 {
        let r = http.get(format!("{base}/covilha")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(served(members[1].addr, "covilha").await, before + 10.0);

    // Evicting it stops its process.
    let victim = members[0].id;
    sim.with_state(|s| s.evict(tokio::time::Instant::now(), pool, &[victim]))
        .unwrap();
    until("the process to exit", Duration::from_secs(10), || {
        std::net::TcpStream::connect_timeout(&(a, 8080).into(), Duration::from_millis(50)).is_err()
            && sim.with_state(|s| s.running_members(pool).len()) == 1
    })
    .await;
    checks.abort();
    let b = backend.clone();
    tokio::task::spawn_blocking(move || b.shutdown())
        .await
        .unwrap();
    assert!(backend.addresses().is_empty());
}
