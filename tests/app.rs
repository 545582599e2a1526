//! The slow app over real sockets: the course's exact answers, the exporter's counts, the drain
//! switch, and a clean stop while `/load` runs.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use poolpilot::app::{self, AppConfig};
use poolpilot::config::Secret;

async fn serve(cfg: AppConfig) -> String {
    serve_router(app::router(cfg)).await
}

async fn serve_router(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn cfg(load: Duration, token: Option<&str>) -> AppConfig {
    AppConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        load_duration: load,
        capacity: 1.0,
        drain_token: token.map(Secret::new),
    }
}

#[tokio::test]
async fn health_and_load_answer_exactly_as_the_course_app() {
    let base = serve(cfg(Duration::from_millis(200), None)).await;
    let c = reqwest::Client::new();
    for method in ["GET", "POST", "PUT", "DELETE", "HEAD"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = c
            .request(m.clone(), format!("{base}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method} /health");
        if method != "HEAD" {
            assert_eq!(r.text().await.unwrap(), "OK");
        }
    }
    let started = Instant::now();
    let r = c.get(format!("{base}/load")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "Load generation done.");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "/load must burn its duration"
    );
    let r = c.post(format!("{base}/load")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Load generation done.");
    assert_eq!(
        c.get(format!("{base}/nope")).send().await.unwrap().status(),
        404
    );
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test]
async fn the_exporter_counts_every_route() {
    let base = serve(cfg(Duration::from_millis(50), None)).await;
    let c = reqwest::Client::new();
    for _ in 0..3 {
        c.get(format!("{base}/health")).send().await.unwrap();
    }
    c.get(format!("{base}/load")).send().await.unwrap();
    for _ in 0..2 {
        let r = c.get(format!("{base}/homersimpson")).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        assert!(r.text().await.unwrap().starts_with("<svg"));
    }
    let r = c.get(format!("{base}/covilha")).send().await.unwrap();
    assert!(r.text().await.unwrap().starts_with("Covilhã, Portugal: "));
    c.get(format!("{base}/missing")).send().await.unwrap();

    let r = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let count = |route: &str, code: u16| {
        sample(
            &text,
            &format!("poolpilot_app_http_requests_total{{route=\"{route}\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(count("health", 200), Some(3.0), "{text}");
    assert_eq!(count("load", 200), Some(1.0));
    assert_eq!(count("homersimpson", 200), Some(2.0));
    assert_eq!(count("covilha", 200), Some(1.0));
    assert_eq!(count("other", 404), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "poolpilot_app_http_request_duration_seconds_count{route=\"health\"}"
        ),
        Some(3.0)
    );
    assert_eq!(sample(&text, "poolpilot_app_load_in_flight"), Some(0.0));
    assert_eq!(sample(&text, "poolpilot_app_draining"), Some(0.0));
    assert!(sample(&text, "process_cpu_seconds_total").is_some());
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    common::promtool_accepts(&text);
}

#[tokio::test]
async fn load_in_flight_is_visible_while_it_burns() {
    // Long enough that the gauge is read while the request burns, however slow the machine:
    // the test waits for it to show 1, then for the answer, then for 0.
    let base = serve(cfg(Duration::from_secs(5), None)).await;
    let c = reqwest::Client::new();
    let url = format!("{base}/load");
    let pending =
        tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() });
    let in_flight = || async {
        let text = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sample(&text, "poolpilot_app_load_in_flight")
    };
    let mut seen = Vec::new();
    while !pending.is_finished() {
        let v = in_flight().await;
        seen.push(v);
        if v == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.last(),
        Some(&Some(1.0)),
        "never 1 while burning: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|v| matches!(v, Some(x) if *x == 0.0 || *x == 1.0)),
        "{seen:?}"
    );
    assert_eq!(pending.await.unwrap(), "Load generation done.");
    assert_eq!(
        in_flight().await,
        Some(0.0),
        "the answered request still counted"
    );
}

#[tokio::test]
async fn drain_fails_health_until_undrained() {
    let base = serve(cfg(Duration::from_millis(10), Some("s3cret"))).await;
    let c = reqwest::Client::new();
    let drain = |m: reqwest::Method, token: &str| {
        c.request(m, format!("{base}/admin/drain"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        drain(reqwest::Method::POST, "wrong")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.post(format!("{base}/admin/drain"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let r = drain(reqwest::Method::POST, "s3cret").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"draining":true}"#);
    let r = c.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "draining");
    // In-flight and new /load requests still work while drained: only health fails.
    assert_eq!(
        c.get(format!("{base}/load")).send().await.unwrap().status(),
        200
    );
    let m = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sample(&m, "poolpilot_app_draining"), Some(1.0));

    assert_eq!(
        drain(reqwest::Method::DELETE, "s3cret")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "OK"
    );
    let r = drain(reqwest::Method::GET, "s3cret").await.unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"draining":false}"#);
}

#[tokio::test]
async fn without_a_token_draining_is_disabled() {
    let base = serve(cfg(Duration::from_millis(10), None)).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/admin/drain"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn covilha_uses_the_injected_clock() {
    let fixed = chrono::Utc.with_ymd_and_hms(2026, 7, 1, 12, 0, 0).unwrap();
    let base = serve_router(app::router_with_clock(
        cfg(Duration::from_millis(10), None),
        Arc::new(move || fixed),
    ))
    .await;
    let body = reqwest::get(format!("{base}/covilha"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        body,
        "Covilhã, Portugal: 2026-07-01 13:00:00 WEST (UTC+01:00)"
    );
}

#[test]
#[allow(unsafe_code, reason = "libc: kill(2) sends SIGTERM to the child")]
fn sigterm_during_a_load_exits_0_within_5_seconds() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args([
            "app",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--load-seconds",
            "30s",
            "--burners",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "app did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A /load in flight, then SIGTERM.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut s, b"GET /load HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on our own child's pid; the clock starts once the signal is sent.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(0));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn load_seconds_takes_a_number_of_seconds() {
    // `--load-seconds 1` is what the flag's name says; a unit is still accepted. Refused
    // values exit 64 naming the flag, before the port is bound.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(["app", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--load-seconds", "1", "--burners", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("`--load-seconds 1` was refused: {st}");
        }
        assert!(Instant::now() < deadline, "app did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    for bad in ["0", "ten", "1.5.2", "5000"] {
        let out = Command::new(env!("CARGO_BIN_EXE_poolpilot"))
            .args(["app", "--listen", "127.0.0.1:0"])
            .arg(format!("--load-seconds={bad}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(64) && err.contains("load-seconds"),
            "{bad}: {:?} {err}",
            out.status.code()
        );
    }
}
