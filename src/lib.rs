//! poolpilot: an autoscaling appliance for Exoscale instance pools.
//!
//! The library holds every part; `src/main.rs` only wires the chosen subcommand.

pub mod app;
pub mod autoscaler;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod exoscale;
pub mod front;
pub mod kv;
pub mod load;
pub mod local;
pub mod policy;
pub mod replica;
pub mod shutdown;
pub mod sim;
pub mod telemetry;
pub mod template;
