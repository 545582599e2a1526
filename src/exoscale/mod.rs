//! The Exoscale API v2: request signing, typed models, and the client with retries and
//! operation polling.

pub mod client;
pub mod error;
pub mod metrics;
pub mod models;
pub mod sign;

pub use client::{Client, ClientConfig, Credentials, Idempotency, PollPolicy, RetryPolicy, Secret};
pub use error::{Error, ErrorKind, Result};
pub use metrics::ApiMetrics;
pub use models::*;
