//! `poolpilot replica` against real `redis-server` processes (Debian's; .ci/run installs it): the
//! health check follows the replication link, the drain switch works, bad config exits 64.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{base_command, each_exits_64_naming_the_field, free_port, stderr};
use poolpilot::local::process::{self, Process};

const TOKEN: &str = "replica-drain-token";

/// A throwaway redis-server on 127.0.0.1 (no persistence), optionally a replica of `primary`.
fn redis_server(port: u16, primary: Option<u16>) -> Process {
    let mut c = Command::new("redis-server");
    c.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--repl-ping-replica-period", "1", "--repl-timeout", "5"])
        .args(["--replica-serve-stale-data", "no"])
        .stdout(std::process::Stdio::null());
    if let Some(p) = primary {
        c.args(["--replicaof", "127.0.0.1", &p.to_string()]);
    }
    let p = process::spawn(format!("redis-server :{port}"), &mut c)
        .expect("redis-server is required (apt-get install redis-server)");
    wait_until(Duration::from_secs(20), "redis-server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    p
}

fn sidecar(redis_port: u16) -> (Process, String) {
    let port = free_port();
    let mut c = base_command();
    c.args(["replica", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--redis", &format!("redis://127.0.0.1:{redis_port}")])
        .args(["--max-last-io", "3s"])
        .env(poolpilot::config::env::DRAIN_TOKEN, TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let p = process::spawn("replica sidecar", &mut c).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(20), "the sidecar to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (p, base)
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn health(base: &str) -> (u16, String) {
    let r = reqwest::get(format!("{base}/health")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Polls `/health` until it answers `code`, within `limit`.
async fn health_becomes(base: &str, code: u16, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        let (c, body) = health(base).await;
        if c == code {
            return body;
        }
        assert!(
            Instant::now() < end,
            "/health stayed {c} ({body}), not {code}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drain(base: &str, method: reqwest::Method, token: &str) -> u16 {
    reqwest::Client::new()
        .request(method, format!("{base}/admin/drain"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn health_follows_the_replication_link_and_the_drain_switch() {
    let (p1, p2) = (free_port(), free_port());
    let primary = redis_server(p1, None);
    let _replica = redis_server(p2, Some(p1));
    let (_s, base) = sidecar(p2);

    assert_eq!(
        health_becomes(&base, 200, Duration::from_secs(30)).await,
        "OK"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("poolpilot_replica_in_sync 1"), "{metrics}");
    assert!(metrics.contains("poolpilot_replica_link_up 1"), "{metrics}");
    common::promtool_accepts(&metrics);

    // The drain switch: the token is required; drained, the check fails; undrained, it passes.
    assert_eq!(drain(&base, reqwest::Method::POST, "wrong").await, 401);
    assert_eq!(health(&base).await.0, 200);
    assert_eq!(drain(&base, reqwest::Method::POST, TOKEN).await, 200);
    assert_eq!(health(&base).await, (503, "draining".into()));
    assert_eq!(drain(&base, reqwest::Method::DELETE, TOKEN).await, 200);
    assert_eq!(health(&base).await.0, 200);

    // The primary goes away: the replica leaves the rotation, and it serves no stale reads.
    primary.stop();
    let why = health_becomes(&base, 503, Duration::from_secs(30)).await;
    assert!(
        why.contains("link to the primary is down") || why.contains("no word from the primary"),
        "{why}"
    );
    let read = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &p2.to_string(), "GET", "k"])
        .output()
        .expect("redis-cli is required (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(
        text.contains("MASTERDOWN"),
        "a replica cut off from its primary must not answer reads: {text}"
    );
}

#[tokio::test]
async fn a_primary_or_no_redis_at_all_is_not_healthy() {
    let p = free_port();
    let _primary = redis_server(p, None);
    let (_s, base) = sidecar(p);
    let (code, why) = health(&base).await;
    assert_eq!(code, 503);
    assert!(why.contains("not a replica"), "{why}");

    let closed = free_port();
    let (_s2, base2) = sidecar(closed);
    let (code, why) = health(&base2).await;
    assert_eq!(code, 503);
    assert!(why.starts_with("redis"), "{why}");
}

#[test]
fn bad_config_exits_64_naming_the_field() {
    let cases = [
        (vec!["--redis", "http://127.0.0.1:6379"], "redis"),
        (vec!["--redis", "not a url"], "redis"),
        (vec!["--redis", "redis+unix:///tmp/r.sock"], "redis"),
        (vec!["--max-last-io", "0s"], "max-last-io"),
        (vec!["--max-last-io", "2h"], "max-last-io"),
    ];
    each_exits_64_naming_the_field(
        cases,
        |args| {
            base_command()
                .args(["replica", "--listen", "127.0.0.1:0"])
                .args(args)
                .output()
                .unwrap()
        },
        stderr,
    );
}
