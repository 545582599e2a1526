//! The story as the user watches it: the load through the NLB, a line per second (pool, CPU,
//! requests), each decision as the autoscaler records it, then the verdict and the report.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinHandle;

use super::report::{self, Mark, Sample};
use super::{DemoConfig, Outcome, Timings};
use crate::autoscaler::source::scrape::Scraper;
use crate::load::{self, LoadConfig, Mode, Profile, Summary};
use crate::local::nlb::Nlb;
use crate::sim::Sim;

/// A decision as `/v1/decisions` serves it (the fields the view and the report use).
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

type Last = Arc<Mutex<Option<Summary>>>;

/// The autoscaler's recent decisions, `None` when it did not answer with them.
async fn decisions(http: &reqwest::Client, scaler: &str) -> Option<Vec<DecisionView>> {
    let r = http
        .get(format!("{scaler}/v1/decisions"))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Waits until the autoscaler's newest decision has no forecast check in its warm-up: a
/// deployed autoscaler has long checked its forecasts on the idle pool before traffic comes,
/// and the story shows that policy, not its first minute after a restart (when it adds a
/// warm-up headroom to the demand and never scales in). The load starts after this.
pub(super) async fn forecast_warm(scaler: &str, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    loop {
        if let Some(ds) = decisions(&http, scaler).await
            && let Some(newest) = ds.iter().max_by_key(|d| d.tick)
            && !newest.inputs.is_empty()
            && newest.inputs.iter().all(|i| i["warming-up"] != true)
        {
            println!(
                "forecast: its error is known after {:.0} s on the idle pool (tick {}); the load starts",
                started.elapsed().as_secs_f64(),
                newest.tick
            );
            return Ok(());
        }
        if started.elapsed() > limit {
            anyhow::bail!("the autoscaler's forecast was still warming up after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The traffic through the NLB: the `/load` clients and a light background probe.
struct Traffic {
    profile: Profile,
    load: JoinHandle<()>,
    probe: JoinHandle<()>,
    load_last: Last,
    probe_last: Last,
}

/// One load generator in the background, its latest summary kept in `last`.
fn generate(lc: LoadConfig, last: Last) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = load::run(lc, |s| {
            *last.lock().expect("summary lock") = Some(s.clone())
        })
        .await;
    })
}

impl Traffic {
    fn start(cfg: &DemoConfig, t: &Timings) -> anyhow::Result<Self> {
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
        let load_last = Last::default();
        let probe_last = Last::default();
        let total = t.hold + t.tail + Duration::from_secs(30);
        let load = generate(
            LoadConfig {
                url: format!("{base}/load").parse()?,
                mode: Mode::Closed(profile.clone()),
                duration: Some(t.hold + Duration::from_secs(1)),
                requests: None,
                timeout: t.load_seconds * 6 + Duration::from_secs(5),
            },
            load_last.clone(),
        );
        // Light traffic through the NLB all along (a cheap app route, not the health check), so
        // that scale-in is tested under requests too.
        let probe = generate(
            LoadConfig {
                url: format!("{base}/covilha").parse()?,
                mode: Mode::Open(Profile::Constant(20.0)),
                duration: Some(total),
                requests: None,
                timeout: Duration::from_secs(5),
            },
            probe_last.clone(),
        );
        Ok(Self {
            profile,
            load,
            probe,
            load_last,
            probe_last,
        })
    }

    /// The latest summaries of the load and of the background probe.
    fn summaries(&self) -> (Option<Summary>, Option<Summary>) {
        let l = self.load_last.lock().expect("summary lock").clone();
        let h = self.probe_last.lock().expect("summary lock").clone();
        (l, h)
    }

    fn stop(&self) {
        self.load.abort();
        self.probe.abort();
    }
}

/// What the view has seen so far.
#[derive(Default)]
struct Seen {
    samples: Vec<Sample>,
    marks: Vec<Mark>,
    ticks: BTreeSet<u64>,
    prev_requests: u64,
    max_size: u64,
}

impl Seen {
    /// Samples the pool, the NLB, CPU and the traffic at `el`, and prints the line.
    async fn sample(
        &mut self,
        el: Duration,
        sim: &Sim,
        pool: uuid::Uuid,
        nlb: &Nlb,
        sampler: &mut Scraper,
        traffic: &Traffic,
    ) {
        let ts = el.as_secs_f64();
        let (size, running) = sim.with_state(|s| {
            let size = s.pool_view(pool).map(|p| p.size).unwrap_or(0);
            (size, s.running_members(pool).len() as u64)
        });
        self.max_size = self.max_size.max(size);
        let healthy = nlb.members().iter().filter(|m| m.healthy).count() as u64;
        let cpu = sampler.mean_cpu("node").await.map(|u| u * 100.0);
        let (l, h) = traffic.summaries();
        let requests = l.as_ref().map_or(0, |s| s.requests) + h.as_ref().map_or(0, |s| s.requests);
        let failed = l.as_ref().map_or(0, |s| s.failed) + h.as_ref().map_or(0, |s| s.failed);
        let p99 = l.as_ref().map_or(0.0, |s| s.latency_ms.p99);
        let sample = Sample {
            t: ts,
            load_clients: traffic.profile.value_at(el).round(),
            rps: requests.saturating_sub(self.prev_requests) as f64,
            failed_total: failed,
            p99_ms: p99,
            cpu_pct: cpu,
            size,
            running,
            healthy,
        };
        self.prev_requests = requests;
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
        self.samples.push(sample);
    }

    /// Prints and marks every decision not seen before.
    async fn poll_decisions(&mut self, http: &reqwest::Client, scaler: &str, ts: f64) {
        let Some(ds) = decisions(http, scaler).await else {
            return;
        };
        for d in ds {
            if self.ticks.insert(d.tick) {
                self.mark(d, ts);
            }
        }
    }

    fn mark(&mut self, d: DecisionView, ts: f64) {
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
        self.marks.push(Mark {
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

    /// Whether the story is over at `el`: the pool is back where it started after the load
    /// (and the view has shown it settled), or the tail has run out.
    fn over(&self, el: Duration, t: &Timings) -> bool {
        let size = self.samples.last().map_or(0, |s| s.size);
        let running = self.samples.last().map_or(0, |s| s.running);
        let load_over = el > t.hold + Duration::from_secs(1);
        let settled = load_over
            && size == 1
            && running == 1
            && self.max_size > 1
            && self.samples.iter().rev().take(3).all(|s| s.size == 1);
        settled || el > t.hold + t.tail
    }

    fn scaled(&self, action: &str) -> usize {
        self.marks
            .iter()
            .filter(|m| m.action == action && m.outcome == "scaled")
            .count()
    }
}

/// The load, the live view, the timeline, the end.
pub(super) async fn story(
    cfg: &DemoConfig,
    t: &Timings,
    sim: &Arc<Sim>,
    pool: uuid::Uuid,
    nlb: &Nlb,
    scaler: &str,
    sd_file: &Path,
) -> anyhow::Result<Outcome> {
    let traffic = Traffic::start(cfg, t)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut sampler = Scraper::new(sd_file.to_path_buf(), t.window);
    let started = Instant::now();
    let mut seen = Seen::default();
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
        seen.sample(el, sim, pool, nlb, &mut sampler, &traffic)
            .await;
        seen.poll_decisions(&http, scaler, el.as_secs_f64()).await;
        if seen.over(el, t) {
            break;
        }
    }
    traffic.stop();
    let totals = traffic.summaries();
    let outcome = verdict(cfg, &seen, &totals, nlb, interrupted);
    write_report(cfg, t, &seen, &totals, &outcome)?;
    Ok(outcome)
}

/// The NLB's notes on the answers it gave itself, as a tail for a problem line ("" if none).
pub(super) fn why_nlb_failed(nlb: &Nlb) -> String {
    let notes = nlb.stats().notes();
    if notes.is_empty() {
        return String::new();
    }
    format!(" (first ones: {})", notes.join("; "))
}

/// What happened, against what the story promises: the pool grew to what the clients need (one
/// member each, at least 2, at most `--max`), came back to 1, and no request failed.
fn verdict(
    cfg: &DemoConfig,
    seen: &Seen,
    (l, h): &(Option<Summary>, Option<Summary>),
    nlb: &Nlb,
    interrupted: bool,
) -> Outcome {
    let failed = l.as_ref().map_or(0, |s| s.failed) + h.as_ref().map_or(0, |s| s.failed);
    let ok = l.as_ref().map_or(0, |s| s.ok) + h.as_ref().map_or(0, |s| s.ok);
    let nlb_failed = nlb
        .stats()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    let max_size = seen.max_size;
    let final_size = seen.samples.last().map_or(0, |s| s.size);
    let mut problems = Vec::new();
    if interrupted {
        problems.push("interrupted".to_owned());
    } else {
        // What the clients need: each keeps one member busy (at least 2, so that the story has
        // a scale-out, at most the pool's bound). The course's rule overshoots it (to 4 with 2
        // clients, checks/demo_report.py holds CI's run to 3 or more); a policy sized on the
        // requests in flight stops at it.
        let want = u64::from(cfg.clients).max(2).min(cfg.max);
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
            "{failed} failed requests at the client, {nlb_failed} answered by the NLB itself{}",
            why_nlb_failed(nlb)
        ));
    }
    Outcome {
        max_size,
        final_size,
        failed_requests: failed.max(nlb_failed),
        ok_requests: ok,
        scale_ups: seen.scaled("up"),
        scale_downs: seen.scaled("down"),
        interrupted,
        problems,
    }
}

/// Writes timeline.csv, timeline.json and chart.svg, and prints the summary lines.
fn write_report(
    cfg: &DemoConfig,
    t: &Timings,
    seen: &Seen,
    (l, h): &(Option<Summary>, Option<Summary>),
    outcome: &Outcome,
) -> anyhow::Result<()> {
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
    let (max_size, final_size) = (outcome.max_size, outcome.final_size);
    let title = format!(
        "poolpilot demo{}: {} clients, pool 1 -> {} -> {}, {} failed requests",
        if cfg.fast { " --fast" } else { "" },
        cfg.clients,
        max_size,
        final_size,
        outcome.failed_requests
    );
    let chart = report::svg(&title, &seen.samples, &seen.marks, cfg.max);
    report::write_all(&cfg.out, &seen.samples, &seen.marks, &summary, &chart)?;
    println!(
        "\nreport: {0}/timeline.csv, {0}/timeline.json, {0}/chart.svg",
        cfg.out.display()
    );
    println!(
        "pool grew to {max_size} and ended at {final_size}; {} scale-up(s), {} scale-down(s); {} requests ok, {} failed",
        outcome.scale_ups, outcome.scale_downs, outcome.ok_requests, outcome.failed_requests
    );
    Ok(())
}
