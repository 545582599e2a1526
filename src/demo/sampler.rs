//! Reads the pool's CPU the way Prometheus does: the targets from the discovery agent's file_sd
//! file, `node_cpu_seconds_total` scraped from each, utilisation per instance over a window,
//! then the mean. The live view and the embedded alert evaluator use it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

pub struct CpuSampler {
    file: PathBuf,
    target_name: String,
    window: Duration,
    http: reqwest::Client,
    history: HashMap<String, VecDeque<CpuSample>>,
}

impl CpuSampler {
    pub fn new(file: PathBuf, target_name: &str, window: Duration) -> Self {
        Self {
            file,
            target_name: target_name.to_owned(),
            window,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_millis(800))
                .build()
                .expect("an HTTP client"),
            history: HashMap::new(),
        }
    }

    /// The targets named `target_name` in the discovery file (none while it does not exist).
    pub fn targets(&self) -> Vec<String> {
        let Ok(bytes) = std::fs::read(&self.file) else {
            return Vec::new();
        };
        let groups: Vec<TargetGroup> = serde_json::from_slice(&bytes).unwrap_or_default();
        groups
            .into_iter()
            .filter(|g| {
                g.labels.get("exoscale_target_name").map(String::as_str)
                    == Some(self.target_name.as_str())
            })
            .flat_map(|g| g.targets)
            .collect()
    }

    /// Scrapes every target once; returns the pool's mean utilisation over the window (0..1)
    /// among the targets that have two samples in it, or `None` when none has.
    pub async fn sample(&mut self) -> Option<f64> {
        let targets = self.targets();
        self.history.retain(|t, _| targets.contains(t));
        let scrapes = targets.iter().map(|t| {
            let url = format!("http://{t}/metrics");
            let http = self.http.clone();
            async move {
                let text = http.get(&url).send().await.ok()?.text().await.ok()?;
                parse_node_cpu(&text)
            }
        });
        let mut results = Vec::new();
        for (t, s) in targets.iter().zip(scrapes) {
            results.push((t.clone(), s.await));
        }
        let now = Instant::now();
        let mut utilisations = Vec::new();
        for (t, r) in results {
            let h = self.history.entry(t).or_default();
            if let Some((busy, total)) = r {
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
                utilisations
                    .push(((last.busy - first.busy) / (last.total - first.total)).clamp(0.0, 1.0));
            }
        }
        if utilisations.is_empty() {
            None
        } else {
            Some(utilisations.iter().sum::<f64>() / utilisations.len() as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_cpu_lines_are_summed_by_busy_and_total() {
        let text = "# HELP x\nnode_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 30\n\
                    node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 8\n\
                    node_cpu_seconds_total{cpu=\"0\",mode=\"system\"} 2\n";
        assert_eq!(parse_node_cpu(text), Some((10.0, 40.0)));
        assert_eq!(parse_node_cpu("up 1\n"), None);
    }
}
