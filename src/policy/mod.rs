//! The policy engine: strategies past the course's one-step rule and the
//! behaviour Kubernetes' HPA and AWS target tracking share. [`engine`] holds the arithmetic,
//! pure and clock-free, so that the simulator can run exactly this code.

pub mod builtin;
pub mod engine;
pub mod file;
pub mod forecast;
pub mod simulate;
pub mod strategy;
pub mod timed;
