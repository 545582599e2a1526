//! `poolpilot demo`: the whole autoscaling loop on one machine, from the same parts as
//! production.
//!
//! ```text
//!  poolpilot load ──> NLB 127.0.0.1:8080 ──> app 127.0.1.1:8080, 127.0.1.2:8080, ...  (LocalBackend)
//!                                              node stand-in :9100 ──┐
//!  simulator (API v2) <── discovery ──> file_sd ──> Prometheus ──> Alertmanager ──> autoscaler ──┐
//!       ^                                                                                        │
//!       └──────────────────────────── scale / drain + evict ────────────────────────────────────┘
//! ```
//!
//! The discovery agent and the autoscaler run as `poolpilot` child processes with the flags
//! their systemd units use; Prometheus and Alertmanager are Debian's, with the project's
//! `monitoring/` files. Without them, an embedded evaluator applies the same rules (and says so).
//! `--fast` shortens every timer so the story fits in about three minutes.

pub mod embedded;
pub mod report;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::config::Zone;
use crate::exoscale::Credentials;
use crate::load::{self, LoadConfig, Mode, Profile, Summary};
use crate::local::backend::{APP_PORT, LocalBackend, LocalConfig, QuotaMode};
use crate::local::nlb::{Nlb, NlbConfig};
use crate::scrape::Scraper;
use crate::sim::{Sim, State, Timing};
use report::{Mark, Sample};

/// The rule and Alertmanager files, compiled in from `monitoring/` (the same files the monitor
/// image installs).
pub const RULES: &str = include_str!("../../monitoring/prometheus/rules.yml");
pub const ALERTMANAGER: &str = include_str!("../../monitoring/alertmanager/alertmanager.yml");

/// The fixed part of each unit's command line, shared with the NixOS modules.
pub const UNITS: &str = include_str!("../../nixos-modules/units.json");

/// A unit's shared arguments from [`UNITS`].
pub fn unit_args(unit: &str) -> anyhow::Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(UNITS).context("nixos-modules/units.json")?;
    v[unit]
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_owned)).collect())
        .with_context(|| format!("nixos-modules/units.json has no string list `{unit}`"))
}

/// Every timer of the story.
#[derive(Clone, Debug)]
pub struct Timings {
    pub tick: Duration,
    pub scrape: Duration,
    pub window: Duration,
    pub pending: Duration,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat: Duration,
    pub boot: Duration,
    pub operation: Duration,
    pub load_seconds: Duration,
    pub nlb_interval: Duration,
    pub nlb_timeout: Duration,
    pub nlb_retries: u32,
    pub discovery: Duration,
    /// How long the load is held once it starts.
    pub hold: Duration,
    /// How long the pool may take to shrink back after the load stops.
    pub tail: Duration,
}

impl Timings {
    /// The course's timings: 60 s ticks, 1 m pending, 10 s `/load`, 30 s boots.
    pub fn course() -> Self {
        Self {
            tick: Duration::from_secs(60),
            scrape: Duration::from_secs(15),
            window: Duration::from_secs(60),
            pending: Duration::from_secs(60),
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat: Duration::from_secs(60),
            boot: Duration::from_secs(30),
            operation: Duration::from_secs(3),
            load_seconds: Duration::from_secs(10),
            nlb_interval: Duration::from_secs(10),
            nlb_timeout: Duration::from_secs(2),
            nlb_retries: 1,
            discovery: Duration::from_secs(10),
            hold: Duration::from_secs(900),
            tail: Duration::from_secs(900),
        }
    }

    /// Everything shortened so the story fits in about three minutes.
    pub fn fast() -> Self {
        Self {
            tick: Duration::from_secs(10),
            scrape: Duration::from_secs(2),
            window: Duration::from_secs(10),
            pending: Duration::from_secs(10),
            group_wait: Duration::from_secs(1),
            group_interval: Duration::from_secs(5),
            repeat: Duration::from_secs(5),
            boot: Duration::from_secs(5),
            operation: Duration::from_secs(1),
            load_seconds: Duration::from_secs(1),
            nlb_interval: Duration::from_secs(1),
            nlb_timeout: Duration::from_secs(1),
            // Three failed probes in a row, not one: a probe that a busy machine answers late
            // must not take the only member out of rotation (503s at the client).
            nlb_retries: 3,
            discovery: Duration::from_secs(2),
            hold: Duration::from_secs(110),
            tail: Duration::from_secs(120),
        }
    }

    /// A drained member is evicted after the NLB has seen its failing checks and its longest
    /// request has finished.
    pub fn drain_wait(&self) -> Duration {
        self.nlb_interval * (self.nlb_retries + 1) + self.load_seconds + Duration::from_secs(1)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitoringChoice {
    /// Debian's Prometheus and Alertmanager when installed, else the embedded evaluator.
    Auto,
    /// Always the embedded evaluator.
    Embedded,
    /// Debian's tools or fail.
    Real,
}

#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub fast: bool,
    pub out: PathBuf,
    pub nlb_listen: SocketAddr,
    pub max: u64,
    /// Concurrent `/load` clients during the hold.
    pub clients: u32,
    /// Cores per local instance.
    pub capacity: f64,
    pub monitoring: MonitoringChoice,
    /// The `poolpilot` binary for the child processes.
    pub binary: PathBuf,
    /// Decide with this policy instead of the course's rule (resolved by [`resolve_policy`]).
    pub policy: Option<crate::policy::builtin::Source>,
}

/// A `--policy` for the demo: a file, or a built-in name. `target-tracking` is the demo's
/// target tracking (examples/policies/demo-in-flight.toml): the three-minute story needs
/// short windows, and it tracks requests in flight, which, unlike CPU, does not saturate, so
/// one decision finds the size the load needs.
pub fn resolve_policy(arg: &str) -> Result<crate::policy::builtin::Source, String> {
    if arg == "target-tracking" {
        let mut s = crate::policy::builtin::load("demo-in-flight")?;
        s.label = "built-in `target-tracking` at the demo's time scale (demo-in-flight)".into();
        return Ok(s);
    }
    crate::policy::builtin::load(arg)
}

/// What the demo found: the facts the exit code and the report rest on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub max_size: u64,
    pub final_size: u64,
    pub failed_requests: u64,
    pub ok_requests: u64,
    pub scale_ups: usize,
    pub scale_downs: usize,
    pub interrupted: bool,
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.problems.is_empty()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// A child process that dies with us (PDEATHSIG) and is stopped with SIGTERM.
struct Proc {
    name: &'static str,
    child: Child,
}

#[allow(unsafe_code, reason = "libc: PR_SET_PDEATHSIG for the child")]
fn spawn(
    name: &'static str,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; the closure touches no shared state.
    unsafe {
        cmd.as_std_mut().pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name} ({})", program.display()))?;
    Ok(Proc { name, child })
}

impl Proc {
    #[allow(unsafe_code, reason = "libc: SIGTERM to the child")]
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(process = self.name, "did not stop within 5 s; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// Which binary provides a tool, from a list of names.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Replaces `from` with `to` in `text`, insisting that it is there (so a change to the shared
/// files cannot silently disable a rewrite).
fn rewrite(text: &str, from: &str, to: &str, file: &str) -> anyhow::Result<String> {
    if !text.contains(from) {
        bail!("{file} no longer contains `{from}`: the demo cannot adapt it");
    }
    Ok(text.replace(from, to))
}

/// The rule file as the demo runs it.
pub fn demo_rules(t: &Timings) -> anyhow::Result<String> {
    let r = rewrite(RULES, "[1m]", &format!("[{}]", secs(t.window)), "rules.yml")?;
    rewrite(
        &r,
        "for: 1m",
        &format!("for: {}", secs(t.pending)),
        "rules.yml",
    )
}

/// The Alertmanager configuration as the demo runs it.
pub fn demo_alertmanager(t: &Timings, webhook: &str, token_file: &Path) -> anyhow::Result<String> {
    let f = "alertmanager.yml";
    let a = rewrite(ALERTMANAGER, "http://127.0.0.1:8090/webhook", webhook, f)?;
    let a = rewrite(
        &a,
        "/run/credentials/alertmanager.service/webhook-token",
        &token_file.display().to_string(),
        f,
    )?;
    let a = rewrite(
        &a,
        "group_wait: 10s",
        &format!("group_wait: {}", secs(t.group_wait)),
        f,
    )?;
    let a = rewrite(
        &a,
        "group_interval: 1m",
        &format!("group_interval: {}", secs(t.group_interval)),
        f,
    )?;
    rewrite(
        &a,
        "repeat_interval: 1m",
        &format!("repeat_interval: {}", secs(t.repeat)),
        f,
    )
}

/// Prometheus' configuration: the node job from the discovery agent's directory, the project's
/// rules, the local Alertmanager.
pub fn prometheus_config(
    t: &Timings,
    sd_dir: &Path,
    rules: &Path,
    alertmanager: Option<u16>,
    autoscaler: u16,
) -> String {
    let am = alertmanager
        .map(|p| format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{p}']\n"))
        .unwrap_or_default();
    format!(
        r#"global:
  scrape_interval: {scrape}
  evaluation_interval: {scrape}
rule_files:
  - {rules}
{am}scrape_configs:
  - job_name: node
    file_sd_configs:
      - files: ['{sd}/*.json']
        refresh_interval: {scrape}
    relabel_configs:
      - source_labels: [exoscale_target_name]
        regex: node
        action: keep
  - job_name: app
    file_sd_configs:
      - files: ['{sd}/*.json']
        refresh_interval: {scrape}
    relabel_configs:
      - source_labels: [exoscale_target_name]
        regex: app
        action: keep
  - job_name: poolpilot-autoscaler
    static_configs:
      - targets: ['127.0.0.1:{autoscaler}']
"#,
        scrape = secs(t.scrape),
        rules = rules.display(),
        sd = sd_dir.display(),
    )
}

async fn check_tool(program: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed:\n{}{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn wait_http(url: &str, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let http = reqwest::Client::builder().no_proxy().build()?;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("{url} did not answer within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the story; `Ok` carries what happened (its `success()` gives the exit code).
pub async fn run(cfg: DemoConfig) -> anyhow::Result<Outcome> {
    let t = if cfg.fast {
        Timings::fast()
    } else {
        Timings::course()
    };
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    // Absolute, because Prometheus resolves paths in its configuration from the file's directory.
    let out = std::fs::canonicalize(&cfg.out)?;
    let logs = out.join("logs");
    let _ = std::fs::remove_dir_all(out.join("sd"));
    let _ = std::fs::remove_dir_all(out.join("prometheus-data"));
    let _ = std::fs::remove_dir_all(out.join("alertmanager-data"));
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let nlb_listener = tokio::net::TcpListener::bind(cfg.nlb_listen)
        .await
        .with_context(|| {
            format!(
                "the NLB cannot listen on {} (use --nlb-listen)",
                cfg.nlb_listen
            )
        })?;

    let prometheus_bin = which(&["prometheus"]);
    let alertmanager_bin = which(&["prometheus-alertmanager", "alertmanager"]);
    let promtool = which(&["promtool"]);
    let real = match cfg.monitoring {
        MonitoringChoice::Embedded => false,
        MonitoringChoice::Auto => prometheus_bin.is_some() && alertmanager_bin.is_some(),
        MonitoringChoice::Real => {
            if prometheus_bin.is_none() || alertmanager_bin.is_none() {
                bail!(
                    "--monitoring real: prometheus and prometheus-alertmanager must be installed (apt-get install prometheus prometheus-alertmanager)"
                );
            }
            true
        }
    };
    let banner = if real {
        format!(
            "MONITORING: Debian's Prometheus ({}) and Alertmanager ({}) with monitoring/prometheus/rules.yml and monitoring/alertmanager/alertmanager.yml",
            prometheus_bin.as_ref().expect("checked").display(),
            alertmanager_bin.as_ref().expect("checked").display()
        )
    } else {
        "MONITORING: EMBEDDED FALLBACK (Prometheus/Alertmanager not used): the same targets, thresholds, pending time and webhooks, evaluated inside poolpilot. Install them with: apt-get install prometheus prometheus-alertmanager".to_owned()
    };
    println!("{}\n{banner}\n{}", "=".repeat(78), "=".repeat(78));

    // Secrets of this run only.
    let key = format!("EXO{}", uuid::Uuid::new_v4().simple());
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let webhook_token = uuid::Uuid::new_v4().simple().to_string();
    let drain_token = uuid::Uuid::new_v4().simple().to_string();
    let token_file = out.join("webhook-token");
    std::fs::write(&token_file, &webhook_token)?;

    // The simulator with real local instances, and its NLB.
    let quota = QuotaMode::detect();
    println!(
        "instances: `poolpilot app` processes on 127.0.1.x, {} core(s) each, capacity enforced by {}",
        cfg.capacity,
        quota.describe()
    );
    let backend = Arc::new(LocalBackend::new(LocalConfig {
        binary: cfg.binary.clone(),
        capacity: cfg.capacity,
        load_duration: t.load_seconds,
        drain_token: drain_token.clone().into(),
        log_dir: logs.clone(),
        quota,
    }));
    let mut state = State::new(
        Zone::DEFAULT,
        Timing {
            operation_delay: t.operation,
            boot_delay: t.boot,
        },
        backend.clone(),
    );
    let now = tokio::time::Instant::now();
    let pool = state
        .create_pool(now, None, "demo", 1, "standard.micro", false)
        .map_err(|e| anyhow::anyhow!("creating the pool: {}", e.message))?;
    let hc = crate::exoscale::Healthcheck {
        mode: "http".into(),
        port: APP_PORT,
        uri: Some("/health".into()),
        interval: t.nlb_interval.as_secs().max(1),
        timeout: t.nlb_timeout.as_secs().max(1),
        retries: u64::from(t.nlb_retries),
    };
    let nlb_port = nlb_listener.local_addr()?.port();
    let nlb_ip = match cfg.nlb_listen.ip() {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(_) => std::net::Ipv4Addr::LOCALHOST,
    };
    state.create_load_balancer("demo-nlb", nlb_ip, pool, nlb_port, APP_PORT, hc);
    let sim = Sim::new(state, vec![Credentials::new(&key, &secret)]);
    let running_sim = sim.clone().start("127.0.0.1:0".parse()?).await?;
    let endpoint = running_sim.endpoint();
    let nlb = Nlb::new(
        sim.clone(),
        NlbConfig {
            pool,
            target_port: APP_PORT,
            uri: "/health".into(),
            interval: t.nlb_interval,
            timeout: t.nlb_timeout,
            retries: t.nlb_retries,
        },
    );
    let nlb_checks = tokio::spawn(nlb.clone().run_health_checks());
    let nlb_router = nlb.router();
    let nlb_server = tokio::spawn(async move { axum::serve(nlb_listener, nlb_router).await });

    let api_env = vec![
        ("EXOSCALE_API_ENDPOINT".to_owned(), endpoint.clone()),
        ("EXOSCALE_API_KEY".to_owned(), key.clone()),
        ("EXOSCALE_API_SECRET".to_owned(), secret.clone()),
        ("EXOSCALE_ZONE".to_owned(), Zone::DEFAULT.name().to_owned()),
        ("EXOSCALE_INSTANCEPOOL_ID".to_owned(), pool.to_string()),
        ("POOLPILOT_LOG_FORMAT".to_owned(), "text".to_owned()),
    ];
    let sd_dir = out.join("sd");
    let sd_file = sd_dir.join("pool.json");
    let mut procs = Vec::new();
    let result = async {
        let discovery_port = free_port()?;
        let mut discovery_args = unit_args("discovery")?;
        discovery_args.extend([
                "--output".into(),
                sd_file.display().to_string(),
                "--interval".into(),
                secs(t.discovery),
                "--metrics-listen".into(),
                format!("127.0.0.1:{discovery_port}"),
            ]);
        procs.push(spawn(
            "discovery",
            &cfg.binary,
            &discovery_args,
            &api_env,
            &logs.join("discovery.log"),
        )?);
        let autoscaler_port = free_port()?;
        let am_port = free_port()?;
        let prom_port = free_port()?;
        let mut scaler_env = api_env.clone();
        scaler_env.push(("POOLPILOT_WEBHOOK_TOKEN".into(), webhook_token.clone()));
        scaler_env.push(("POOLPILOT_DRAIN_TOKEN".into(), drain_token.clone()));
        let mut scaler_args = unit_args("autoscaler")?;
        scaler_args.extend([
                "--listen".into(),
                format!("127.0.0.1:{autoscaler_port}"),
                "--min".into(),
                "1".into(),
                "--max".into(),
                cfg.max.to_string(),
                "--interval".into(),
                secs(t.tick),
                "--drain-wait".into(),
                secs(t.drain_wait()),
            ]);
        if let Some(p) = &cfg.policy {
            let file = out.join("policy.toml");
            std::fs::write(&file, &p.text)?;
            scaler_args.extend(["--policy".into(), file.display().to_string()]);
            if real {
                scaler_args.extend(["--prometheus".into(), format!("http://127.0.0.1:{prom_port}")]);
                println!("policy: {} (the autoscaler reads metrics from Prometheus)", p.label);
            } else {
                scaler_args.extend([
                    "--scrape".into(),
                    sd_file.display().to_string(),
                    "--scrape-window".into(),
                    secs(t.window),
                ]);
                println!("policy: {} (the autoscaler scrapes the discovery targets itself)", p.label);
            }
        }
        procs.push(spawn(
            "autoscaler",
            &cfg.binary,
            &scaler_args,
            &scaler_env,
            &logs.join("autoscaler.log"),
        )?);
        let scaler = format!("http://127.0.0.1:{autoscaler_port}");
        let webhook = format!("{scaler}/webhook");

        let mut embedded_task = None;
        if real {
            let mon = out.join("monitoring");
            std::fs::create_dir_all(&mon)?;
            let rules = mon.join("rules.yml");
            std::fs::write(&rules, demo_rules(&t)?)?;
            let am_cfg = mon.join("alertmanager.yml");
            std::fs::write(&am_cfg, demo_alertmanager(&t, &webhook, &token_file)?)?;
            let prom_cfg = mon.join("prometheus.yml");
            std::fs::write(&prom_cfg, prometheus_config(&t, &sd_dir, &rules, Some(am_port), autoscaler_port))?;
            if let Some(pt) = &promtool {
                check_tool(pt, &["check", "rules", &rules.display().to_string()]).await?;
                check_tool(pt, &["check", "config", &prom_cfg.display().to_string()]).await?;
            }
            if let Some(amtool) = which(&["amtool"]) {
                check_tool(&amtool, &["check-config", &am_cfg.display().to_string()]).await?;
            }
            procs.push(spawn(
                "alertmanager",
                alertmanager_bin.as_ref().expect("checked"),
                &[
                    format!("--config.file={}", am_cfg.display()),
                    format!("--storage.path={}", out.join("alertmanager-data").display()),
                    format!("--web.listen-address=127.0.0.1:{am_port}"),
                    "--cluster.listen-address=".into(),
                    "--log.level=warn".into(),
                ],
                &[],
                &logs.join("alertmanager.log"),
            )?);
            procs.push(spawn(
                "prometheus",
                prometheus_bin.as_ref().expect("checked"),
                &[
                    format!("--config.file={}", prom_cfg.display()),
                    format!("--storage.tsdb.path={}", out.join("prometheus-data").display()),
                    format!("--web.listen-address=127.0.0.1:{prom_port}"),
                    "--log.level=warn".into(),
                ],
                &[],
                &logs.join("prometheus.log"),
            )?);
            wait_http(&format!("http://127.0.0.1:{am_port}/-/ready"), Duration::from_secs(30)).await?;
            wait_http(&format!("http://127.0.0.1:{prom_port}/-/ready"), Duration::from_secs(30)).await?;
            println!("prometheus: http://127.0.0.1:{prom_port}   alertmanager: http://127.0.0.1:{am_port}");
        } else {
            embedded_task = Some(tokio::spawn(
                embedded::Embedded {
                    sampler: Scraper::new(sd_file.clone(), t.window),
                    webhook: webhook.clone(),
                    token: webhook_token.clone().into(),
                    eval_interval: t.scrape,
                    pending: t.pending,
                    repeat: t.repeat,
                }
                .run(),
            ));
        }
        wait_http(&format!("{scaler}/readyz"), Duration::from_secs(30)).await?;
        println!("simulator: {endpoint}   nlb: http://{}   autoscaler: {scaler}   report: {}", cfg.nlb_listen, out.display());

        // The first member boots and passes its health check.
        let booted = Instant::now();
        while !nlb.members().iter().any(|m| m.healthy) {
            if booted.elapsed() > t.boot + Duration::from_secs(60) {
                bail!("the first instance never became healthy at the NLB (see {})", logs.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let outcome = story(&cfg, &t, &sim, pool, &nlb, &scaler, &sd_file).await;
        if let Some(e) = embedded_task {
            e.abort();
        }
        outcome
    }
    .await;

    // Stop everything, whatever happened.
    for p in procs.into_iter().rev() {
        p.stop().await;
    }
    nlb_checks.abort();
    nlb_server.abort();
    let b = backend.clone();
    tokio::task::spawn_blocking(move || b.shutdown()).await?;
    running_sim.stop().await;
    let _ = std::fs::remove_file(&token_file);
    let outcome = result?;
    Ok(outcome)
}

#[derive(serde::Deserialize)]
struct DecisionView {
    tick: u64,
    action: String,
    outcome: String,
    current: Option<u64>,
    desired: Option<u64>,
    reason: String,
    #[serde(default)]
    gate: Option<String>,
    #[serde(default)]
    intents: serde_json::Value,
    #[serde(default)]
    strategy: String,
    #[serde(default)]
    recommended: Option<u64>,
    #[serde(default)]
    stabilized: Option<u64>,
    #[serde(default)]
    clipped_by: Option<String>,
    #[serde(default)]
    inputs: Vec<serde_json::Value>,
}

/// The load, the live view, the timeline, the end.
async fn story(
    cfg: &DemoConfig,
    t: &Timings,
    sim: &Arc<Sim>,
    pool: uuid::Uuid,
    nlb: &Nlb,
    scaler: &str,
    sd_file: &Path,
) -> anyhow::Result<Outcome> {
    let base = format!("http://{}", cfg.nlb_listen);
    let clients = f64::from(cfg.clients.max(1));
    // A step to the clients (past what one instance takes), hold, drop to zero. A step, not a
    // ramp: a policy's first reading then sees the whole load, whenever its tick falls.
    let profile = Profile::Points {
        points: vec![
            (Duration::ZERO, clients),
            (t.hold, clients),
            (t.hold + Duration::from_millis(1), 0.0),
        ],
        linear: true,
    };
    let load_last: Arc<Mutex<Option<Summary>>> = Arc::default();
    let probe_last: Arc<Mutex<Option<Summary>>> = Arc::default();
    let total = t.hold + t.tail + Duration::from_secs(30);
    let load_task = {
        let last = load_last.clone();
        let lc = LoadConfig {
            url: format!("{base}/load").parse()?,
            mode: Mode::Closed(profile.clone()),
            duration: Some(t.hold + Duration::from_secs(1)),
            requests: None,
            timeout: t.load_seconds * 6 + Duration::from_secs(5),
        };
        tokio::spawn(async move {
            load::run(lc, |s| {
                *last.lock().expect("summary lock") = Some(s.clone())
            })
            .await
        })
    };
    // Light traffic through the NLB all along (a cheap app route, not the health check), so
    // that scale-in is tested under requests too.
    let probe_task = {
        let last = probe_last.clone();
        let lc = LoadConfig {
            url: format!("{base}/covilha").parse()?,
            mode: Mode::Open(Profile::Constant(20.0)),
            duration: Some(total),
            requests: None,
            timeout: Duration::from_secs(5),
        };
        tokio::spawn(async move {
            load::run(lc, |s| {
                *last.lock().expect("summary lock") = Some(s.clone())
            })
            .await
        })
    };

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut sampler = Scraper::new(sd_file.to_path_buf(), t.window);
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut marks: Vec<Mark> = Vec::new();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut prev_requests = 0u64;
    let mut max_size = 0u64;
    let mut interrupted = false;
    let stop = crate::shutdown::signal();
    tokio::pin!(stop);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => { interrupted = true; break; }
            _ = every.tick() => {}
        }
        let el = started.elapsed();
        let ts = el.as_secs_f64();
        let (size, running) = sim.with_state(|s| {
            let size = s.pool_view(pool).map(|p| p.size).unwrap_or(0);
            (size, s.running_members(pool).len() as u64)
        });
        max_size = max_size.max(size);
        let healthy = nlb.members().iter().filter(|m| m.healthy).count() as u64;
        let cpu = sampler.mean_cpu("node").await.map(|u| u * 100.0);
        let l = load_last.lock().expect("summary lock").clone();
        let h = probe_last.lock().expect("summary lock").clone();
        let requests = l.as_ref().map_or(0, |s| s.requests) + h.as_ref().map_or(0, |s| s.requests);
        let failed = l.as_ref().map_or(0, |s| s.failed) + h.as_ref().map_or(0, |s| s.failed);
        let p99 = l.as_ref().map_or(0.0, |s| s.latency_ms.p99);
        let sample = Sample {
            t: ts,
            load_clients: profile.value_at(el).round(),
            rps: requests.saturating_sub(prev_requests) as f64,
            failed_total: failed,
            p99_ms: p99,
            cpu_pct: cpu,
            size,
            running,
            healthy,
        };
        prev_requests = requests;
        println!(
            "[{:>4.0}s] load {:>2} clients | pool {} requested / {} running / {} healthy | cpu {:>4} | {:>5.1} req/s, /load p99 {:>6.0} ms | failed {}",
            ts,
            sample.load_clients,
            size,
            running,
            healthy,
            cpu.map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "  -".into()),
            sample.rps,
            p99,
            failed
        );
        samples.push(sample);

        if let Ok(r) = http.get(format!("{scaler}/v1/decisions")).send().await
            && let Ok(ds) = r.json::<Vec<DecisionView>>().await
        {
            for d in ds {
                if !seen.insert(d.tick) {
                    continue;
                }
                let sources: Vec<String> = d.intents["recent"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| i["source"].as_str().map(str::to_owned))
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect()
                    })
                    .unwrap_or_default();
                let sym = match (d.action.as_str(), d.outcome.as_str()) {
                    ("up", "scaled") => "▲ scale up",
                    ("down", "scaled") => "▼ scale down",
                    (_, "busy") => "… held",
                    (_, "error") => "✗ error",
                    _ => "· no change",
                };
                println!(
                    "         {sym}: {} -> {} ({}; {}{}) [{}]",
                    d.current.map_or("?".into(), |c| c.to_string()),
                    d.desired.map_or("?".into(), |c| c.to_string()),
                    d.reason,
                    d.outcome,
                    d.gate
                        .as_deref()
                        .map(|g| format!(", {g}"))
                        .unwrap_or_default(),
                    sources.join(", ")
                );
                marks.push(Mark {
                    t: ts,
                    action: d.action,
                    outcome: d.outcome,
                    from: d.current,
                    to: d.desired,
                    reason: d.reason,
                    strategy: d.strategy,
                    recommended: d.recommended,
                    stabilized: d.stabilized,
                    clipped_by: d.clipped_by,
                    inputs: d.inputs,
                });
            }
        }

        let load_over = el > t.hold + Duration::from_secs(1);
        if load_over && size == 1 && running == 1 && max_size > 1 {
            // Back where it started: let the view show it settled.
            if samples.iter().rev().take(3).all(|s| s.size == 1) {
                break;
            }
        }
        if el > t.hold + t.tail {
            break;
        }
    }
    load_task.abort();
    probe_task.abort();
    let l = load_last.lock().expect("summary lock").clone();
    let h = probe_last.lock().expect("summary lock").clone();
    let failed = l.as_ref().map_or(0, |s| s.failed) + h.as_ref().map_or(0, |s| s.failed);
    let ok = l.as_ref().map_or(0, |s| s.ok) + h.as_ref().map_or(0, |s| s.ok);
    let nlb_failed = nlb
        .stats()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    let final_size = samples.last().map_or(0, |s| s.size);
    let ups = marks
        .iter()
        .filter(|m| m.action == "up" && m.outcome == "scaled")
        .count();
    let downs = marks
        .iter()
        .filter(|m| m.action == "down" && m.outcome == "scaled")
        .count();
    let mut problems = Vec::new();
    if interrupted {
        problems.push("interrupted".to_owned());
    } else {
        let want = 3.min(cfg.max);
        if max_size < want {
            problems.push(format!(
                "the pool grew to {max_size}, expected at least {want}"
            ));
        }
        if final_size != 1 {
            problems.push(format!("the pool ended at {final_size}, expected 1"));
        }
    }
    if failed > 0 || nlb_failed > 0 {
        problems.push(format!(
            "{failed} failed requests at the client, {nlb_failed} answered by the NLB itself"
        ));
    }
    let outcome = Outcome {
        max_size,
        final_size,
        failed_requests: failed.max(nlb_failed),
        ok_requests: ok,
        scale_ups: ups,
        scale_downs: downs,
        interrupted,
        problems,
    };
    let summary = json!({
        "outcome": outcome,
        "fast": cfg.fast,
        "clients": cfg.clients,
        "capacity-cores": cfg.capacity,
        "max": cfg.max,
        "load": l,
        "background-traffic": h,
        "timings-seconds": {
            "tick": t.tick.as_secs_f64(), "scrape": t.scrape.as_secs_f64(), "window": t.window.as_secs_f64(),
            "pending": t.pending.as_secs_f64(), "boot": t.boot.as_secs_f64(), "load": t.load_seconds.as_secs_f64(),
            "nlb-interval": t.nlb_interval.as_secs_f64(), "drain-wait": t.drain_wait().as_secs_f64(),
        },
    });
    let title = format!(
        "poolpilot demo{}: {} clients, pool 1 -> {} -> {}, {} failed requests",
        if cfg.fast { " --fast" } else { "" },
        cfg.clients,
        max_size,
        final_size,
        outcome.failed_requests
    );
    let chart = report::svg(&title, &samples, &marks, cfg.max);
    report::write_all(&cfg.out, &samples, &marks, &summary, &chart)?;
    println!(
        "\nreport: {0}/timeline.csv, {0}/timeline.json, {0}/chart.svg",
        cfg.out.display()
    );
    println!(
        "pool grew to {max_size} and ended at {final_size}; {ups} scale-up(s), {downs} scale-down(s); {ok} requests ok, {} failed",
        outcome.failed_requests
    );
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_has_shared_arguments_starting_with_its_subcommand() {
        for unit in ["discovery", "autoscaler", "app"] {
            let args = unit_args(unit).unwrap();
            assert_eq!(args[0], unit);
        }
        assert!(unit_args("nope").is_err());
    }

    #[test]
    fn the_fast_rewrites_apply_to_the_shipped_files() {
        let t = Timings::fast();
        let r = demo_rules(&t).unwrap();
        assert!(r.contains("[10s]") && r.contains("for: 10s") && !r.contains("[1m]"));
        let a = demo_alertmanager(&t, "http://127.0.0.1:1/webhook", Path::new("/tmp/t")).unwrap();
        assert!(a.contains("repeat_interval: 5s") && a.contains("credentials_file: /tmp/t"));
    }
}
