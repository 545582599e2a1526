//! `poolpilot simulate`: what a policy will do, and what it costs, before any money is spent.
//!
//! A discrete-event simulation in virtual time. The events are periodic sources, processed in
//! time order (ties: scrape, alert evaluation, notification flush, autoscaler tick, sample):
//!
//! - scrape (every `scrape`): each booted member's CPU (its share of the load over its
//!   capacity, at most 100 %; idle until the NLB sends it traffic) and requests in flight (the
//!   same share, unbounded: demand does not saturate). CPU is averaged over the `rate_window`,
//!   as Prometheus' `rate(...[1m])` would: a member has a CPU value once it has two scrapes in
//!   it. Requests in flight are averaged over the `gauge_window`, as the autoscaler's query
//!   `avg_over_time(poolpilot_app_load_in_flight[30s])` is: the scrapes younger than the
//!   window (Prometheus' range selectors are left-open), one is enough;
//! - alert evaluation (every `eval`, webhook policies only): the pool average against 80 % and
//!   20 %, held for `pending` before firing (the course's Grafana rules);
//! - notification flush (webhook policies, while a rule fires): Grafana's notification policy,
//!   which is Alertmanager's. The first flush comes `group_wait` after the rule fires, then one
//!   every `group_interval`; a flush sends when nothing was sent yet or the last send is older
//!   than `repeat` (strictly: the send was logged just after its flush). Each send is an intent
//!   in the autoscaler's inbox;
//! - autoscaler tick (every `course_tick` for policies with a webhook check, else every
//!   `tick`): the **real** [`PolicyStrategy`] decides from an [`Observation`] and [`Signals`]
//!   built from the model, with virtual clocks; the controller's busy gate holds changes while
//!   members boot (up to `settle_timeout`); scale-in picks victims with the real
//!   [`crate::autoscaler::target::victims::choose`], they leave the NLB at once and are billed for
//!   `drain` more;
//! - sample (every `sample`): demand (`ceil(load / capacity)`), supply (the pool's size,
//!   booting members included: they are paid for), ready members (in the NLB), billing.
//!
//! New members boot in `boot ± boot_jitter` (uniform, from the seed), then pass the NLB's health
//! check after `nlb_delay`. The same seed gives the same result.

pub mod metrics;
pub mod oracle;
pub mod report;
pub mod trace;

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::autoscaler::decision::{Bounds, BusyGate, Gate};
use crate::autoscaler::source::Sample;
use crate::autoscaler::source::webhook::Direction;
use crate::autoscaler::source::{Intent, Intents, Signals};
use crate::autoscaler::strategy::Strategy;
use crate::autoscaler::target::victims::{self, Candidate};
use crate::autoscaler::target::{MemberInfo, Observation};
use crate::policy::file::{Check, PolicyFile};
use crate::policy::strategy::{Clock, PolicyStrategy};
use metrics::Elasticity;
use trace::{Rng, Trace};

/// The pool, its monitoring and its autoscaler, as the simulation models them.
#[derive(Clone, Debug, Serialize)]
pub struct Model {
    /// Requests per second one instance serves within the SLO.
    pub capacity: f64,
    pub boot: Duration,
    pub boot_jitter: Duration,
    /// After boot, until the NLB's health check passes (interval x healthy retries).
    pub nlb_delay: Duration,
    pub scrape: Duration,
    pub rate_window: Duration,
    /// The requests-in-flight average's window (`avg_over_time(...[30s])`).
    pub gauge_window: Duration,
    /// Grafana's rule group interval (`interval` in monitoring/grafana/.../rules.yaml).
    pub eval: Duration,
    /// The rules' pending period (`for`).
    pub pending: Duration,
    /// The notification policy's `group_wait`, `group_interval` and `repeat_interval`.
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat: Duration,
    pub high: f64,
    pub low: f64,
    /// The autoscaler's interval for webhook policies (the course: 60 s).
    pub course_tick: Duration,
    /// The autoscaler's interval for metric policies.
    pub tick: Duration,
    pub settle_timeout: Duration,
    /// A removed member stays billed this long (drain, NLB, eviction).
    pub drain: Duration,
    /// EUR per instance-hour (Exoscale standard.micro list price).
    pub price_per_hour: f64,
    pub initial: u64,
    pub sample: Duration,
    pub seed: u64,
    /// Unix seconds of virtual time 0 (schedules read the wall clock).
    pub start_unix: i64,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            capacity: 10.0,
            boot: Duration::from_secs(60),
            boot_jitter: Duration::from_secs(20),
            nlb_delay: Duration::from_secs(20),
            scrape: Duration::from_secs(15),
            rate_window: Duration::from_secs(60),
            gauge_window: Duration::from_secs(30),
            // The shipped Grafana files (tests/grafana.rs holds them equal): a repeat every
            // 5 minutes, at the 5th flush after a send (see `effective_repeat`).
            eval: Duration::from_secs(10),
            pending: Duration::from_secs(60),
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat: Duration::from_secs(270),
            high: 0.8,
            low: 0.2,
            course_tick: Duration::from_secs(60),
            tick: Duration::from_secs(15),
            settle_timeout: Duration::from_secs(600),
            drain: Duration::from_secs(35),
            price_per_hour: 0.00729,
            initial: 2,
            sample: Duration::from_secs(10),
            seed: 1,
            // Monday 2026-01-05 08:00 UTC.
            start_unix: 1_767_600_000,
        }
    }
}

impl Model {
    /// How often a notification is repeated while its alert keeps firing: at the first flush
    /// (every `group_interval`) at which the last send, logged just after its own flush, is
    /// older than `repeat` (Alertmanager's `DedupStage.needsUpdate`).
    pub fn effective_repeat(&self) -> Duration {
        let gi = self.group_interval.as_millis().max(1);
        let flushes = self.repeat.as_millis() / gi + 1;
        Duration::from_millis((flushes * gi) as u64)
    }
}

#[derive(Clone, Debug)]
struct Member {
    id: u64,
    ip: Ipv4Addr,
    created: f64,
    booted: f64,
    in_nlb: f64,
    /// (time, cpu 0..1, requests in flight in instances' worth)
    scrapes: VecDeque<(f64, f64, f64)>,
}

/// One scaling change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub t: f64,
    pub from: u64,
    pub to: u64,
}

/// The scores of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    #[serde(flatten)]
    pub elasticity: Elasticity,
    /// Billed instance-seconds, draining members included.
    pub instance_seconds: f64,
    pub cost_eur: f64,
    /// Minutes when fewer members served than the demand needed.
    pub slo_violation_minutes: f64,
    pub scale_changes: usize,
}

/// One policy on one trace.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub policy: String,
    pub trace: String,
    pub sample_s: f64,
    pub demand: Vec<u64>,
    pub supply: Vec<u64>,
    pub ready: Vec<u64>,
    pub changes: Vec<Change>,
    pub scores: Scores,
}

/// What a run recorded, sample by sample, before it is scored.
pub(crate) struct Series {
    pub demand: Vec<u64>,
    pub supply: Vec<u64>,
    pub ready: Vec<u64>,
    pub changes: Vec<Change>,
}

impl Run {
    /// A finished run of `policy` on `trace`: its series, and the scores computed from them,
    /// `billed` instance-seconds and `slo_seconds` of SLO violation.
    pub(crate) fn scored(
        policy: String,
        trace: &Trace,
        model: &Model,
        s: Series,
        billed: f64,
        slo_seconds: f64,
    ) -> Self {
        let dt = model.sample.as_secs_f64();
        Run {
            policy,
            trace: trace.name.clone(),
            sample_s: dt,
            scores: Scores {
                elasticity: metrics::elasticity(&s.demand, &s.supply, dt),
                instance_seconds: billed,
                cost_eur: billed / 3600.0 * model.price_per_hour,
                slo_violation_minutes: slo_seconds / 60.0,
                scale_changes: s.changes.len(),
            },
            demand: s.demand,
            supply: s.supply,
            ready: s.ready,
            changes: s.changes,
        }
    }
}

fn member_ip(id: u64) -> Ipv4Addr {
    // The documentation range, as the API simulator hands out.
    Ipv4Addr::new(198, 51, 100, (id % 254 + 1) as u8)
}

/// Runs `policy` against `trace` in `model`.
pub fn run(model: &Model, policy: &PolicyFile, trace: &Trace) -> Run {
    let mut rng = Rng::new(model.seed);
    let webhooks = policy
        .checks
        .iter()
        .any(|c| matches!(c, Check::WebhookStep));
    let victim_order = policy.victims();
    let mut strategy = PolicyStrategy::new(policy.clone());
    let bounds = Bounds {
        min: policy.policy.min,
        max: policy.policy.max,
    };
    let secs = |d: Duration| d.as_secs_f64();
    let end = secs(trace.length);

    let mut next_id = 0u64;
    let mut members: Vec<Member> = Vec::new();
    let initial = bounds.clamp(model.initial).0;
    for _ in 0..initial {
        next_id += 1;
        members.push(Member {
            id: next_id,
            ip: member_ip(next_id),
            created: -3600.0,
            booted: -3600.0,
            in_nlb: -3600.0,
            scrapes: VecDeque::new(),
        });
    }
    let mut size = initial;
    // (billed until)
    let mut draining: Vec<f64> = Vec::new();
    let mut inbox = Intents::default();
    // Per rule (up, down): pending since, and the last send of its notification group.
    let mut since: [Option<f64>; 2] = [None, None];
    let mut sent: [Option<f64>; 2] = [None, None];
    let mut gate = BusyGate::new(model.settle_timeout);

    let interval = if webhooks {
        secs(model.course_tick)
    } else {
        secs(model.tick)
    };
    // Next time of: scrape, eval, flush of the up group, flush of the down group, tick, sample.
    // A group's flushes are scheduled while its rule fires.
    let periods = [
        secs(model.scrape),
        secs(model.eval),
        secs(model.group_interval),
        secs(model.group_interval),
        interval,
        secs(model.sample),
    ];
    let mut next = [0.0, 0.0, f64::INFINITY, f64::INFINITY, interval, 0.0];
    let (mut demand, mut supply, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    let mut changes = Vec::new();
    let (mut billed, mut slo) = (0.0, 0.0);

    let in_nlb = |members: &[Member], t: f64| members.iter().filter(|m| m.in_nlb <= t).count();
    // CPU: a rate over the whole kept window, from two scrapes on.
    let cpu = |m: &Member| -> Option<(f64, f64)> {
        (m.scrapes.len() >= 2).then(|| {
            let v = m.scrapes.iter().map(|s| s.1).sum::<f64>() / m.scrapes.len() as f64;
            (v, m.scrapes.back().expect("two").0)
        })
    };
    // Requests in flight: the average of the scrapes younger than the gauge window.
    let gauge_window = secs(model.gauge_window);
    let in_flight = |m: &Member, t: f64| -> Option<(f64, f64)> {
        let recent: Vec<f64> = m
            .scrapes
            .iter()
            .filter(|s| t - s.0 < gauge_window)
            .map(|s| s.2)
            .collect();
        (!recent.is_empty()).then(|| {
            let v = recent.iter().sum::<f64>() / recent.len() as f64;
            (v, m.scrapes.back().expect("one").0)
        })
    };

    loop {
        let (kind, t) = next
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .expect("six sources");
        if t >= end {
            break;
        }
        next[kind] += periods[kind];
        let load = trace.at(t);
        match kind {
            0 => {
                let n = in_nlb(&members, t).max(1) as f64;
                let share = load / n / model.capacity;
                for m in members.iter_mut().filter(|m| m.booted <= t) {
                    let (cpu, flight) = if m.in_nlb <= t {
                        (share.min(1.0), share)
                    } else {
                        (0.02, 0.0)
                    };
                    m.scrapes.push_back((t, cpu, flight));
                    while m.scrapes.front().is_some_and(|s| {
                        t - s.0 > secs(model.rate_window).max(secs(model.gauge_window))
                    }) {
                        m.scrapes.pop_front();
                    }
                }
            }
            1 if webhooks => {
                let vals: Vec<f64> = members.iter().filter_map(cpu).map(|(v, _)| v).collect();
                let avg = (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64);
                let holds = [
                    avg.is_some_and(|a| a > model.high),
                    avg.is_some_and(|a| a < model.low),
                ];
                for rule in 0..2 {
                    if !holds[rule] {
                        // Normal again: the group ends (no resolve message is sent).
                        since[rule] = None;
                        sent[rule] = None;
                        next[2 + rule] = f64::INFINITY;
                        continue;
                    }
                    let s = *since[rule].get_or_insert(t);
                    if t - s >= secs(model.pending) && next[2 + rule].is_infinite() {
                        // Fires: a new notification group, first flushed after group_wait.
                        next[2 + rule] = t + secs(model.group_wait);
                    }
                }
            }
            1 => {}
            2 | 3 => {
                let rule = kind - 2;
                if sent[rule].is_none_or(|x| t - x > secs(model.repeat)) {
                    sent[rule] = Some(t);
                    let direction = if rule == 0 {
                        Direction::Up
                    } else {
                        Direction::Down
                    };
                    match direction {
                        Direction::Up => inbox.up += 1,
                        Direction::Down => inbox.down += 1,
                    }
                    inbox.recent.push(Intent {
                        direction,
                        source: "simulated alert".into(),
                        at: time::OffsetDateTime::from_unix_timestamp(model.start_unix + t as i64)
                            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                    });
                }
            }
            4 => {
                let running = members.iter().filter(|m| m.booted <= t).count() as u64;
                let busy = (running != size || members.len() as u64 != size)
                    .then(|| format!("{running} of {size} running"));
                let obs = Observation {
                    size,
                    state: "running".into(),
                    members: members.len() as u64,
                    running,
                    busy: busy.clone(),
                    member_list: members
                        .iter()
                        .map(|m| MemberInfo {
                            ip: Some(m.ip),
                            age: Some(Duration::from_secs_f64((t - m.created).max(0.0))),
                            running: m.booted <= t,
                        })
                        .collect(),
                };
                let samples = |read: &dyn Fn(&Member) -> Option<(f64, f64)>| -> Vec<Sample> {
                    members
                        .iter()
                        .filter_map(|m| {
                            read(m).map(|(v, at)| Sample {
                                instance: format!("{}:9100", m.ip),
                                value: v,
                                at: model.start_unix as f64 + at,
                            })
                        })
                        .collect()
                };
                let signals = Signals {
                    intents: std::mem::take(&mut inbox),
                    samples: samples(&cpu),
                    in_flight: samples(&|m| in_flight(m, t)),
                    sample_error: None,
                };
                let unix = model.start_unix as f64 + t;
                let clock = Clock {
                    elapsed: Duration::from_secs_f64(t),
                    unix,
                    utc: chrono::DateTime::from_timestamp(unix as i64, 0).unwrap_or_default(),
                };
                let rec = strategy.recommend_at(&obs, &signals, clock);
                // The controller's own clamp and busy gate, the same code it runs.
                let (desired, _) = bounds.step(size, rec.desired, strategy.one_step());
                if desired == size {
                    gate.reset();
                    continue;
                }
                if gate.check(Duration::from_secs_f64(t), busy.is_some()) == Gate::Held {
                    continue;
                }
                if desired > size {
                    for _ in size..desired {
                        next_id += 1;
                        let jitter = secs(model.boot_jitter) * (2.0 * rng.unit() - 1.0);
                        let booted = t + (secs(model.boot) + jitter).max(1.0);
                        members.push(Member {
                            id: next_id,
                            ip: member_ip(next_id),
                            created: t,
                            booted,
                            in_nlb: booted + secs(model.nlb_delay),
                            scrapes: VecDeque::new(),
                        });
                    }
                } else {
                    let candidates: Vec<Candidate> = members
                        .iter()
                        .filter(|m| m.booted <= t)
                        .map(|m| Candidate {
                            id: uuid::Uuid::from_u128(m.id as u128),
                            ip: m.ip,
                            created_at: time::OffsetDateTime::from_unix_timestamp(
                                model.start_unix + m.created as i64,
                            )
                            .ok(),
                            healthy: Some(m.in_nlb <= t),
                            busy: m.scrapes.back().map(|s| s.2),
                        })
                        .collect();
                    let count = (size - desired) as usize;
                    if candidates.len() < count {
                        // As the real target: not enough running members to drain; an error.
                        continue;
                    }
                    let chosen = victims::choose(candidates, &victim_order, count);
                    members.retain(|m| {
                        !chosen
                            .iter()
                            .any(|c| c.id == uuid::Uuid::from_u128(m.id as u128))
                    });
                    draining.extend(std::iter::repeat_n(t + secs(model.drain), count));
                }
                changes.push(Change {
                    t,
                    from: size,
                    to: desired,
                });
                strategy.applied_at(Duration::from_secs_f64(t), size, desired);
                size = desired;
            }
            _ => {
                let dt = secs(model.sample);
                draining.retain(|until| *until > t);
                let need = (load / model.capacity - 1e-9).ceil().max(0.0) as u64;
                let serving = in_nlb(&members, t) as u64;
                demand.push(need);
                supply.push(size);
                ready.push(serving);
                billed += (members.len() + draining.len()) as f64 * dt;
                if serving < need {
                    slo += dt;
                }
            }
        }
    }
    Run::scored(
        policy.policy.name.clone(),
        trace,
        model,
        Series {
            demand,
            supply,
            ready,
            changes,
        },
        billed,
        slo,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin;

    fn policy(name: &str) -> PolicyFile {
        PolicyFile::parse(builtin::get(name).unwrap()).unwrap()
    }

    /// A pool of one member meets a load that needs 1 + k (k + 0.7 instances' worth) from
    /// the start: a step of +k instances.
    fn step(k: u64) -> (Model, Trace) {
        let model = Model {
            initial: 1,
            ..Model::default()
        };
        let trace = Trace::csv(
            "step",
            &format!("0,{}\n1800,0\n", model.capacity * (k as f64 + 0.7)),
        )
        .unwrap();
        (model, trace)
    }

    fn ups_to_reach(run: &Run, size: u64) -> Option<usize> {
        let mut ups = 0;
        for c in &run.changes {
            if c.to > c.from {
                ups += 1;
            }
            if c.to >= size {
                return Some(ups);
            }
        }
        None
    }

    #[test]
    fn the_course_needs_k_ticks_for_k_instances_where_target_tracking_needs_one() {
        for k in 1..=3u64 {
            let (model, trace) = step(k);
            let course = run(&model, &policy("course"), &trace);
            let n = ups_to_reach(&course, 1 + k).expect("the course gets there");
            assert!(
                n >= k as usize,
                "course: {n} changes for +{k}: {:?}",
                course.changes
            );
            assert!(course.changes.iter().all(|c| c.to.abs_diff(c.from) == 1));
            // Ticks: at least k, 60 s apart.
            let first = course.changes.iter().find(|c| c.to > c.from).unwrap().t;
            let reached = course.changes.iter().find(|c| c.to > k).unwrap().t;
            assert!(reached - first >= 60.0 * (k - 1) as f64);

            let ours = run(&model, &policy("default"), &trace);
            assert_eq!(
                ups_to_reach(&ours, 1 + k),
                Some(1),
                "default, +{k}: {:?}",
                ours.changes
            );
        }
    }

    /// Up-changes of the course policy under a load far beyond the pool, with members in the
    /// NLB as soon as they boot (so the average never dips and the alert keeps firing).
    fn course_ups_under_overload(model: Model) -> Vec<f64> {
        let model = Model {
            initial: 1,
            nlb_delay: Duration::ZERO,
            ..model
        };
        let trace = Trace::csv(
            "overload",
            &format!("0,{}\n1800,0\n", model.capacity * 50.0),
        )
        .unwrap();
        run(&model, &policy("course"), &trace)
            .changes
            .iter()
            .filter(|c| c.to > c.from)
            .map(|c| c.t)
            .collect()
    }

    #[test]
    fn a_firing_alert_is_repeated_every_five_minutes_as_the_course_asks() {
        let model = Model::default();
        assert_eq!(model.effective_repeat(), Duration::from_secs(300));
        let ups = course_ups_under_overload(model);
        assert!(ups.len() >= 3, "{ups:?}");
        // Each notification is one step at the next 60 s tick, and 300 s is a multiple of 60.
        for w in ups.windows(2) {
            assert_eq!(w[1] - w[0], 300.0, "{ups:?}");
        }
    }

    #[test]
    fn repeat_interval_equal_to_five_group_intervals_repeats_at_the_sixth_flush() {
        // prometheus/alertmanager#917: the flush exactly repeat_interval later is too early.
        let model = Model {
            repeat: Duration::from_secs(300),
            ..Model::default()
        };
        assert_eq!(model.effective_repeat(), Duration::from_secs(360));
        let ups = course_ups_under_overload(model);
        assert!(ups.len() >= 3, "{ups:?}");
        for w in ups.windows(2) {
            assert_eq!(w[1] - w[0], 360.0, "{ups:?}");
        }
    }

    #[test]
    fn the_first_notification_waits_for_pending_and_group_wait() {
        for group_wait in [10, 50] {
            let model = Model {
                group_wait: Duration::from_secs(group_wait),
                ..Model::default()
            };
            let ups = course_ups_under_overload(model.clone());
            // Two scrapes (0 s, 15 s) give the first value, the rule holds from the next
            // evaluation (20 s), fires `pending` later, the group's first flush comes
            // `group_wait` after that, and the autoscaler acts at its next 60 s tick.
            let fire = 20.0 + model.pending.as_secs_f64();
            let flush = fire + model.group_wait.as_secs_f64();
            let tick = (flush / 60.0).ceil() * 60.0;
            assert_eq!(ups.first(), Some(&tick), "group_wait {group_wait}: {ups:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_result() {
        let model = Model::default();
        let trace = Trace::builtin("noisy", model.capacity, 3).unwrap();
        let a = run(&model, &policy("default"), &trace);
        let b = run(&model, &policy("default"), &trace);
        assert_eq!(
            (a.scores.clone(), &a.changes, &a.supply),
            (b.scores.clone(), &b.changes, &b.supply)
        );
        let other = Model {
            seed: 99,
            ..Model::default()
        };
        let c = run(&other, &policy("default"), &trace);
        assert_ne!(a.scores, c.scores, "the seed drives the boot delays");
    }

    #[test]
    fn the_pool_stays_within_the_policys_bounds() {
        let model = Model::default();
        for name in trace::BUILTIN {
            let trace = Trace::builtin(name, model.capacity, 1).unwrap();
            for p in ["course", "hpa", "default"] {
                let pf = policy(p);
                let r = run(&model, &pf, &trace);
                assert!(
                    r.supply
                        .iter()
                        .all(|s| (pf.policy.min..=pf.policy.max).contains(s)),
                    "{p} on {name}"
                );
            }
        }
    }
}
