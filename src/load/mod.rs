//! `poolpilot load`: a bounded HTTP load generator, closed loop (a number of concurrent clients)
//! or open loop (a request rate), either of which may follow a [`profile::Profile`].
//!
//! Latencies go to an HDR histogram (microseconds, 3 significant digits). Every run ends by its
//! duration, its request count or the end of its profile, whichever comes first.

mod conn;
pub mod kv;
pub mod profile;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use url::Url;

pub use profile::Profile;

/// Closed loop: at most this many clients; open loop: at most this many requests in flight
/// (beyond it a request counts as `overloaded` instead of silently queueing).
pub const MAX_WORKERS: usize = 10_000;

#[derive(Clone, Debug)]
pub enum Mode {
    /// `value_at(t)` concurrent clients, each sending its next request when the last one ends.
    Closed(Profile),
    /// `value_at(t)` requests per second, sent whether or not earlier ones have finished.
    Open(Profile),
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub url: Url,
    pub mode: Mode,
    /// The run's length; `None` when the profile's end or `requests` bounds it.
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub timeout: Duration,
}

impl LoadConfig {
    /// When the run ends by time, if it does.
    pub fn time_bound(&self) -> Option<Duration> {
        let profile_end = match &self.mode {
            Mode::Closed(p) | Mode::Open(p) => p.end(),
        };
        match (self.duration, profile_end) {
            (Some(d), Some(e)) => Some(d.min(e)),
            (d, e) => d.or(e),
        }
    }

    pub fn profile(&self) -> &Profile {
        match &self.mode {
            Mode::Closed(p) | Mode::Open(p) => p,
        }
    }
}

/// Live counters of a run, shared with the progress display.
pub struct Stats {
    started: Instant,
    histogram: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    issued: AtomicU64,
    target: Mutex<f64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            histogram: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            ),
            ok: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            issued: AtomicU64::new(0),
            target: Mutex::new(0.0),
        }
    }

    fn record(&self, latency: Duration, outcome: Result<(), String>) {
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        self.histogram
            .lock()
            .expect("histogram lock")
            .saturating_record(us);
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                *self
                    .errors
                    .lock()
                    .expect("errors lock")
                    .entry(kind)
                    .or_insert(0) += 1
            }
        }
    }

    fn error(&self, kind: &str) {
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(kind.to_owned())
            .or_insert(0) += 1;
    }

    /// A snapshot of the run so far.
    pub fn summary(&self, url: &Url) -> Summary {
        let h = self.histogram.lock().expect("histogram lock").clone();
        let errors = self.errors.lock().expect("errors lock").clone();
        let ok = self.ok.load(Ordering::Relaxed);
        let failed: u64 = errors.values().sum();
        let elapsed = self.started.elapsed().as_secs_f64();
        let ms = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        Summary {
            url: url.to_string(),
            elapsed_seconds: elapsed,
            requests: ok + failed,
            ok,
            failed,
            errors,
            rate: if elapsed > 0.0 {
                (ok + failed) as f64 / elapsed
            } else {
                0.0
            },
            target: *self.target.lock().expect("target lock"),
            latency_ms: Latency {
                p50: ms(0.50),
                p90: ms(0.90),
                p99: ms(0.99),
                p999: ms(0.999),
                max: if h.is_empty() {
                    0.0
                } else {
                    h.max() as f64 / 1000.0
                },
                mean: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            },
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The result of a run (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub url: String,
    pub elapsed_seconds: f64,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Failures by kind: `http_503`, `timeout`, `connect`, `overloaded`, `other`.
    pub errors: BTreeMap<String, u64>,
    /// Requests per second over the run.
    pub rate: f64,
    /// The profile's value at the end (clients or requests/s).
    pub target: f64,
    pub latency_ms: Latency,
}

impl Summary {
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} requests in {:.1}s ({:.1} req/s) to {}\n  ok {}  failed {}\n",
            self.requests, self.elapsed_seconds, self.rate, self.url, self.ok, self.failed
        );
        for (k, v) in &self.errors {
            out.push_str(&format!("    {k}: {v}\n"));
        }
        let l = &self.latency_ms;
        out.push_str(&format!(
            "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}\n",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        ));
        out
    }
}

async fn one_request(client: &reqwest::Client, url: &Url, stats: &Stats) {
    let started = Instant::now();
    let outcome = conn::pooled_request(client, url).await;
    stats.record(started.elapsed(), outcome);
}

/// Claims one request from the budget; false once `requests` have been issued.
fn claim(stats: &Stats, budget: Option<u64>) -> bool {
    let n = stats.issued.fetch_add(1, Ordering::Relaxed);
    budget.is_none_or(|b| n < b)
}

/// Runs the load; `on_tick` is called about once a second with a snapshot (the progress bar).
pub async fn run(cfg: LoadConfig, on_tick: impl FnMut(&Summary) + Send) -> anyhow::Result<Summary> {
    run_with(cfg, None, on_tick).await
}

/// As [`run`], each request being one of `workload`'s (the `kv` profile) instead of a GET of the
/// URL; the caller reads the workload's own counts after.
pub async fn run_kv(
    cfg: LoadConfig,
    workload: Arc<kv::KvWorkload>,
    on_tick: impl FnMut(&Summary) + Send,
) -> anyhow::Result<Summary> {
    run_with(cfg, Some(workload), on_tick).await
}

async fn run_with(
    cfg: LoadConfig,
    workload: Option<Arc<kv::KvWorkload>>,
    mut on_tick: impl FnMut(&Summary) + Send,
) -> anyhow::Result<Summary> {
    let client = conn::pooled_client(cfg.timeout, MAX_WORKERS)?;
    let stats = Arc::new(Stats::new());
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = cfg.time_bound().map(|d| stats.started + d);
    let profile = cfg.profile().clone();
    let url = cfg.url.clone();

    let mut tasks = tokio::task::JoinSet::new();
    match &cfg.mode {
        Mode::Closed(p) => {
            let workers = (p.peak().ceil() as usize).clamp(1, MAX_WORKERS);
            for i in 0..workers {
                let (client, url, stats, stop, p) = (
                    client.clone(),
                    url.clone(),
                    stats.clone(),
                    stop.clone(),
                    p.clone(),
                );
                let budget = cfg.requests;
                let workload = workload.clone();
                let mut direct =
                    conn::Connection::for_url(&url, cfg.timeout).filter(|_| workload.is_none());
                tasks.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let target = p.value_at(stats.started.elapsed()).round() as usize;
                        if i >= target {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        if !claim(&stats, budget) {
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                        match (&mut direct, &workload) {
                            (Some(c), _) => {
                                let started = Instant::now();
                                let outcome = c.request().await;
                                stats.record(started.elapsed(), outcome);
                            }
                            (None, Some(w)) => {
                                let started = Instant::now();
                                let outcome = w.request(&client).await;
                                stats.record(started.elapsed(), outcome);
                            }
                            (None, None) => one_request(&client, &url, &stats).await,
                        }
                    }
                });
            }
        }
        Mode::Open(p) => {
            let (client, url, stats, stop, p) = (
                client.clone(),
                url.clone(),
                stats.clone(),
                stop.clone(),
                p.clone(),
            );
            let budget = cfg.requests;
            tasks.spawn(async move {
                let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_WORKERS));
                let mut next = Instant::now();
                let mut spawned = tokio::task::JoinSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let rate = p.value_at(stats.started.elapsed());
                    if rate <= 0.0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        next = Instant::now();
                        continue;
                    }
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep(next - now).await;
                    }
                    next += Duration::from_secs_f64(1.0 / rate);
                    if !claim(&stats, budget) {
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    match in_flight.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (client, url, stats) = (client.clone(), url.clone(), stats.clone());
                            let workload = workload.clone();
                            spawned.spawn(async move {
                                match workload {
                                    Some(w) => {
                                        let started = Instant::now();
                                        let outcome = w.request(&client).await;
                                        stats.record(started.elapsed(), outcome);
                                    }
                                    None => one_request(&client, &url, &stats).await,
                                }
                                drop(permit);
                            });
                        }
                        Err(_) => stats.error("overloaded"),
                    }
                    while spawned.try_join_next().is_some() {}
                }
                while spawned.join_next().await.is_some() {}
            });
        }
    }

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                *stats.target.lock().expect("target lock") = profile.value_at(stats.started.elapsed());
                on_tick(&stats.summary(&url));
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => stop.store(true, Ordering::Relaxed),
            r = tasks.join_next() => {
                if r.is_none() { break; }
                if stop.load(Ordering::Relaxed) { continue; }
            }
        }
        if stop.load(Ordering::Relaxed) {
            // Requests already sent finish (bounded by the timeout); nothing new starts.
            while tasks.join_next().await.is_some() {}
            break;
        }
    }
    *stats.target.lock().expect("target lock") = profile.value_at(stats.started.elapsed());
    Ok(stats.summary(&url))
}
