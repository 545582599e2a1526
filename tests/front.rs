//! `poolpilot front` over real sockets: test backends on 127.0.0.1 that answer 200, 500, refuse
//! or hang, the front in front of them, real HTTP clients. Every wait is for a condition (a
//! count, a state on the status page), never for a time to pass.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use poolpilot::front::backend::{EjectMode, Ejection};
use poolpilot::front::{Front, FrontConfig};
use poolpilot::shutdown::{self, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// A test backend: answers 200 (OK), 500 (FAIL) or never (HANG) on every path but /health,
/// which answers 200 unless failing; counts the requests it got (not the health checks).
struct TestBackend {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicU64>,
}

impl TestBackend {
    async fn start(mode: u8) -> Self {
        let mode = Arc::new(AtomicU8::new(mode));
        let hits = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (m, h) = (mode.clone(), hits.clone());
        let health_mode = mode.clone();
        let app = axum::Router::new()
            .route(
                "/health",
                axum::routing::get(move || {
                    let m = health_mode.clone();
                    async move {
                        if m.load(Ordering::SeqCst) == OK {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                    }
                }),
            )
            .fallback(move |req: axum::extract::Request| {
                let (m, h) = (m.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let xff = req
                        .headers()
                        .get("x-forwarded-for")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let private = req.headers().contains_key("x-private");
                    match m.load(Ordering::SeqCst) {
                        OK => (
                            StatusCode::OK,
                            format!("{addr} private={private} xff={xff}"),
                        ),
                        FAIL => (StatusCode::INTERNAL_SERVER_ERROR, "broken".to_owned()),
                        _ => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                    }
                }
            });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, mode, hits }
    }

    fn url(&self, name: &str) -> (String, String) {
        (name.to_owned(), format!("http://{}", self.addr))
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A port nothing listens on.
fn refused() -> (String, String) {
    (
        "refused".into(),
        format!("http://127.0.0.1:{}", common::free_port()),
    )
}

fn config(backends: Vec<(String, String)>) -> FrontConfig {
    FrontConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        backends,
        ejection: Ejection {
            after: 10,
            mode: EjectMode::Total,
            // Long: a test that needs re-admission sets its own.
            cooldown: Duration::from_secs(600),
            max_cooldown: Duration::from_secs(600),
        },
        retries: 2,
        retry_ratio: 0.2,
        retry_min: 3,
        retry_non_idempotent: false,
        retry_body_limit: 1 << 20,
        // Generous: a healthy test backend must never miss it, even on a loaded machine.
        try_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        probe_interval: Duration::from_millis(20),
        health_path: "/health".into(),
        limits: Limits::default(),
    }
}

/// A running front: its address, its admin address, and the switch that stops it.
struct Running {
    url: String,
    admin: String,
    _stop: shutdown::Stop,
}

async fn start(cfg: FrontConfig) -> Running {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    let admin = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .unwrap();
    let (url, admin_url) = (
        format!("http://{}", listener.local_addr().unwrap()),
        format!("http://{}", admin.local_addr().unwrap()),
    );
    let limits = cfg.limits;
    let mut registry = poolpilot::telemetry::metrics::registry("front");
    let front = Arc::new(Front::new(cfg, &mut registry));
    let (stop, stopping) = shutdown::stop_switch();
    tokio::spawn(front.clone().probe_loop(stopping.clone()));
    let admin_app = poolpilot::front::admin_router(front.clone(), Arc::new(registry));
    let mut s1 = stopping.clone();
    tokio::spawn(async move {
        shutdown::serve_until(admin, admin_app, async move { s1.wait().await }).await
    });
    let mut s2 = stopping;
    tokio::spawn(async move {
        poolpilot::front::serve(front, listener, async move { s2.wait().await }, limits).await
    });
    Running {
        url,
        admin: admin_url,
        _stop: stop,
    }
}

async fn states(admin: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = reqwest::get(format!("{admin}/v1/backends"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Polls the status page until `backend` is in `state` (bounded: 2000 polls).
async fn wait_state(admin: &str, backend: &str, state: &str) {
    for _ in 0..2000 {
        if states(admin)
            .await
            .iter()
            .any(|(n, s)| n == backend && s == state)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{backend} never became {state}: {:?}", states(admin).await);
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_500_gets_exactly_eleven_requests_and_every_client_gets_200() {
    let good = TestBackend::start(OK).await;
    let bad = TestBackend::start(FAIL).await;
    let front = start(config(vec![good.url("good"), bad.url("bad")])).await;
    let http = reqwest::Client::new();
    for i in 0..60 {
        let r = http
            .get(format!("{}/load?i={i}", front.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(
        bad.hits(),
        11,
        "more than 10 non-200 answers eject, not fewer, not later"
    );
    assert_eq!(
        good.hits(),
        60,
        "every request ended on the healthy backend"
    );
    assert_eq!(
        states(&front.admin).await,
        [
            ("good".into(), "healthy".into()),
            ("bad".into(), "ejected".into())
        ]
    );
    let m = reqwest::get(format!("{}/metrics", front.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    common::promtool_accepts(&m);
    assert_eq!(
        metric(
            &m,
            "poolpilot_front_backend_ejections_total{backend=\"bad\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "poolpilot_front_retries_total"), 11.0);
    assert_eq!(
        metric(&m, "poolpilot_front_responses_total{code=\"200\"}"),
        60.0
    );
    assert_eq!(
        metric(
            &m,
            "poolpilot_front_backend_attempts_total{backend=\"bad\",outcome=\"non200\"}"
        ),
        11.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_hanging_backends_are_retried_away_within_the_per_try_timeout() {
    let good = TestBackend::start(OK).await;
    let hang = TestBackend::start(HANG).await;
    let mut cfg = config(vec![refused(), hang.url("hang"), good.url("good")]);
    cfg.try_timeout = Duration::from_secs(2);
    let front = start(cfg).await;
    let http = reqwest::Client::new();
    // Round robin: each failing backend takes a first attempt every third request (and the
    // hanging one the refused one's retries): 60 requests eject both.
    for i in 0..60 {
        let r = http
            .get(format!("{}/x?{i}", front.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        let body = r.text().await.unwrap();
        assert!(body.starts_with(&good.addr.to_string()), "{body}");
        assert!(body.ends_with("xff=127.0.0.1"), "X-Forwarded-For: {body}");
    }
    // Each failing backend was tried until ejected, once per request at most, then never.
    assert_eq!(hang.hits(), 11);
    assert_eq!(
        states(&front.admin).await,
        [
            ("refused".into(), "ejected".into()),
            ("hang".into(), "ejected".into()),
            ("good".into(), "healthy".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_backend_that_recovers_is_readmitted_after_its_cooldown() {
    let good = TestBackend::start(OK).await;
    let flaky = TestBackend::start(FAIL).await;
    let mut cfg = config(vec![good.url("good"), flaky.url("flaky")]);
    // From the second ejection on, the cool-down grows; the first is short.
    cfg.ejection.cooldown = Duration::from_millis(200);
    cfg.ejection.max_cooldown = Duration::from_secs(5);
    let front = start(cfg).await;
    let http = reqwest::Client::new();
    while flaky.hits() < 11 {
        let r = http.get(format!("{}/", front.url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_state(&front.admin, "flaky", "ejected").await;
    // Still failing its health check: it stays out, however long we look.
    for _ in 0..20 {
        assert_eq!(states(&front.admin).await[1].1, "ejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flaky.mode.store(OK, Ordering::SeqCst);
    wait_state(&front.admin, "flaky", "healthy").await;
    let before = flaky.hits();
    for _ in 0..10 {
        http.get(format!("{}/", front.url)).send().await.unwrap();
    }
    assert!(
        flaky.hits() > before,
        "re-admitted, it takes requests again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_failing_clients_get_503_without_a_retry_storm() {
    let a = TestBackend::start(FAIL).await;
    let b = TestBackend::start(FAIL).await;
    let front = start(config(vec![a.url("a"), b.url("b")])).await;
    let http = reqwest::Client::new();
    let clients = 200u64;
    for _ in 0..clients {
        let r = http.get(format!("{}/", front.url)).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let attempts: usize = r.headers()["x-poolpilot-attempts"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&attempts), "{attempts}");
    }
    let upstream = a.hits() + b.hits();
    // Each backend is tried until ejected (more than 10 failures); after that the one left in
    // rotation gets one attempt per request and nothing retries: no storm.
    assert!(
        upstream <= clients + 2 * 11,
        "{upstream} attempts for {clients} requests"
    );
    let v: serde_json::Value = reqwest::get(format!("{}/v1/backends", front.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["all-failing"], true, "{v}");
    // One is ejected, the least bad keeps the traffic, flagged.
    let s: Vec<_> = states(&front.admin)
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert!(
        s.contains(&"ejected".to_owned()) && s.contains(&"failing".to_owned()),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_client_does_not_block_others() {
    let good = TestBackend::start(OK).await;
    let mut cfg = config(vec![good.url("good")]);
    cfg.limits.header_timeout = Duration::from_secs(1);
    let front = start(cfg).await;
    let addr = front.url.trim_start_matches("http://").to_owned();
    // Ten clients that send half a request line and stop.
    let mut slow = Vec::new();
    for _ in 0..10 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // A new connection per request: an idle kept-alive one would meet the short header timeout.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..20 {
        let r = http.get(format!("{}/", front.url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // And the server closes them once their header time is up.
    for mut s in slow {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "the slow connection is closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried_unless_configured_and_hop_by_hop_headers_stay_here() {
    let good = TestBackend::start(OK).await;
    let bad = TestBackend::start(FAIL).await;
    let front = start(config(vec![bad.url("bad"), good.url("good")])).await;
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = http
            .post(format!("{}/item", front.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    // Round robin: two of the four land on the broken backend and are not repeated.
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 2, "{codes:?}");
    assert_eq!(bad.hits(), 2);
    let r = http
        .get(format!("{}/", front.url))
        .header("connection", "x-private")
        .header("x-private", "secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("private=false"),
        "a header named in Connection is hop-by-hop: {body}"
    );
}

#[test]
fn bad_configuration_exits_64_naming_the_field() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "backend"),
        (vec!["--backend", "https://a"], "backend"),
        (
            vec!["--backend", "a=http://x", "--backend", "a=http://y"],
            "backend",
        ),
        (
            vec!["--backend", "http://x", "--eject-after", "0"],
            "eject-after",
        ),
        (
            vec![
                "--backend",
                "http://x",
                "--cooldown",
                "10m",
                "--max-cooldown",
                "1m",
            ],
            "cooldown",
        ),
        (
            vec!["--backend", "http://x", "--health-path", "health"],
            "health-path",
        ),
        (vec!["--backend", "http://x", "--retries", "11"], "retries"),
        (
            vec!["--backend", "http://x", "--retry-budget=1.5"],
            "retry-budget",
        ),
        (vec!["--pool", "ch-gva-2:not-a-uuid"], "pool"),
        (
            vec!["--pool", "mars-1:7d4b3c2a-0000-4000-8000-000000000001"],
            "pool",
        ),
        (
            vec![
                "--backend",
                "ch-gva-2=http://x",
                "--pool",
                "ch-gva-2:7d4b3c2a-0000-4000-8000-000000000001",
            ],
            "pool",
        ),
        (
            vec![
                "--pool",
                "ch-gva-2:7d4b3c2a-0000-4000-8000-000000000001",
                "--pool-refresh",
                "1ms",
            ],
            "pool-refresh",
        ),
        // No credentials in the environment (base_command clears them).
        (
            vec!["--pool", "ch-gva-2:7d4b3c2a-0000-4000-8000-000000000001"],
            "EXOSCALE_API_KEY",
        ),
    ];
    common::each_exits_64_naming_the_field(
        cases,
        |args| {
            common::base_command()
                .arg("front")
                .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:1"])
                .args(args)
                .output()
                .unwrap()
        },
        common::all_output,
    );
}
