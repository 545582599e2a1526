//! Reading metrics from the Prometheus HTTP API: instant and range queries, with each sample's
//! timestamp kept, so that the policy can judge staleness from the data itself (a Prometheus
//! that stopped scraping still answers, with old samples).

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::Secret;

use super::webhook::Inbox;
use super::{MetricSource, Sample, Signals, SourceError};

/// The per-member CPU utilisation (0..1) over the last minute: the course's expression, kept
/// per instance.
pub const MEMBER_CPU: &str = "sum by (instance) (rate(node_cpu_seconds_total{job=\"node\",mode!=\"idle\"}[1m])) / sum by (instance) (rate(node_cpu_seconds_total{job=\"node\"}[1m]))";

/// Requests to the app's `/load` in flight per member, averaged over 30 s (a gauge read at one
/// instant per member double-counts requests that move between scrapes). It is the demand
/// itself: unlike CPU it does not saturate at 100 %, so a target on it can find the needed size
/// in one step.
pub const MEMBER_LOAD_IN_FLIGHT: &str =
    "sum by (instance) (avg_over_time(poolpilot_app_load_in_flight{job=\"app\"}[30s]))";

/// [`MEMBER_LOAD_IN_FLIGHT`]'s shape for any member gauge on the `app` port.
pub fn member_gauge(name: &str) -> String {
    format!("sum by (instance) (avg_over_time({name}{{job=\"app\"}}[30s]))")
}

/// `query` (one of the above) narrowed to one pool's members: every selector of a `job` also
/// matches the discovery agent's `exoscale_instance_pool_id` target label (`--pool` with several
/// pools: each reads its own members, not the whole file_sd file).
pub fn for_pool(query: &str, pool: uuid::Uuid) -> String {
    let matcher = format!("exoscale_instance_pool_id=\"{pool}\"");
    query
        .replace("{job=\"node\"", &format!("{{job=\"node\",{matcher}"))
        .replace("{job=\"app\"", &format!("{{job=\"app\",{matcher}"))
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("prometheus at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("prometheus answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("prometheus answer not understood: {0}")]
    Decode(String),
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Option<Vec<(f64, String)>>,
}

#[derive(Clone, Debug)]
pub struct Prometheus {
    base: Url,
    http: reqwest::Client,
    /// Basic auth (user, password), for a Prometheus behind its web config's `basic_auth_users`.
    auth: Option<(String, Secret)>,
}

impl Prometheus {
    /// `base` is Prometheus' address, e.g. `http://127.0.0.1:9090`.
    pub fn new(base: Url, timeout: Duration) -> Self {
        Self {
            base,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()
                .expect("an HTTP client"),
            auth: None,
        }
    }

    /// Sends this user and password with every query.
    pub fn with_basic_auth(mut self, user: String, password: Secret) -> Self {
        self.auth = Some((user, password));
        self
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Data, QueryError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| QueryError::Decode(e.to_string()))?;
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        let mut req = self.http.get(url.clone());
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password.expose()));
        }
        let resp = req.send().await.map_err(|e| QueryError::Transport {
            url: self.base.to_string(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| QueryError::Transport {
            url: self.base.to_string(),
            message: e.to_string(),
        })?;
        if status == 401 {
            return Err(QueryError::Api {
                status,
                message: match self.auth {
                    None => "Prometheus asks for a password: set POOLPILOT_PROMETHEUS_PASSWORD (--prometheus-password)".into(),
                    Some((ref user, _)) => format!("Prometheus refused the password of user `{user}`"),
                },
            });
        }
        let env: Envelope =
            serde_json::from_slice(&body).map_err(|e| QueryError::Decode(e.to_string()))?;
        if env.status != "success" {
            return Err(QueryError::Api {
                status,
                message: env.error.unwrap_or_else(|| "status is not success".into()),
            });
        }
        env.data.ok_or_else(|| QueryError::Decode("no data".into()))
    }

    fn sample(
        metric: &std::collections::BTreeMap<String, String>,
        (at, v): &(f64, String),
    ) -> Result<Sample, QueryError> {
        let value = match v.as_str() {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            s => s
                .parse()
                .map_err(|_| QueryError::Decode(format!("value `{s}`")))?,
        };
        Ok(Sample {
            instance: metric.get("instance").cloned().unwrap_or_default(),
            value,
            at: *at,
        })
    }

    /// An instant query: one sample per series (NaN and infinite values are dropped: a rate
    /// over no data is not a measurement).
    pub async fn instant(&self, query: &str) -> Result<Vec<Sample>, QueryError> {
        let data = self
            .get("api/v1/query", &[("query", query.to_owned())])
            .await?;
        if data.result_type != "vector" {
            return Err(QueryError::Decode(format!(
                "expected a vector, got a {}",
                data.result_type
            )));
        }
        let mut out = Vec::new();
        for s in &data.result {
            if let Some(v) = &s.value {
                let sample = Self::sample(&s.metric, v)?;
                if sample.value.is_finite() {
                    out.push(sample);
                }
            }
        }
        Ok(out)
    }

    /// A range query from `start` to `end` (unix seconds) every `step`: the samples of each
    /// series, in time order.
    pub async fn range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<Vec<Sample>>, QueryError> {
        let data = self
            .get(
                "api/v1/query_range",
                &[
                    ("query", query.to_owned()),
                    ("start", format!("{start:.3}")),
                    ("end", format!("{end:.3}")),
                    ("step", format!("{}s", step.as_secs_f64())),
                ],
            )
            .await?;
        if data.result_type != "matrix" {
            return Err(QueryError::Decode(format!(
                "expected a matrix, got a {}",
                data.result_type
            )));
        }
        data.result
            .iter()
            .map(|s| {
                s.values
                    .iter()
                    .flatten()
                    .map(|v| Self::sample(&s.metric, v))
                    .filter(|r| r.as_ref().map_or(true, |s| s.value.is_finite()))
                    .collect()
            })
            .collect()
    }
}

/// How old the newest of `samples` is at `now` (unix seconds); `None` when there is none.
pub fn newest_age(samples: &[Sample], now: f64) -> Option<Duration> {
    samples
        .iter()
        .map(|s| s.at)
        .fold(None, |acc: Option<f64>, t| {
            Some(acc.map_or(t, |a| a.max(t)))
        })
        .map(|t| Duration::from_secs_f64((now - t).max(0.0)))
}
/// The webhook inbox plus per-member metrics from the Prometheus HTTP API. A failed query is
/// not an error of the tick: the samples are missing, and missing data never scales in.
pub struct PrometheusSource {
    inbox: std::sync::Arc<Inbox>,
    prometheus: Prometheus,
    /// The member gauge the policy reads, if any.
    gauge: Option<&'static str>,
    /// Only this pool's members ([`for_pool`]); `None`: every series (one pool).
    pool: Option<uuid::Uuid>,
}

impl PrometheusSource {
    /// `gauge`: also read this member gauge (e.g. the app's requests in flight) per member.
    pub fn new(
        inbox: std::sync::Arc<Inbox>,
        prometheus: Prometheus,
        gauge: Option<&'static str>,
    ) -> Self {
        Self {
            inbox,
            prometheus,
            gauge,
            pool: None,
        }
    }

    /// Reads only this pool's members (with several pools).
    pub fn with_pool(mut self, pool: uuid::Uuid) -> Self {
        self.pool = Some(pool);
        self
    }

    fn query(&self, q: &str) -> String {
        match self.pool {
            Some(p) => for_pool(q, p),
            None => q.to_owned(),
        }
    }
}

impl MetricSource for PrometheusSource {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    async fn collect(&mut self) -> Result<Signals, SourceError> {
        let intents = self.inbox.take();
        let cpu = self.prometheus.instant(&self.query(MEMBER_CPU)).await;
        let in_flight = match self.gauge {
            Some(name) => {
                self.prometheus
                    .instant(&self.query(&member_gauge(name)))
                    .await
            }
            None => Ok(Vec::new()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_query_is_the_member_gauge_query_of_its_gauge() {
        assert_eq!(
            member_gauge("poolpilot_app_load_in_flight"),
            MEMBER_LOAD_IN_FLIGHT
        );
    }

    #[test]
    fn a_pool_reads_only_its_own_members() {
        let id = uuid::Uuid::from_u128(7);
        let m = format!("exoscale_instance_pool_id=\"{id}\"");
        let cpu = for_pool(MEMBER_CPU, id);
        // Both selectors of the ratio are narrowed, nothing else changes.
        assert_eq!(cpu.matches(&m).count(), 2, "{cpu}");
        assert_eq!(cpu.replace(&format!(",{m}"), ""), MEMBER_CPU);
        let app = for_pool(MEMBER_LOAD_IN_FLIGHT, id);
        assert_eq!(app.matches(&m).count(), 1, "{app}");
        assert!(app.contains(&format!("{{job=\"app\",{m}}}")), "{app}");
    }
}
