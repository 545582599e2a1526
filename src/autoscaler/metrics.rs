//! The autoscaler's metrics. Label values come from fixed sets, never from request input: every
//! family carries `pool`, the pool's name from `--pool` (`default` for a single plain id), and
//! each pool's controller writes through its own [`Metrics::for_pool`] handle.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Bounds, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    pool: String,
    direction: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    pool: String,
    route: &'static str,
    format: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    pool: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// The pool this handle writes for (`""` on a webhook no pool could be found for).
    pool: String,
    decisions: Family<DecisionLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    target_errors: Family<KindLabel, Counter>,
    current: Family<PoolLabel, Gauge>,
    desired: Family<PoolLabel, Gauge>,
    min: Family<PoolLabel, Gauge>,
    max: Family<PoolLabel, Gauge>,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            pool: crate::config::DEFAULT_POOL_NAME.to_owned(),
            ..Self::default()
        };
        r.register(
            "poolpilot_autoscaler_decisions",
            "Recorded decisions by pool, direction (up, down, none) and outcome",
            m.decisions.clone(),
        );
        r.register(
            "poolpilot_autoscaler_webhook_requests",
            "Webhook requests by pool (empty when none could be told), route, body format and result",
            m.webhooks.clone(),
        );
        r.register(
            "poolpilot_autoscaler_target_errors",
            "Ticks that could not read or change the pool, by pool and error kind",
            m.target_errors.clone(),
        );
        r.register(
            "poolpilot_autoscaler_pool_size",
            "The pool's size as last read (or set)",
            m.current.clone(),
        );
        r.register(
            "poolpilot_autoscaler_desired_size",
            "The size the pool's last tick decided on",
            m.desired.clone(),
        );
        r.register(
            "poolpilot_autoscaler_min_size",
            "The pool's lower bound",
            m.min.clone(),
        );
        r.register(
            "poolpilot_autoscaler_max_size",
            "The pool's upper bound",
            m.max.clone(),
        );
        m
    }

    /// The same families, written with `pool="name"`.
    pub fn for_pool(&self, name: &str) -> Self {
        Self {
            pool: name.to_owned(),
            ..self.clone()
        }
    }

    fn label(&self) -> PoolLabel {
        PoolLabel {
            pool: self.pool.clone(),
        }
    }

    pub(crate) fn set_bounds(&self, b: Bounds) {
        self.min.get_or_create(&self.label()).set(b.min as i64);
        self.max.get_or_create(&self.label()).set(b.max as i64);
    }

    pub(crate) fn set_current(&self, n: u64) {
        self.current.get_or_create(&self.label()).set(n as i64);
    }

    pub(crate) fn set_desired(&self, n: u64) {
        self.desired.get_or_create(&self.label()).set(n as i64);
    }

    pub(crate) fn decision(&self, direction: &'static str, outcome: Outcome) {
        self.decisions
            .get_or_create(&DecisionLabels {
                pool: self.pool.clone(),
                direction,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(crate) fn api_error(&self, kind: &'static str) {
        self.target_errors
            .get_or_create(&KindLabel {
                pool: self.pool.clone(),
                kind,
            })
            .inc();
    }

    /// A webhook request for `pool` (a configured name, or `""` when none could be told).
    pub(crate) fn webhook(
        &self,
        pool: &str,
        route: &'static str,
        format: &'static str,
        result: &'static str,
    ) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                pool: pool.to_owned(),
                route,
                format,
                result,
            })
            .inc();
    }
}
