//! A decision as a value: the pool's [`Bounds`] with the one validation and the one clamp, the
//! [`BusyGate`], and the record of one tick ([`Decision`], kept in [`Shared`] for the HTTP side).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::source::Intents;
use super::strategy;

/// How many decisions `/v1/decisions` keeps.
pub const DECISIONS_KEPT: usize = 100;

/// The largest pool anything here will ask for: a guard against a typo on a real bill.
pub const MAX_POOL: u64 = 1000;

/// The pool's bounds. [`Bounds::new`] is the one validation and [`Bounds::step`] /
/// [`Bounds::clamp`] the one clamp, used by the controller, the policy engine and the policy
/// simulator alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Bounds {
    pub min: u64,
    pub max: u64,
}

/// Why a pair of bounds is refused; `field` is `min` or `max`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct BoundsError {
    pub field: &'static str,
    pub rule: String,
}

impl Bounds {
    /// `1 <= max <= MAX_POOL` and `min <= max`.
    pub fn new(min: u64, max: u64) -> Result<Self, BoundsError> {
        if max == 0 || max > MAX_POOL {
            return Err(BoundsError {
                field: "max",
                rule: format!("must be between 1 and {MAX_POOL}"),
            });
        }
        if min > max {
            return Err(BoundsError {
                field: "min",
                rule: format!("must not exceed max ({min} > {max})"),
            });
        }
        Ok(Self { min, max })
    }

    /// `n` within `[min, max]`, and the bound that clipped it.
    pub fn clamp(self, n: u64) -> (u64, Option<String>) {
        if n > self.max {
            (self.max, Some(format!("max {}", self.max)))
        } else if n < self.min {
            (self.min, Some(format!("min {}", self.min)))
        } else {
            (n, None)
        }
    }

    /// Where a controller goes from `current` when a strategy wants `wanted`: within the bounds,
    /// and within one step of `current` when `one_step` (the course's rule). A pool outside the
    /// bounds (resized by hand) is walked back one step per tick, whatever is wanted. Returns
    /// the size and the rule that changed `wanted`, if any.
    pub fn step(self, current: u64, wanted: u64, one_step: bool) -> (u64, Option<String>) {
        let Self { min, max } = self;
        if current > max {
            return (
                current - 1,
                Some(format!("above max {max}: one step back per tick")),
            );
        }
        if current < min {
            return (
                current + 1,
                Some(format!("below min {min}: one step up per tick")),
            );
        }
        let (bounded, clip) = self.clamp(wanted);
        if one_step {
            let stepped = bounded.clamp(current.saturating_sub(1), current + 1);
            if stepped != bounded {
                return (
                    stepped,
                    clip.or_else(|| Some("one step per tick".to_owned())),
                );
            }
        }
        (bounded, clip)
    }
}

/// The busy gate: while the target is busy (an operation running, members not yet running) a
/// wanted change waits, until the target has been busy for `settle` (so a member stuck in
/// `starting` cannot freeze scaling). Clock-free: `now` is any monotonic clock, real in the
/// controller, virtual in the policy simulator.
///
/// ```text
///   settled ──wanted, target busy──> held ──busy for `settle`──> forced (act anyway)
///      ^                               │
///      └───────target settled, or nothing wanted──────────────┘
/// ```
#[derive(Clone, Debug)]
pub struct BusyGate {
    settle: Duration,
    since: Option<Duration>,
}

/// What the gate says about a wanted change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The target is settled: act.
    Open,
    /// The target is busy: wait.
    Held,
    /// The target has been busy for this long, past `settle`: act anyway.
    Forced(Duration),
}

impl BusyGate {
    pub fn new(settle: Duration) -> Self {
        Self {
            settle,
            since: None,
        }
    }

    /// A change is wanted at `now`; `busy` says whether the target is settled.
    pub fn check(&mut self, now: Duration, busy: bool) -> Gate {
        if !busy {
            self.since = None;
            return Gate::Open;
        }
        let since = *self.since.get_or_insert(now);
        let held_for = now.saturating_sub(since);
        if held_for < self.settle {
            Gate::Held
        } else {
            Gate::Forced(held_for)
        }
    }

    /// Nothing is wanted: whatever was held is over.
    pub fn reset(&mut self) {
        self.since = None;
    }
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
    /// The pool's name (`--pool NAME=...`; `default` for a single plain id).
    pub pool: String,
    /// The pool's id, when the target is an instance pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<Uuid>,
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
    pub(super) ready: AtomicBool,
    /// The size read by the last successful tick, or u64::MAX before the first.
    pub(super) last_size: AtomicU64,
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

    pub(super) fn amend(&self, tick: u64, f: impl FnOnce(&mut Decision)) {
        let mut q = self.decisions.lock().expect("decisions lock");
        if let Some(d) = q.iter_mut().rev().find(|d| d.tick == tick) {
            f(d);
        }
    }

    pub(super) fn push(&self, d: Decision) {
        let mut q = self.decisions.lock().expect("decisions lock");
        if q.len() == DECISIONS_KEPT {
            q.pop_front();
        }
        q.push_back(d);
    }
}
