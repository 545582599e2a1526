//! A throwaway `redis-server` (Debian's redis-server package; .ci/run installs it) on a free
//! loopback port, in a directory of its own, with no persistence; it dies with the test process
//! (`PR_SET_PDEATHSIG`, see `local::process`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use poolpilot::local::process::{self, Process};

/// One `redis-server` child.
pub struct Redis {
    pub port: u16,
    proc: Option<Process>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Redis {
    /// A standalone server (a primary, or a stand-in "replica" that is not one).
    pub fn start() -> Self {
        Self::with(&[])
    }

    /// A real replica of `primary`, returned once its link to the primary is up.
    pub fn replica_of(primary: &Redis) -> Self {
        let r = Self::with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
        wait_for("the replica's link to its primary", || {
            r.info_replication()
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
        r
    }

    pub fn with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Self {
            port: super::free_port(),
            proc: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.launch();
        r
    }

    /// Starts the server on its port (again, after [`Self::stop`]).
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.proc = Some(
            process::spawn("redis-server", &mut cmd)
                .expect("redis-server is required (apt-get install redis-server)"),
        );
        wait_for("redis-server to answer PING", || self.try_conn().is_some());
    }

    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Process::id)
    }

    /// The server's URL, with its `--requirepass` password if it has one.
    pub fn url(&self) -> String {
        let auth = self
            .extra
            .iter()
            .position(|a| a == "--requirepass")
            .map(|i| format!(":{}@", self.extra[i + 1]))
            .unwrap_or_default();
        format!("redis://{auth}127.0.0.1:{}", self.port)
    }

    pub fn try_conn(&self) -> Option<redis::Connection> {
        let mut c = redis::Client::open(self.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        // A replica that refuses stale reads refuses PING too, and so answers.
        match redis::cmd("PING").query::<String>(&mut c) {
            Ok(_) => Some(c),
            Err(e) if e.code() == Some("MASTERDOWN") => Some(c),
            Err(_) => None,
        }
    }

    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("a connection to redis-server")
    }

    pub fn info_replication(&self) -> Option<String> {
        redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut self.try_conn()?)
            .ok()
    }

    /// What this server holds for `key`, asked directly (not through the API).
    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    pub fn set(&self, key: &str, val: &str) {
        redis::cmd("SET")
            .arg(key)
            .arg(val)
            .query::<()>(&mut self.conn())
            .unwrap();
    }

    pub fn dbsize(&self) -> u64 {
        redis::cmd("DBSIZE").query(&mut self.conn()).unwrap()
    }
}

/// Polls `cond` every 20 ms for at most 20 s.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
