//! `poolpilot demo --profile redis`: the key-value appliance on one machine, both pools scaling
//! on their own.
//!
//! ```text
//!  poolpilot load --profile kv ─► NLB :8080 (HTTP) ─► kv 127.0.4.x:8080 ─ writes ─► primary 127.0.5.1:6379
//!                                                         └─ reads ─► NLB (TCP) ─► replica 127.0.3.x:6379
//!                                                                                 + its sidecar :8080
//!  simulator: pools `api` and `replicas` ◄── discovery (one file) ◄── one autoscaler, two pools
//! ```
//!
//! The Redis primary is a fixed instance (a real `redis-server`, as on Exoscale a plain VM). The
//! replica pool's members are `redis-server --replicaof` the primary with their sidecar
//! (`poolpilot replica`: health, drain, load); the API pool's are `poolpilot kv`. One autoscaler
//! drives both pools, each with its policy: the API pool on its members' requests per second,
//! the replica pool on its members' Redis commands per second, both scraped from the members
//! the discovery agent lists. The story:
//!
//! 1. an open-loop mixed load (80 % reads) at a rate one member of each pool cannot carry under
//!    its policy's target: both pools grow;
//! 2. the load drops to a tenth: both pools shrink back to one member, under load, draining
//!    each victim at its NLB first;
//! 3. the load ends, and every write the API acknowledged is read back through the API (so
//!    from the replicas), once they have caught up.
//!
//! It succeeds only if both pools grew and came back, no request failed, and no acknowledged
//! write was lost. The report is `redis.json` and `redis.svg`.

mod view;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use uuid::Uuid;

use super::{DemoConfig, Outcome, Paths, Secrets, Timings, free_port, secs, spawn, wait_http};
use crate::config::{Zone, env, unit_args};
use crate::exoscale::Credentials;
use crate::local::backend::{
    APP_PORT, LocalBackend, LocalConfig, MemberKind, QuotaMode, REDIS_PORT,
};
use crate::local::nlb::{Nlb, NlbConfig};
use crate::local::pools::PerPool;
use crate::local::process::Process;
use crate::sim::{RunningSim, Sim, State, Timing};

/// The primary: a fixed instance, not a pool member.
const PRIMARY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 5, 1)), 6379);
/// The load: requests per second while high, and the share of writes.
const HIGH_RATE: u32 = 300;
const LOW_RATE: u32 = 30;
const WRITE_RATIO: &str = "0.2";

const API_POLICY: &str = include_str!("../../../examples/policies/demo-kv-api.toml");
const REPLICAS_POLICY: &str = include_str!("../../../examples/policies/demo-kv-replicas.toml");

/// One pool of the story: its id, NLB and backend.
pub(super) struct PoolRun {
    pub name: &'static str,
    pub id: Uuid,
    pub nlb: Nlb,
    backend: Arc<LocalBackend>,
}

/// The simulated zone: both pools, their NLBs, the simulator serving the API.
struct Cloud {
    sim: Arc<Sim>,
    running: RunningSim,
    backend: Arc<PerPool>,
    api: PoolRun,
    replicas: PoolRun,
    api_nlb: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cloud {
    async fn start(
        cfg: &DemoConfig,
        t: &Timings,
        paths: &Paths,
        secrets: &Secrets,
        api_listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Self> {
        let replicas_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let replicas_addr = replicas_listener.local_addr()?;
        let api_nlb = api_listener.local_addr()?;
        let local = |subnet: u8, kind: MemberKind| {
            Arc::new(LocalBackend::new(LocalConfig {
                binary: cfg.binary.clone(),
                capacity: cfg.capacity,
                load_duration: t.load_seconds,
                drain_token: secrets.drain.clone().into(),
                log_dir: paths.logs.clone(),
                quota: QuotaMode::DutyCycleOnly(
                    "the Redis profile scales on request rates, not CPU".into(),
                ),
                subnet,
                kind,
            }))
        };
        let replicas_backend = local(3, MemberKind::RedisReplica { primary: PRIMARY });
        let api_backend = local(
            4,
            MemberKind::Kv {
                primary: format!("redis://{PRIMARY}"),
                replicas: format!("redis://{replicas_addr}"),
            },
        );
        let (api_id, replicas_id) = (Uuid::new_v4(), Uuid::new_v4());
        let backend = Arc::new(PerPool::new([
            (api_id, api_backend.clone()),
            (replicas_id, replicas_backend.clone()),
        ]));
        let mut state = State::new(
            Zone::DEFAULT,
            Timing {
                operation_delay: t.operation,
                boot_delay: t.boot,
            },
            backend.clone(),
        );
        let now = tokio::time::Instant::now();
        for (id, name) in [(replicas_id, "replicas"), (api_id, "api")] {
            state
                .create_pool(now, Some(id), name, 1, "standard.micro", false)
                .map_err(|e| anyhow::anyhow!("creating the pool {name}: {}", e.message))?;
        }
        let hc = super::cloud::healthcheck(t);
        let ip = |a: SocketAddr| match a.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
        };
        state.create_load_balancer(
            "api",
            ip(api_nlb),
            api_id,
            api_nlb.port(),
            APP_PORT,
            hc.clone(),
        );
        state.create_load_balancer(
            "replicas",
            ip(replicas_addr),
            replicas_id,
            replicas_addr.port(),
            REDIS_PORT,
            hc,
        );
        let sim = Sim::new(state, vec![Credentials::new(&secrets.key, &secrets.secret)]);
        let running = sim.clone().start("127.0.0.1:0".parse()?).await?;
        let nlb = |pool: Uuid, target_port: u16| {
            Nlb::new(
                sim.clone(),
                NlbConfig {
                    pool,
                    target_port,
                    check_port: APP_PORT,
                    uri: "/health".into(),
                    interval: t.nlb_interval,
                    timeout: t.nlb_timeout,
                    retries: t.nlb_retries,
                },
            )
        };
        let (api_lb, replicas_lb) = (nlb(api_id, APP_PORT), nlb(replicas_id, REDIS_PORT));
        let router = api_lb.router();
        let replicas_serving = replicas_lb.clone();
        let tasks = vec![
            tokio::spawn(api_lb.clone().run_health_checks()),
            tokio::spawn(replicas_lb.clone().run_health_checks()),
            tokio::spawn(async move {
                let _ = axum::serve(api_listener, router).await;
            }),
            tokio::spawn(async move {
                let _ = replicas_serving.serve_tcp(replicas_listener).await;
            }),
        ];
        Ok(Self {
            sim,
            running,
            backend,
            api: PoolRun {
                name: "api",
                id: api_id,
                nlb: api_lb,
                backend: api_backend,
            },
            replicas: PoolRun {
                name: "replicas",
                id: replicas_id,
                nlb: replicas_lb,
                backend: replicas_backend,
            },
            api_nlb,
            tasks,
        })
    }

    /// `EXOSCALE_INSTANCEPOOL_ID` for both pools, each named.
    fn pools(&self) -> String {
        let z = Zone::DEFAULT.name();
        format!(
            "{}={z}:{},{}={z}:{}",
            self.replicas.name, self.replicas.id, self.api.name, self.api.id
        )
    }

    fn api_env(&self, secrets: &Secrets) -> Vec<(String, String)> {
        vec![
            (env::API_ENDPOINT.to_owned(), self.running.endpoint()),
            (env::API_KEY.to_owned(), secrets.key.clone()),
            (env::API_SECRET.to_owned(), secrets.secret.clone()),
            (env::ZONE.to_owned(), Zone::DEFAULT.name().to_owned()),
            (env::POOL.to_owned(), self.pools()),
            (env::LOG_FORMAT.to_owned(), "text".to_owned()),
        ]
    }

    async fn stop(self) -> anyhow::Result<()> {
        for t in self.tasks {
            t.abort();
        }
        let b = self.backend.clone();
        tokio::task::spawn_blocking(move || b.shutdown()).await?;
        drop((self.api.backend, self.replicas.backend));
        self.running.stop().await;
        Ok(())
    }
}

/// The primary's `redis-server`, answering before this returns.
async fn start_primary(paths: &Paths) -> anyhow::Result<Process> {
    let args: Vec<String> = [
        "--bind",
        &PRIMARY.ip().to_string(),
        "--port",
        &PRIMARY.port().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
            .iter()
            .map(|s| s.to_string()),
    )
    .collect();
    let p = spawn(
        "redis-server (primary)",
        std::path::Path::new("redis-server"),
        &args,
        &[],
        &paths.logs.join("primary.log"),
    )
    .context("the Redis profile needs redis-server (apt-get install redis-server)")?;
    let started = Instant::now();
    while view::primary_info(PRIMARY).await.is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("the primary did not answer on {PRIMARY} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(p)
}

/// The discovery agent over both pools, listing each member's one port (8080: the kv API, or
/// the replica's sidecar, which serve /metrics there; the local members have no node_exporter).
fn start_discovery(
    cfg: &DemoConfig,
    t: &Timings,
    paths: &Paths,
    api_env: &[(String, String)],
) -> anyhow::Result<Process> {
    let args = vec![
        "discovery".into(),
        "--target-port".into(),
        format!("app={APP_PORT}"),
        "--output".into(),
        paths.sd_file.display().to_string(),
        "--interval".into(),
        secs(t.discovery),
        "--metrics-listen".into(),
        format!("127.0.0.1:{}", free_port()?),
    ];
    spawn(
        "discovery",
        &cfg.binary,
        &args,
        api_env,
        &paths.logs.join("discovery.log"),
    )
}

/// One autoscaler for both pools, each with its policy file, scraping the discovery targets.
fn start_autoscaler(
    cfg: &DemoConfig,
    t: &Timings,
    paths: &Paths,
    secrets: &Secrets,
    api_env: &[(String, String)],
    port: u16,
) -> anyhow::Result<Process> {
    let api = paths.out.join("policy-api.toml");
    let replicas = paths.out.join("policy-replicas.toml");
    std::fs::write(&api, API_POLICY)?;
    std::fs::write(&replicas, REPLICAS_POLICY)?;
    let config = paths.out.join("autoscaler.toml");
    let toml_str = |p: &std::path::Path| toml_string(&p.display().to_string());
    std::fs::write(
        &config,
        format!(
            "[autoscaler.pools.api]\npolicy = {}\nmin = 1\nmax = {max}\n\n\
             [autoscaler.pools.replicas]\npolicy = {}\nmin = 1\nmax = {max}\n",
            toml_str(&api),
            toml_str(&replicas),
            max = cfg.max,
        ),
    )?;
    let mut vars = api_env.to_vec();
    vars.push((env::WEBHOOK_TOKEN.into(), secrets.webhook.clone()));
    vars.push((env::DRAIN_TOKEN.into(), secrets.drain.clone()));
    let mut args = vec!["--config".into(), config.display().to_string()];
    args.extend(unit_args("autoscaler")?);
    args.extend([
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--interval".into(),
        secs(t.tick),
        "--drain-wait".into(),
        secs(t.drain_wait()),
        "--scrape".into(),
        paths.sd_file.display().to_string(),
        "--scrape-window".into(),
        secs(t.window),
    ]);
    println!(
        "policies: api on requests per second per member (demo-kv-api), replicas on Redis commands per second per member (demo-kv-replicas); one autoscaler scrapes the members"
    );
    spawn(
        "autoscaler",
        &cfg.binary,
        &args,
        &vars,
        &paths.logs.join("autoscaler.log"),
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The load generator: high, then low, then done; every acknowledged write recorded.
fn start_load(
    cfg: &DemoConfig,
    paths: &Paths,
    base: &str,
    high: Duration,
    low: Duration,
) -> anyhow::Result<Process> {
    // A step profile ends at its last point: the low rate is held until the end.
    let profile = format!(
        "step:0s={HIGH_RATE},{}={LOW_RATE},{}={LOW_RATE}",
        secs(high),
        secs(high + low)
    );
    let args = vec![
        "load".into(),
        "--url".into(),
        base.to_owned(),
        "--profile".into(),
        "kv".into(),
        "--write-ratio".into(),
        WRITE_RATIO.into(),
        "--keys".into(),
        "500".into(),
        "--acked".into(),
        paths.out.join("acked.jsonl").display().to_string(),
        "--rate".into(),
        profile,
        "--duration".into(),
        secs(high + low),
        "--timeout".into(),
        "10s".into(),
        "--json".into(),
    ];
    spawn("load", &cfg.binary, &args, &[], &paths.out.join("load.log"))
}

pub async fn run(cfg: DemoConfig) -> anyhow::Result<Outcome> {
    let t = Timings::of(cfg.fast);
    let paths = Paths::prepare(&cfg.out)?;
    let api_listener = tokio::net::TcpListener::bind(cfg.nlb_listen)
        .await
        .with_context(|| {
            format!(
                "the API's NLB cannot listen on {} (use --nlb-listen)",
                cfg.nlb_listen
            )
        })?;
    println!(
        "{}\nthe Redis profile: a primary on {PRIMARY}, a replica pool behind a TCP NLB, an API pool (poolpilot kv) behind http://{}\n{}",
        "=".repeat(78),
        cfg.nlb_listen,
        "=".repeat(78)
    );
    let secrets = Secrets::new();
    let mut procs = vec![start_primary(&paths).await?];
    let cloud = match Cloud::start(&cfg, &t, &paths, &secrets, api_listener).await {
        Ok(c) => c,
        Err(e) => {
            for p in procs {
                p.stop_async().await;
            }
            return Err(e);
        }
    };
    let result = async {
        let api_env = cloud.api_env(&secrets);
        procs.push(start_discovery(&cfg, &t, &paths, &api_env)?);
        let port = free_port()?;
        procs.push(start_autoscaler(
            &cfg, &t, &paths, &secrets, &api_env, port,
        )?);
        let scaler = format!("http://127.0.0.1:{port}");
        wait_http(&format!("{scaler}/readyz"), Duration::from_secs(30)).await?;
        story(&cfg, &t, &paths, &cloud).await
    }
    .await;
    for p in procs.into_iter().rev() {
        p.stop_async().await;
    }
    cloud.stop().await?;
    result
}

async fn story(
    cfg: &DemoConfig,
    t: &Timings,
    paths: &Paths,
    cloud: &Cloud,
) -> anyhow::Result<Outcome> {
    let pools = [&cloud.replicas, &cloud.api];
    let first = Instant::now();
    for p in pools {
        while !p.nlb.members().iter().any(|m| m.healthy) {
            if first.elapsed() > t.boot + Duration::from_secs(60) {
                anyhow::bail!(
                    "the {} pool's first member never became healthy at its NLB (see {})",
                    p.name,
                    paths.logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let base = format!("http://{}", cloud.api_nlb);
    println!(
        "simulator: {}   api: {base}   ui: {base}/ui   report: {}",
        cloud.running.endpoint(),
        paths.out.display()
    );

    // 1-2. High, then low: long enough for each pool to grow, then to shrink back.
    let high = t.tick * 5 + t.boot * 2;
    let low = t.tail;
    // Dropped (so killed) on any early return; ends by itself otherwise.
    let mut load = start_load(cfg, paths, &base, high, low)?;
    let t0 = Instant::now();
    let mut w = view::Watch::new(t0, &cloud.sim, [&cloud.replicas, &cloud.api], PRIMARY);
    w.until(high + Duration::from_secs(5), |_| false).await;
    println!("---- the load drops to {LOW_RATE} requests per second ----");
    let back = w
        .until(low, |s| {
            s.pools.iter().all(|p| p.size == 1 && p.healthy == 1)
        })
        .await;
    // 3. The load ends by itself (its duration); its summary is then complete.
    if !w
        .until(low + Duration::from_secs(60), |_| load.exited().is_some())
        .await
    {
        anyhow::bail!("the load generator did not finish");
    }
    let summary = view::load_summary(&paths.out.join("load.log"))?;
    println!("---- the load is over: reading every acknowledged write back through the API ----");
    let verify = view::verify(&cfg.binary, &base, &paths.out.join("acked.jsonl")).await?;

    let mut problems = Vec::new();
    for (i, p) in pools.iter().enumerate() {
        let max = w.samples.iter().map(|s| s.pools[i].size).max().unwrap_or(0);
        if max < 2 {
            problems.push(format!("the {} pool never grew (max size {max})", p.name));
        }
    }
    if !back {
        problems.push(format!(
            "the pools were not back to one healthy member each within {low:?} of the load dropping"
        ));
    }
    if summary.failed > 0 {
        problems.push(format!(
            "{} request(s) failed ({})",
            summary.failed, summary.errors
        ));
    }
    if summary.ok == 0 {
        problems.push("no request succeeded".into());
    }
    if verify.lost > 0 || verify.checked == 0 {
        problems.push(format!(
            "{} of {} acknowledged write(s) could not be read back",
            verify.lost, verify.checked
        ));
    }
    let nlb_failed = cloud
        .api
        .nlb
        .stats()
        .failed
        .load(std::sync::atomic::Ordering::SeqCst);
    if nlb_failed > 0 {
        problems.push(format!(
            "the API's NLB answered {nlb_failed} request(s) itself with 502/503{}",
            super::view::why_nlb_failed(&cloud.api.nlb)
        ));
    }
    view::report(&paths.out, &w.samples, &summary, &verify, &problems)?;
    println!(
        "{}\n{} requests answered, {} failed; {} acknowledged writes, {} read back, {} lost; report: {}",
        "=".repeat(78),
        summary.ok,
        summary.failed,
        verify.checked,
        verify.checked - verify.lost,
        verify.lost,
        paths.out.join("redis.json").display()
    );
    for p in &problems {
        println!("PROBLEM: {p}");
    }
    let max_size = w
        .samples
        .iter()
        .flat_map(|s| s.pools.iter().map(|p| p.size))
        .max()
        .unwrap_or(0);
    Ok(Outcome {
        max_size,
        final_size: w.samples.last().map(|s| s.pools[1].size).unwrap_or(0),
        failed_requests: summary.failed,
        ok_requests: summary.ok,
        scale_ups: 0,
        scale_downs: 0,
        interrupted: false,
        problems,
    })
}
