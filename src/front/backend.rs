//! The backends and their health: which one takes the next request, and when one is ejected
//! and re-admitted. Pure bookkeeping on a clock the caller passes in, so every rule is tested
//! without sockets or sleeps.
//!
//! Ejection (Envoy's outlier detection, HAProxy's `observe layer7` + `error-limit`):
//! - `total` (the rule this front is asked for): a backend that has answered more than
//!   `after` non-200 responses since it was (re-)admitted is ejected, so a backend answering
//!   500 receives at most `after + 1` requests;
//! - `consecutive` (Envoy's `consecutive_5xx`): more than `after` failures in a row.
//!
//! A failure is a non-200 answer, a timeout or a refused connection. An ejected backend gets no
//! traffic for a cool-down that grows with each ejection (`cooldown x ejections`, at most
//! `max_cooldown`, Envoy's `base_ejection_time`), then is re-admitted by the first successful
//! active probe. A backend is never ejected when it is the last one in rotation (Envoy's
//! `max_ejection_percent` at its strictest): it keeps the traffic, flagged as failing, and the
//! front says so in its status and metrics.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::pool::{Target, Upstream};

/// How failures are counted before an ejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EjectMode {
    /// Failures since the backend was last admitted.
    Total,
    /// Failures in a row (a success resets the count).
    Consecutive,
}

/// The ejection rules.
#[derive(Clone, Copy, Debug)]
pub struct Ejection {
    /// Ejected after more than this many failures.
    pub after: u32,
    pub mode: EjectMode,
    /// Cool-down after the first ejection; the n-th lasts n times this.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

/// What one attempt on a backend came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200.
    Ok,
    /// Any other status.
    Non200,
    /// No answer within the per-try timeout.
    Timeout,
    /// No connection (refused, reset, unreachable).
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Non200 => "non200",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

/// A backend's state as the status page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// In rotation.
    Healthy,
    /// Out of rotation until a probe succeeds after the cool-down.
    Ejected,
    /// Past its failure limit, but the last one in rotation: it keeps the traffic.
    Failing,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => State::Healthy,
            1 => State::Ejected,
            _ => State::Failing,
        }
    }
}

#[derive(Debug)]
struct Health {
    state: State,
    /// Failures since admission (total mode) or in a row (consecutive mode).
    failures: u32,
    ejections: u32,
    /// When an ejected backend may be probed back in.
    ejected_until: Option<Instant>,
}

/// One backend: a name, where requests are forwarded to, its health.
///
/// The hot path (picking a backend, recording a success) reads and counts with atomics; the
/// lock is taken for failures and state changes, and the state is mirrored in `state` under it.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    /// Its connections, and its address (`http://host:port` and an optional path prefix).
    pub upstream: Arc<Upstream>,
    health: Mutex<Health>,
    /// `health.state`, readable without the lock.
    state: AtomicU8,
    /// No failure counted and not failing: a success in consecutive mode has nothing to reset.
    clean: AtomicBool,
    requests: AtomicU64,
    non200: AtomicU64,
}

impl Backend {
    /// The base URL requests go to now.
    pub fn base(&self) -> String {
        self.upstream.target().base.clone()
    }

    fn set_state(&self, h: &mut Health, state: State) {
        h.state = state;
        self.state.store(state as u8, Ordering::Release);
    }
}

/// What the status page shows of one backend.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Status {
    pub name: String,
    pub url: String,
    pub state: State,
    pub failures: u32,
    pub ejections: u32,
    pub requests: u64,
    pub non200: u64,
    /// Milliseconds until an ejected backend may be probed back in (0: now).
    pub ejected_for_ms: Option<u64>,
}

/// What a recorded outcome changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// Ejected, for this cool-down.
    Ejected(Duration),
    /// Past its limit but kept: every other backend is ejected.
    KeptAsLast,
}

/// The set of backends and the rules.
#[derive(Debug)]
pub struct Backends {
    list: Vec<Backend>,
    rules: Ejection,
    next: AtomicUsize,
}

impl Backends {
    /// `list`: (name, base URL as `cli::front` normalises it).
    ///
    /// # Panics
    /// On a base URL that is not `http://HOST[:PORT][/PREFIX]` (the configuration checks it).
    pub fn new(list: Vec<(String, String)>, rules: Ejection, connect_timeout: Duration) -> Self {
        Self {
            list: list
                .into_iter()
                .map(|(name, base)| Backend {
                    upstream: Upstream::new(
                        Target::parse(&base).unwrap_or_else(|e| panic!("backend {name}: {e}")),
                        connect_timeout,
                    ),
                    name,
                    health: Mutex::new(Health {
                        state: State::Healthy,
                        failures: 0,
                        ejections: 0,
                        ejected_until: None,
                    }),
                    state: AtomicU8::new(State::Healthy as u8),
                    clean: AtomicBool::new(true),
                    requests: AtomicU64::new(0),
                    non200: AtomicU64::new(0),
                })
                .collect(),
            rules,
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, i: usize) -> &Backend {
        &self.list[i]
    }

    fn state(&self, i: usize) -> State {
        State::from_u8(self.list[i].state.load(Ordering::Acquire))
    }

    /// Points backend `i` at a new base URL (an NLB's address changed); its name, counts and
    /// ejection state stay. False when it was there already.
    pub fn set_base(&self, i: usize, base: &str) -> Result<bool, String> {
        Ok(self.list[i].upstream.set_target(Target::parse(base)?))
    }

    /// The backend for the next attempt, round robin over those in rotation and not yet tried
    /// for this request: a first attempt takes the next turn, a retry the backend after the one
    /// that failed (so retries do not skew the rotation). `None` when every backend in rotation
    /// has been tried.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.list.len();
        let start = match tried.last() {
            None => self.next.fetch_add(1, Ordering::Relaxed),
            Some(last) => last + 1,
        };
        (0..n)
            .map(|k| (start + k) % n)
            .find(|i| !tried.contains(i) && self.state(*i) != State::Ejected)
    }

    /// Records one attempt's outcome at `now`.
    pub fn record(&self, i: usize, outcome: Outcome, now: Instant) -> Change {
        let b = &self.list[i];
        b.requests.fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Ok {
            // Total mode: a success changes nothing. Consecutive: it resets the count, which
            // needs the lock only when there is something to reset.
            if self.rules.mode == EjectMode::Consecutive && !b.clean.load(Ordering::Acquire) {
                let mut h = b.health.lock().expect("backend lock");
                h.failures = 0;
                if h.state == State::Failing {
                    b.set_state(&mut h, State::Healthy);
                }
                b.clean.store(true, Ordering::Release);
            }
            return Change::None;
        }
        if outcome == Outcome::Non200 {
            b.non200.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut h = b.health.lock().expect("backend lock");
            b.clean.store(false, Ordering::Release);
            h.failures = h.failures.saturating_add(1);
            if h.failures <= self.rules.after || h.state == State::Ejected {
                return Change::None;
            }
        }
        // Past the limit (rare): only now look at the others, one lock at a time (never two
        // backends' locks held together), then decide under this backend's lock again.
        let others_in_rotation = (0..self.list.len())
            .filter(|j| *j != i && self.state(*j) != State::Ejected)
            .count();
        let mut h = b.health.lock().expect("backend lock");
        if h.state == State::Ejected {
            return Change::None;
        }
        if others_in_rotation == 0 {
            let was = h.state;
            b.set_state(&mut h, State::Failing);
            return if was == State::Failing {
                Change::None
            } else {
                Change::KeptAsLast
            };
        }
        h.ejections += 1;
        let cooldown = self
            .rules
            .cooldown
            .saturating_mul(h.ejections)
            .min(self.rules.max_cooldown);
        b.set_state(&mut h, State::Ejected);
        h.ejected_until = Some(now + cooldown);
        Change::Ejected(cooldown)
    }

    /// The ejected backends whose cool-down is over at `now`: the ones to probe.
    pub fn due_for_probe(&self, now: Instant) -> Vec<usize> {
        (0..self.list.len())
            .filter(|i| {
                let h = self.list[*i].health.lock().expect("backend lock");
                h.state == State::Ejected && h.ejected_until.is_some_and(|u| u <= now)
            })
            .collect()
    }

    /// A probe of an ejected backend succeeded: back in rotation, its failures forgotten (its
    /// ejection count is kept, so the next cool-down is longer). A backend kept as the last
    /// one goes back to healthy once another is in rotation again.
    pub fn readmit(&self, i: usize) {
        {
            let b = &self.list[i];
            let mut h = b.health.lock().expect("backend lock");
            if h.state != State::Ejected {
                return;
            }
            b.set_state(&mut h, State::Healthy);
            h.failures = 0;
            h.ejected_until = None;
        }
        for b in &self.list {
            let mut h = b.health.lock().expect("backend lock");
            if h.state == State::Failing {
                b.set_state(&mut h, State::Healthy);
                h.failures = 0;
            }
        }
    }

    /// Whether the front has no healthy backend left (only ejected or failing ones).
    pub fn all_failing(&self) -> bool {
        (0..self.list.len()).all(|i| self.state(i) != State::Healthy)
    }

    pub fn status(&self, now: Instant) -> Vec<Status> {
        self.list
            .iter()
            .map(|b| {
                let h = b.health.lock().expect("backend lock");
                Status {
                    name: b.name.clone(),
                    url: b.base(),
                    state: h.state,
                    failures: h.failures,
                    ejections: h.ejections,
                    requests: b.requests.load(Ordering::Relaxed),
                    non200: b.non200.load(Ordering::Relaxed),
                    ejected_for_ms: h
                        .ejected_until
                        .map(|u| u.saturating_duration_since(now).as_millis() as u64),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two(mode: EjectMode) -> Backends {
        Backends::new(
            vec![
                ("a".into(), "http://a".into()),
                ("b".into(), "http://b".into()),
            ],
            Ejection {
                after: 10,
                mode,
                cooldown: Duration::from_secs(30),
                max_cooldown: Duration::from_secs(300),
            },
            Duration::from_secs(1),
        )
    }

    #[test]
    fn total_mode_ejects_at_the_eleventh_failure_whatever_succeeded_between() {
        let b = two(EjectMode::Total);
        let now = Instant::now();
        for k in 1..=10 {
            assert_eq!(
                b.record(0, Outcome::Non200, now),
                Change::None,
                "failure {k}"
            );
            assert_eq!(b.record(0, Outcome::Ok, now), Change::None);
        }
        assert_eq!(
            b.record(0, Outcome::Timeout, now),
            Change::Ejected(Duration::from_secs(30))
        );
        assert_eq!(b.status(now)[0].state, State::Ejected);
        // Only b takes requests now.
        for _ in 0..5 {
            assert_eq!(b.pick(&[]), Some(1));
        }
        assert_eq!(b.pick(&[1]), None);
    }

    #[test]
    fn consecutive_mode_forgets_failures_at_a_success() {
        let b = two(EjectMode::Consecutive);
        let now = Instant::now();
        for _ in 0..3 {
            for _ in 0..10 {
                assert_eq!(b.record(0, Outcome::Error, now), Change::None);
            }
            b.record(0, Outcome::Ok, now);
        }
        for _ in 0..10 {
            b.record(0, Outcome::Error, now);
        }
        assert!(matches!(
            b.record(0, Outcome::Error, now),
            Change::Ejected(_)
        ));
    }

    #[test]
    fn the_cooldown_grows_with_each_ejection_up_to_the_maximum() {
        let b = two(EjectMode::Total);
        let mut now = Instant::now();
        let mut seen = vec![];
        for _ in 0..12 {
            let change = (0..11)
                .map(|_| b.record(0, Outcome::Non200, now))
                .last()
                .unwrap();
            let Change::Ejected(d) = change else {
                panic!("{change:?}")
            };
            seen.push(d.as_secs());
            assert!(
                b.due_for_probe(now + d - Duration::from_millis(1))
                    .is_empty()
            );
            now += d;
            assert_eq!(b.due_for_probe(now), vec![0]);
            b.readmit(0);
            assert_eq!(b.status(now)[0].state, State::Healthy);
        }
        assert_eq!(
            seen,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
    }

    #[test]
    fn the_last_backend_in_rotation_is_never_ejected_and_says_so() {
        let b = two(EjectMode::Total);
        let now = Instant::now();
        for _ in 0..11 {
            b.record(1, Outcome::Non200, now);
        }
        assert_eq!(b.status(now)[1].state, State::Ejected);
        assert!(!b.all_failing());
        for _ in 0..10 {
            assert_eq!(b.record(0, Outcome::Non200, now), Change::None);
        }
        assert_eq!(b.record(0, Outcome::Non200, now), Change::KeptAsLast);
        assert_eq!(b.record(0, Outcome::Non200, now), Change::None);
        assert_eq!(b.status(now)[0].state, State::Failing);
        assert!(b.all_failing());
        // The failing one still takes traffic.
        assert_eq!(b.pick(&[]), Some(0));
        // Once the other is back, the kept one is healthy again with a clean slate.
        b.readmit(1);
        assert_eq!(b.status(now)[0].state, State::Healthy);
        assert_eq!(b.status(now)[0].failures, 0);
        assert!(!b.all_failing());
    }

    #[test]
    fn a_new_address_keeps_the_name_counts_and_ejection_state() {
        let b = two(EjectMode::Total);
        let now = Instant::now();
        for _ in 0..11 {
            b.record(0, Outcome::Non200, now);
        }
        assert_eq!(b.set_base(0, "http://127.0.0.1:9"), Ok(true));
        assert_eq!(b.set_base(0, "http://127.0.0.1:9"), Ok(false));
        assert!(b.set_base(0, "ftp://x").is_err());
        let s = &b.status(now)[0];
        assert_eq!(
            (s.name.as_str(), s.url.as_str()),
            ("a", "http://127.0.0.1:9")
        );
        assert_eq!(
            (s.state, s.requests, s.non200, s.ejections),
            (State::Ejected, 11, 11, 1)
        );
    }

    #[test]
    fn round_robin_skips_what_this_request_already_tried() {
        let b = Backends::new(
            (0..3)
                .map(|i| (format!("b{i}"), format!("http://b{i}")))
                .collect(),
            Ejection {
                after: 10,
                mode: EjectMode::Total,
                cooldown: Duration::from_secs(1),
                max_cooldown: Duration::from_secs(1),
            },
            Duration::from_secs(1),
        );
        let mut tried = vec![];
        while let Some(i) = b.pick(&tried) {
            tried.push(i);
        }
        tried.sort();
        assert_eq!(tried, [0, 1, 2]);
    }
}
