//! Helpers shared by the integration tests: an in-process simulator and a client for it.
#![allow(dead_code)]

pub mod redis;
pub mod scaler;

use std::sync::Arc;
use std::time::Duration;

use poolpilot::config::Zone;
use poolpilot::exoscale::{Client, ClientConfig, Credentials, PollPolicy, RetryPolicy};
use poolpilot::sim::seed::{self, SeedPool};
use poolpilot::sim::{RecordBackend, RunningSim, Sim, State, Timing};
use uuid::Uuid;

pub const KEY: &str = "EXOtest0000000000000000000";
pub const SECRET: &str = "test-secret-0123456789";

pub struct TestSim {
    pub running: RunningSim,
    pub pool: Uuid,
    pub load_balancer: Uuid,
}

impl TestSim {
    pub fn sim(&self) -> &Arc<Sim> {
        &self.running.sim
    }

    pub fn client(&self) -> Client {
        client_for(&self.running.endpoint(), Credentials::new(KEY, SECRET))
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}/admin{path}", self.running.addr)
    }

    pub fn requests_to(&self, method: &str, path: &str) -> usize {
        self.sim()
            .requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

/// A client with the SDK's retry count but millisecond backoff and polling, for fast tests.
pub fn client_for(endpoint: &str, creds: Credentials) -> Client {
    let mut cfg = ClientConfig::new(Zone::DEFAULT, endpoint, creds).unwrap();
    cfg.retry = RetryPolicy {
        max_retries: 4,
        base: Duration::from_millis(10),
        max: Duration::from_millis(100),
    };
    cfg.poll = PollPolicy::quick();
    cfg.request_timeout = Duration::from_secs(5);
    Client::new(cfg).unwrap()
}

pub async fn start(size: u64, timing: Timing) -> TestSim {
    start_in(Zone::DEFAULT, size, timing).await
}

/// A simulator of `zone` (one zone per simulator: two zones are two simulators, each its own
/// endpoint in `EXOSCALE_API_ENDPOINT=ZONE=URL,ZONE=URL`).
pub async fn start_in(zone: Zone, size: u64, timing: Timing) -> TestSim {
    let mut state = State::new(zone, timing, Arc::new(RecordBackend::new()));
    let seeded = seed::apply(&mut state, &[SeedPool::default_with_size(size)]).unwrap();
    let sim = Sim::new(state, vec![Credentials::new(KEY, SECRET)]);
    let running = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    TestSim {
        running,
        pool: seeded[0].pool,
        load_balancer: seeded[0].load_balancer.unwrap(),
    }
}

pub fn quick() -> Timing {
    Timing {
        operation_delay: Duration::from_millis(100),
        boot_delay: Duration::from_millis(200),
    }
}

/// A port nothing listens on right now (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `promtool check metrics` (Debian's prometheus package; .ci/run installs it) finds no problem.
pub fn promtool_accepts(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real binary with none of poolpilot's variables (`config::env::ALL`) inherited from the
/// environment that runs the tests, logging JSON.
pub fn base_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"));
    for v in poolpilot::config::env::ALL {
        c.env_remove(v);
    }
    c.env(poolpilot::config::env::LOG_FORMAT, "json");
    c
}

/// What a command wrote, stdout then stderr.
pub fn all_output(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What a command wrote to stderr.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs every case and asserts that it exits 64 (a configuration error) and names its field in
/// the part of the output `text` reads.
pub fn each_exits_64_naming_the_field<'a, C: std::fmt::Debug>(
    cases: impl IntoIterator<Item = (C, &'a str)>,
    mut run: impl FnMut(&C) -> std::process::Output,
    text: fn(&std::process::Output) -> String,
) {
    for (case, field) in cases {
        let o = run(&case);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(64), "{case:?} should exit 64:\n{t}");
        assert!(t.contains(field), "{case:?} should name {field}:\n{t}");
    }
}

/// The app's `poolpilot_app_http_requests_total` for `route` with code 200, scraped from `base`.
pub async fn served(base: &str, route: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("poolpilot_app_http_requests_total{{route=\"{route}\",code=\"200\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

/// The local mode's backend: instances as real `poolpilot app` processes on 127.0.`subnet`.x,
/// half a core each, `/load` lasting `load`, draining with `drain_token`, logs in `dir`. Tests
/// of one binary run at once: each of its rigs takes a subnet of its own.
pub fn local_backend(
    dir: &std::path::Path,
    load: Duration,
    drain_token: &str,
    subnet: u8,
) -> Arc<poolpilot::local::backend::LocalBackend> {
    use poolpilot::local::backend::{LocalBackend, LocalConfig, QuotaMode};
    Arc::new(LocalBackend::new(LocalConfig {
        binary: env!("CARGO_BIN_EXE_poolpilot").into(),
        capacity: 0.5,
        load_duration: load,
        drain_token: drain_token.into(),
        log_dir: dir.to_path_buf(),
        quota: QuotaMode::detect(),
        subnet,
        kind: poolpilot::local::backend::MemberKind::App,
    }))
}

/// A simulated pool of `size` members of `backend` (booting in `boot_delay`) behind a load
/// balancer named `name` on `target_port`, and the local NLB in front of it, probing each
/// member's `/health` on 8080 every 200 ms (5 s timeout, `retries` in a row to flip). The
/// NLB's health checks are the test's to run.
pub struct PoolBehindNlb {
    pub sim: Arc<poolpilot::sim::Sim>,
    pub nlb: poolpilot::local::nlb::Nlb,
    pub pool: uuid::Uuid,
    pub lb: uuid::Uuid,
}

pub fn pool_behind_nlb(
    backend: Arc<poolpilot::local::backend::LocalBackend>,
    boot_delay: Duration,
    name: &str,
    size: u64,
    target_port: u16,
    retries: u32,
) -> PoolBehindNlb {
    use poolpilot::exoscale::Healthcheck;
    use poolpilot::local::nlb::{Nlb, NlbConfig};
    use poolpilot::sim::{Sim, State, Timing};
    let mut state = State::new(
        poolpilot::config::Zone::DEFAULT,
        Timing {
            operation_delay: Duration::from_millis(100),
            boot_delay,
        },
        backend,
    );
    let now = tokio::time::Instant::now();
    let pool = state
        .create_pool(now, None, name, size, "standard.micro", false)
        .unwrap();
    let hc = Healthcheck {
        mode: "http".into(),
        port: 8080,
        uri: Some("/health".into()),
        interval: 1,
        timeout: 1,
        retries: 1,
    };
    let lb =
        state.create_load_balancer(name, "127.0.0.1".parse().unwrap(), pool, 0, target_port, hc);
    let sim = Sim::new(
        state,
        vec![poolpilot::exoscale::Credentials::new("EXOk", "s")],
    );
    let nlb = Nlb::new(
        sim.clone(),
        NlbConfig {
            pool,
            target_port,
            check_port: 8080,
            uri: "/health".into(),
            interval: Duration::from_millis(200),
            // Generous: a probe answered late by a loaded machine must not flip membership.
            timeout: Duration::from_secs(5),
            retries,
        },
    );
    PoolBehindNlb { sim, nlb, pool, lb }
}

/// Sends SIGTERM to `child` and waits (10 s at most) for it to exit; its exit code and how long
/// the exit took.
pub fn sigterm(child: &mut std::process::Child) -> (i32, Duration) {
    let started = std::time::Instant::now();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st.code().expect("exited, not killed"), started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Serves `body` to every GET on a loopback port (a thread per listener, for the life of the
/// test process) and returns its URL: an image for the simulator to download.
pub fn serve_bytes(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/image.qcow2", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    url
}

/// The MD5 of `bytes`, hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(bytes))
}

/// Runs `poolpilot demo --fast --monitoring embedded --policy POLICY --clients 2` and checks
/// what every policy's demo must show: it succeeds, no request fails, the load got through, and
/// the pool is back at one member. Returns the output directory (its logs) and the report
/// (`timeline.json`).
#[allow(dead_code)]
pub fn policy_demo(policy: &str) -> (tempfile::TempDir, serde_json::Value) {
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(["demo", "--fast", "--monitoring", "embedded"])
        .args(["--policy", policy, "--clients", "2"])
        .arg("--out")
        .arg(out.path())
        .args(["--nlb-listen", &format!("127.0.0.1:{port}")])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the demo failed: {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("timeline.json")).unwrap()).unwrap();
    let o = &report["summary"]["outcome"];
    assert_eq!(o["failed_requests"], 0, "{o}");
    assert!(o["ok_requests"].as_u64().unwrap() > 500, "{o}");
    assert_eq!(o["final_size"], 1, "{o}");
    (out, report)
}

/// The decisions of a demo report that changed the pool.
#[allow(dead_code)]
pub fn scaled(report: &serde_json::Value) -> Vec<&serde_json::Value> {
    report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["outcome"] == "scaled")
        .collect()
}
