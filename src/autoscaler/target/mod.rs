//! Targets: what the autoscaler resizes. An Exoscale instance pool (or the simulator, through
//! `EXOSCALE_API_ENDPOINT`) is the one implementation, [`ExoscalePool`], with graceful scale-in
//! ([`Drain`]) and the choice of its victims ([`victims`]).

pub mod exoscale_pool;
pub mod victims;

use std::future::Future;

use serde::Serialize;
use uuid::Uuid;

use crate::exoscale;

pub use exoscale_pool::{Drain, ExoscalePool};

/// The target as read at the start of a tick.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Observation {
    pub size: u64,
    pub state: String,
    pub members: u64,
    pub running: u64,
    /// Why the target is not settled (an operation in progress, members not yet running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy: Option<String>,
    /// Each member, for strategies that look at members (warm-up, per-member metrics).
    #[serde(skip)]
    pub member_list: Vec<MemberInfo>,
}

/// A member as the target reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub ip: Option<std::net::Ipv4Addr>,
    /// Time since creation, when the API says.
    pub age: Option<std::time::Duration>,
    pub running: bool,
}

/// A size change that was carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Actuation {
    pub operation: Option<Uuid>,
    /// The operation as the API returned it, to wait on.
    #[serde(skip)]
    pub pending: Option<exoscale::Operation>,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    /// A short, fixed word for metrics (`auth`, `server`, `timeout`, ...).
    pub kind: &'static str,
    pub message: String,
}

impl From<exoscale::Error> for TargetError {
    fn from(e: exoscale::Error) -> Self {
        Self {
            kind: e.kind().as_str(),
            message: e.to_string(),
        }
    }
}

pub trait Target: Send + Sync {
    fn describe(&self) -> String;
    fn observe(&self) -> impl Future<Output = Result<Observation, TargetError>> + Send;
    /// Asks for the new size; returns once the change is accepted.
    fn set_size(&self, size: u64) -> impl Future<Output = Result<Actuation, TargetError>> + Send;
    /// Waits until an accepted change is done.
    fn wait(&self, actuation: &Actuation) -> impl Future<Output = Result<(), TargetError>> + Send;
}
