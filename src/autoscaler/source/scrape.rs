//! Scraping the discovery agent's targets directly, the way Prometheus would: the targets from
//! the file_sd file, `/metrics` from each, CPU utilisation per instance from the counters of
//! `node_cpu_seconds_total` over a window, gauges as they are now. The autoscaler's
//! direct-scrape source (when no Prometheus runs), the demo's live view and its embedded alert
//! evaluator use it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::webhook::Inbox;
use super::{MetricSource, Sample, Signals, SourceError};
use crate::discovery::TargetGroup;
/// Busy and total CPU seconds of one scrape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuSample {
    pub at: Instant,
    pub busy: f64,
    pub total: f64,
}

/// Parses `node_cpu_seconds_total` lines: (busy, total) summed over cpus and modes.
pub fn parse_node_cpu(text: &str) -> Option<(f64, f64)> {
    let (mut busy, mut total, mut seen) = (0.0, 0.0, false);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("node_cpu_seconds_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once('}')?;
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        seen = true;
        total += v;
        if !labels.contains("mode=\"idle\"") {
            busy += v;
        }
    }
    seen.then_some((busy, total))
}

/// The value of an unlabelled gauge (or the sum over its series) in a text exposition.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name value` or `name{labels} value`, not `name_suffix ...`.
        let rest = match rest.chars().next() {
            Some('{') => rest.split_once('}')?.1,
            Some(' ') => rest,
            _ => continue,
        };
        let v: f64 = rest.split_whitespace().next()?.parse().ok()?;
        *sum.get_or_insert(0.0) += v;
    }
    sum
}

/// The most a member's `/metrics` may send (node_exporter's are some 100 KiB): a member is
/// outside our control, and a body past this is not read at all.
pub const METRICS_LIMIT: usize = 4 * 1024 * 1024;

/// The response's body as text, unless it is longer than [`METRICS_LIMIT`] (or not UTF-8, or
/// the read fails): read chunk by chunk, so an endless body costs no more than the limit.
pub async fn read_capped(mut resp: reqwest::Response) -> Option<String> {
    if resp
        .content_length()
        .is_some_and(|n| n > METRICS_LIMIT as u64)
    {
        return None;
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if buf.len() + chunk.len() > METRICS_LIMIT {
            return None;
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).ok()
}

/// One target's reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// `ip:port`, as in the file_sd file.
    pub target: String,
    pub value: f64,
}

#[derive(Debug)]
pub struct Scraper {
    file: PathBuf,
    window: Duration,
    http: reqwest::Client,
    cpu: HashMap<String, VecDeque<CpuSample>>,
    /// Only targets with this `exoscale_instance_pool_id` label; `None`: every target.
    pool: Option<String>,
}

impl Scraper {
    pub fn new(file: PathBuf, window: Duration) -> Self {
        Self {
            file,
            window,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_millis(800))
                .build()
                .expect("an HTTP client"),
            cpu: HashMap::new(),
            pool: None,
        }
    }

    /// Scrapes only this pool's members (with several pools in one file_sd file).
    pub fn with_pool(mut self, pool: uuid::Uuid) -> Self {
        self.pool = Some(pool.to_string());
        self
    }

    /// The targets named `target_name` in the discovery file (none while it does not exist).
    pub fn targets(&self, target_name: &str) -> Vec<String> {
        let Ok(bytes) = std::fs::read(&self.file) else {
            return Vec::new();
        };
        let groups: Vec<TargetGroup> = serde_json::from_slice(&bytes).unwrap_or_default();
        groups
            .into_iter()
            .filter(|g| {
                g.labels.get("exoscale_target_name").map(String::as_str) == Some(target_name)
                    && self
                        .pool
                        .as_ref()
                        .is_none_or(|p| g.labels.get("exoscale_instance_pool_id") == Some(p))
            })
            .flat_map(|g| g.targets)
            .collect()
    }

    async fn scrape_all(&self, targets: &[String]) -> Vec<(String, Option<String>)> {
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in targets.iter().enumerate() {
            let url = format!("http://{t}/metrics");
            let http = self.http.clone();
            set.spawn(async move {
                (
                    i,
                    async { read_capped(http.get(&url).send().await.ok()?).await }.await,
                )
            });
        }
        let mut texts = vec![None; targets.len()];
        while let Some(r) = set.join_next().await {
            if let Ok((i, text)) = r {
                texts[i] = text;
            }
        }
        targets.iter().cloned().zip(texts).collect()
    }

    /// Scrapes the `target_name` targets (node exporters) once; returns each one's CPU
    /// utilisation (0..1) over the window, for the targets that have two samples in it.
    pub async fn cpu(&mut self, target_name: &str) -> Vec<Reading> {
        let targets = self.targets(target_name);
        self.cpu.retain(|t, _| targets.contains(t));
        let results = self.scrape_all(&targets).await;
        let now = Instant::now();
        let mut out = Vec::new();
        for (t, text) in results {
            let h = self.cpu.entry(t.clone()).or_default();
            if let Some((busy, total)) = text.as_deref().and_then(parse_node_cpu) {
                h.push_back(CpuSample {
                    at: now,
                    busy,
                    total,
                });
            }
            while h.len() > 2 && h.front().is_some_and(|s| now - s.at > self.window) {
                h.pop_front();
            }
            if let (Some(first), Some(last)) = (h.front(), h.back())
                && last.total > first.total
            {
                out.push(Reading {
                    target: t,
                    value: ((last.busy - first.busy) / (last.total - first.total)).clamp(0.0, 1.0),
                });
            }
        }
        out
    }

    /// The pool's mean CPU utilisation over the window, or `None` when no target has two
    /// samples in it.
    pub async fn mean_cpu(&mut self, target_name: &str) -> Option<f64> {
        let r = self.cpu(target_name).await;
        (!r.is_empty()).then(|| r.iter().map(|x| x.value).sum::<f64>() / r.len() as f64)
    }

    /// Scrapes the `target_name` targets once; returns each one's current `metric`.
    ///
    /// A gauge such as requests in flight is a level, not a rate: its current value is the
    /// demand now, and the sum over the members is the same whatever the membership. An average
    /// over a window is not: it lags a step (a window straddling a load step read 1.0 where 2 was
    /// in flight), and across a scale-out each old member's average still holds the load it
    /// carried alone, so the pool's sum is inflated and target tracking overshoots (seen:
    /// 1 -> 2 -> 4 with 2 clients). Smoothing belongs to the policy's stabilization window.
    pub async fn gauge(&self, target_name: &str, metric: &str) -> Vec<Reading> {
        let targets = self.targets(target_name);
        // Every target at once (`scrape_all`), so the values add up to one instant's total.
        self.scrape_all(&targets)
            .await
            .into_iter()
            .filter_map(|(t, text)| {
                let value = text.as_deref().and_then(|x| gauge(x, metric))?;
                Some(Reading { target: t, value })
            })
            .collect()
    }
}

/// The inbox plus per-member metrics scraped from the discovery agent's targets: CPU from the
/// `node` targets (node_exporter) over a window like the Prometheus query, requests in flight
/// from the `app` targets as they are at the scrape. All members are scraped at one instant, so
/// the sum of their in-flight values is the pool's demand then (Prometheus' staggered scrapes
/// need its 30 s average instead). Samples carry the scrape's time.
pub struct ScrapeSource {
    inbox: std::sync::Arc<Inbox>,
    scraper: Scraper,
    /// The member gauge the policy reads (requests in flight by default), if any.
    gauge: Option<&'static str>,
}

impl ScrapeSource {
    /// `file_sd`: the discovery agent's output; `window`: the rate and average window.
    pub fn new(
        inbox: std::sync::Arc<Inbox>,
        file_sd: std::path::PathBuf,
        window: std::time::Duration,
        gauge: Option<&'static str>,
    ) -> Self {
        Self {
            inbox,
            scraper: Scraper::new(file_sd, window),
            gauge,
        }
    }

    /// Scrapes only this pool's members (with several pools).
    pub fn with_pool(mut self, pool: uuid::Uuid) -> Self {
        self.scraper = self.scraper.with_pool(pool);
        self
    }
}

impl MetricSource for ScrapeSource {
    fn name(&self) -> &'static str {
        "scrape"
    }

    async fn collect(&mut self) -> Result<Signals, SourceError> {
        let intents = self.inbox.take();
        let at = OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
        let to_samples = |r: Vec<Reading>| -> Vec<Sample> {
            r.into_iter()
                .map(|r| Sample {
                    instance: r.target,
                    value: r.value,
                    at,
                })
                .collect()
        };
        let samples = to_samples(self.scraper.cpu("node").await);
        let in_flight = match self.gauge {
            Some(name) => to_samples(self.scraper.gauge("app", name).await),
            None => Vec::new(),
        };
        Ok(Signals {
            intents,
            samples,
            in_flight,
            sample_error: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn with_a_pool_only_its_targets_are_scraped() {
        let dir = std::env::temp_dir().join(format!("poolpilot-scrape-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sd.json");
        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let group = |t: &str, pool: uuid::Uuid, name: &str| {
            serde_json::json!({"targets": [t], "labels": {
                "exoscale_instance_pool_id": pool.to_string(), "exoscale_target_name": name}})
        };
        let groups = serde_json::json!([
            group("127.0.0.1:1", a, "node"),
            group("127.0.0.2:1", b, "node"),
            group("127.0.0.1:2", a, "app"),
        ]);
        std::fs::write(&file, groups.to_string()).unwrap();
        let all = Scraper::new(file.clone(), Duration::from_secs(60));
        assert_eq!(all.targets("node"), ["127.0.0.1:1", "127.0.0.2:1"]);
        let only_b = Scraper::new(file.clone(), Duration::from_secs(60)).with_pool(b);
        assert_eq!(only_b.targets("node"), ["127.0.0.2:1"]);
        assert!(only_b.targets("app").is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;

    #[test]
    fn node_cpu_lines_are_summed_by_busy_and_total() {
        let text = "# HELP x\nnode_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 30\n\
                    node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 8\n\
                    node_cpu_seconds_total{cpu=\"0\",mode=\"system\"} 2\n";
        assert_eq!(parse_node_cpu(text), Some((10.0, 40.0)));
        assert_eq!(parse_node_cpu("up 1\n"), None);
    }

    #[tokio::test]
    async fn a_metrics_body_past_the_limit_is_not_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A member that answers one small body, then an endless chunked one (no length): the
        // cap must hold while reading. Bounded: at most twice the limit is ever written.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for endless in [false, true] {
                let (mut c, _) = l.accept().await.unwrap();
                let mut req = [0u8; 1024];
                let _ = c.read(&mut req).await;
                if !endless {
                    let _ = c
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ng 1\n")
                        .await;
                    continue;
                }
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("10000\r\n{}\r\n", "#".repeat(0x10000));
                for _ in 0..(2 * METRICS_LIMIT / 0x10000) {
                    if c.write_all(chunk.as_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        });
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = || http.get(format!("http://{addr}/metrics")).send();
        assert_eq!(
            read_capped(get().await.unwrap()).await.as_deref(),
            Some("g 1\n")
        );
        assert_eq!(read_capped(get().await.unwrap()).await, None);
    }

    #[test]
    fn gauges_match_the_whole_name() {
        let text = "# TYPE g gauge\ng 3\ng_total 9\ng{a=\"1\"} 2\n";
        assert_eq!(gauge(text, "g"), Some(5.0));
        assert_eq!(gauge(text, "h"), None);
    }
}
