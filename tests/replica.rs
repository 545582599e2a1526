//! `poolpilot replica` against real `redis-server` processes (Debian's; .ci/run installs it): the
//! health check follows the replication link, the drain switch works, bad config exits 64.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{base_command, each_exits_64_naming_the_field, free_port, stderr};
use poolpilot::local::process::{self, Process};

const TOKEN: &str = "replica-drain-token";

/// A replica of `primary` as the members run it: no stale reads, a ping every second.
fn replica_of(primary: &Redis) -> Redis {
    Redis::with(&[
        "--replicaof",
        "127.0.0.1",
        &primary.port.to_string(),
        "--repl-ping-replica-period",
        "1",
        "--repl-timeout",
        "5",
        "--replica-serve-stale-data",
        "no",
    ])
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
    common::redis::wait_for("the sidecar to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (p, base)
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
    let mut primary = Redis::start();
    let replica = replica_of(&primary);
    let p2 = replica.port;
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
    assert!(
        metrics.contains("poolpilot_replica_redis_ops_per_second "),
        "{metrics}"
    );
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
    let primary = Redis::start();
    let (_s, base) = sidecar(primary.port);
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

/// The local mode's replica pool: members are redis-server replicas with their sidecars on
/// 127.0.3.x, behind the local NLB in TCP mode with the health check on the sidecar. A member
/// enters the rotation only once in sync (it then holds every key the primary had), reads
/// through the NLB see the primary's data, and a drained member leaves the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_pool_behind_the_tcp_nlb_serves_the_primarys_data_only_once_in_sync() {
    use poolpilot::local::backend::{LocalBackend, LocalConfig, MemberKind, QuotaMode};
    use std::sync::Arc;

    let primary = Redis::start();
    let p = primary.port;
    let mut w = redis::Client::open(format!("redis://127.0.0.1:{p}"))
        .unwrap()
        .get_connection()
        .unwrap();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut w)
            .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LocalBackend::new(LocalConfig {
        binary: env!("CARGO_BIN_EXE_poolpilot").into(),
        capacity: 0.5,
        load_duration: Duration::from_secs(1),
        drain_token: TOKEN.into(),
        log_dir: dir.path().to_path_buf(),
        quota: QuotaMode::DutyCycleOnly("a test".into()),
        subnet: 3,
        kind: MemberKind::RedisReplica {
            primary: ([127, 0, 0, 1], p).into(),
        },
    }));
    let common::PoolBehindNlb { nlb, .. } = common::pool_behind_nlb(
        backend.clone(),
        Duration::from_millis(100),
        "replicas",
        2,
        6379,
        2,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(nlb.clone().serve_tcp(listener));

    // Each round of probes: every member the NLB calls healthy holds all 200 keys.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        nlb.check_once().await;
        for m in nlb.members().into_iter().filter(|m| m.healthy) {
            let mut c = redis::Client::open(format!("redis://{}:6379", m.addr))
                .unwrap()
                .get_connection()
                .unwrap();
            let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
            assert!(n >= 200, "{} is in rotation with {n} of 200 keys", m.addr);
            seen.insert(m.addr);
        }
        if seen.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "two members in sync within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each full sync wrote the member's snapshot beside its logs (not in the directory the
    // caller started from, where a user's `demo --profile redis` would have found dump.rdb).
    let snapshots: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("-redis.rdb"))
        .collect();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");

    // Reads through the NLB, a new connection each: every key, on both members.
    for i in 0..20 {
        let mut c = redis::Client::open(format!("redis://{at}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let v: String = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, i.to_string());
    }
    assert_eq!(
        nlb.stats()
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed),
        20
    );

    // Drain one: it leaves the rotation at the next round of probes.
    let victim = nlb.members()[0].addr;
    assert_eq!(
        drain(
            &format!("http://{victim}:8080"),
            reqwest::Method::POST,
            TOKEN
        )
        .await,
        200
    );
    nlb.check_once().await;
    nlb.check_once().await;
    let rotation: Vec<_> = nlb
        .members()
        .into_iter()
        .filter(|m| m.healthy)
        .map(|m| m.addr)
        .collect();
    assert!(!rotation.contains(&victim), "{rotation:?}");
    assert_eq!(rotation.len(), 1);
    backend.shutdown();
}
