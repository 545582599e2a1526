//! `poolpilot autoscaler`: alert webhooks and metrics in, bounded scaling out.
//!
//! | file | what |
//! |---|---|
//! | [`controller`] | the loop: one tick = source -> strategy -> bounds -> busy gate -> actuate -> record |
//! | [`decision`] | a decision as a value: [`Bounds`] (the one validation, the one clamp), [`BusyGate`], [`Decision`] |
//! | [`source`] | where signals come from: webhooks ([`source::webhook`]), Prometheus, direct scrape |
//! | [`strategy`] | from a size and signals to a wanted size: [`WebhookStep`] (the course's rule); policies implement it in the policy module |
//! | [`target`] | what is resized: [`ExoscalePool`] with graceful scale-in and its victims |
//! | [`server`] | `/up`, `/down`, `/webhook` (each also `/NAME` per pool), `/v1/decisions`, metrics, health |
//! | [`metrics`] | the autoscaler's Prometheus metrics, each with its `pool` label |
//! | [`pools`] | several pools from one process: webhook routing by name or label, the loops side by side |

pub mod controller;
pub mod decision;
pub mod metrics;
pub mod pools;
pub mod server;
pub mod source;
pub mod strategy;
pub mod target;

pub use controller::{Controller, ControllerConfig};
pub use decision::{
    Bounds, BoundsError, BusyGate, DECISIONS_KEPT, Decision, Gate, MAX_POOL, Outcome, Shared,
};
pub use metrics::Metrics;
pub use pools::{PoolHandle, Pools};
pub use source::{Inbox, Intents, MetricSource, Signals, WebhookSource};
pub use strategy::{Recommendation, Strategy, WebhookStep};
pub use target::victims;
pub use target::{Actuation, ExoscalePool, Observation, Target, TargetError};
