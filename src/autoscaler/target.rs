//! Targets: what the autoscaler resizes. An Exoscale instance pool (or the simulator, through
//! `EXOSCALE_API_ENDPOINT`) is the first.

use std::future::Future;

use serde::Serialize;
use uuid::Uuid;

use crate::exoscale::{self, Client, InstanceState, PoolState};

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

/// An Exoscale instance pool.
pub struct ExoscalePool {
    client: Client,
    pool: Uuid,
}

impl ExoscalePool {
    pub fn new(client: Client, pool: Uuid) -> Self {
        Self { client, pool }
    }
}

impl Target for ExoscalePool {
    fn describe(&self) -> String {
        format!("instance pool {} in {}", self.pool, self.client.zone())
    }

    async fn observe(&self) -> Result<Observation, TargetError> {
        let pool = self.client.get_instance_pool(self.pool).await?;
        let members = self.client.list_pool_members(self.pool).await?;
        let running = members
            .iter()
            .filter(|m| m.state == InstanceState::Running)
            .count() as u64;
        let busy = match pool.state {
            PoolState::Running if members.len() as u64 == pool.size && running == pool.size => None,
            PoolState::Running => Some(format!(
                "{running} of {} member(s) running, size {}",
                members.len(),
                pool.size
            )),
            other => Some(format!("pool is {}", other.as_str())),
        };
        Ok(Observation {
            size: pool.size,
            state: pool.state.as_str().to_owned(),
            members: members.len() as u64,
            running,
            busy,
        })
    }

    async fn set_size(&self, size: u64) -> Result<Actuation, TargetError> {
        let op = self.client.scale_instance_pool(self.pool, size).await?;
        Ok(Actuation {
            operation: Some(op.id),
            pending: Some(op),
        })
    }

    async fn wait(&self, actuation: &Actuation) -> Result<(), TargetError> {
        if let Some(op) = &actuation.pending {
            self.client.wait_operation(op).await?;
        }
        Ok(())
    }
}
