//! Typed models of the API v2 resources poolpilot uses (JSON keys are kebab-case).
//!
//! Only the fields poolpilot reads are modelled; unknown fields are ignored on input so that a
//! new field in Exoscale's API never breaks us. Enums carry an `Other` arm for the same reason.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// A reference to another resource: `{"id": "<uuid>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub id: Uuid,
}

impl From<Uuid> for Ref {
    fn from(id: Uuid) -> Self {
        Self { id }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolState {
    Creating,
    Running,
    ScalingUp,
    ScalingDown,
    Updating,
    Destroying,
    Suspended,
    #[serde(other)]
    Other,
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Creating => "creating",
            PoolState::Running => "running",
            PoolState::ScalingUp => "scaling-up",
            PoolState::ScalingDown => "scaling-down",
            PoolState::Updating => "updating",
            PoolState::Destroying => "destroying",
            PoolState::Suspended => "suspended",
            PoolState::Other => "other",
        }
    }

    /// A pool in this state is changing its membership (a scale is under way).
    pub fn is_scaling(self) -> bool {
        matches!(self, PoolState::ScalingUp | PoolState::ScalingDown)
    }
}

/// An instance pool (`GET /v2/instance-pool/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstancePool {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub size: u64,
    pub state: PoolState,
    /// The members, as references only.
    #[serde(default)]
    pub instances: Vec<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_prefix: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Migrating,
    Error,
    Destroying,
    Destroyed,
    Expunging,
    #[serde(other)]
    Other,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Migrating => "migrating",
            InstanceState::Error => "error",
            InstanceState::Destroying => "destroying",
            InstanceState::Destroyed => "destroyed",
            InstanceState::Expunging => "expunging",
            InstanceState::Other => "other",
        }
    }
}

impl std::fmt::Display for PoolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who manages an instance: for pool members, the pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manager {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
}

/// An instance, as `GET /v2/instance` lists it and `GET /v2/instance/{id}` returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Instance {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub state: InstanceState,
    /// The IPv4 address; absent while none is assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Manager>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationState {
    Pending,
    Success,
    Failure,
    Timeout,
    #[serde(other)]
    Other,
}

/// What an operation is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// An asynchronous operation: every write returns one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: Uuid,
    pub state: OperationState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<OperationRef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    Success,
    Failure,
    #[serde(other)]
    Other,
}

/// The NLB's own view of one backend's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServerStatus {
    pub public_ip: Ipv4Addr,
    pub status: HealthStatus,
}

/// How an NLB service probes its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Healthcheck {
    pub mode: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Seconds between probes.
    pub interval: u64,
    /// Seconds before a probe fails.
    pub timeout: u64,
    /// Failed probes before a member is taken out.
    pub retries: u64,
}

/// A service of a network load balancer, forwarding one port to an instance pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LoadBalancerService {
    pub id: Uuid,
    pub name: String,
    pub protocol: String,
    pub port: u16,
    pub target_port: u16,
    pub strategy: String,
    pub instance_pool: Ref,
    pub healthcheck: Healthcheck,
    #[serde(default)]
    pub healthcheck_status: Vec<ServerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A network load balancer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LoadBalancer {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    pub services: Vec<LoadBalancerService>,
}

/// A compute instance type (`family.size`); the API takes its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstanceType {
    pub id: Uuid,
    pub family: String,
    pub size: String,
    pub cpus: u64,
    /// Bytes.
    pub memory: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized: Option<bool>,
    #[serde(default)]
    pub zones: Vec<String>,
}

impl InstanceType {
    /// The name users write: `standard.small`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.family, self.size)
    }
}

/// A template (a disk image instances boot from).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Template {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub zones: Vec<String>,
}

/// The body of `POST /v2/template`: registers a QCOW2 image from a URL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegisterTemplate {
    pub name: String,
    pub url: String,
    /// MD5 of the image, hex.
    pub checksum: String,
    pub ssh_key_enabled: bool,
    pub password_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A zone and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ZoneInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sos_endpoint: Option<String>,
}

// List wrappers, as the API returns them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstancePoolList {
    #[serde(default)]
    pub instance_pools: Vec<InstancePool>,
}
#[derive(Debug, Serialize, Deserialize)]
pub struct InstanceList {
    #[serde(default)]
    pub instances: Vec<Instance>,
}
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LoadBalancerList {
    #[serde(default)]
    pub load_balancers: Vec<LoadBalancer>,
}
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstanceTypeList {
    #[serde(default)]
    pub instance_types: Vec<InstanceType>,
}
#[derive(Debug, Serialize, Deserialize)]
pub struct TemplateList {
    #[serde(default)]
    pub templates: Vec<Template>,
}
#[derive(Debug, Serialize, Deserialize)]
pub struct ZoneList {
    #[serde(default)]
    pub zones: Vec<ZoneInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_states_and_fields_do_not_break_decoding() {
        let json = r#"{"id":"4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6","size":2,
            "state":"teleporting","instances":[],"brand-new-field":true}"#;
        let p: InstancePool = serde_json::from_str(json).unwrap();
        assert_eq!(p.state, PoolState::Other);
        assert_eq!(p.size, 2);
    }

    #[test]
    fn instances_decode_kebab_case_fields() {
        let json = r#"{"id":"11111111-2222-4333-8444-555555555555","name":"pool-a1",
            "state":"running","public-ip":"198.51.100.7","created-at":"2026-11-23T10:00:00Z",
            "manager":{"id":"4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6","type":"instance-pool"}}"#;
        let i: Instance = serde_json::from_str(json).unwrap();
        assert_eq!(i.public_ip, Some(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.manager.unwrap().kind, "instance-pool");
    }
}
