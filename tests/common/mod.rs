//! Helpers shared by the integration tests: an in-process simulator and a client for it.
#![allow(dead_code)]

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
    let mut state = State::new(Zone::DEFAULT, timing, Arc::new(RecordBackend::new()));
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
