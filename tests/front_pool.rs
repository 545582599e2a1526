//! `poolpilot front --pool ZONE:POOL_ID` against the simulator, over real sockets: the pool's
//! NLB is pointed (through the simulator's admin API) at a real listener on 127.0.0.1, the
//! front (the real binary) finds it through the API and forwards to it; a failing API leaves
//! the address as it was; the NLB moved to another listener is followed. Every wait is for a
//! condition, bounded.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use poolpilot::config::env;

/// A listener answering every path (and /health) with its own name.
async fn named_backend(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move || async move { name });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The front as a child process, killed when dropped.
struct FrontProcess {
    child: Child,
    url: String,
    admin: String,
}

impl Drop for FrontProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn front_command(sim: &common::TestSim, pool: &str) -> std::process::Command {
    let mut c = common::base_command();
    c.arg("front")
        .args(["--pool", pool, "--pool-refresh", "200ms"])
        .env(env::API_ENDPOINT, sim.running.endpoint())
        .env(env::API_KEY, common::KEY)
        .env(env::API_SECRET, common::SECRET);
    c
}

async fn start_front(sim: &common::TestSim, pool: &str) -> FrontProcess {
    let (port, admin_port) = (common::free_port(), common::free_port());
    let child = front_command(sim, pool)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let front = FrontProcess {
        child,
        url: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{}/healthz", front.admin))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the front never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    front
}

async fn answer(url: &str) -> (u16, String) {
    let r = reqwest::get(format!("{url}/anything")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn backends(admin: &str) -> serde_json::Value {
    reqwest::get(format!("{admin}/v1/backends"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metric(admin: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

async fn move_nlb(sim: &common::TestSim, port: u16) {
    let r = reqwest::Client::new()
        .put(sim.admin(&format!("/load-balancer/{}/address", sim.load_balancer)))
        .body(format!(r#"{{"ip": "127.0.0.1", "port": {port}}}"#))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_finds_the_pools_nlb_keeps_it_through_api_errors_and_follows_a_move() {
    let sim = common::start(1, common::quick()).await;
    let (a, b) = (named_backend("A").await, named_backend("B").await);
    move_nlb(&sim, a).await;
    let front = start_front(&sim, &format!("ch-gva-2:{}", sim.pool)).await;

    // Found through the API: the backend is named after the zone and points at the NLB.
    let status = backends(&front.admin).await;
    assert_eq!(status["backends"][0]["name"], "ch-gva-2", "{status}");
    assert_eq!(
        status["backends"][0]["url"],
        format!("http://127.0.0.1:{a}")
    );
    for _ in 0..5 {
        assert_eq!(answer(&front.url).await, (200, "A".into()));
    }

    // The API fails for a while: the front keeps the last address and keeps serving.
    let r = reqwest::Client::new()
        .post(sim.admin("/faults"))
        .body(r#"{"status": 503, "count": 3, "path": "/v2/load-balancer"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let series = "poolpilot_front_pool_lookup_errors_total";
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&front.admin, series).await < 3.0 {
        assert!(
            Instant::now() < deadline,
            "the front never saw the 3 failed listings"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = backends(&front.admin).await;
    assert_eq!(status["backends"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(
        status["backends"][0]["url"],
        format!("http://127.0.0.1:{a}")
    );
    assert_eq!(status["backends"][0]["state"], "healthy");
    assert_eq!(answer(&front.url).await, (200, "A".into()));
    let served_before = status["backends"][0]["requests"].as_u64().unwrap();

    // The NLB moves: the front follows it under the same name, its counts kept.
    move_nlb(&sim, b).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = answer(&front.url).await;
        assert_eq!(code, 200);
        if body == "B" {
            break;
        }
        assert_eq!(body, "A");
        assert!(
            Instant::now() < deadline,
            "the front never followed the NLB's move"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        assert_eq!(answer(&front.url).await, (200, "B".into()));
    }
    let status = backends(&front.admin).await;
    assert_eq!(status["backends"][0]["name"], "ch-gva-2");
    assert_eq!(
        status["backends"][0]["url"],
        format!("http://127.0.0.1:{b}")
    );
    assert!(status["backends"][0]["requests"].as_u64().unwrap() > served_before);
    assert_eq!(
        metric(&front.admin, "poolpilot_front_pool_address_changes_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_without_an_nlb_stops_the_front_naming_the_pool() {
    let sim = common::start(1, common::quick()).await;
    let stray = uuid::Uuid::new_v4();
    let mut child = front_command(&sim, &format!("ch-gva-2:{stray}"))
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args([
            "--admin-listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the front did not stop");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = common::all_output(&child.wait_with_output().unwrap());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&stray.to_string()), "{out}");
    assert!(out.contains("no network load balancer"), "{out}");
}
