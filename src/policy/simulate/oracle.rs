//! The oracle: the best any policy can do in this model, computed from the whole trace.
//!
//! It reads the demand at every sample (`ceil(load / capacity)`, clamped to the policy's
//! bounds), and gives each unit of it a member of its own ("level" k is served by the k-th
//! member). A member is started exactly `boot + nlb_delay` before its level is needed (the
//! mean boot: the oracle's boots have no jitter), so that it is in the NLB at that sample, and
//! it is removed right after the last sample that needs it, then billed for `drain` more, as
//! the simulator bills every removed member.
//!
//! Billing: the simulator bills per second (members, booting and draining ones included, each
//! sample interval; Exoscale bills compute instances by the second, see docs/POLICY.md). So a
//! member whose level falls idle for a gap and is needed again is kept through the gap when the
//! gap is no longer than `boot + nlb_delay + drain`: removing it and starting another would bill
//! the drain and the boot, which cost at least as much as the gap.
//!
//! The oracle starts like every policy, with the model's initial members ready at 0: a member
//! it starts at 0 is ready at `boot + nlb_delay` at the earliest, so demand above the initial
//! size before then is missed by the oracle too (its SLO minutes say so).

use super::{Change, Model, Run, Series};

/// (start, ready, removed) of each member's life, in seconds; removed = infinity when it
/// stays to the end.
type Life = (f64, f64, f64);

/// The oracle's run on `demand` (sampled at `model.sample` from 0), with `min..=max` bounds.
pub fn run(model: &Model, trace: &super::trace::Trace, min: u64, max: u64) -> Run {
    let dt = model.sample.as_secs_f64();
    let end = trace.length.as_secs_f64();
    let lead = (model.boot + model.nlb_delay).as_secs_f64();
    let drain = model.drain.as_secs_f64();
    let times: Vec<f64> = (0u64..)
        .map(|i| i as f64 * dt)
        .take_while(|t| *t < end)
        .collect();
    let demand: Vec<u64> = times
        .iter()
        .map(|t| (trace.at(*t) / model.capacity - 1e-9).ceil().max(0.0) as u64)
        .collect();
    let initial = model.initial.clamp(min, max);
    let mut lives: Vec<Life> = Vec::new();
    for level in 1..=max {
        // The samples that need this level.
        let needed: Vec<usize> = (0..times.len())
            .filter(|&i| demand[i].clamp(min, max) >= level)
            .collect();
        // Merge them into service intervals [first, last] where a gap is not worth a restart.
        let mut intervals: Vec<(usize, usize)> = Vec::new();
        for &i in &needed {
            match intervals.last_mut() {
                Some((_, last)) if i == *last + 1 => *last = i,
                Some((_, last)) if times[i] - times[*last + 1] <= lead + drain => *last = i,
                _ => intervals.push((i, i)),
            }
        }
        let mut exists_from_zero = level <= initial;
        for (first, last) in intervals {
            let removed = if last + 1 < times.len() {
                times[last + 1]
            } else {
                f64::INFINITY
            };
            if exists_from_zero {
                exists_from_zero = false;
                // An initial member: kept from 0 if its first need is within reach.
                if times[first] <= lead + drain {
                    lives.push((-1.0, -1.0, removed));
                    continue;
                }
                // Otherwise it goes at 0 (billed for the drain) and one comes back later.
                lives.push((-1.0, -1.0, 0.0));
            }
            let start = (times[first] - lead).max(0.0);
            lives.push((start, start + lead, removed));
        }
        if exists_from_zero {
            // An initial member no sample needs: it goes at 0.
            lives.push((-1.0, -1.0, 0.0));
        }
    }
    let mut supply = Vec::with_capacity(times.len());
    let mut ready = Vec::with_capacity(times.len());
    let (mut billed, mut slo) = (0.0, 0.0);
    for (i, &t) in times.iter().enumerate() {
        let alive = lives.iter().filter(|l| l.0 <= t && t < l.2).count() as u64;
        let serving = lives.iter().filter(|l| l.1 <= t && t < l.2).count() as u64;
        let paid = lives.iter().filter(|l| l.0 <= t && t < l.2 + drain).count();
        supply.push(alive);
        ready.push(serving);
        billed += paid as f64 * dt;
        if serving < demand[i] {
            slo += dt;
        }
    }
    let mut changes = Vec::new();
    for i in 1..supply.len() {
        if supply[i] != supply[i - 1] {
            changes.push(Change {
                t: times[i],
                from: supply[i - 1],
                to: supply[i],
            });
        }
    }
    Run::scored(
        "oracle".into(),
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
    use super::super::trace::Trace;
    use super::*;
    use std::time::Duration;

    fn model() -> Model {
        Model {
            capacity: 10.0,
            boot: Duration::from_secs(60),
            nlb_delay: Duration::from_secs(20),
            drain: Duration::from_secs(35),
            sample: Duration::from_secs(10),
            initial: 1,
            ..Model::default()
        }
    }

    /// 1 instance's worth for 10 min, 3 for 10 min, 1 for 10 min. Lead 80 s, drain 35 s.
    /// Two members start at 600 - 80 = 520 s, are ready at 600 s, leave at 1200 s and are
    /// billed to 1235 s: 2 x (1235 - 520) = 1430 s, sampled every 10 s: samples 520..1230 are
    /// 72 each -> 1440 s; plus the first member all along: 1800 s. No SLO minute is missed.
    #[test]
    fn a_step_is_met_exactly_one_lead_time_ahead() {
        let trace = Trace::csv("step", "0,10\n600,30\n1200,10\n1800,10\n").unwrap();
        let r = run(&model(), &trace, 1, 10);
        assert_eq!(r.scores.slo_violation_minutes, 0.0);
        assert_eq!(r.scores.instance_seconds, 1800.0 + 1440.0);
        assert_eq!(
            r.changes,
            vec![
                Change {
                    t: 520.0,
                    from: 1,
                    to: 3
                },
                Change {
                    t: 1200.0,
                    from: 3,
                    to: 1
                }
            ]
        );
        // In the NLB exactly when needed.
        assert_eq!((r.ready[59], r.ready[60]), (1, 3));
    }

    /// A gap no longer than lead + drain (115 s) is cheaper kept; a longer one is not.
    #[test]
    fn short_gaps_are_kept_through_long_ones_are_not() {
        // Level 2 needed 300-600 s and again from 700 s (gap 100 s): kept.
        let kept = Trace::csv("k", "0,10\n300,20\n600,10\n700,20\n1200,20\n").unwrap();
        let r = run(&model(), &kept, 1, 10);
        assert!(r.supply[60..70].iter().all(|s| *s == 2), "{:?}", r.supply);
        // Again from 800 s (gap 200 s): removed at 600, restarted at 720.
        let gone = Trace::csv("g", "0,10\n300,20\n600,10\n800,20\n1200,20\n").unwrap();
        let r = run(&model(), &gone, 1, 10);
        assert_eq!((r.supply[60], r.supply[71], r.supply[72]), (1, 1, 2));
        assert_eq!(r.scores.slo_violation_minutes, 0.0);
    }

    /// Demand above the initial pool at 0 cannot be met before one lead time, by anyone.
    #[test]
    fn the_start_is_the_same_for_the_oracle() {
        let trace = Trace::csv("x", "0,30\n600,30\n").unwrap();
        let r = run(&model(), &trace, 1, 10);
        // Ready at 80 s: samples 0..70 miss (8 samples, 80 s).
        assert_eq!(r.scores.slo_violation_minutes, 80.0 / 60.0);
        // The bounds clamp what it aims for.
        let r = run(&model(), &trace, 1, 2);
        assert!(r.supply.iter().all(|s| *s <= 2));
    }
}
