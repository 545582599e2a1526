//! `poolpilot demo --zones 2`: two zones behind `poolpilot front`, and one of them lost mid-run.
//!
//! ```text
//!                        ┌─► NLB ch-gva-2 ─► app 127.0.1.x   (pool, discovery, autoscaler)
//!  clients ─► front :8080┤
//!                        └─► NLB de-fra-1 ─► app 127.0.2.x   (pool, discovery, autoscaler)
//! ```
//!
//! Each zone is what the one-zone demo runs (its own simulator, pool, NLB, discovery agent and
//! autoscaler, scaling on its own load with a policy on requests in flight, scraped from its
//! own members). The front spreads the clients over the two NLBs. Then the story:
//!
//! 1. load starts; both zones take their share;
//! 2. the last zone goes down: its members are killed and its NLB answers 503; the front
//!    ejects it, retries what failed there on the other zone, and the other zone's autoscaler
//!    grows to carry the whole load;
//! 3. the zone comes back (its members start again, its NLB answers); after its cool-down the
//!    front's probe re-admits it;
//! 4. the load stops.
//!
//! It succeeds only if every client request got a 200, the lost zone was ejected and
//! re-admitted, and the surviving zone grew. The live view prints each zone's pool and the
//! front's view of it every second; the report is `zones.json` and `zones.svg`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Cloud, DemoConfig, Outcome, Paths, Ports, Secrets, Timings, wait_http};
use crate::config::Zone;
use crate::front::backend::{EjectMode, Ejection, State as BackendState};
use crate::front::{Front, FrontConfig};
use crate::local::process::Process;
use crate::shutdown::{self, Limits};

const ZONES: [Zone; 3] = [Zone::ChGva2, Zone::DeFra1, Zone::AtVie1];

/// One zone: its cloud and its children.
struct ZoneRun {
    cloud: Cloud,
    procs: Vec<Process>,
    scaler: String,
}

/// The clients: each sends `/load` through the front, one request after another.
struct Clients {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_failure: Arc<std::sync::Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    fn start(url: String, n: u32, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()?;
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let first_failure = Arc::new(std::sync::Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|_| {
                let (http, url, ok, failed, first, stop) = (
                    http.clone(),
                    url.clone(),
                    ok.clone(),
                    failed.clone(),
                    first_failure.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let why = match http.get(&url).send().await {
                            Ok(r) if r.status().is_success() => match r.bytes().await {
                                Ok(_) => None,
                                Err(e) => Some(format!("body: {e}")),
                            },
                            Ok(r) => Some(format!(
                                "{} {}",
                                r.status(),
                                r.text().await.unwrap_or_default().trim()
                            )),
                            Err(e) => Some(e.to_string()),
                        };
                        match why {
                            None => ok.fetch_add(1, Ordering::SeqCst),
                            Some(w) => {
                                first.lock().expect("failure lock").get_or_insert(w);
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Ok(Self {
            ok,
            failed,
            first_failure,
            stop,
            tasks,
        })
    }

    /// Stops sending; every request under way is finished (and counted) before this returns.
    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// One line of the live view, kept for the report.
#[derive(Clone, Debug, serde::Serialize)]
struct Sample {
    t: f64,
    /// Per zone: requested size, healthy members at its NLB, the front's state of it.
    zones: Vec<(u64, u64, BackendState)>,
    ok: u64,
    failed: u64,
}

fn sample(t0: Instant, runs: &[ZoneRun], front: &Front, clients: &Clients) -> Sample {
    let states = front.backends.status(Instant::now());
    let zones = runs
        .iter()
        .zip(states)
        .map(|(z, st)| {
            let size = z
                .cloud
                .sim
                .with_state(|s| s.pool_view(z.cloud.pool).map(|p| p.size).unwrap_or(0));
            let healthy = z.cloud.nlb.members().iter().filter(|m| m.healthy).count() as u64;
            (size, healthy, st.state)
        })
        .collect();
    Sample {
        t: t0.elapsed().as_secs_f64(),
        zones,
        ok: clients.ok.load(Ordering::SeqCst),
        failed: clients.failed.load(Ordering::SeqCst),
    }
}

fn print(s: &Sample, runs: &[ZoneRun]) {
    let zones: Vec<String> = runs
        .iter()
        .zip(&s.zones)
        .map(|(z, (size, healthy, state))| {
            format!(
                "{} pool {size} ({healthy} healthy) {:<8}",
                z.cloud.zone.name(),
                format!("{state:?}").to_lowercase()
            )
        })
        .collect();
    println!(
        "[{:>4.0}s] {} | ok {} failed {}",
        s.t,
        zones.join(" | "),
        s.ok,
        s.failed
    );
}

/// Samples every second until `done` holds or `limit` passes; returns whether `done` held.
async fn watch(
    t0: Instant,
    runs: &[ZoneRun],
    front: &Front,
    clients: &Clients,
    samples: &mut Vec<Sample>,
    limit: Duration,
    mut done: impl FnMut(&Sample) -> bool,
) -> bool {
    let until = Instant::now() + limit;
    loop {
        let s = sample(t0, runs, front, clients);
        print(&s, runs);
        let held = done(&s);
        samples.push(s);
        if held {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn run(mut cfg: DemoConfig) -> anyhow::Result<Outcome> {
    let t = Timings::of(cfg.fast);
    let n = usize::from(cfg.zones).min(ZONES.len());
    if cfg.policy.is_none() {
        cfg.policy = Some(super::resolve_policy("target-tracking").map_err(anyhow::Error::msg)?);
    }
    let root = Paths::prepare(&cfg.out)?;
    let front_listener = tokio::net::TcpListener::bind(cfg.nlb_listen)
        .await
        .with_context(|| {
            format!(
                "the front cannot listen on {} (use --nlb-listen)",
                cfg.nlb_listen
            )
        })?;
    let secrets = Secrets::new();
    println!(
        "{}\n{} zones behind `poolpilot front` on http://{}; each zone scales on its own load \
         ({}), metrics scraped from its members\n{}",
        "=".repeat(78),
        n,
        cfg.nlb_listen,
        cfg.policy.as_ref().map(|p| p.label.as_str()).unwrap_or(""),
        "=".repeat(78)
    );
    let mut runs: Vec<ZoneRun> = Vec::new();
    let result = async {
        for (i, zone) in ZONES.iter().take(n).enumerate() {
            let paths = Paths::prepare(&root.out.join(zone.name()))?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let cloud =
                Cloud::start(&cfg, &t, &paths, &secrets, listener, (*zone, 1 + i as u8)).await?;
            let api_env = cloud.api_env(&secrets);
            let mut procs = vec![super::start_discovery(&cfg, &t, &paths, &api_env)?];
            let ports = Ports {
                autoscaler: super::free_port()?,
                alertmanager: 0,
                prometheus: 0,
            };
            procs.push(super::start_autoscaler(
                &cfg, &t, &paths, &secrets, &api_env, false, &ports,
            )?);
            runs.push(ZoneRun {
                cloud,
                procs,
                scaler: format!("http://127.0.0.1:{}", ports.autoscaler),
            });
        }
        story(&cfg, &t, &root, &runs, front_listener).await
    }
    .await;
    for z in runs {
        for p in z.procs.into_iter().rev() {
            p.stop_async().await;
        }
        z.cloud.stop().await?;
    }
    result
}

async fn story(
    cfg: &DemoConfig,
    t: &Timings,
    root: &Paths,
    runs: &[ZoneRun],
    front_listener: tokio::net::TcpListener,
) -> anyhow::Result<Outcome> {
    for z in runs {
        wait_http(&format!("{}/readyz", z.scaler), Duration::from_secs(30)).await?;
        z.cloud.first_member_healthy(t, &root.logs).await?;
    }
    // The front over the zones' NLBs: a short cool-down, so the lost zone is back within the
    // story; a per-try timeout far above a queued /load, since a zone that is down answers at
    // once (503 or a refused connection) and only a slow answer could time out.
    let cooldown = if cfg.fast { t.tick } else { t.tick / 2 };
    let front_cfg = FrontConfig {
        listen: front_listener.local_addr()?,
        admin_listen: "127.0.0.1:0".parse()?,
        backends: runs
            .iter()
            .map(|z| {
                (
                    z.cloud.zone.name().to_owned(),
                    format!("http://{}", z.cloud.nlb_addr),
                )
            })
            .collect(),
        ejection: Ejection {
            after: 10,
            mode: EjectMode::Total,
            cooldown,
            max_cooldown: cooldown * 4,
        },
        retries: 2,
        retry_ratio: 0.2,
        retry_min: 3,
        retry_non_idempotent: false,
        retry_body_limit: 1 << 20,
        try_timeout: Duration::from_secs(120),
        connect_timeout: Duration::from_secs(2),
        probe_interval: Duration::from_secs(1),
        health_path: "/health".into(),
        limits: Limits::default(),
    };
    let mut registry = crate::telemetry::metrics::registry("front");
    let front = Arc::new(Front::new(front_cfg, &mut registry));
    let (stop, stopping) = shutdown::stop_switch();
    let prober = tokio::spawn(front.clone().probe_loop(stopping.clone()));
    let mut stop_server = stopping.clone();
    let router = front.router();
    let server = tokio::spawn(async move {
        shutdown::serve_with(
            front_listener,
            router,
            async move { stop_server.wait().await },
            Limits::default(),
        )
        .await
    });

    let t0 = Instant::now();
    // --clients in all (at least one per zone): each zone carries its share, the survivor
    // all of them.
    let clients = Clients::start(
        format!("http://{}/load", cfg.nlb_listen),
        cfg.clients.max(runs.len() as u32),
        Duration::from_secs(300),
    )?;
    let mut samples = Vec::new();
    let mut problems = Vec::new();
    let lost = runs.len() - 1;
    let survivor = 0;

    // 1. Both zones take their share until the surviving zone's pool has kept its size for
    //    two ticks (bounded).
    let stable_for = (t.tick * 2).as_secs_f64();
    let mut since: Option<(u64, f64)> = None;
    watch(
        t0,
        runs,
        &front,
        &clients,
        &mut samples,
        t.tick * 8 + t.boot,
        |s| {
            let size = s.zones[survivor].0;
            match since {
                Some((v, at)) if v == size => s.t - at >= stable_for,
                _ => {
                    since = Some((size, s.t));
                    false
                }
            }
        },
    )
    .await;
    let before = samples.last().map(|s| s.zones[survivor].0).unwrap_or(1);
    if before >= cfg.max {
        problems.push(format!(
            "{} is already at its maximum ({}) before the outage: raise --max to see it grow",
            runs[survivor].cloud.zone.name(),
            cfg.max
        ));
    }

    // 2. The zone is lost.
    println!(
        "---- {} is down: its members are killed and its NLB answers 503 ----",
        runs[lost].cloud.zone.name()
    );
    let down_at = t0.elapsed().as_secs_f64();
    runs[lost].cloud.nlb.set_down(true);
    let b = runs[lost].cloud.backend.clone();
    tokio::task::spawn_blocking(move || b.kill_all()).await?;
    let ejected = watch(
        t0,
        runs,
        &front,
        &clients,
        &mut samples,
        Duration::from_secs(60),
        |s| s.zones[lost].2 == BackendState::Ejected,
    )
    .await;
    if !ejected {
        problems.push(format!(
            "the front did not eject {} within 60 s",
            runs[lost].cloud.zone.name()
        ));
    }
    let grow_limit = t.tick * 4 + t.boot * 2;
    let grew = watch(t0, runs, &front, &clients, &mut samples, grow_limit, |s| {
        s.zones[survivor].0 > before && s.zones[survivor].1 > before
    })
    .await;
    if !grew {
        problems.push(format!(
            "{} did not grow past {before} to carry the whole load within {:?}",
            runs[survivor].cloud.zone.name(),
            grow_limit
        ));
    }

    // 3. The zone comes back.
    println!(
        "---- {} is back: its members start again, its NLB answers ----",
        runs[lost].cloud.zone.name()
    );
    let up_at = t0.elapsed().as_secs_f64();
    // On this (runtime) thread, not a blocking one: the children die with the thread that
    // started them (PR_SET_PDEATHSIG), and tokio ends idle blocking threads.
    runs[lost]
        .cloud
        .backend
        .revive_all()
        .map_err(|e| anyhow::anyhow!("reviving the zone's members: {e}"))?;
    runs[lost].cloud.nlb.set_down(false);
    let readmit_limit = cooldown * 4 + Duration::from_secs(60);
    let readmitted = watch(
        t0,
        runs,
        &front,
        &clients,
        &mut samples,
        readmit_limit,
        |s| s.zones[lost].2 == BackendState::Healthy && s.zones[lost].1 > 0,
    )
    .await;
    if !readmitted {
        problems.push(format!(
            "{} was not re-admitted within {readmit_limit:?}",
            runs[lost].cloud.zone.name()
        ));
    }
    // Both zones serve again for a while.
    watch(t0, runs, &front, &clients, &mut samples, t.tick, |_| false).await;

    // 4. The load stops; every request under way is finished and counted.
    let ok_at_stop = clients.ok.load(Ordering::SeqCst);
    let first_failure = clients.first_failure.lock().expect("failure lock").clone();
    let (ok, failed) = (clients.ok.clone(), clients.failed.clone());
    clients.stop().await;
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    stop.stop();
    let _ = prober.await;
    let _ = server.await;
    if failed > 0 {
        problems.push(format!(
            "{failed} client request(s) failed (the first: {})",
            first_failure.unwrap_or_default()
        ));
    }
    if ok_at_stop == 0 {
        problems.push("no client request succeeded".into());
    }
    let max_size = samples
        .iter()
        .map(|s| s.zones.iter().map(|z| z.0).max().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let report = serde_json::json!({
        "zones": runs.iter().map(|z| z.cloud.zone.name()).collect::<Vec<_>>(),
        "lost": runs[lost].cloud.zone.name(),
        "down_at_s": down_at,
        "up_at_s": up_at,
        "ok_requests": ok,
        "failed_requests": failed,
        "front": front.backends.status(Instant::now()),
        "problems": problems,
        "samples": samples,
    });
    std::fs::write(
        root.out.join("zones.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(
        root.out.join("zones.svg"),
        svg(&samples, runs, down_at, up_at),
    )?;
    println!(
        "{}\n{} requests answered 200, {failed} failed; {} lost at {down_at:.0}s, back at {up_at:.0}s; report: {}",
        "=".repeat(78),
        ok,
        runs[lost].cloud.zone.name(),
        root.out.join("zones.json").display()
    );
    for p in &problems {
        println!("PROBLEM: {p}");
    }
    Ok(Outcome {
        max_size,
        final_size: samples.last().map(|s| s.zones[survivor].0).unwrap_or(0),
        failed_requests: failed,
        ok_requests: ok,
        scale_ups: 0,
        scale_downs: 0,
        interrupted: false,
        problems,
    })
}

/// Each zone's pool size over time, the lost zone's outage shaded, and the front's ejection of
/// it as a band.
fn svg(samples: &[Sample], runs: &[ZoneRun], down_at: f64, up_at: f64) -> String {
    let (w, h, left, top, bottom) = (760.0, 300.0, 50.0, 30.0, 40.0);
    let t_max = samples.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
    let y_max = samples
        .iter()
        .flat_map(|s| s.zones.iter().map(|z| z.0))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: f64| left + (w - left - 20.0) * t / t_max;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / (y_max + 1.0));
    let mut o = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    o.push_str(&format!(
        r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#f8d7da"/><text x="{:.1}" y="{:.1}">zone down</text>"##,
        x(down_at),
        (x(up_at) - x(down_at)).max(1.0),
        h - top - bottom,
        x(down_at) + 4.0,
        top + 14.0
    ));
    let colours = ["#1f77b4", "#d62728", "#2ca02c"];
    for (zi, z) in runs.iter().enumerate() {
        // The front's ejection of this zone, as a band under the axis.
        for s in samples
            .iter()
            .filter(|s| s.zones[zi].2 == BackendState::Ejected)
        {
            o.push_str(&format!(
                r#"<rect x="{:.1}" y="{:.1}" width="3" height="6" fill="{}"/>"#,
                x(s.t),
                h - bottom + 8.0 + 8.0 * zi as f64,
                colours[zi % 3]
            ));
        }
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(s.zones[zi].0 as f64)))
            .collect();
        o.push_str(&format!(
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            colours[zi % 3],
            points.join(" ")
        ));
        o.push_str(&format!(
            r#"<text x="{:.1}" y="16" fill="{}">{} pool size (band below: ejected by the front)</text>"#,
            left + 330.0 * zi as f64,
            colours[zi % 3],
            z.cloud.zone.name()
        ));
    }
    for v in 0..=(y_max as u64 + 1) {
        o.push_str(&format!(
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text><line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            left - 6.0,
            y(v as f64) + 4.0,
            w - 20.0,
            y(v as f64),
            y(v as f64)
        ));
    }
    o.push_str(&format!(
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{t_max:.0} s</text></svg>"#,
        w - 20.0,
        h - 4.0
    ));
    o.push('\n');
    o
}
