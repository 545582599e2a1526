//! The embedded fallback for machines without Debian's Prometheus and Alertmanager: it scrapes
//! the same targets (the discovery agent's file), computes the same pool-average CPU, applies the
//! same thresholds with the same pending time as `monitoring/prometheus/rules.yml`, and sends
//! Alertmanager-format webhooks with the same `scale` labels and repeat interval to the
//! autoscaler's `/webhook`. The demo says loudly when this runs instead of the real tools.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::autoscaler::source::scrape::Scraper;
use crate::config::Secret;

/// One of the two alert rules.
#[derive(Debug)]
struct Rule {
    name: &'static str,
    scale: &'static str,
    fires: fn(f64) -> bool,
    since: Option<Instant>,
    last_sent: Option<Instant>,
}

#[derive(Debug)]
pub struct Embedded {
    pub sampler: Scraper,
    pub webhook: String,
    pub token: Secret,
    pub eval_interval: Duration,
    pub pending: Duration,
    pub repeat: Duration,
}

impl Embedded {
    pub async fn run(mut self) {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        let mut rules = [
            Rule {
                name: "PoolCpuHigh",
                scale: "up",
                fires: |u| u > 0.8,
                since: None,
                last_sent: None,
            },
            Rule {
                name: "PoolCpuLow",
                scale: "down",
                fires: |u| u < 0.2,
                since: None,
                last_sent: None,
            },
        ];
        let mut every = tokio::time::interval(self.eval_interval);
        loop {
            every.tick().await;
            let Some(u) = self.sampler.mean_cpu("node").await else {
                // No data: no alert (as Prometheus, where `avg` of nothing is no sample).
                for r in &mut rules {
                    r.since = None;
                    r.last_sent = None;
                }
                continue;
            };
            let now = Instant::now();
            for r in &mut rules {
                if !(r.fires)(u) {
                    r.since = None;
                    r.last_sent = None;
                    continue;
                }
                let since = *r.since.get_or_insert(now);
                let due = r.last_sent.is_none_or(|t| now - t >= self.repeat);
                if now - since >= self.pending && due {
                    r.last_sent = Some(now);
                    let body = json!({
                        "version": "4",
                        "status": "firing",
                        "receiver": "poolpilot-autoscaler",
                        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", r.name),
                        "alerts": [{
                            "status": "firing",
                            "labels": {"alertname": r.name, "scale": r.scale},
                            "annotations": {"summary": format!("pool CPU {:.0}%", u * 100.0)},
                            "startsAt": time::OffsetDateTime::now_utc()
                                .format(&time::format_description::well_known::Rfc3339)
                                .unwrap_or_default(),
                        }],
                    });
                    let sent = http
                        .post(&self.webhook)
                        .bearer_auth(self.token.expose())
                        .json(&body)
                        .send()
                        .await;
                    if let Err(e) = sent {
                        tracing::warn!(error = %e, "embedded alerting: webhook failed");
                    }
                }
            }
        }
    }
}
