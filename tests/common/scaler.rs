//! A running `poolpilot autoscaler` that a test drives over HTTP: started with the flags and
//! environment the test gives it, ready once `/readyz` answers, its decisions and log at hand,
//! stopped by SIGTERM or killed when dropped. And the tick counter the tests wait on: every
//! tick reads the pool once.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestSim;

pub struct Scaler {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Scaler {
    /// Spawns `cmd` (`poolpilot autoscaler` with the test's flags and environment) listening on
    /// a free port of 127.0.0.1, its stderr in `dir`, and waits until it is ready.
    pub async fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Self {
        let port = super::free_port();
        let child = cmd
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("autoscaler.log")).unwrap())
            .spawn()
            .unwrap();
        let s = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            dir,
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = s.http.get(format!("{}/readyz", s.base)).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "never ready:\n{}",
                s.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("autoscaler.log")).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The decision record at `path` (`/v1/decisions` or `/v1/decisions/POOL`).
    pub async fn decisions_at(&self, path: &str) -> Vec<Value> {
        self.get(path).await.1.as_array().unwrap().clone()
    }

    /// Waits for a decision at `path`, recorded after the first `after`, that satisfies `pred`.
    pub async fn wait_decision_at(
        &self,
        path: &str,
        after: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let d = self.decisions_at(path).await;
            if let Some(found) = d.iter().skip(after).find(|d| pred(d)) {
                return found.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "no such decision at {path}; have {d:#?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM; the exit code and how long the exit took.
    pub fn terminate(&mut self) -> (i32, Duration) {
        super::sigterm(&mut self.child)
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How often the pool has been read from the simulator: once a tick.
pub fn pool_reads(sim: &TestSim) -> usize {
    sim.requests_to("GET", &format!("/v2/instance-pool/{}", sim.pool))
}

/// Waits until the autoscaler has read the pool `n` more times (that is, ticked `n` times).
pub async fn ticks(sim: &TestSim, n: usize) {
    let target = pool_reads(sim) + n;
    let started = Instant::now();
    while pool_reads(sim) < target {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the loop stopped ticking"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
