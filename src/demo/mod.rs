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

mod cloud;
pub mod embedded;
pub mod monitoring;
mod redis;
pub mod report;
mod view;
mod zones;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::autoscaler::source::scrape::Scraper;
use crate::config::{Zone, env, unit_args};
use crate::local::process::{self, Process};
use cloud::Cloud;
pub use monitoring::{ALERTMANAGER, RULES, demo_alertmanager, demo_rules, prometheus_config};

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

    /// `--fast`'s timings, or the course's.
    pub fn of(fast: bool) -> Self {
        if fast { Self::fast() } else { Self::course() }
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
    /// 1: the story of one pool; 2: two zones behind `poolpilot front`, one lost mid-run.
    pub zones: u8,
    /// The Redis profile: a primary, a replica pool and an API pool ([`redis`]).
    pub redis: bool,
}

/// A `--policy` for the demo: a file, or a built-in name. `target-tracking` is the demo's
/// target tracking (examples/policies/demo-in-flight.toml), `default` the default policy's
/// forecast at the demo's lead time (examples/policies/demo-default.toml): the three-minute story needs
/// short windows, and it tracks requests in flight, which, unlike CPU, does not saturate, so
/// one decision finds the size the load needs.
pub fn resolve_policy(arg: &str) -> Result<crate::policy::builtin::Source, String> {
    if arg == "target-tracking" {
        let mut s = crate::policy::builtin::load("demo-in-flight")?;
        s.label = "built-in `target-tracking` at the demo's time scale (demo-in-flight)".into();
        return Ok(s);
    }
    if arg == "default" {
        return Ok(crate::policy::builtin::Source {
            label: "built-in `default` at the demo's time scale (demo-default)".into(),
            text: include_str!("../../examples/policies/demo-default.toml").to_owned(),
            path: None,
        });
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

pub(super) fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// Starts a child that dies with us, its stdout and stderr in `log`.
pub(super) fn spawn(
    name: &'static str,
    program: &Path,
    args: &[String],
    vars: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Process> {
    let log = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove(env::NOTIFY_SOCKET)
        .env_remove(env::WATCHDOG_USEC)
        .env_remove(env::JOURNAL_STREAM)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    process::spawn(name, &mut cmd)
        .with_context(|| format!("starting {name} ({})", program.display()))
}

pub(super) async fn wait_http(url: &str, limit: Duration) -> anyhow::Result<()> {
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

/// Where this run writes: the report, the logs, the discovery file, the webhook token.
pub(super) struct Paths {
    /// Absolute, because Prometheus resolves paths in its configuration from the file's directory.
    pub out: PathBuf,
    pub logs: PathBuf,
    pub sd_dir: PathBuf,
    pub sd_file: PathBuf,
    pub token_file: PathBuf,
}

impl Paths {
    /// Creates the output directory and clears what a previous run left behind.
    pub(super) fn prepare(out: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let out = std::fs::canonicalize(out)?;
        let logs = out.join("logs");
        let _ = std::fs::remove_dir_all(out.join("sd"));
        let _ = std::fs::remove_dir_all(out.join("prometheus-data"));
        let _ = std::fs::remove_dir_all(out.join("alertmanager-data"));
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let sd_dir = out.join("sd");
        Ok(Self {
            logs,
            sd_file: sd_dir.join("pool.json"),
            sd_dir,
            token_file: out.join("webhook-token"),
            out,
        })
    }
}

/// The ports of the children on 127.0.0.1.
pub(super) struct Ports {
    pub autoscaler: u16,
    pub alertmanager: u16,
    pub prometheus: u16,
}

/// The API key and the tokens of this run only.
pub(super) struct Secrets {
    key: String,
    secret: String,
    webhook: String,
    drain: String,
}

impl Secrets {
    pub(super) fn new() -> Self {
        Self {
            key: format!("EXO{}", uuid::Uuid::new_v4().simple()),
            secret: uuid::Uuid::new_v4().simple().to_string(),
            webhook: uuid::Uuid::new_v4().simple().to_string(),
            drain: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// Runs the story; `Ok` carries what happened (its `success()` gives the exit code).
pub async fn run(cfg: DemoConfig) -> anyhow::Result<Outcome> {
    if cfg.redis {
        return redis::run(cfg).await;
    }
    if cfg.zones > 1 {
        return zones::run(cfg).await;
    }
    let t = Timings::of(cfg.fast);
    let paths = Paths::prepare(&cfg.out)?;
    let nlb_listener = tokio::net::TcpListener::bind(cfg.nlb_listen)
        .await
        .with_context(|| {
            format!(
                "the NLB cannot listen on {} (use --nlb-listen)",
                cfg.nlb_listen
            )
        })?;
    let tools = monitoring::Tools::find(&cfg.monitoring)?;
    println!("{}\n{}\n{}", "=".repeat(78), tools.banner(), "=".repeat(78));
    let secrets = Secrets::new();
    std::fs::write(&paths.token_file, &secrets.webhook)?;
    let cloud = Cloud::start(&cfg, &t, &paths, &secrets, nlb_listener, (Zone::DEFAULT, 1)).await?;

    let mut procs = Vec::new();
    let result = children_and_story(&cfg, &t, &paths, &secrets, &tools, &cloud, &mut procs).await;

    // Stop everything, whatever happened.
    for p in procs.into_iter().rev() {
        p.stop_async().await;
    }
    cloud.stop().await?;
    let _ = std::fs::remove_file(&paths.token_file);
    result
}

/// Starts the discovery agent, the autoscaler and the monitoring (each pushed onto `procs` as
/// it starts, so the caller stops them whatever happens), waits for the first healthy member,
/// and tells the story.
async fn children_and_story(
    cfg: &DemoConfig,
    t: &Timings,
    paths: &Paths,
    secrets: &Secrets,
    tools: &monitoring::Tools,
    cloud: &Cloud,
    procs: &mut Vec<Process>,
) -> anyhow::Result<Outcome> {
    let api_env = cloud.api_env(secrets);
    procs.push(start_discovery(cfg, t, paths, &api_env)?);
    let ports = Ports {
        autoscaler: free_port()?,
        alertmanager: free_port()?,
        prometheus: free_port()?,
    };
    procs.push(start_autoscaler(
        cfg, t, paths, secrets, &api_env, tools.real, &ports,
    )?);
    let scaler = format!("http://127.0.0.1:{}", ports.autoscaler);
    let webhook = format!("{scaler}/webhook");

    let mut embedded_task = None;
    if tools.real {
        tools.start(t, paths, &ports, &webhook, procs).await?;
    } else {
        embedded_task = Some(tokio::spawn(
            embedded::Embedded {
                sampler: Scraper::new(paths.sd_file.clone(), t.window),
                webhook: webhook.clone(),
                token: secrets.webhook.clone().into(),
                eval_interval: t.scrape,
                pending: t.pending,
                repeat: t.repeat,
            }
            .run(),
        ));
    }
    wait_http(&format!("{scaler}/readyz"), Duration::from_secs(30)).await?;
    println!(
        "simulator: {}   nlb: http://{}   autoscaler: {scaler}   report: {}",
        cloud.running.endpoint(),
        cfg.nlb_listen,
        paths.out.display()
    );
    cloud.first_member_healthy(t, &paths.logs).await?;
    let forecasting = match &cfg.policy {
        Some(p) => !p
            .parse()
            .map_err(anyhow::Error::msg)?
            .forecasts()
            .is_empty(),
        None => false,
    };
    if forecasting {
        view::forecast_warm(&scaler, Duration::from_secs(120)).await?;
    }
    let outcome = view::story(
        cfg,
        t,
        &cloud.sim,
        cloud.pool,
        &cloud.nlb,
        &scaler,
        &paths.sd_file,
    )
    .await;
    if let Some(e) = embedded_task {
        e.abort();
    }
    outcome
}

/// The discovery agent, with its unit's flags, writing the file_sd targets.
pub(super) fn start_discovery(
    cfg: &DemoConfig,
    t: &Timings,
    paths: &Paths,
    api_env: &[(String, String)],
) -> anyhow::Result<Process> {
    let discovery_port = free_port()?;
    let mut args = unit_args("discovery")?;
    args.extend([
        "--output".into(),
        paths.sd_file.display().to_string(),
        "--interval".into(),
        secs(t.discovery),
        "--metrics-listen".into(),
        format!("127.0.0.1:{discovery_port}"),
    ]);
    spawn(
        "discovery",
        &cfg.binary,
        &args,
        api_env,
        &paths.logs.join("discovery.log"),
    )
}

/// The autoscaler, with its unit's flags: the course's webhook rule, or `--policy` reading
/// Prometheus (real monitoring) or scraping the discovery targets itself (embedded).
pub(super) fn start_autoscaler(
    cfg: &DemoConfig,
    t: &Timings,
    paths: &Paths,
    secrets: &Secrets,
    api_env: &[(String, String)],
    real: bool,
    ports: &Ports,
) -> anyhow::Result<Process> {
    let mut vars = api_env.to_vec();
    vars.push((env::WEBHOOK_TOKEN.into(), secrets.webhook.clone()));
    vars.push((env::DRAIN_TOKEN.into(), secrets.drain.clone()));
    let mut args = unit_args("autoscaler")?;
    args.extend([
        "--listen".into(),
        format!("127.0.0.1:{}", ports.autoscaler),
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
        let file = paths.out.join("policy.toml");
        std::fs::write(&file, &p.text)?;
        args.extend(["--policy".into(), file.display().to_string()]);
        if real {
            args.extend([
                "--prometheus".into(),
                format!("http://127.0.0.1:{}", ports.prometheus),
            ]);
            println!(
                "policy: {} (the autoscaler reads metrics from Prometheus)",
                p.label
            );
        } else {
            args.extend([
                "--scrape".into(),
                paths.sd_file.display().to_string(),
                "--scrape-window".into(),
                secs(t.window),
            ]);
            println!(
                "policy: {} (the autoscaler scrapes the discovery targets itself)",
                p.label
            );
        }
    }
    spawn(
        "autoscaler",
        &cfg.binary,
        &args,
        &vars,
        &paths.logs.join("autoscaler.log"),
    )
}
