//! Metric sources: where a tick's signals come from.
//!
//! - [`WebhookSource`]: the webhook inbox, alerts recorded between two ticks, taken whole at the
//!   tick (intents live for one tick only: a storm of alerts during a long operation does not
//!   become a backlog of stale scale-ups).
//! - [`PrometheusSource`]: the inbox plus per-member metrics from Prometheus' HTTP API, with
//!   their sample timestamps, for policies (`--policy`).
//! - [`ScrapeSource`]: the inbox plus the same per-member metrics scraped directly from the
//!   discovery agent's targets (`--scrape FILE_SD`), for machines where no Prometheus runs.

use std::future::Future;
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

use super::webhook::{Direction, Firing, Format};

/// One firing alert (or plain trigger) as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Intent {
    pub direction: Direction,
    /// Who asked: the format and the alert's name, e.g. `grafana-unified: pool CPU high`.
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The intents of one tick: how many each way, and the most recent few for the record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Intents {
    pub up: u64,
    pub down: u64,
    pub recent: Vec<Intent>,
}

impl Intents {
    pub fn is_empty(&self) -> bool {
        self.up == 0 && self.down == 0
    }
}

/// What a tick knows besides the pool itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Signals {
    pub intents: Intents,
    /// Per-member metric samples (CPU utilisation 0..1), with their timestamps.
    #[serde(skip)]
    pub samples: Vec<crate::policy::prometheus::Sample>,
    /// Per-member `/load` requests in flight, with their timestamps (when the policy reads it).
    #[serde(skip)]
    pub in_flight: Vec<crate::policy::prometheus::Sample>,
    /// Why the samples could not be read this tick (they are then empty: missing data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_error: Option<String>,
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SourceError {
    pub source_name: &'static str,
    pub message: String,
}

/// Something a tick reads signals from.
pub trait MetricSource: Send {
    fn name(&self) -> &'static str;
    /// The signals since the last call.
    fn collect(&mut self) -> impl Future<Output = Result<Signals, SourceError>> + Send;
}

/// Keeps at most this many intents for the decision record; the counts are always exact.
const RECENT: usize = 16;

/// Where the webhook handlers record intents; memory stays bounded whatever the flood.
#[derive(Debug, Default)]
pub struct Inbox {
    inner: Mutex<Intents>,
}

impl Inbox {
    pub fn record(&self, format: Format, firing: &[Firing]) {
        let now = OffsetDateTime::now_utc();
        let mut i = self.inner.lock().expect("inbox lock");
        for f in firing {
            match f.direction {
                Direction::Up => i.up += 1,
                Direction::Down => i.down += 1,
            }
            if i.recent.len() == RECENT {
                i.recent.remove(0);
            }
            let source = if format == Format::Plain {
                format!("plain: {}", f.name)
            } else {
                format!("{}: {}", format.as_str(), f.name)
            };
            i.recent.push(Intent {
                direction: f.direction,
                source,
                at: now,
            });
        }
    }

    /// Everything recorded since the last take, leaving the inbox empty.
    pub fn take(&self) -> Intents {
        std::mem::take(&mut *self.inner.lock().expect("inbox lock"))
    }

    /// Counts waiting for the next tick (for replies and tests).
    pub fn pending(&self) -> (u64, u64) {
        let i = self.inner.lock().expect("inbox lock");
        (i.up, i.down)
    }
}

/// The webhook inbox as a source.
pub struct WebhookSource {
    inbox: std::sync::Arc<Inbox>,
}

impl WebhookSource {
    pub fn new(inbox: std::sync::Arc<Inbox>) -> Self {
        Self { inbox }
    }
}

impl MetricSource for WebhookSource {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn collect(&mut self) -> Result<Signals, SourceError> {
        Ok(Signals {
            intents: self.inbox.take(),
            ..Signals::default()
        })
    }
}

/// The webhook inbox plus per-member metrics from the Prometheus HTTP API. A failed query is
/// not an error of the tick: the samples are missing, and missing data never scales in.
pub struct PrometheusSource {
    inbox: std::sync::Arc<Inbox>,
    prometheus: crate::policy::prometheus::Prometheus,
    in_flight: bool,
}

impl PrometheusSource {
    /// `in_flight`: also read the app's `/load` requests in flight per member.
    pub fn new(
        inbox: std::sync::Arc<Inbox>,
        prometheus: crate::policy::prometheus::Prometheus,
        in_flight: bool,
    ) -> Self {
        Self {
            inbox,
            prometheus,
            in_flight,
        }
    }
}

impl MetricSource for PrometheusSource {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    async fn collect(&mut self) -> Result<Signals, SourceError> {
        use crate::policy::prometheus::{MEMBER_CPU, MEMBER_LOAD_IN_FLIGHT};
        let intents = self.inbox.take();
        let cpu = self.prometheus.instant(MEMBER_CPU).await;
        let in_flight = if self.in_flight {
            self.prometheus.instant(MEMBER_LOAD_IN_FLIGHT).await
        } else {
            Ok(Vec::new())
        };
        match (cpu, in_flight) {
            (Ok(samples), Ok(in_flight)) => Ok(Signals {
                intents,
                samples,
                in_flight,
                sample_error: None,
            }),
            (Err(e), _) | (_, Err(e)) => Ok(Signals {
                intents,
                sample_error: Some(e.to_string()),
                ..Signals::default()
            }),
        }
    }
}

/// The inbox plus per-member metrics scraped from the discovery agent's targets: CPU from the
/// `node` targets (node_exporter) over a window like the Prometheus query, requests in flight
/// from the `app` targets as they are at the scrape. All members are scraped at one instant, so
/// the sum of their in-flight values is the pool's demand then (Prometheus' staggered scrapes
/// need its 30 s average instead). Samples carry the scrape's time.
pub struct ScrapeSource {
    inbox: std::sync::Arc<Inbox>,
    scraper: crate::scrape::Scraper,
    in_flight: bool,
}

impl ScrapeSource {
    /// `file_sd`: the discovery agent's output; `window`: the rate and average window.
    pub fn new(
        inbox: std::sync::Arc<Inbox>,
        file_sd: std::path::PathBuf,
        window: std::time::Duration,
        in_flight: bool,
    ) -> Self {
        Self {
            inbox,
            scraper: crate::scrape::Scraper::new(file_sd, window),
            in_flight,
        }
    }
}

impl MetricSource for ScrapeSource {
    fn name(&self) -> &'static str {
        "scrape"
    }

    async fn collect(&mut self) -> Result<Signals, SourceError> {
        use crate::policy::prometheus::Sample;
        let intents = self.inbox.take();
        let at = OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
        let to_samples = |r: Vec<crate::scrape::Reading>| -> Vec<Sample> {
            r.into_iter()
                .map(|r| Sample {
                    instance: r.target,
                    value: r.value,
                    at,
                })
                .collect()
        };
        let samples = to_samples(self.scraper.cpu("node").await);
        let in_flight = if self.in_flight {
            to_samples(
                self.scraper
                    .gauge("app", "poolpilot_app_load_in_flight")
                    .await,
            )
        } else {
            Vec::new()
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
    use super::*;

    #[test]
    fn the_inbox_counts_exactly_keeps_few_and_empties_on_take() {
        let inbox = Inbox::default();
        let up = Firing {
            direction: Direction::Up,
            name: "cpu high".into(),
        };
        for _ in 0..1000 {
            inbox.record(Format::GrafanaUnified, std::slice::from_ref(&up));
        }
        inbox.record(
            Format::Plain,
            &[Firing {
                direction: Direction::Down,
                name: "GET /down".into(),
            }],
        );
        assert_eq!(inbox.pending(), (1000, 1));
        let i = inbox.take();
        assert_eq!((i.up, i.down), (1000, 1));
        assert_eq!(i.recent.len(), RECENT);
        assert_eq!(i.recent.last().unwrap().source, "plain: GET /down");
        assert!(inbox.take().is_empty());
    }
}
