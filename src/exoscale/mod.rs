//! The Exoscale API v2: request signing, typed models, and the client with retries and
//! operation polling.

pub mod client;
pub mod credentials;
pub mod error;
pub mod metrics;
pub mod models;
pub mod retry;
pub mod sign;

/// Kept while callers move to [`crate::config::Secret`].
pub use crate::config::Secret;
pub use client::{Client, ClientConfig, Idempotency};
pub use credentials::Credentials;
pub use error::{Error, ErrorKind, Result};
pub use metrics::ApiMetrics;
pub use models::*;
pub use retry::{PollPolicy, RetryPolicy};
