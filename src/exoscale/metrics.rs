//! Prometheus metrics of the API client: request durations and errors by operation, where the
//! operation is the spec's operationId of a fixed set (never free text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    operation: &'static str,
    kind: &'static str,
}

/// Handles to the client's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    duration: Family<OperationLabel, Histogram>,
    errors: Family<ErrorLabels, Counter>,
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
            errors: Family::default(),
        };
        registry.register_with_unit(
            "poolpilot_exoscale_api_request_duration",
            "Time of one Exoscale API request attempt, by operation",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "poolpilot_exoscale_api_errors",
            "Exoscale API calls that failed after retries, by operation and error kind",
            m.errors.clone(),
        );
        m
    }

    pub(crate) fn observe(&self, operation: &'static str, seconds: f64) {
        self.duration
            .get_or_create(&OperationLabel { operation })
            .observe(seconds);
    }

    pub(crate) fn error(&self, operation: &'static str, kind: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { operation, kind })
            .inc();
    }
}

/// The spec's operationId for a request poolpilot makes (`other` for anything else).
pub fn operation_id(method: &str, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // The endpoint may carry a prefix (`/v2`, or more behind a proxy): start at the resource.
    let Some(start) = segments.iter().position(|s| *s != "v2") else {
        return "other";
    };
    let r = &segments[start..];
    let action = r.get(1).and_then(|s| s.split_once(':')).map(|(_, a)| a);
    match (method, r[0], r.len(), action) {
        ("GET", "zone", 1, _) => "list-zones",
        ("GET", "instance-pool", 1, _) => "list-instance-pools",
        ("GET", "instance-pool", 2, None) => "get-instance-pool",
        ("PUT", "instance-pool", 2, Some("scale")) => "scale-instance-pool",
        ("PUT", "instance-pool", 2, Some("evict")) => "evict-instance-pool-members",
        ("GET", "instance", 1, _) => "list-instances",
        ("GET", "instance", 2, None) => "get-instance",
        ("GET", "operation", 2, _) => "get-operation",
        ("GET", "load-balancer", 1, _) => "list-load-balancers",
        ("GET", "load-balancer", 2, None) => "get-load-balancer",
        ("GET", "instance-type", 1, _) => "list-instance-types",
        ("GET", "template", 1, _) => "list-templates",
        ("POST", "template", 1, _) => "register-template",
        ("GET", "template", 2, None) => "get-template",
        ("DELETE", "template", 2, None) => "delete-template",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::operation_id;

    #[test]
    fn paths_map_to_the_spec_operation_ids() {
        let id = "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
        assert_eq!(
            operation_id("PUT", &format!("/v2/instance-pool/{id}:scale")),
            "scale-instance-pool"
        );
        assert_eq!(
            operation_id("PUT", &format!("/v2/instance-pool/{id}:evict")),
            "evict-instance-pool-members"
        );
        assert_eq!(
            operation_id("GET", &format!("/v2/instance-pool/{id}")),
            "get-instance-pool"
        );
        assert_eq!(operation_id("GET", "/v2/instance"), "list-instances");
        assert_eq!(
            operation_id("GET", &format!("/v2/operation/{id}")),
            "get-operation"
        );
        assert_eq!(
            operation_id("DELETE", &format!("/v2/instance/{id}")),
            "other"
        );
        assert_eq!(
            operation_id("DELETE", &format!("/v2/template/{id}")),
            "delete-template"
        );
    }
}
