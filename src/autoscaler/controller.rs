//! The control loop: one source, one strategy, one target; every tick one decision.
//!
//! ```text
//!  webhooks ──> Inbox ──(MetricSource)──┐
//!                                       v
//!  every interval:  Target::observe ─> Strategy::recommend ─> Bounds::step ─> BusyGate
//!                                                                                 │
//!                       Decision (log, /v1/decisions, metrics) <── actuate (or dry run)
//! ```
//!
//! One tick, in order:
//! 1. Take the signals (the webhook intents since the last tick; they live for one tick only).
//! 2. Read the target. If that fails, nothing is done this tick: never act on stale data.
//! 3. The strategy proposes a size; [`Bounds::step`] keeps it within `[min, max]` and, for the
//!    course's rule, within one step of the current size. A size that is outside the bounds
//!    (changed by hand) is walked back one step per tick, whatever the intents.
//! 4. The [`BusyGate`]: while the target is busy (an operation running, members not yet
//!    running) nothing changes, until `settle_timeout` has passed.
//! 5. The one actuation path: in dry-run mode it records what it would do; otherwise it sets
//!    the size, tells the strategy what was done (rate limits count real changes only) and waits
//!    for the operation.
//! 6. Every tick that acted, refused, failed or had intents leaves a decision record.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{info, warn};

use super::decision::{Bounds, BusyGate, Decision, Gate, Outcome, Shared};
use super::metrics::Metrics;
use super::source::{Intents, MetricSource};
use super::strategy::Strategy;
use super::target::{Actuation, Target};

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub bounds: Bounds,
    pub interval: Duration,
    pub dry_run: bool,
    /// How long a busy target may hold changes back.
    pub settle_timeout: Duration,
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
    gate: BusyGate,
    /// The origin of the gate's clock (tokio's, so paused-clock tests are exact).
    started: Instant,
    /// The size after our last tick (read or set), to notice changes made by others.
    expected_size: Option<u64>,
    /// Stamped at every step of a tick (the watchdog pings only while it beats).
    heartbeat: crate::telemetry::Heartbeat,
    /// The pool's name and id, on every decision and log line.
    pool: String,
    pool_id: Option<uuid::Uuid>,
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
            gate: BusyGate::new(cfg.settle_timeout),
            cfg,
            source,
            strategy,
            target,
            shared,
            metrics,
            tick: 0,
            started: Instant::now(),
            expected_size: None,
            heartbeat: crate::telemetry::Heartbeat::default(),
            pool: crate::config::DEFAULT_POOL_NAME.to_owned(),
            pool_id: None,
        }
    }

    /// The pool's name and id for the records; its metrics go to `metrics.for_pool(name)`.
    pub fn with_pool(mut self, name: &str, id: Option<uuid::Uuid>) -> Self {
        self.metrics = self.metrics.for_pool(name);
        self.metrics.set_bounds(self.cfg.bounds);
        self.pool = name.to_owned();
        self.pool_id = id;
        self
    }

    /// The heartbeat each step of a tick stamps.
    pub fn with_heartbeat(mut self, heartbeat: crate::telemetry::Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    pub fn target(&self) -> &T {
        &self.target
    }

    /// Ticks now and every interval after, until `stop` is set (then it returns between ticks,
    /// or after the tick in progress: the target undoes a drain it began). Dropping it is safe
    /// at every other await point: a scale request already sent is absolute and idempotent, and
    /// waiting for its operation can be abandoned.
    pub async fn run(mut self, mut stop: crate::shutdown::Stopping) {
        let mut every = tokio::time::interval(self.cfg.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait() => return,
                _ = every.tick() => {}
            }
            self.tick().await;
            self.heartbeat.beat();
            if stop.is_stopping() {
                return;
            }
        }
    }

    /// One tick; returns its decision when it made one worth recording.
    pub async fn tick(&mut self) -> Option<Decision> {
        self.tick += 1;
        self.heartbeat.beat();
        let mut d = Decision {
            pool: self.pool.clone(),
            pool_id: self.pool_id,
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
        self.heartbeat.beat();

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
        self.heartbeat.beat();
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
        let (desired, clipped_by) =
            self.cfg
                .bounds
                .step(current, rec.desired, self.strategy.one_step());
        d.desired = Some(desired);
        d.clipped_by = clipped_by.or(policy_clip);
        self.metrics.set_desired(desired);

        if desired == current {
            self.gate.reset();
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

        match self.gate.check(self.started.elapsed(), obs.busy.is_some()) {
            Gate::Open => {}
            Gate::Held => {
                let why = obs.busy.as_deref().unwrap_or_default();
                d.outcome = Outcome::Busy;
                d.gate = Some(format!("target busy: {why}"));
                return Some(self.record(d));
            }
            Gate::Forced(held) => warn!(
                busy = obs.busy.as_deref().unwrap_or_default(),
                for_s = held.as_secs(),
                "the target has been busy longer than the settle timeout; acting anyway"
            ),
        }

        let accepted = self.actuate(&mut d, desired).await;
        self.heartbeat.beat();
        let d = self.record(d);
        // The decision is on record as soon as the change is accepted; then the tick waits for
        // it, so that the next tick reads a settled pool.
        if let Some(a) = accepted
            && let Err(e) = self.target.wait(&a).await
        {
            self.metrics.api_error(e.kind);
            warn!(pool = %self.pool, tick = d.tick, operation = ?a.operation, error = %e.message, "the scale operation failed");
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
                if let Some(current) = d.current {
                    self.strategy.applied(current, desired);
                }
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
        let pool_id = d.pool_id.map(|p| p.to_string()).unwrap_or_default();
        match d.outcome {
            Outcome::Error => warn!(
                pool = %d.pool,
                pool_id,
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
                pool = %d.pool,
                pool_id,
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
