//! The load generator against the real app on 127.0.0.1: bounded runs, exact counts, error kinds.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::served;
use poolpilot::app::{self, AppConfig};
use poolpilot::load::{self, LoadConfig, Mode, Profile};

async fn app() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app::router(AppConfig {
        listen: addr,
        load_duration: Duration::from_millis(50),
        capacity: 1.0,
        drain_token: None,
    });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn cfg(url: &str, mode: Mode, duration: Option<u64>, requests: Option<u64>) -> LoadConfig {
    LoadConfig {
        url: url.parse().unwrap(),
        mode,
        duration: duration.map(Duration::from_millis),
        requests,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_closed_loop_sends_exactly_its_request_budget() {
    let base = app().await;
    let s = load::run(
        cfg(
            &format!("{base}/health"),
            Mode::Closed(Profile::Constant(4.0)),
            None,
            Some(250),
        ),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((s.requests, s.ok, s.failed), (250, 250, 0));
    assert_eq!(served(&base, "health").await, 250.0);
    assert!(s.latency_ms.p50 > 0.0 && s.latency_ms.p99 >= s.latency_ms.p50);
}

#[tokio::test]
async fn an_open_loop_sends_exactly_its_request_budget() {
    let base = app().await;
    let s = load::run(
        cfg(
            &format!("{base}/health"),
            Mode::Open(Profile::Constant(400.0)),
            None,
            Some(120),
        ),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((s.requests, s.ok), (120, 120));
    assert_eq!(served(&base, "health").await, 120.0);
}

#[tokio::test]
async fn a_profile_ends_the_run() {
    let base = app().await;
    let p: Profile = "step:0s=2,500ms=1,1s=0".parse().unwrap();
    let s = load::run(
        cfg(&format!("{base}/load"), Mode::Closed(p), None, None),
        |_| {},
    )
    .await
    .unwrap();
    assert!(s.elapsed_seconds < 3.0, "ran {}s", s.elapsed_seconds);
    assert!(s.ok >= 10, "two then one client on a 50 ms /load: {}", s.ok);
    assert_eq!(served(&base, "load").await, s.ok as f64);
}

#[tokio::test]
async fn failures_are_counted_by_kind() {
    let base = app().await;
    let s = load::run(
        cfg(
            &format!("{base}/missing"),
            Mode::Closed(Profile::Constant(1.0)),
            None,
            Some(5),
        ),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(s.errors.get("http_404"), Some(&5));
    // Nothing listens on a freshly closed port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = load::run(
        cfg(
            &format!("http://127.0.0.1:{port}/"),
            Mode::Closed(Profile::Constant(1.0)),
            None,
            Some(3),
        ),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(s.errors.get("connect"), Some(&3), "{:?}", s.errors);
}

#[tokio::test]
async fn slow_answers_count_as_timeouts_on_both_transports() {
    // /load holds each request for 2 s; the client gives up after 200 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app::router(AppConfig {
        listen: addr,
        load_duration: Duration::from_secs(2),
        capacity: 1.0,
        drain_token: None,
    });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let url = format!("http://{addr}/load");
    for mode in [
        Mode::Closed(Profile::Constant(1.0)),
        Mode::Open(Profile::Constant(20.0)),
    ] {
        let mut c = cfg(&url, mode.clone(), None, Some(2));
        c.timeout = Duration::from_millis(200);
        let s = load::run(c, |_| {}).await.unwrap();
        assert_eq!(
            s.errors.get("timeout"),
            Some(&2),
            "{mode:?}: {:?}",
            s.errors
        );
        assert_eq!(s.ok, 0);
    }
}

#[test]
fn unbounded_or_ambiguous_runs_are_refused_with_exit_64() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["load", "--url", "http://127.0.0.1:9/", "--concurrency", "2"],
            "duration",
        ),
        (
            &[
                "load",
                "--url",
                "http://127.0.0.1:9/",
                "--concurrency",
                "2",
                "--rate",
                "5",
                "--requests",
                "1",
            ],
            "--rate",
        ),
        (
            &[
                "load",
                "--url",
                "ftp://127.0.0.1/",
                "--rate",
                "5",
                "--requests",
                "1",
            ],
            "url",
        ),
        (
            &[
                "load",
                "--url",
                "http://127.0.0.1:9/",
                "--rate",
                "step:5s=1,1s=2",
            ],
            "backwards",
        ),
    ];
    common::each_exits_64_naming_the_field(
        cases,
        |args| {
            Command::new(env!("CARGO_BIN_EXE_poolpilot"))
                .args(*args)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        },
        common::stderr,
    );
}

#[test]
fn the_binary_prints_a_json_summary() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = rt.block_on(app());
    let o = Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args([
            "load",
            "--url",
            &format!("{base}/health"),
            "--concurrency",
            "2",
            "--requests",
            "40",
            "--json",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["requests"], 40);
    assert_eq!(v["ok"], 40);
    assert!(v["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}
