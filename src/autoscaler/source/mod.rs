//! Metric sources: where a tick's signals come from.
//!
//! - [`WebhookSource`]: the webhook inbox, alerts recorded between two ticks, taken whole at the
//!   tick (intents live for one tick only: a storm of alerts during a long operation does not
//!   become a backlog of stale scale-ups).
//! - [`PrometheusSource`]: the inbox plus per-member metrics from Prometheus' HTTP API, with
//!   their sample timestamps, for policies (`--policy`).
//! - [`ScrapeSource`]: the inbox plus the same per-member metrics scraped directly from the
//!   discovery agent's targets (`--scrape FILE_SD`), for machines where no Prometheus runs.

pub mod prometheus;
pub mod scrape;
pub mod webhook;

use std::future::Future;

use serde::Serialize;

pub use prometheus::{Prometheus, PrometheusSource};
pub use scrape::ScrapeSource;
pub use webhook::{Inbox, Intent, Intents, WebhookSource};

/// What a tick knows besides the pool itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Signals {
    pub intents: Intents,
    /// Per-member metric samples (CPU utilisation 0..1), with their timestamps.
    #[serde(skip)]
    pub samples: Vec<Sample>,
    /// Per-member `/load` requests in flight, with their timestamps (when the policy reads it).
    #[serde(skip)]
    pub in_flight: Vec<Sample>,
    /// Why the samples could not be read this tick (they are then empty: missing data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_error: Option<String>,
}

/// One series' value at an instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series' `instance` label (`ip:port`), empty when the series has none.
    pub instance: String,
    pub value: f64,
    /// Unix seconds of the sample.
    pub at: f64,
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

/// One of the sources, chosen at start-up (`--prometheus`, `--scrape`, or webhooks only).
pub enum AnySource {
    Webhook(WebhookSource),
    Prometheus(PrometheusSource),
    Scrape(ScrapeSource),
}

impl MetricSource for AnySource {
    fn name(&self) -> &'static str {
        match self {
            AnySource::Webhook(s) => s.name(),
            AnySource::Prometheus(s) => s.name(),
            AnySource::Scrape(s) => s.name(),
        }
    }

    async fn collect(&mut self) -> Result<Signals, SourceError> {
        match self {
            AnySource::Webhook(s) => s.collect().await,
            AnySource::Prometheus(s) => s.collect().await,
            AnySource::Scrape(s) => s.collect().await,
        }
    }
}
