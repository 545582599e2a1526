//! A scale-in is drain, wait, evict. Whatever stops the autoscaler in the middle, no member is
//! left drained (taking no traffic) and still in the pool (still paid for): a SIGTERM during the
//! drain wait undrains the victim within the grace period, and after a crash (SIGKILL) the next
//! autoscaler to start undrains what it finds drained. The wait ends when the NLB reports the
//! victim out of rotation, or at twice `--drain-wait`. Real `poolpilot app` processes on
//! 127.0.1.x and 127.0.7.x (one subnet per test: they run at once) behind the simulator, whose
//! NLB service reports the health the test sets, and the real autoscaler binary.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolpilot::config::Zone;
use poolpilot::exoscale::Credentials;
use poolpilot::local::backend::LocalBackend;
use poolpilot::sim::{Sim, State, Timing};

const DRAIN: &str = "drain-token-for-the-shutdown-test";

struct Rig {
    backend: Arc<LocalBackend>,
    running: poolpilot::sim::RunningSim,
    pool: uuid::Uuid,
    _dir: tempfile::TempDir,
}

/// Two members on 127.0.`subnet`.x behind the simulator.
async fn rig(subnet: u8) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let backend = common::local_backend(dir.path(), Duration::from_millis(500), DRAIN, subnet);
    let mut state = State::new(
        Zone::DEFAULT,
        Timing {
            operation_delay: Duration::from_millis(100),
            boot_delay: Duration::from_millis(300),
        },
        backend.clone(),
    );
    let pool = state
        .create_pool(
            tokio::time::Instant::now(),
            None,
            "local",
            2,
            "standard.micro",
            false,
        )
        .unwrap();
    // An NLB service in front of the pool, its members' health set by the test (no prober).
    state.create_load_balancer(
        "nlb",
        std::net::Ipv4Addr::new(198, 51, 100, 10),
        pool,
        80,
        8080,
        poolpilot::exoscale::Healthcheck {
            mode: "http".into(),
            port: 8080,
            uri: Some("/health".into()),
            interval: 10,
            timeout: 5,
            retries: 1,
        },
    );
    let sim = Sim::new(state, vec![Credentials::new(common::KEY, common::SECRET)]);
    let running = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let r = Rig {
        backend,
        running,
        pool,
        _dir: dir,
    };
    r.until_two_serving().await;
    r
}

impl Rig {
    /// The running members' addresses, as the API reports them.
    async fn members(&self) -> Vec<std::net::Ipv4Addr> {
        let c = common::client_for(
            &self.running.endpoint(),
            Credentials::new(common::KEY, common::SECRET),
        );
        c.list_pool_members(self.pool)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.state == poolpilot::exoscale::InstanceState::Running)
            .filter_map(|m| m.public_ip)
            .collect()
    }

    async fn size(&self) -> u64 {
        common::client_for(
            &self.running.endpoint(),
            Credentials::new(common::KEY, common::SECRET),
        )
        .get_instance_pool(self.pool)
        .await
        .unwrap()
        .size
    }

    async fn drained_members(&self) -> Vec<std::net::Ipv4Addr> {
        let mut out = Vec::new();
        for ip in self.members().await {
            if drained(ip).await == Some(true) {
                out.push(ip);
            }
        }
        out
    }

    async fn until<F, Fut>(&self, what: &str, limit: Duration, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !f().await {
            assert!(started.elapsed() < limit, "{what} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An autoscaler asked for one member fewer, once it has drained the victim (it is then in
    /// its 60 s drain wait).
    async fn scale_in_to_the_drain_wait(&self) -> Scaler {
        let (scaler, base) = self.autoscaler();
        ask_down(&base).await;
        self.until_one_drained().await;
        scaler
    }

    /// Stops the members.
    async fn shutdown(&self) {
        let b = self.backend.clone();
        tokio::task::spawn_blocking(move || b.shutdown())
            .await
            .unwrap();
    }

    /// One member drained for a scale-in.
    async fn until_one_drained(&self) {
        self.until(
            "a member drained for the scale-in",
            Duration::from_secs(30),
            || async { self.drained_members().await.len() == 1 },
        )
        .await;
    }

    /// The autoscaler with a long drain wait, ticking every second, on a free port.
    fn autoscaler(&self) -> (Scaler, String) {
        let (scaler, base, _) = self.autoscaler_with("60s");
        (scaler, base)
    }

    /// The autoscaler with this drain wait, its log in a file of the rig's directory.
    fn autoscaler_with(&self, drain_wait: &str) -> (Scaler, String, std::path::PathBuf) {
        let port = common::free_port();
        let log = self._dir.path().join(format!("autoscaler-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_poolpilot"))
            .args(["autoscaler", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--min", "1", "--max", "3", "--interval", "1s"])
            .args(["--drain-port", "8080", "--drain-wait", drain_wait])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("EXOSCALE_API_ENDPOINT", self.running.endpoint())
            .env("EXOSCALE_API_KEY", common::KEY)
            .env("EXOSCALE_API_SECRET", common::SECRET)
            .env("EXOSCALE_ZONE", "ch-gva-2")
            .env("EXOSCALE_INSTANCEPOOL_ID", self.pool.to_string())
            .env("POOLPILOT_DRAIN_TOKEN", DRAIN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (Scaler(child), format!("http://127.0.0.1:{port}"), log)
    }

    /// Sets a member's health as the NLB service in front of the pool reports it.
    async fn set_health(&self, ip: std::net::Ipv4Addr, healthy: bool) {
        let c = common::client_for(
            &self.running.endpoint(),
            Credentials::new(common::KEY, common::SECRET),
        );
        let id = c
            .list_pool_members(self.pool)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.public_ip == Some(ip))
            .expect("a member with that address")
            .id;
        self.running
            .sim
            .with_state(|s| s.set_health(id, healthy))
            .unwrap();
    }

    /// Two members serving.
    async fn until_two_serving(&self) {
        self.until("two members serving", Duration::from_secs(30), || async {
            let ips = self.members().await;
            ips.len() == 2 && {
                let mut all = true;
                for ip in ips {
                    all &= drained(ip).await.is_some();
                }
                all
            }
        })
        .await;
    }
}

fn read(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// A child killed when dropped, so a failing assertion leaves no autoscaler behind.
struct Scaler(Child);

impl Drop for Scaler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The member's drain switch: `Some(true)` when drained, `None` when it does not answer.
async fn drained(ip: std::net::Ipv4Addr) -> Option<bool> {
    let r = reqwest::Client::new()
        .get(format!("http://{ip}:8080/admin/drain"))
        .bearer_auth(DRAIN)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v["draining"].as_bool()
}

/// Asks for one member fewer, once the autoscaler answers.
async fn ask_down(base: &str) {
    ask(base, "down").await
}

/// Asks for one member more or fewer (`up` or `down`), once the autoscaler answers.
async fn ask(base: &str, way: &str) {
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/{way}")).await {
            assert_eq!(r.status(), 200);
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the autoscaler did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[allow(
    unsafe_code,
    reason = "libc: kill(2) sends the signal without forking a kill(1)"
)]
fn signal(child: &Scaler, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(child.0.id() as i32, sig) };
    assert_eq!(sent, 0);
}

/// SIGTERM, and the autoscaler exits 0 within its grace.
fn stop(child: &mut Scaler) {
    signal(child, libc::SIGTERM);
    assert_eq!(wait_exit(child, Duration::from_secs(10)), Some(0));
}

fn wait_exit(child: &mut Scaler, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            return st.code();
        }
        assert!(started.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_member_is_left_drained_by_a_stop_or_a_crash_mid_scale_in() {
    let r = rig(1).await;

    // SIGTERM during the drain wait: the victim is undrained, nothing is evicted, exit 0.
    let mut scaler = r.scale_in_to_the_drain_wait().await;
    stop(&mut scaler);
    assert!(
        r.drained_members().await.is_empty(),
        "a member was left drained by the stop"
    );
    assert_eq!(r.size().await, 2, "nothing was evicted");

    // SIGKILL during the drain wait leaves the victim drained; the next autoscaler to start
    // undrains it.
    let mut scaler = r.scale_in_to_the_drain_wait().await;
    signal(&scaler, libc::SIGKILL);
    wait_exit(&mut scaler, Duration::from_secs(10));
    assert_eq!(
        r.drained_members().await.len(),
        1,
        "the crash left it drained"
    );
    let (mut scaler, _) = r.autoscaler();
    r.until(
        "the restarted autoscaler undrains it",
        Duration::from_secs(30),
        || async { r.drained_members().await.is_empty() },
    )
    .await;
    assert_eq!(r.size().await, 2);
    stop(&mut scaler);

    r.shutdown().await;
}

/// The drain wait lasts until the NLB reports the victim out of rotation: a member the NLB still
/// reports healthy when the fixed wait ends (its checks can run late) keeps running until it
/// reports it failing; one it never reports failing (a TCP check never sees a drain) is evicted
/// at twice the wait, with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_member_is_evicted_once_the_nlb_reports_it_out() {
    let r = rig(7).await;

    // The NLB never reports the victim out: evicted at the bound, with a warning.
    let (mut scaler, base, log) = r.autoscaler_with("1s");
    ask_down(&base).await;
    r.until(
        "the scale-in at the bound",
        Duration::from_secs(30),
        || async { r.members().await.len() == 1 },
    )
    .await;
    assert!(
        read(&log).contains("evicting anyway"),
        "the eviction at the bound is warned about:\n{}",
        read(&log)
    );
    stop(&mut scaler);

    // The NLB reports the victim out after the fixed wait: evicted then, not before.
    let (mut scaler, base, log) = r.autoscaler_with("4s");
    ask(&base, "up").await;
    r.until_two_serving().await;
    ask_down(&base).await;
    r.until_one_drained().await;
    let victim = r.drained_members().await[0];
    r.until(
        "the autoscaler waiting for the NLB past the fixed wait",
        Duration::from_secs(30),
        || async { read(&log).contains("waiting for the load balancer") },
    )
    .await;
    assert!(
        r.members().await.contains(&victim),
        "not evicted while the NLB reports it healthy"
    );
    r.set_health(victim, false).await;
    r.until("the victim evicted", Duration::from_secs(30), || async {
        let m = r.members().await;
        m.len() == 1 && !m.contains(&victim)
    })
    .await;
    assert!(
        !read(&log).contains("evicting anyway"),
        "evicted because the NLB reported it out, not at the bound:\n{}",
        read(&log)
    );
    stop(&mut scaler);

    r.shutdown().await;
}
