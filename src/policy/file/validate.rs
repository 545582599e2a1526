//! [`PolicyFile::validate`]: every problem of a policy file, each with the path of its field.

use std::time::Duration;

use super::{Check, DAYS, ForecastModel, Metric, PolicyFile, Problem, hhmm};
use crate::autoscaler::decision::Bounds;
use crate::autoscaler::target::victims::VictimOrder;

impl PolicyFile {
    /// Every problem, not just the first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: String, rule: &str| {
            out.push(Problem {
                field,
                rule: rule.to_owned(),
            })
        };
        if self.policy.name.trim().is_empty() {
            bad("policy.name".into(), "must not be empty");
        }
        if let Err(e) = Bounds::new(self.policy.min, self.policy.max) {
            bad(format!("policy.{}", e.field), &e.rule);
        }
        if self.checks.is_empty() {
            bad("check".into(), "at least one [[check]] is required");
        }
        for (i, c) in self.checks.iter().enumerate() {
            match c {
                Check::WebhookStep => {}
                Check::TargetTracking {
                    metric,
                    target,
                    tolerance,
                    warm_up,
                } => {
                    match metric {
                        Metric::Cpu if !(*target > 0.0 && *target <= 1.0) => bad(
                            format!("check[{i}].target"),
                            "must be in (0, 1]: a share of CPU, e.g. 0.6",
                        ),
                        Metric::LoadInFlight if !(*target > 0.0 && *target <= 1000.0) => bad(
                            format!("check[{i}].target"),
                            "must be in (0, 1000]: requests in flight per member, e.g. 0.8",
                        ),
                        Metric::RequestsPerSecond | Metric::RedisOps
                            if !(*target > 0.0 && *target <= 1e6) =>
                        {
                            bad(
                                format!("check[{i}].target"),
                                "must be in (0, 1000000]: per second per member, e.g. 200",
                            )
                        }
                        _ => {}
                    }
                    if let (Some(m), true) = (self.gauge_metric(), metric.gauge().is_some())
                        && m != *metric
                    {
                        bad(
                            format!("check[{i}].metric"),
                            "a policy reads one member gauge: every check on a gauge must \
                             track the same metric (and a forecast tracks load-in-flight)",
                        );
                    }
                    if !(0.0..0.5).contains(tolerance) {
                        bad(format!("check[{i}].tolerance"), "must be in [0, 0.5)");
                    }
                    if warm_up.get() > Duration::from_secs(3600) {
                        bad(format!("check[{i}].warm-up"), "must be at most 1h");
                    }
                }
                Check::Forecast {
                    target,
                    horizon,
                    model,
                    alpha,
                    beta,
                    trend_window,
                    peak_window,
                    trend_significance,
                    drop_readings,
                    k,
                    error_quantile,
                    error_measure: _,
                    warm_up_headroom,
                    error_window,
                    burst_rank,
                    jitter_k,
                    jitter_max,
                } => {
                    let f = |name: &str| format!("check[{i}].{name}");
                    if !(*target > 0.0 && *target <= 1000.0) {
                        bad(
                            f("target"),
                            "must be in (0, 1000]: requests in flight per member, e.g. 1",
                        );
                    }
                    if horizon.get().is_zero() || horizon.get() > Duration::from_secs(3600) {
                        bad(f("horizon"), "must be in (0, 1h]");
                    }
                    let (mine, others) = match model {
                        ForecastModel::Holt => ("holt", "robust"),
                        ForecastModel::Robust => ("robust", "holt"),
                    };
                    let misplaced = match model {
                        ForecastModel::Holt => vec![
                            ("trend-window", trend_window.is_some()),
                            ("peak-window", peak_window.is_some()),
                            ("trend-significance", trend_significance.is_some()),
                            ("drop-readings", drop_readings.is_some()),
                            ("jitter-k", jitter_k.is_some()),
                            ("jitter-max", jitter_max.is_some()),
                        ],
                        ForecastModel::Robust => {
                            vec![("alpha", alpha.is_some()), ("beta", beta.is_some())]
                        }
                    };
                    for (name, given) in misplaced {
                        if given {
                            bad(
                                f(name),
                                &format!("belongs to model = \"{others}\", not \"{mine}\""),
                            );
                        }
                    }
                    if alpha.is_some_and(|a| !(a > 0.0 && a <= 1.0)) {
                        bad(f("alpha"), "must be in (0, 1]");
                    }
                    if beta.is_some_and(|b| !(0.0..=1.0).contains(&b)) {
                        bad(f("beta"), "must be in [0, 1]");
                    }
                    if trend_window
                        .is_some_and(|w| w.get().is_zero() || w.get() > Duration::from_secs(3600))
                    {
                        bad(f("trend-window"), "must be in (0, 1h]");
                    }
                    if peak_window.is_some_and(|w| w.get() > Duration::from_secs(3600)) {
                        bad(f("peak-window"), "must be at most 1h");
                    }
                    if trend_significance.is_some_and(|z| !(0.0..=10.0).contains(&z)) {
                        bad(
                            f("trend-significance"),
                            "must be in [0, 10]: Mann-Kendall's |z| (0: no test, the slope counts once the trend \
                             window is covered)",
                        );
                    }
                    if drop_readings.is_some_and(|n| n > 1000) {
                        bad(
                            f("drop-readings"),
                            "must be at most 1000 readings (0: a drop never ends the peak window)",
                        );
                    }
                    if !(0.0..=10.0).contains(warm_up_headroom) {
                        bad(
                            f("warm-up-headroom"),
                            "must be in [0, 10]: a fraction of the demand",
                        );
                    }
                    if *burst_rank > 1000 {
                        bad(f("burst-rank"), "must be at most 1000 (0: no bursts)");
                    }
                    if jitter_k.is_some_and(|k| !(0.0..=100.0).contains(&k)) {
                        bad(
                            f("jitter-k"),
                            "must be in [0, 100]: times the demand's jitter (0: no jitter floor)",
                        );
                    }
                    if jitter_max.is_some_and(|m| !(0.0..=10.0).contains(&m)) {
                        bad(f("jitter-max"), "must be in [0, 10] members");
                    } else if jitter_max.is_some() && jitter_k.is_none_or(|k| k <= 0.0) {
                        bad(
                            f("jitter-max"),
                            "caps the jitter floor, which is off without a jitter-k above 0",
                        );
                    }
                    if !(0.0..=10.0).contains(k) {
                        bad(f("k"), "must be in [0, 10]");
                    }
                    if !(*error_quantile > 0.0 && *error_quantile <= 1.0) {
                        bad(f("error-quantile"), "must be in (0, 1]");
                    }
                    if error_window.get() < horizon.get()
                        || error_window.get() > Duration::from_secs(86400)
                    {
                        bad(
                            f("error-window"),
                            "must be at least the horizon and at most 24h",
                        );
                    }
                }
                Check::Threshold { bands } => {
                    if bands.is_empty() {
                        bad(format!("check[{i}].bands"), "at least one band is required");
                    }
                    for (j, b) in bands.iter().enumerate() {
                        let f = format!("check[{i}].bands[{j}]");
                        if b.above.is_none() && b.below.is_none() {
                            bad(f.clone(), "needs `above` or `below`");
                        }
                        if b.change == 0 {
                            bad(format!("{f}.change"), "must not be 0");
                        }
                        if b.above.is_some() && b.below.is_none() && b.change < 0 {
                            bad(
                                format!("{f}.change"),
                                "a band above a bound should scale up (change > 0)",
                            );
                        }
                        if b.below.is_some() && b.above.is_none() && b.change > 0 {
                            bad(
                                format!("{f}.change"),
                                "a band below a bound should scale down (change < 0)",
                            );
                        }
                        if b.for_evaluations == 0 {
                            bad(format!("{f}.for-evaluations"), "must be at least 1");
                        }
                    }
                }
            }
        }
        let b = &self.behaviour;
        for (name, w) in [
            ("scale-down-window", b.scale_down_window),
            ("scale-up-window", b.scale_up_window),
        ] {
            if w.get() > Duration::from_secs(3600) {
                bad(format!("behaviour.{name}"), "must be at most 1h");
            }
        }
        if b.max_sample_age.get().is_zero() {
            bad("behaviour.max-sample-age".into(), "must be more than 0");
        }
        for (name, limits) in [
            ("scale-up-limits", &b.scale_up_limits),
            ("scale-down-limits", &b.scale_down_limits),
        ] {
            for (j, l) in limits.iter().enumerate() {
                let f = format!("behaviour.{name}[{j}]");
                match (l.instances, l.percent) {
                    (Some(0), None) => bad(format!("{f}.instances"), "must be at least 1"),
                    (Some(_), None) => {}
                    (None, Some(p)) if !(p > 0.0 && p <= 1000.0) => {
                        bad(format!("{f}.percent"), "must be in (0, 1000]")
                    }
                    (None, Some(_)) => {}
                    _ => bad(f.clone(), "give exactly one of `instances` or `percent`"),
                }
                if l.period.get().is_zero() {
                    bad(format!("{f}.period"), "must be more than 0");
                }
            }
        }
        for (i, w) in self.schedule.iter().enumerate() {
            let f = format!("schedule[{i}]");
            if w.days.is_empty() {
                bad(format!("{f}.days"), "at least one day");
            }
            for d in &w.days {
                if !DAYS.contains(&d.as_str()) {
                    bad(
                        format!("{f}.days"),
                        "days are mon, tue, wed, thu, fri, sat, sun",
                    );
                }
            }
            match (hhmm(&w.start), hhmm(&w.end)) {
                (Some(s), Some(e)) if s < e => {}
                (Some(_), Some(_)) => bad(format!("{f}.end"), "must be after start (same day)"),
                (None, _) => bad(format!("{f}.start"), "must be HH:MM"),
                (_, None) => bad(format!("{f}.end"), "must be HH:MM"),
            }
            if w.timezone.parse::<chrono_tz::Tz>().is_err() {
                bad(
                    format!("{f}.timezone"),
                    "must be an IANA time zone such as Europe/Zurich",
                );
            }
            if w.min > self.policy.max {
                bad(format!("{f}.min"), "must not exceed policy.max");
            }
        }
        if self.scale_in.victims.is_empty() {
            bad("scale-in.victims".into(), "at least one order");
        }
        for v in &self.scale_in.victims {
            if VictimOrder::parse(v).is_none() {
                bad(
                    "scale-in.victims".into(),
                    "orders are oldest, newest, least-busy, unhealthy-first",
                );
            }
        }
        out
    }
}
