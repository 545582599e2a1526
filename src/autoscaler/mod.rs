//! `poolpilot autoscaler`: alert webhooks in, bounded scaling out.
//!
//! ```text
//!  webhooks ──> Inbox ──(MetricSource)──┐
//!                                       v
//!  every interval:  Target::observe ─> Strategy::recommend ─> bounds, one step ─> busy gate
//!                                                                                    │
//!                          Decision (log, /v1/decisions, metrics) <── actuate (or dry run)
//! ```
//!
//! One tick, in order:
//! 1. Take the signals (the webhook intents since the last tick; they live for one tick only).
//! 2. Read the target. If that fails, nothing is done this tick: never act on stale data.
//! 3. The strategy proposes a size; the controller keeps it within `[min, max]` and within one
//!    step of the current size. A size that is outside the bounds (changed by hand) is walked
//!    back one step per tick, whatever the intents.
//! 4. While the target is busy (an operation running, members not yet running) nothing changes,
//!    until `settle_timeout` has passed, so a member stuck in `starting` cannot freeze scaling.
//! 5. The one actuation path: in dry-run mode it records what it would do; otherwise it sets
//!    the size and waits for the operation.
//! 6. Every tick that acted, refused, failed or had intents leaves a decision record.

pub mod metrics;
pub mod server;
pub mod source;
pub mod strategy;
pub mod target;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

pub use metrics::Metrics;
pub use source::{Inbox, Intents, MetricSource, Signals, WebhookSource};
pub use strategy::{Recommendation, Strategy, WebhookStep};
pub use target::victims;
pub use target::{Actuation, ExoscalePool, Observation, Target, TargetError};

/// How many decisions `/v1/decisions` keeps.
pub const DECISIONS_KEPT: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bounds {
    pub min: u64,
    pub max: u64,
}

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub bounds: Bounds,
    pub interval: Duration,
    pub dry_run: bool,
    /// How long a busy target may hold changes back.
    pub settle_timeout: Duration,
}

/// What one tick did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The size was changed.
    Scaled,
    /// Dry run: the change was decided and not made.
    DryRun,
    /// Intents arrived but the bounds leave nothing to do.
    AtBound,
    /// Intents arrived and cancelled out to no change (only possible with future strategies).
    NoChange,
    /// A change was wanted while the target was busy.
    Busy,
    /// Reading the target or changing it failed.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Scaled => "scaled",
            Outcome::DryRun => "dry-run",
            Outcome::AtBound => "at-bound",
            Outcome::NoChange => "no-change",
            Outcome::Busy => "busy",
            Outcome::Error => "error",
        }
    }
}

/// One tick's record: enough to answer "why did (or didn't) the pool change?".
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Decision {
    pub tick: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub strategy: &'static str,
    pub intents: Intents,
    /// The size read at the start of the tick (`None` when reading failed).
    pub current: Option<u64>,
    pub recommended: Option<u64>,
    /// A policy's size after its stabilization windows (before rate limits and bounds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stabilized: Option<u64>,
    pub desired: Option<u64>,
    /// A policy's inputs, each with its sample time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<strategy::InputRecord>,
    pub bounds: Bounds,
    pub reason: String,
    /// The rule that changed the recommendation (`max`, `min`, `one step per tick`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipped_by: Option<String>,
    /// Why no change was made although one was wanted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// `up`, `down` or `none`.
    pub action: &'static str,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Changes made by someone else since the last tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// State the HTTP side reads: recent decisions, readiness, the last size seen.
#[derive(Debug)]
pub struct Shared {
    decisions: Mutex<VecDeque<Decision>>,
    ready: AtomicBool,
    /// The size read by the last successful tick, or u64::MAX before the first.
    last_size: AtomicU64,
    pub bounds: Bounds,
    pub dry_run: bool,
}

impl Shared {
    pub fn new(bounds: Bounds, dry_run: bool) -> Self {
        Self {
            decisions: Mutex::new(VecDeque::with_capacity(DECISIONS_KEPT)),
            ready: AtomicBool::new(false),
            last_size: AtomicU64::new(u64::MAX),
            bounds,
            dry_run,
        }
    }

    /// The last decisions, oldest first.
    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions
            .lock()
            .expect("decisions lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Ready once the target was read.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn last_size(&self) -> Option<u64> {
        match self.last_size.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }

    fn amend(&self, tick: u64, f: impl FnOnce(&mut Decision)) {
        let mut q = self.decisions.lock().expect("decisions lock");
        if let Some(d) = q.iter_mut().rev().find(|d| d.tick == tick) {
            f(d);
        }
    }

    fn push(&self, d: Decision) {
        let mut q = self.decisions.lock().expect("decisions lock");
        if q.len() == DECISIONS_KEPT {
            q.pop_front();
        }
        q.push_back(d);
    }
}

/// The control loop over one source, one strategy and one target.
pub struct Controller<S, G, T> {
    cfg: ControllerConfig,
    source: S,
    strategy: G,
    target: T,
    shared: Arc<Shared>,
    metrics: Metrics,
    tick: u64,
    busy_since: Option<Instant>,
    /// The size after our last tick (read or set), to notice changes made by others.
    expected_size: Option<u64>,
}

impl<S: MetricSource, G: Strategy, T: Target> Controller<S, G, T> {
    pub fn new(
        cfg: ControllerConfig,
        source: S,
        strategy: G,
        target: T,
        shared: Arc<Shared>,
        metrics: Metrics,
    ) -> Self {
        metrics.set_bounds(cfg.bounds);
        Self {
            cfg,
            source,
            strategy,
            target,
            shared,
            metrics,
            tick: 0,
            busy_since: None,
            expected_size: None,
        }
    }

    pub fn target(&self) -> &T {
        &self.target
    }

    /// Ticks now and every interval after, forever; the caller stops it by dropping it (every
    /// await point is a safe place to stop: a scale request already sent is absolute and
    /// idempotent, and waiting for its operation can be abandoned).
    pub async fn run(mut self) {
        let mut every = tokio::time::interval(self.cfg.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.tick().await;
        }
    }

    /// One tick; returns its decision when it made one worth recording.
    pub async fn tick(&mut self) -> Option<Decision> {
        self.tick += 1;
        let Bounds { min, max } = self.cfg.bounds;
        let mut d = Decision {
            tick: self.tick,
            at: OffsetDateTime::now_utc(),
            strategy: self.strategy.name(),
            intents: Intents::default(),
            current: None,
            recommended: None,
            stabilized: None,
            desired: None,
            inputs: Vec::new(),
            bounds: self.cfg.bounds,
            reason: String::new(),
            clipped_by: None,
            gate: None,
            action: "none",
            outcome: Outcome::NoChange,
            operation: None,
            error: None,
            note: None,
        };
        let signals = match self.source.collect().await {
            Ok(s) => s,
            Err(e) => {
                d.outcome = Outcome::Error;
                d.reason = "the signals could not be read".into();
                d.error = Some(e.to_string());
                return Some(self.record(d));
            }
        };
        d.intents = signals.intents.clone();

        let obs = match self.target.observe().await {
            Ok(o) => o,
            Err(e) => {
                self.metrics.api_error(e.kind);
                d.outcome = Outcome::Error;
                d.reason = format!(
                    "could not read the {}; nothing changes",
                    self.target.describe()
                );
                d.error = Some(e.message);
                return Some(self.record(d));
            }
        };
        let current = obs.size;
        d.current = Some(current);
        self.shared.ready.store(true, Ordering::Relaxed);
        self.shared.last_size.store(current, Ordering::Relaxed);
        self.metrics.set_current(current);
        if let Some(expected) = self.expected_size
            && expected != current
        {
            d.note = Some(format!(
                "size changed out of band from {expected} to {current}"
            ));
        }
        self.expected_size = Some(current);

        let rec = self.strategy.recommend(&obs, &signals);
        d.recommended = Some(rec.desired);
        d.reason = rec.reason;
        let mut policy_clip = None;
        if let Some(detail) = rec.detail {
            d.recommended = Some(detail.raw);
            d.stabilized = Some(detail.stabilized);
            d.inputs = detail.inputs;
            policy_clip = detail.clipped_by;
        }
        let (desired, clipped_by) = if current > max {
            (
                current - 1,
                Some(format!("above max {max}: one step back per tick")),
            )
        } else if current < min {
            (
                current + 1,
                Some(format!("below min {min}: one step up per tick")),
            )
        } else {
            let bounded = rec.desired.clamp(min, max);
            let stepped = if self.strategy.one_step() {
                bounded.clamp(current.saturating_sub(1), current + 1)
            } else {
                bounded
            };
            let clip = if rec.desired > max {
                Some(format!("max {max}"))
            } else if rec.desired < min {
                Some(format!("min {min}"))
            } else if stepped != bounded {
                Some("one step per tick".to_owned())
            } else {
                None
            };
            (stepped, clip)
        };
        d.desired = Some(desired);
        d.clipped_by = clipped_by.or(policy_clip);
        self.metrics.set_desired(desired);

        if desired == current {
            self.busy_since = None;
            if signals.intents.is_empty() && d.note.is_none() {
                return None;
            }
            d.outcome = if d.clipped_by.is_some() {
                Outcome::AtBound
            } else {
                Outcome::NoChange
            };
            return Some(self.record(d));
        }
        d.action = if desired > current { "up" } else { "down" };

        if let Some(why) = &obs.busy {
            let since = *self.busy_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.cfg.settle_timeout {
                d.outcome = Outcome::Busy;
                d.gate = Some(format!("target busy: {why}"));
                return Some(self.record(d));
            }
            warn!(
                busy = %why,
                for_s = since.elapsed().as_secs(),
                "the target has been busy longer than the settle timeout; acting anyway"
            );
        } else {
            self.busy_since = None;
        }

        let accepted = self.actuate(&mut d, desired).await;
        let d = self.record(d);
        // The decision is on record as soon as the change is accepted; then the tick waits for
        // it, so that the next tick reads a settled pool.
        if let Some(a) = accepted
            && let Err(e) = self.target.wait(&a).await
        {
            self.metrics.api_error(e.kind);
            warn!(tick = d.tick, operation = ?a.operation, error = %e.message, "the scale operation failed");
            self.shared.amend(d.tick, |r| {
                r.outcome = Outcome::Error;
                r.error = Some(format!("the operation failed: {}", e.message));
            });
            self.expected_size = None;
        }
        Some(d)
    }

    /// The only place that changes the target.
    async fn actuate(&mut self, d: &mut Decision, desired: u64) -> Option<Actuation> {
        if self.cfg.dry_run {
            d.outcome = Outcome::DryRun;
            return None;
        }
        match self.target.set_size(desired).await {
            Ok(a) => {
                d.outcome = Outcome::Scaled;
                d.operation = a.operation;
                self.expected_size = Some(desired);
                self.shared.last_size.store(desired, Ordering::Relaxed);
                self.metrics.set_current(desired);
                Some(a)
            }
            Err(e) => {
                self.metrics.api_error(e.kind);
                d.outcome = Outcome::Error;
                d.error = Some(e.message);
                // Whether the change happened is unknown: the next tick reads the truth.
                self.expected_size = None;
                None
            }
        }
    }

    fn record(&self, d: Decision) -> Decision {
        self.metrics.decision(d.action, d.outcome);
        let intents = format!("up {} down {}", d.intents.up, d.intents.down);
        let fields = (
            d.current.map(|c| c as i64).unwrap_or(-1),
            d.desired.map(|c| c as i64).unwrap_or(-1),
        );
        let op = d.operation.map(|o| o.to_string()).unwrap_or_default();
        match d.outcome {
            Outcome::Error => warn!(
                tick = d.tick,
                intents,
                current = fields.0,
                desired = fields.1,
                action = d.action,
                outcome = d.outcome.as_str(),
                error = d.error.as_deref().unwrap_or(""),
                reason = %d.reason,
                "decision"
            ),
            _ => info!(
                tick = d.tick,
                strategy = d.strategy,
                intents,
                current = fields.0,
                desired = fields.1,
                min = d.bounds.min,
                max = d.bounds.max,
                reason = %d.reason,
                clipped_by = d.clipped_by.as_deref().unwrap_or(""),
                gate = d.gate.as_deref().unwrap_or(""),
                note = d.note.as_deref().unwrap_or(""),
                action = d.action,
                outcome = d.outcome.as_str(),
                operation = op,
                "decision"
            ),
        }
        self.shared.push(d.clone());
        d
    }
}
