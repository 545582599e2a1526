//! [`LocalBackend`]: each simulated instance is a real `poolpilot app` process.
//!
//! Instance N listens on 127.0.1.N:8080 (the app) and 127.0.1.N:9100 (the node_exporter
//! stand-in), the ports a pool member serves on Exoscale. Linux routes all of 127.0.0.0/8 to the
//! loopback interface, so no set-up is needed.
//!
//! CPU capacity: every app burns at most its `--cpu-capacity` (a duty cycle, see
//! `app::burn`). Where the machine allows it, a cgroup CPU quota enforces the same capacity on
//! the whole process: cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`), under
//! `poolpilot-local/<instance>`. Where it does not (no write access, no cpu controller), the
//! duty cycle alone keeps the capacity, and [`QuotaMode::DutyCycleOnly`] says so.
//!
//! The processes die with the simulator (see [`super::process`]), and
//! [`LocalBackend::shutdown`] stops the rest.
#![allow(
    unsafe_code,
    reason = "libc: PR_SET_PDEATHSIG and SIGTERM for the instance processes"
)]

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use super::process::{self, Process};
use crate::config::{Secret, env};
use crate::sim::backend::{BackendError, InstanceBackend, LaunchSpec};

pub const APP_PORT: u16 = 8080;
pub const NODE_PORT: u16 = 9100;

/// How the CPU capacity is enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaMode {
    CgroupV2(PathBuf),
    CgroupV1(PathBuf),
    /// No cgroup could be used: the app's own duty cycle keeps the capacity.
    DutyCycleOnly(String),
}

impl QuotaMode {
    /// Finds a cgroup hierarchy we may create groups in, else says why not.
    pub fn detect() -> Self {
        let v2 = Path::new("/sys/fs/cgroup");
        if v2.join("cgroup.controllers").exists() {
            let controllers =
                std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "cpu") {
                let parent = v2.join("poolpilot-local");
                let ok = std::fs::create_dir_all(&parent).is_ok()
                    && std::fs::write(v2.join("cgroup.subtree_control"), "+cpu").is_ok()
                    && std::fs::write(parent.join("cgroup.subtree_control"), "+cpu").is_ok();
                if ok {
                    return QuotaMode::CgroupV2(parent);
                }
                let _ = std::fs::remove_dir(&parent);
                return QuotaMode::DutyCycleOnly(
                    "cgroup v2 is mounted but not writable here".into(),
                );
            }
        }
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        if v1.join("cpu.cfs_quota_us").exists() {
            let parent = v1.join("poolpilot-local");
            if std::fs::create_dir_all(&parent).is_ok() && parent.join("cgroup.procs").exists() {
                return QuotaMode::CgroupV1(parent);
            }
            return QuotaMode::DutyCycleOnly(
                "cgroup v1 cpu is mounted but not writable here".into(),
            );
        }
        QuotaMode::DutyCycleOnly("no cgroup cpu controller found".into())
    }

    pub fn describe(&self) -> String {
        match self {
            QuotaMode::CgroupV2(p) => format!("cgroup v2 cpu.max under {}", p.display()),
            QuotaMode::CgroupV1(p) => format!("cgroup v1 cpu.cfs_quota_us under {}", p.display()),
            QuotaMode::DutyCycleOnly(why) => {
                format!(
                    "the app's duty cycle only ({why}); other work in the process is not capped"
                )
            }
        }
    }

    /// Puts `pid` into a new group limited to `capacity` cores; returns the group to remove.
    fn apply(&self, name: &str, pid: u32, capacity: f64) -> std::io::Result<Option<PathBuf>> {
        let period: u64 = 100_000;
        let quota = ((capacity * period as f64) as u64).max(1000);
        match self {
            QuotaMode::CgroupV2(parent) => {
                let g = parent.join(name);
                std::fs::create_dir_all(&g)?;
                std::fs::write(g.join("cpu.max"), format!("{quota} {period}"))?;
                std::fs::write(g.join("cgroup.procs"), pid.to_string())?;
                Ok(Some(g))
            }
            QuotaMode::CgroupV1(parent) => {
                let g = parent.join(name);
                std::fs::create_dir_all(&g)?;
                std::fs::write(g.join("cpu.cfs_period_us"), period.to_string())?;
                std::fs::write(g.join("cpu.cfs_quota_us"), quota.to_string())?;
                std::fs::write(g.join("cgroup.procs"), pid.to_string())?;
                Ok(Some(g))
            }
            QuotaMode::DutyCycleOnly(_) => Ok(None),
        }
    }
}

/// How local instances are started.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The `poolpilot` binary to run as `app`.
    pub binary: PathBuf,
    /// Cores per instance.
    pub capacity: f64,
    pub load_duration: Duration,
    /// Given to every app as `POOLPILOT_DRAIN_TOKEN`.
    pub drain_token: Secret,
    /// Where each instance's log goes (`<name>.log`).
    pub log_dir: PathBuf,
    pub quota: QuotaMode,
    /// The third octet of the instances' addresses: 127.0.<subnet>.1-250 (one per zone when a
    /// demo runs several).
    pub subnet: u8,
    /// What each instance runs.
    pub kind: MemberKind,
}

/// What a local instance runs: the pool's image, in processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberKind {
    /// `poolpilot app` with the node_exporter stand-in (the course's member).
    App,
    /// `redis-server` on :6379 as a replica of `primary` (no persistence, no stale reads, a
    /// ping every second), and its sidecar `poolpilot replica` on :8080 for the health check
    /// and the drain.
    RedisReplica { primary: SocketAddr },
    /// `poolpilot kv` on :8080, writing to `primary` and reading from `replicas` (Redis URLs).
    Kv { primary: String, replicas: String },
}

/// The Redis port of a replica member.
pub const REDIS_PORT: u16 = 6379;

/// An instance with an address; its process once [`InstanceBackend::start`] has run (and
/// none after [`LocalBackend::kill_all`], until [`LocalBackend::revive_all`]).
struct Running {
    name: String,
    /// The instance's processes, the main one first (none: not started, or killed).
    children: Vec<Process>,
    addr: Ipv4Addr,
    cgroup: Option<PathBuf>,
}

pub struct LocalBackend {
    cfg: LocalConfig,
    free: Mutex<BTreeSet<u8>>,
    running: Mutex<HashMap<Uuid, Running>>,
    reapers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl LocalBackend {
    pub fn new(cfg: LocalConfig) -> Self {
        Self {
            cfg,
            free: Mutex::new((1..=250).collect()),
            running: Mutex::new(HashMap::new()),
            reapers: Mutex::new(Vec::new()),
        }
    }

    pub fn config(&self) -> &LocalConfig {
        &self.cfg
    }

    /// The app address of every instance with a process.
    pub fn addresses(&self) -> Vec<(Uuid, Ipv4Addr)> {
        self.running
            .lock()
            .expect("running lock")
            .iter()
            .map(|(id, r)| (*id, r.addr))
            .collect()
    }

    /// Stops every instance and waits for the processes to exit (SIGKILL after 5 s).
    pub fn shutdown(&self) {
        let all: Vec<Uuid> = self
            .running
            .lock()
            .expect("running lock")
            .keys()
            .copied()
            .collect();
        for id in all {
            self.stop(id);
        }
        let reapers = std::mem::take(&mut *self.reapers.lock().expect("reapers lock"));
        for r in reapers {
            let _ = r.join();
        }
        // The parent group, once empty (another run may still use it: then it stays).
        if let QuotaMode::CgroupV1(p) | QuotaMode::CgroupV2(p) = &self.cfg.quota {
            let _ = std::fs::remove_dir(p);
        }
    }

    /// A zone outage: every instance's process is killed at once (SIGKILL), while the
    /// simulator still lists the instances as running. [`Self::revive_all`] undoes it.
    pub fn kill_all(&self) {
        let mut running = self.running.lock().expect("running lock");
        for r in running.values_mut() {
            // Dropping an unstopped process kills it (SIGKILL) and reaps it.
            r.children.clear();
            if let Some(g) = r.cgroup.take() {
                let _ = std::fs::remove_dir(g);
            }
        }
    }

    /// Starts again, on the same addresses, every instance whose process was killed.
    pub fn revive_all(&self) -> Result<(), BackendError> {
        let dead: Vec<(Uuid, String, Ipv4Addr)> = self
            .running
            .lock()
            .expect("running lock")
            .iter()
            .filter(|(_, r)| r.children.is_empty())
            .map(|(id, r)| (*id, r.name.clone(), r.addr))
            .collect();
        for (id, name, addr) in dead {
            self.spawn_member(id, &name, addr)?;
        }
        Ok(())
    }

    fn log_file(&self, name: &str) -> Result<std::fs::File, BackendError> {
        std::fs::File::create(self.cfg.log_dir.join(format!("{name}.log")))
            .map_err(|e| BackendError::Start(format!("log file: {e}")))
    }

    fn spawn(&self, name: String, cmd: &mut Command) -> Result<Process, BackendError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        process::spawn(name, cmd).map_err(|e| BackendError::Start(format!("{program}: {e}")))
    }

    /// Starts the processes of instance `id` on `addr`.
    fn spawn_member(&self, id: Uuid, name: &str, addr: Ipv4Addr) -> Result<(), BackendError> {
        let children = match &self.cfg.kind {
            MemberKind::App => vec![self.spawn_app(name, addr)?],
            MemberKind::RedisReplica { primary } => self.spawn_replica(name, addr, *primary)?,
            MemberKind::Kv { primary, replicas } => {
                vec![self.spawn_kv(name, addr, primary, replicas)?]
            }
        };
        let cgroup = match self
            .cfg
            .quota
            .apply(name, children[0].id(), self.cfg.capacity)
        {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(instance = %name, error = %e, "no cgroup quota for this instance; the duty cycle alone keeps its capacity");
                None
            }
        };
        tracing::debug!(instance = %name, %addr, pid = children[0].id(), "local instance started");
        let started = Running {
            name: name.to_owned(),
            children,
            addr,
            cgroup,
        };
        let mut running = self.running.lock().expect("running lock");
        match running.get_mut(&id) {
            Some(r) => *r = started,
            None => {
                // Terminated while it was starting.
                drop(running);
                self.reap(started);
            }
        }
        Ok(())
    }

    /// `poolpilot <args>` as a member's process: the drain token, text logs to `<name>.log`, no
    /// systemd notification.
    fn poolpilot(&self, name: &str, args: &[String]) -> Result<Command, BackendError> {
        let mut cmd = Command::new(&self.cfg.binary);
        cmd.args(args)
            .env(env::DRAIN_TOKEN, self.cfg.drain_token.expose())
            .env(env::LOG_FORMAT, "text")
            .env_remove(env::NOTIFY_SOCKET)
            .env_remove(env::WATCHDOG_USEC)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file(name)?);
        Ok(cmd)
    }

    /// A replica member: redis-server, then its sidecar.
    fn spawn_replica(
        &self,
        name: &str,
        addr: Ipv4Addr,
        primary: SocketAddr,
    ) -> Result<Vec<Process>, BackendError> {
        let mut redis = Command::new("redis-server");
        redis
            .args([
                "--bind",
                &addr.to_string(),
                "--port",
                &REDIS_PORT.to_string(),
            ])
            .args([
                "--replicaof",
                &primary.ip().to_string(),
                &primary.port().to_string(),
            ])
            .args(replica_settings())
            // A full sync lands the primary's snapshot on disk: in the member's own file
            // beside its logs, never in whatever directory the caller started from.
            .arg("--dir")
            .arg(&self.cfg.log_dir)
            .args(["--dbfilename", &format!("{name}-redis.rdb")])
            .stdin(Stdio::null())
            .stdout(self.log_file(&format!("{name}-redis"))?)
            .stderr(Stdio::null());
        let redis = self.spawn(format!("{name} redis-server"), &mut redis)?;
        let mut sidecar = self.poolpilot(
            name,
            &[
                "replica".into(),
                "--listen".into(),
                SocketAddr::from((addr, APP_PORT)).to_string(),
                "--redis".into(),
                format!("redis://{addr}:{REDIS_PORT}"),
                "--max-last-io".into(),
                "3s".into(),
            ],
        )?;
        let sidecar = self.spawn(format!("{name} sidecar"), &mut sidecar)?;
        Ok(vec![redis, sidecar])
    }

    /// A key-value API member.
    fn spawn_kv(
        &self,
        name: &str,
        addr: Ipv4Addr,
        primary: &str,
        replicas: &str,
    ) -> Result<Process, BackendError> {
        let mut cmd = self.poolpilot(
            name,
            &[
                "kv".into(),
                "--listen".into(),
                SocketAddr::from((addr, APP_PORT)).to_string(),
                "--instance-id".into(),
                name.into(),
                // A new connection to the replicas' NLB every 2 s: reads follow its rotation
                // within the demo's ticks (Exoscale's default is 30 s).
                "--replica-reconnect".into(),
                "2s".into(),
            ],
        )?;
        cmd.env(env::REDIS_URL, primary)
            .env(env::REDIS_REPLICAS_URL, replicas);
        self.spawn(name.to_owned(), &mut cmd)
    }

    /// The app process of an instance on `addr`.
    fn spawn_app(&self, name: &str, addr: Ipv4Addr) -> Result<Process, BackendError> {
        let mut args =
            crate::config::unit_args("app").map_err(|e| BackendError::Start(format!("{e:#}")))?;
        args.extend([
            "--listen".into(),
            SocketAddr::from((addr, APP_PORT)).to_string(),
            "--node-listen".into(),
            SocketAddr::from((addr, NODE_PORT)).to_string(),
            "--cpu-capacity".into(),
            self.cfg.capacity.to_string(),
            "--load-seconds".into(),
            humantime::format_duration(self.cfg.load_duration).to_string(),
        ]);
        let mut cmd = self.poolpilot(name, &args)?;
        self.spawn(name.to_owned(), &mut cmd)
    }

    fn stop(&self, id: Uuid) {
        if let Some(r) = self.running.lock().expect("running lock").remove(&id) {
            self.reap(r);
        }
    }

    /// Stops the process on a thread of its own (SIGTERM, SIGKILL after the grace), then
    /// removes its cgroup.
    fn reap(&self, r: Running) {
        let Running {
            children,
            addr,
            cgroup,
            ..
        } = r;
        let handle = std::thread::spawn(move || {
            // The sidecars first, the main process last.
            for child in children.into_iter().rev() {
                child.stop();
            }
            if let Some(g) = cgroup {
                let _ = std::fs::remove_dir(g);
            }
            tracing::debug!(%addr, "local instance stopped");
        });
        self.reapers.lock().expect("reapers lock").push(handle);
    }
}

impl InstanceBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local processes"
    }

    fn allocate(&self, spec: &LaunchSpec) -> Result<Ipv4Addr, BackendError> {
        let host = self
            .free
            .lock()
            .expect("address set lock")
            .pop_first()
            .ok_or_else(|| {
                BackendError::Exhausted(format!("127.0.{}.1-250 are all in use", self.cfg.subnet))
            })?;
        let addr = Ipv4Addr::new(127, 0, self.cfg.subnet, host);
        self.running.lock().expect("running lock").insert(
            spec.id,
            Running {
                name: spec.name.clone(),
                children: Vec::new(),
                addr,
                cgroup: None,
            },
        );
        Ok(addr)
    }

    fn start(&self, spec: &LaunchSpec, addr: Ipv4Addr) -> Result<(), BackendError> {
        if !self
            .running
            .lock()
            .expect("running lock")
            .contains_key(&spec.id)
        {
            return Ok(()); // terminated before it started
        }
        self.spawn_member(spec.id, &spec.name, addr)
    }

    fn probes_readiness(&self) -> bool {
        true
    }

    /// Ready once the app accepts connections (asked with the simulator's zone unlocked).
    fn is_ready(&self, id: Uuid) -> bool {
        let addr = match self.running.lock().expect("running lock").get(&id) {
            Some(r) => r.addr,
            None => return false,
        };
        TcpStream::connect_timeout(
            &SocketAddr::from((addr, APP_PORT)),
            Duration::from_millis(50),
        )
        .is_ok()
    }

    fn terminate(&self, id: Uuid, addr: Ipv4Addr) {
        self.stop(id);
        let [a, b, c, host] = addr.octets();
        if [a, b, c] == [127, 0, self.cfg.subnet] {
            self.free.lock().expect("address set lock").insert(host);
        }
    }
}

/// How every replica member's Redis runs: no persistence (the primary has the data), no reads
/// while cut off from the primary (`MASTERDOWN` instead of stale data), a ping from the primary
/// every second (the sidecar's `--max-last-io 3s` reads it), the link declared down after 5 s.
pub fn replica_settings() -> [&'static str; 12] {
    [
        "--save",
        "",
        "--appendonly",
        "no",
        "--replica-serve-stale-data",
        "no",
        "--repl-ping-replica-period",
        "1",
        "--repl-timeout",
        "5",
        "--protected-mode",
        "no",
    ]
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}
