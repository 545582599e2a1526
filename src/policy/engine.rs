//! The policy engine's arithmetic: strategies' recommendations, then the behaviour every
//! strategy shares (safest wins, stabilization windows, rate limits, bounds). Pure functions of
//! their inputs and the clock they are given, so that the simulator runs exactly this code.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use super::timed;
use crate::autoscaler::decision::Bounds;

/// One member as the engine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Time since the member was created.
    pub age: Duration,
    /// Running and passing the load balancer's check.
    pub ready: bool,
    /// The metric for this member (e.g. CPU utilisation 0..1), with its age; `None` when
    /// missing.
    pub value: Option<f64>,
}

/// What a tick knows.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// The pool's size (members asked for, booting ones included: they count as supply).
    pub current: u64,
    pub members: Vec<Member>,
    /// How old the newest metric sample is; `None` when there is no sample at all.
    pub sample_age: Option<Duration>,
}

/// `ceil`, forgiving the last bits of floating-point error (0.2 / 0.1 is 2.0000000000000004;
/// HPA computes in integer milli-units and gets 2).
fn ceil(x: f64) -> u64 {
    (x - 1e-9).ceil().max(0.0) as u64
}

/// The HPA proportional rule with its dead band, warm-up and missing-data rules.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetTracking {
    /// The target value of the per-member metric (e.g. 0.6 for 60 % CPU).
    pub target: f64,
    /// No change while |metric / target - 1| <= tolerance (HPA: 0.1).
    pub tolerance: f64,
    /// Members younger than this are left out of the average (HPA's CPU initialization period).
    pub warm_up: Duration,
}

/// Why a strategy recommends what it does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proposal {
    pub desired: u64,
    pub reason: String,
}

impl TargetTracking {
    /// `desired = ceil(current_ready x metric / target)`, as Kubernetes' HPA computes it:
    /// - members still warming up or not ready are left out of the first estimate;
    /// - if the estimate says up, they count as using 0 % (so booting capacity counts as supply);
    ///   if it says down, members without a value count as using 100 % (so missing data never
    ///   speeds up a scale-in);
    /// - within the tolerance, or when the corrected estimate reverses direction, nothing changes.
    pub fn recommend(&self, input: &Input) -> Proposal {
        let current = input.current;
        let warmed: Vec<f64> = input
            .members
            .iter()
            .filter(|m| m.ready && m.age >= self.warm_up)
            .filter_map(|m| m.value)
            .collect();
        if warmed.is_empty() {
            return Proposal {
                desired: current,
                reason: "no warmed-up member with a value".into(),
            };
        }
        let ratio = warmed.iter().sum::<f64>() / warmed.len() as f64 / self.target;
        if (ratio - 1.0).abs() <= self.tolerance + 1e-9 {
            return Proposal {
                desired: current,
                reason: format!(
                    "usage ratio {ratio:.3} within the tolerance {}",
                    self.tolerance
                ),
            };
        }
        // The members left out, and the pool's members not yet created (size > members).
        let left_out = input.members.len() - warmed.len()
            + (current as usize).saturating_sub(input.members.len());
        if left_out == 0 {
            let desired = ceil(warmed.len() as f64 * ratio);
            return Proposal {
                desired,
                reason: format!("ratio {ratio:.3} over {} member(s)", warmed.len()),
            };
        }
        // Recompute with the left-out members assumed at 0 % (scale up) or 100 % (scale down).
        let assumed = if ratio > 1.0 { 0.0 } else { self.target };
        let total: f64 = warmed.iter().sum::<f64>() + assumed * left_out as f64;
        let n = warmed.len() + left_out;
        let new_ratio = total / n as f64 / self.target;
        if (new_ratio - 1.0).abs() <= self.tolerance + 1e-9 || (new_ratio > 1.0) != (ratio > 1.0) {
            return Proposal {
                desired: current,
                reason: format!(
                    "ratio {ratio:.3}, but {new_ratio:.3} counting {left_out} member(s) without a usable value: hold"
                ),
            };
        }
        let desired = ceil(n as f64 * new_ratio);
        Proposal {
            desired,
            reason: format!(
                "ratio {new_ratio:.3} over {n} member(s) ({left_out} assumed at {:.0} %)",
                assumed / self.target * 100.0
            ),
        }
    }
}

/// A band of the threshold strategy: while the metric is above (or below) `bound` for `for_evaluations`
/// evaluations in a row, change the size by `change`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Band {
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub change: i64,
    pub for_evaluations: u32,
}

/// Step changes by bands of the pool-average metric, debounced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    pub bands: Vec<Band>,
    #[serde(skip)]
    streaks: Vec<u32>,
}

impl Threshold {
    pub fn new(bands: Vec<Band>) -> Self {
        let n = bands.len();
        Self {
            bands,
            streaks: vec![0; n],
        }
    }

    /// The largest change among the bands whose condition has held long enough.
    pub fn recommend(&mut self, current: u64, average: Option<f64>) -> Proposal {
        let Some(v) = average else {
            self.streaks.iter_mut().for_each(|s| *s = 0);
            return Proposal {
                desired: current,
                reason: "no value".into(),
            };
        };
        let mut best: Option<(i64, usize)> = None;
        for (i, b) in self.bands.iter().enumerate() {
            let holds = b.above.is_none_or(|a| v > a) && b.below.is_none_or(|l| v < l);
            self.streaks[i] = if holds { self.streaks[i] + 1 } else { 0 };
            if holds && self.streaks[i] >= b.for_evaluations.max(1) {
                // The largest change: up beats down, a bigger step up beats a smaller one, and the
                // smaller step down wins (the safest).
                let better = best.is_none_or(|(c, _)| b.change > c);
                if better {
                    best = Some((b.change, i));
                }
            }
        }
        match best {
            Some((change, i)) => Proposal {
                desired: (current as i64 + change).max(0) as u64,
                reason: format!(
                    "value {v:.3} in band {i} for {} evaluation(s): {change:+}",
                    self.streaks[i]
                ),
            },
            None => Proposal {
                desired: current,
                reason: format!("value {v:.3} in no band long enough"),
            },
        }
    }
}

/// A limit on how fast the size may change in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum RateLimit {
    /// At most this many instances per period.
    Instances { value: u64, period: Duration },
    /// At most this percentage of the size at the start of the period, per period.
    Percent { value: f64, period: Duration },
}

/// Behaviour shared by every strategy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Behaviour {
    pub min: u64,
    pub max: u64,
    /// Scale down only to the highest recommendation of this window (HPA: 300 s).
    pub down_window: Duration,
    /// Scale up only to the lowest recommendation of this window (HPA: 0).
    pub up_window: Duration,
    pub up_limits: Vec<RateLimit>,
    pub down_limits: Vec<RateLimit>,
    /// Data older than this is stale: it never scales in.
    pub max_sample_age: Duration,
}

/// The engine's memory between ticks: past recommendations and past changes.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// (time, recommendation), oldest first.
    recommendations: VecDeque<(Duration, u64)>,
    /// (time, size before, size after) of each change, oldest first.
    changes: VecDeque<(Duration, u64, u64)>,
}

/// The outcome of [`Behaviour::apply`]: each stage's size, and the rule that had the last word.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stabilized {
    pub raw: u64,
    pub stabilized: u64,
    pub desired: u64,
    pub clipped_by: Option<String>,
}

impl Behaviour {
    /// The pool changed from `from` to `to` at `now` (the controller says so once the change
    /// was accepted): the rate limits' budget is spent by real changes only. A recommendation
    /// held by the busy gate, a dry run or a failed call spends nothing (Kubernetes' HPA records
    /// a scale event only after the scale succeeded).
    pub fn applied(&self, now: Duration, from: u64, to: u64, h: &mut History) {
        if from == to {
            return;
        }
        h.changes.push_back((now, from, to));
        let keep = self
            .up_limits
            .iter()
            .chain(&self.down_limits)
            .map(|l| match l {
                RateLimit::Instances { period, .. } | RateLimit::Percent { period, .. } => *period,
            })
            .max()
            .unwrap_or_default();
        timed::forget_older(&mut h.changes, now, keep, |c| c.0);
    }

    /// Safest wins over several recommendations (up if any asks up; down only if all do, and
    /// only as far as the highest), then the stabilization windows, the rate limits and the
    /// bounds. `now` is any monotonic clock; `stale` blocks scale-in.
    pub fn apply(
        &self,
        now: Duration,
        current: u64,
        recs: &[u64],
        stale: bool,
        h: &mut History,
    ) -> Stabilized {
        let raw = recs.iter().copied().max().unwrap_or(current);
        let longest = self.down_window.max(self.up_window);
        h.recommendations.push_back((now, raw));
        timed::forget_older(&mut h.recommendations, now, longest, |r| r.0);
        let within = |w: Duration| timed::within(&h.recommendations, now, w).map(|(_, r)| *r);
        let mut clipped_by = None;
        let mut desired = raw;
        if raw < current {
            let highest = within(self.down_window).max().unwrap_or(raw);
            if highest > desired {
                desired = highest;
                clipped_by = Some(format!(
                    "down stabilization window {}s",
                    self.down_window.as_secs()
                ));
            }
        } else if raw > current {
            let lowest = within(self.up_window).min().unwrap_or(raw);
            if lowest < desired {
                desired = lowest.max(current);
                clipped_by = Some(format!(
                    "up stabilization window {}s",
                    self.up_window.as_secs()
                ));
            }
        }
        let stabilized = desired;
        if desired < current && stale {
            desired = current;
            clipped_by = Some("stale or missing data never scales in".into());
        }
        // Rate limits: the most permissive policy of the direction (HPA's selectPolicy Max).
        let limits = if desired > current {
            &self.up_limits
        } else {
            &self.down_limits
        };
        if desired != current && !limits.is_empty() {
            let allowed = limits
                .iter()
                .map(|l| {
                    let period = match l {
                        RateLimit::Instances { period, .. } | RateLimit::Percent { period, .. } => {
                            *period
                        }
                    };
                    let recent: Vec<&(Duration, u64, u64)> = h
                        .changes
                        .iter()
                        .filter(|(t, _, _)| now.saturating_sub(*t) < period)
                        .collect();
                    let start = recent.first().map_or(current, |(_, before, _)| *before);
                    let moved: u64 = recent
                        .iter()
                        .filter(|(_, b, a)| (a > b) == (desired > current))
                        .map(|(_, b, a)| a.abs_diff(*b))
                        .sum();
                    let budget = match l {
                        RateLimit::Instances { value, .. } => *value,
                        RateLimit::Percent { value, .. } => {
                            ((start as f64) * value / 100.0).ceil().max(1.0) as u64
                        }
                    };
                    budget.saturating_sub(moved)
                })
                .max()
                .unwrap_or(0);
            let step = desired.abs_diff(current);
            if step > allowed {
                desired = if desired > current {
                    current + allowed
                } else {
                    current - allowed
                };
                clipped_by = Some(format!("rate limit: {allowed} instance(s) now"));
            }
        }
        let (bounded, clip) = Bounds {
            min: self.min,
            max: self.max,
        }
        .clamp(desired);
        if clip.is_some() {
            desired = bounded;
            clipped_by = clip;
        }
        Stabilized {
            raw,
            stabilized,
            desired,
            clipped_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(values: &[f64]) -> Vec<Member> {
        values
            .iter()
            .map(|v| Member {
                age: Duration::from_secs(600),
                ready: true,
                value: Some(*v),
            })
            .collect()
    }

    fn tt(target: f64) -> TargetTracking {
        TargetTracking {
            target,
            tolerance: 0.1,
            warm_up: Duration::from_secs(60),
        }
    }

    fn input(current: u64, m: Vec<Member>) -> Input {
        Input {
            current,
            members: m,
            sample_age: Some(Duration::from_secs(5)),
        }
    }

    /// The Kubernetes HPA documentation's examples of `desiredReplicas = ceil[currentReplicas *
    /// (currentMetricValue / desiredMetricValue)]`.
    #[test]
    fn target_tracking_reproduces_the_hpa_documentation() {
        // "if the current metric value is 200m, and the desired value is 100m, the number of
        // replicas will be doubled, since 200.0 / 100.0 == 2.0"
        assert_eq!(
            tt(0.1)
                .recommend(&input(3, members(&[0.2, 0.2, 0.2])))
                .desired,
            6
        );
        // "If the current value is instead 50m, you'll halve the number of replicas"
        assert_eq!(tt(0.1).recommend(&input(4, members(&[0.05; 4]))).desired, 2);
        // "if the ratio is sufficiently close to 1.0 (within a globally-configurable tolerance,
        // 0.1 by default) the control plane skips any scaling action"
        assert_eq!(
            tt(0.1).recommend(&input(4, members(&[0.109; 4]))).desired,
            4
        );
        assert_eq!(
            tt(0.1).recommend(&input(4, members(&[0.111; 4]))).desired,
            5
        );
        // The walkthrough: 50 % target, one pod at 250 % -> ceil(1 x 250 / 50) = 5 replicas...
        assert_eq!(tt(0.5).recommend(&input(1, members(&[2.5]))).desired, 5);
        // ... and with load gone, 0 % -> the minimum (clamped later by the bounds).
        assert_eq!(tt(0.5).recommend(&input(5, members(&[0.0; 5]))).desired, 0);
    }

    #[test]
    fn the_tolerance_boundary_is_inclusive() {
        // Exactly 10 % off the target: no change; just past it: change.
        assert_eq!(
            tt(0.5).recommend(&input(10, members(&[0.55; 10]))).desired,
            10
        );
        assert_eq!(
            tt(0.5)
                .recommend(&input(10, members(&[0.5501; 10])))
                .desired,
            12
        );
        assert_eq!(
            tt(0.5).recommend(&input(10, members(&[0.45; 10]))).desired,
            10
        );
    }

    #[test]
    fn warming_members_are_left_out_and_count_as_zero_on_the_way_up() {
        let mut m = members(&[1.0, 1.0]);
        m.push(Member {
            age: Duration::from_secs(10),
            ready: true,
            value: Some(1.0),
        });
        // Two warmed at 100 % vs target 50 %: ratio 2; the warming one counts as 0 %:
        // (1 + 1 + 0) / 3 / 0.5 = 1.333 -> ceil(3 x 1.333) = 4, not 6.
        let r = tt(0.5).recommend(&input(3, m));
        assert_eq!(r.desired, 4, "{}", r.reason);
        // Booting capacity (size 4, 2 members so far) counts as supply.
        let r = tt(0.5).recommend(&input(4, members(&[0.8, 0.8])));
        assert_eq!(r.desired, 4, "{}", r.reason);
    }

    #[test]
    fn missing_values_count_as_full_on_the_way_down() {
        let mut m = members(&[0.1, 0.1]);
        m.push(Member {
            age: Duration::from_secs(600),
            ready: true,
            value: None,
        });
        // Without the third: ratio 0.2 -> 1 member. With it at 100 % of target: (0.1+0.1+0.5)/3/0.5
        // = 0.467 -> ceil(3 x 0.467) = 2.
        assert_eq!(tt(0.5).recommend(&input(3, m)).desired, 2);
    }

    fn behaviour() -> Behaviour {
        Behaviour {
            min: 1,
            max: 10,
            down_window: Duration::from_secs(300),
            up_window: Duration::ZERO,
            up_limits: vec![],
            down_limits: vec![],
            max_sample_age: Duration::from_secs(60),
        }
    }

    #[test]
    fn scale_down_goes_only_to_the_highest_recommendation_of_the_window() {
        let b = behaviour();
        let mut h = History::default();
        let t = Duration::from_secs;
        assert_eq!(b.apply(t(0), 6, &[6], false, &mut h).desired, 6);
        assert_eq!(b.apply(t(60), 6, &[5], false, &mut h).desired, 6);
        assert_eq!(b.apply(t(120), 6, &[2], false, &mut h).desired, 6);
        // At 301 s the 6 of t=0 has left the window; the highest left is 5.
        let s = b.apply(t(301), 6, &[2], false, &mut h);
        assert_eq!((s.raw, s.desired), (2, 5));
        assert!(s.clipped_by.unwrap().contains("stabilization"));
        // Up is immediate.
        assert_eq!(b.apply(t(302), 5, &[8], false, &mut h).desired, 8);
    }

    #[test]
    fn rate_limits_pick_the_most_permissive_policy() {
        let mut b = behaviour();
        b.down_window = Duration::ZERO;
        b.up_limits = vec![
            RateLimit::Instances {
                value: 2,
                period: Duration::from_secs(60),
            },
            RateLimit::Percent {
                value: 100.0,
                period: Duration::from_secs(60),
            },
        ];
        let mut h = History::default();
        let t = Duration::from_secs;
        // From 1: max(2 instances, 100 % of 1 = 1) = 2.
        let s = b.apply(t(0), 1, &[9], false, &mut h);
        assert_eq!(s.desired, 3);
        assert!(s.clipped_by.unwrap().contains("rate limit"));
        b.applied(t(0), 1, 3, &mut h);
        // Within the same minute, the 2-instance budget is spent; 100 % of 1 (the size at the
        // start of the period) is 1, also spent.
        assert_eq!(b.apply(t(30), 3, &[9], false, &mut h).desired, 3);
        // A minute later the budget is back: max(2, 100 % of 3) = 3.
        assert_eq!(b.apply(t(61), 3, &[9], false, &mut h).desired, 6);
    }

    #[test]
    fn a_change_that_was_not_made_spends_no_budget() {
        // 4 instances a minute. The pool goes 2 -> 3; then the controller holds two wanted
        // changes (members booting); once it is free, the unspent budget (3) is there at once.
        let mut b = behaviour();
        b.up_limits = vec![RateLimit::Instances {
            value: 4,
            period: Duration::from_secs(60),
        }];
        let mut h = History::default();
        let t = Duration::from_secs;
        assert_eq!(b.apply(t(0), 2, &[3], false, &mut h).desired, 3);
        b.applied(t(0), 2, 3, &mut h);
        // Wanted and held: never `applied`.
        assert_eq!(b.apply(t(15), 3, &[5], false, &mut h).desired, 5);
        assert_eq!(b.apply(t(30), 3, &[6], false, &mut h).desired, 6);
        let s = b.apply(t(45), 3, &[6], false, &mut h);
        assert_eq!(s.desired, 6, "{s:?}");
        assert_eq!(s.clipped_by, None);
    }

    #[test]
    fn stale_data_blocks_scale_in_and_safest_wins() {
        let mut b = behaviour();
        b.down_window = Duration::ZERO;
        let mut h = History::default();
        let s = b.apply(Duration::ZERO, 5, &[2], true, &mut h);
        assert_eq!(s.desired, 5);
        assert!(s.clipped_by.unwrap().contains("stale"));
        // Stale data does not block scaling out.
        assert_eq!(
            b.apply(Duration::from_secs(1), 5, &[7], true, &mut h)
                .desired,
            7
        );
        // Several checks: any up -> up; down only to the highest.
        assert_eq!(
            b.apply(Duration::from_secs(2), 5, &[2, 6, 3], false, &mut h)
                .desired,
            6
        );
        assert_eq!(
            b.apply(Duration::from_secs(3), 5, &[2, 4, 3], false, &mut h)
                .desired,
            4
        );
    }

    #[test]
    fn threshold_bands_debounce_and_up_beats_down() {
        let mut th = Threshold::new(vec![
            Band {
                above: Some(0.8),
                below: None,
                change: 1,
                for_evaluations: 2,
            },
            Band {
                above: Some(0.95),
                below: None,
                change: 3,
                for_evaluations: 1,
            },
            Band {
                above: None,
                below: Some(0.2),
                change: -1,
                for_evaluations: 3,
            },
        ]);
        assert_eq!(
            th.recommend(4, Some(0.85)).desired,
            4,
            "one evaluation is not enough"
        );
        assert_eq!(th.recommend(4, Some(0.85)).desired, 5);
        assert_eq!(
            th.recommend(4, Some(0.99)).desired,
            7,
            "the bigger step wins"
        );
        for _ in 0..2 {
            assert_eq!(th.recommend(4, Some(0.1)).desired, 4);
        }
        assert_eq!(th.recommend(4, Some(0.1)).desired, 3);
        assert_eq!(th.recommend(4, None).desired, 4);
        assert_eq!(
            th.recommend(4, Some(0.1)).desired,
            4,
            "missing data resets the streak"
        );
    }

    proptest::proptest! {
        #[test]
        fn the_desired_size_stays_in_bounds_and_within_rate_limits(
            steps in proptest::collection::vec((0u64..30, proptest::bool::ANY), 1..60),
            min in 0u64..4, span in 0u64..8, limit in 1u64..4,
        ) {
            let mut b = behaviour();
            b.min = min;
            b.max = min + span;
            b.up_limits = vec![RateLimit::Instances { value: limit, period: Duration::from_secs(60) }];
            b.down_limits = vec![RateLimit::Instances { value: limit, period: Duration::from_secs(60) }];
            let mut h = History::default();
            let mut size = b.min;
            let mut moves: Vec<(u64, u64)> = Vec::new();
            for (i, (rec, stale)) in steps.into_iter().enumerate() {
                let now = Duration::from_secs(15 * i as u64);
                let s = b.apply(now, size, &[rec], stale, &mut h);
                proptest::prop_assert!(b.min <= s.desired && s.desired <= b.max);
                if stale && s.desired < size {
                    proptest::prop_assert!(size > b.max, "scaled in on stale data");
                }
                if s.desired != size {
                    moves.push((now.as_secs(), size.abs_diff(s.desired)));
                    b.applied(now, size, s.desired, &mut h);
                }
                // Outside forced moves into the bounds, no 60 s window moves more than the limit.
                let in_bounds = (b.min..=b.max).contains(&size);
                if in_bounds {
                    let recent: u64 = moves.iter().filter(|(t, _)| now.as_secs() - t < 60).map(|(_, d)| d).sum();
                    proptest::prop_assert!(recent <= 2 * limit, "moved {recent} in a minute");
                }
                size = s.desired;
            }
        }
    }
}
