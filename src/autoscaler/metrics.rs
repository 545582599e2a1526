//! The autoscaler's metrics. Label values come from fixed sets, never from request input.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Bounds, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    direction: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    route: &'static str,
    format: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    decisions: Family<DecisionLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    target_errors: Family<KindLabel, Counter>,
    current: Gauge,
    desired: Gauge,
    min: Gauge,
    max: Gauge,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "poolpilot_autoscaler_decisions",
            "Recorded decisions by direction (up, down, none) and outcome",
            m.decisions.clone(),
        );
        r.register(
            "poolpilot_autoscaler_webhook_requests",
            "Webhook requests by route, body format and result",
            m.webhooks.clone(),
        );
        r.register(
            "poolpilot_autoscaler_target_errors",
            "Ticks that could not read or change the target, by error kind",
            m.target_errors.clone(),
        );
        r.register(
            "poolpilot_autoscaler_pool_size",
            "The pool's size as last read (or set)",
            m.current.clone(),
        );
        r.register(
            "poolpilot_autoscaler_desired_size",
            "The size the last tick decided on",
            m.desired.clone(),
        );
        r.register(
            "poolpilot_autoscaler_min_size",
            "The lower bound",
            m.min.clone(),
        );
        r.register(
            "poolpilot_autoscaler_max_size",
            "The upper bound",
            m.max.clone(),
        );
        m
    }

    pub(crate) fn set_bounds(&self, b: Bounds) {
        self.min.set(b.min as i64);
        self.max.set(b.max as i64);
    }

    pub(crate) fn set_current(&self, n: u64) {
        self.current.set(n as i64);
    }

    pub(crate) fn set_desired(&self, n: u64) {
        self.desired.set(n as i64);
    }

    pub(crate) fn decision(&self, direction: &'static str, outcome: Outcome) {
        self.decisions
            .get_or_create(&DecisionLabels {
                direction,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(crate) fn api_error(&self, kind: &'static str) {
        self.target_errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn webhook(&self, route: &'static str, format: &'static str, result: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                route,
                format,
                result,
            })
            .inc();
    }
}
