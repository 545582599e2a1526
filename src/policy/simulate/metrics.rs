//! Elasticity scores from the SPEC Research Group's elasticity metrics (Herbst, Kounev, Weber,
//! Groenda: "BUNGEE: An Elasticity Benchmark for Self-Adaptive IaaS Cloud Environments", 2015;
//! Herbst et al., "Ready for Rain? A View from SPEC Research on the Future of Cloud Metrics",
//! 2016), over demand and supply sampled every `dt`:
//!
//! - accuracy θU = 100/T · Σ max(d−s, 0)/d · Δt and θO = 100/T · Σ max(s−d, 0)/d · Δt (how far
//!   off, relative to the demand);
//! - timeshare τU = 100/T · Σ [s<d] · Δt and τO = 100/T · Σ [s>d] · Δt (how long off);
//! - instability υ = 100/(T−Δt) · Σ min(|sgn Δs − sgn Δd|, 1) · Δt (how often supply and demand
//!   do not move the same way);
//! - jitter j = (E_S − E_D)/T, supply adaptations minus demand changes per hour (positive:
//!   the policy moves more often than the demand; negative: it misses changes).
//!
//! A demand of 0 counts as 1 in the ratios (an empty pool still has one member's worth of
//! floor). The elastic speedup of a policy over a reference is the geometric mean of the
//! reference's θU, θO, τU, τO over the policy's, each with one percentage point added so that a
//! perfect 0 gives a finite ratio.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Elasticity {
    pub theta_u: f64,
    pub theta_o: f64,
    pub tau_u: f64,
    pub tau_o: f64,
    pub instability: f64,
    pub jitter_per_hour: f64,
    /// Σ supply · Δt, in instance-seconds.
    pub supply_seconds: f64,
}

fn sgn(x: i64) -> i64 {
    x.signum()
}

/// The scores of a supply curve against a demand curve, both sampled every `dt` seconds.
pub fn elasticity(demand: &[u64], supply: &[u64], dt: f64) -> Elasticity {
    assert_eq!(demand.len(), supply.len(), "one supply per demand sample");
    let n = demand.len();
    let t = n as f64 * dt;
    let (mut tu, mut to, mut nu, mut no) = (0.0, 0.0, 0usize, 0usize);
    for (&d, &s) in demand.iter().zip(supply) {
        let base = d.max(1) as f64;
        if s < d {
            tu += (d - s) as f64 / base;
            nu += 1;
        } else if s > d {
            to += (s - d) as f64 / base;
            no += 1;
        }
    }
    let pct = |x: f64| if t > 0.0 { 100.0 * x * dt / t } else { 0.0 };
    let mut unstable = 0usize;
    let (mut es, mut ed) = (0usize, 0usize);
    for i in 1..n {
        let ds = supply[i] as i64 - supply[i - 1] as i64;
        let dd = demand[i] as i64 - demand[i - 1] as i64;
        if (sgn(ds) - sgn(dd)).abs().min(1) == 1 {
            unstable += 1;
        }
        es += usize::from(ds != 0);
        ed += usize::from(dd != 0);
    }
    let instability = if n > 1 {
        100.0 * unstable as f64 / (n - 1) as f64
    } else {
        0.0
    };
    Elasticity {
        theta_u: pct(tu),
        theta_o: pct(to),
        tau_u: pct(nu as f64),
        tau_o: pct(no as f64),
        instability,
        jitter_per_hour: if t > 0.0 {
            (es as f64 - ed as f64) / (t / 3600.0)
        } else {
            0.0
        },
        supply_seconds: supply.iter().sum::<u64>() as f64 * dt,
    }
}

/// The elastic speedup of `policy` over `reference` (> 1: the policy is better).
pub fn speedup(policy: &Elasticity, reference: &Elasticity) -> f64 {
    let pairs = [
        (reference.theta_u, policy.theta_u),
        (reference.theta_o, policy.theta_o),
        (reference.tau_u, policy.tau_u),
        (reference.tau_o, policy.tau_o),
    ];
    let log_sum: f64 = pairs
        .iter()
        .map(|(r, p)| ((r + 1.0) / (p + 1.0)).ln())
        .sum();
    (log_sum / pairs.len() as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round2(x: f64) -> f64 {
        (x * 100.0).round() / 100.0
    }

    /// The hand-computed case: Δt = 60 s, 8 samples.
    /// Under: t2 (4 vs 2): 2/4, t3 (4 vs 3): 1/4 -> 0.75 / 8 = 9.375 %.
    /// Over: t5 (3 vs 4): 1/3, t6 (3 vs 4): 1/3, t7 (2 vs 3): 1/2 -> 1.1667 / 8 = 14.583 %.
    /// Timeshare: 2 of 8 under, 3 of 8 over. Supply: 24 instance-minutes.
    #[test]
    fn reproduces_the_hand_computed_case() {
        let e = elasticity(&[2, 2, 4, 4, 4, 3, 3, 2], &[2, 2, 2, 3, 4, 4, 4, 3], 60.0);
        assert_eq!(round2(e.theta_u), 9.38);
        assert_eq!(round2(e.theta_o), 14.58);
        assert_eq!(round2(e.tau_u), 25.0);
        assert_eq!(round2(e.tau_o), 37.5);
        assert_eq!(e.supply_seconds / 60.0, 24.0);
        // Demand changes at t2, t5, t7; supply at t3, t4, t7: 3 and 3 -> jitter 0.
        assert_eq!(e.jitter_per_hour, 0.0);
        // Steps (Δs, Δd): (0,0) (0,+) (+,0) (+,0) (0,-) (0,0) (-,-): 4 of 7 disagree.
        assert_eq!(round2(e.instability), round2(400.0 / 7.0));
    }

    #[test]
    fn a_perfect_supply_scores_zero_and_speedup_is_relative() {
        let d = [1, 3, 5, 2];
        let perfect = elasticity(&d, &d, 10.0);
        assert_eq!(
            (
                perfect.theta_u,
                perfect.theta_o,
                perfect.tau_u,
                perfect.tau_o
            ),
            (0.0, 0.0, 0.0, 0.0)
        );
        let lagging = elasticity(&d, &[1, 1, 3, 5], 10.0);
        assert!(speedup(&perfect, &lagging) > 1.0);
        assert!(speedup(&lagging, &perfect) < 1.0);
        assert_eq!(speedup(&lagging, &lagging), 1.0);
    }
}
