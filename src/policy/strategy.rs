//! A policy file as an autoscaler strategy: every check recommends, then the shared behaviour
//! (safest wins, stabilization, stale data, rate limits, bounds with the schedule's minimum)
//! decides. The controller then only gates on a busy pool; it does not add its one-step rule.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::engine::{History, Input, Member, Threshold};
use super::file::{Check, Metric, PolicyFile};
use super::forecast;
use crate::autoscaler::source::Signals;
use crate::autoscaler::source::prometheus::newest_age;
use crate::autoscaler::strategy::{Detail, InputRecord, Recommendation, Strategy};
use crate::autoscaler::target::Observation;

/// Where a reloaded policy waits for the next tick (SIGHUP puts it there).
pub type ReloadSlot = std::sync::Arc<std::sync::Mutex<Option<PolicyFile>>>;

/// On SIGHUP, re-reads the policy file at `path`; a valid policy (after `adjust`, which applies
/// the deployment's bounds) replaces the running one at the next tick, an invalid one is
/// explained in the log and changes nothing.
pub fn spawn_reload(
    path: std::path::PathBuf,
    slot: ReloadSlot,
    adjust: impl Fn(PolicyFile) -> Result<PolicyFile, String> + Send + 'static,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let parsed = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| vec![e.to_string()])
                .and_then(|t| {
                    PolicyFile::parse(&t).map_err(|ps| ps.iter().map(|p| p.to_string()).collect())
                })
                .and_then(|p| adjust(p).map_err(|e| vec![e]));
            match parsed {
                Ok(p) => {
                    tracing::info!(file = %path.display(), "policy file read; it applies at the next tick");
                    *slot.lock().expect("reload lock") = Some(p);
                }
                Err(problems) => {
                    for p in problems {
                        tracing::warn!(file = %path.display(), problem = %p, "policy reload refused; keeping the running policy");
                    }
                }
            }
        }
    });
    Ok(())
}

pub struct PolicyStrategy {
    file: PolicyFile,
    /// `policy NAME`, for decision records (leaked once per load: a handful per process).
    name: &'static str,
    history: History,
    thresholds: Vec<Threshold>,
    /// One state per forecast check, in order.
    forecasts: Vec<forecast::State>,
    started: Instant,
    reload: ReloadSlot,
}

impl PolicyStrategy {
    pub fn new(file: PolicyFile) -> Self {
        let thresholds = file.bands().into_iter().map(Threshold::new).collect();
        let forecasts = vec![forecast::State::default(); file.forecasts().len()];
        Self {
            name: Box::leak(format!("policy {}", file.policy.name).into_boxed_str()),
            file,
            history: History::default(),
            thresholds,
            forecasts,
            started: Instant::now(),
            reload: ReloadSlot::default(),
        }
    }

    /// The slot a reloaded (and validated) policy is put in; taken at the next tick.
    pub fn reload_slot(&self) -> ReloadSlot {
        self.reload.clone()
    }

    /// Takes a waiting reload. The bounds are the controller's too, so a policy that changes
    /// min or max is refused (it needs a restart); the history of recommendations is kept.
    fn take_reload(&mut self) {
        let Some(new) = self.reload.lock().expect("reload lock").take() else {
            return;
        };
        if (new.policy.min, new.policy.max) != (self.file.policy.min, self.file.policy.max) {
            tracing::error!(
                old_min = self.file.policy.min,
                old_max = self.file.policy.max,
                new_min = new.policy.min,
                new_max = new.policy.max,
                "policy reload refused: changing min or max needs a restart; keeping the old policy"
            );
            return;
        }
        tracing::info!(policy = %new.policy.name, "policy reloaded");
        self.thresholds = new.bands().into_iter().map(Threshold::new).collect();
        // A forecast keeps what it learnt when the reload keeps the same number of them.
        if new.forecasts().len() != self.forecasts.len() {
            self.forecasts = vec![forecast::State::default(); new.forecasts().len()];
        }
        if new.policy.name != self.file.policy.name {
            self.name = Box::leak(format!("policy {}", new.policy.name).into_boxed_str());
        }
        self.file = new;
    }

    pub fn file(&self) -> &PolicyFile {
        &self.file
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Strategy for PolicyStrategy {
    fn name(&self) -> &'static str {
        self.name
    }

    fn one_step(&self) -> bool {
        false
    }

    fn applied(&mut self, from: u64, to: u64) {
        self.applied_at(self.started.elapsed(), from, to);
    }

    fn recommend(&mut self, obs: &Observation, signals: &Signals) -> Recommendation {
        self.take_reload();
        let clock = Clock {
            elapsed: self.started.elapsed(),
            unix: unix_now(),
            utc: chrono::Utc::now(),
        };
        self.recommend_at(obs, signals, clock)
    }
}

/// The clocks a decision reads: real ones in the autoscaler, virtual ones in the simulator.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// A monotonic clock (stabilization windows and rate limits).
    pub elapsed: Duration,
    /// Unix seconds (sample ages).
    pub unix: f64,
    /// The wall clock (schedules).
    pub utc: chrono::DateTime<chrono::Utc>,
}

impl PolicyStrategy {
    /// The pool changed from `from` to `to` at `elapsed` on the decision clock: the rate limits
    /// count it. The autoscaler calls this (through [`Strategy::applied`]) once a change was
    /// accepted, the policy simulator once it made one.
    pub fn applied_at(&mut self, elapsed: Duration, from: u64, to: u64) {
        self.file
            .behaviour()
            .applied(elapsed, from, to, &mut self.history);
    }

    /// One decision at the given clocks: every check recommends, the shared behaviour decides.
    pub fn recommend_at(
        &mut self,
        obs: &Observation,
        signals: &Signals,
        clock: Clock,
    ) -> Recommendation {
        let current = obs.size;
        let behaviour = self.file.behaviour();
        let now_unix = clock.unix;
        let inputs = |samples: &[crate::autoscaler::source::Sample]| -> Input {
            let sample_age = newest_age(samples, now_unix);
            let stale = sample_age.is_none_or(|a| a > behaviour.max_sample_age);
            // Per-member values: a sample's `instance` is `ip:port`.
            let members = obs
                .member_list
                .iter()
                .map(|m| {
                    let value = m.ip.and_then(|ip| {
                        let prefix = format!("{ip}:");
                        samples
                            .iter()
                            .find(|s| s.instance.starts_with(&prefix))
                            .map(|s| s.value)
                    });
                    Member {
                        age: m.age.unwrap_or(Duration::MAX),
                        ready: m.running,
                        value: if stale { None } else { value },
                    }
                })
                .collect();
            Input {
                current,
                members,
                sample_age,
            }
        };
        let cpu_input = inputs(&signals.samples);
        let flight_input = inputs(&signals.in_flight);
        let fresh = |i: &Input| i.sample_age.is_some_and(|a| a <= behaviour.max_sample_age);
        // Stale if any metric the policy reads is stale.
        let stale = (self.file.uses(Metric::Cpu) && !fresh(&cpu_input))
            || (self.file.gauge_metric().is_some() && !fresh(&flight_input));
        let values: Vec<f64> = cpu_input.members.iter().filter_map(|m| m.value).collect();
        let average =
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);

        let at = |i: &Input| {
            i.sample_age.map(|a| {
                time::OffsetDateTime::now_utc() - time::Duration::try_from(a).unwrap_or_default()
            })
        };
        let avg = |i: &Input| {
            let v: Vec<f64> = i.members.iter().filter_map(|m| m.value).collect();
            (
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
                v.len(),
            )
        };
        let mut recs = Vec::new();
        let mut reasons = Vec::new();
        let mut inputs = Vec::new();
        let mut t = 0;
        let mut tt = self.file.target_tracking().into_iter();
        let mut fc = self.file.forecasts().into_iter();
        let mut f_index = 0;
        for (i, c) in self.file.checks.iter().enumerate() {
            let (desired, reason, record) = match c {
                Check::WebhookStep => {
                    let intents = &signals.intents;
                    let (d, r) = match (intents.up, intents.down) {
                        (0, 0) => (current, "no intent".to_owned()),
                        (_, 0) => (current + 1, format!("{} up intent(s)", intents.up)),
                        (0, _) => (
                            current.saturating_sub(1),
                            format!("{} down intent(s)", intents.down),
                        ),
                        _ => (current + 1, "up and down intents: up".to_owned()),
                    };
                    let rec = InputRecord {
                        check: i,
                        strategy: "webhook-step",
                        metric: "webhooks",
                        value: Some(intents.up as f64 - intents.down as f64),
                        members_with_value: 0,
                        sample_at: intents.recent.last().map(|x| x.at),
                        recommended: d,
                        warming_up: false,
                    };
                    (d, r, rec)
                }
                Check::TargetTracking { .. } => {
                    let (metric, t) = tt.next().expect("one per check");
                    let input = match metric {
                        Metric::Cpu => &cpu_input,
                        _ => &flight_input,
                    };
                    let name = metric.name();
                    let r = t.recommend(input);
                    let (value, n) = avg(input);
                    let rec = InputRecord {
                        check: i,
                        strategy: "target-tracking",
                        metric: name,
                        value,
                        members_with_value: n,
                        sample_at: at(input),
                        recommended: r.desired,
                        warming_up: false,
                    };
                    (r.desired, r.reason, rec)
                }
                Check::Forecast { .. } => {
                    let f = fc.next().expect("one per check");
                    let state = &mut self.forecasts[f_index];
                    f_index += 1;
                    let (d, r, total, n) = forecast_check(&f, state, &flight_input, clock.elapsed);
                    let rec = InputRecord {
                        check: i,
                        strategy: "forecast",
                        metric: "load-in-flight",
                        value: total,
                        members_with_value: n,
                        sample_at: at(&flight_input),
                        recommended: d,
                        warming_up: f.warming_up(state),
                    };
                    (d, r, rec)
                }
                Check::Threshold { .. } => {
                    let r = self.thresholds[t].recommend(current, average);
                    t += 1;
                    let rec = InputRecord {
                        check: i,
                        strategy: "threshold",
                        metric: "cpu",
                        value: average,
                        members_with_value: values.len(),
                        sample_at: at(&cpu_input),
                        recommended: r.desired,
                        warming_up: false,
                    };
                    (r.desired, r.reason, rec)
                }
            };
            recs.push(desired);
            reasons.push(format!("check[{i}] -> {desired}: {reason}"));
            inputs.push(record);
        }
        let mut b = behaviour;
        b.min = self.file.min_at(clock.utc);
        let s = b.apply(clock.elapsed, current, &recs, stale, &mut self.history);
        let mut reason = reasons.join("; ");
        if let Some(e) = &signals.sample_error {
            reason.push_str(&format!("; metrics missing: {e}"));
        } else if stale {
            reason.push_str("; metrics stale or missing");
        }
        reason.push_str(&format!(
            "; raw {} stabilized {} desired {}",
            s.raw, s.stabilized, s.desired
        ));
        if let Some(c) = &s.clipped_by {
            reason.push_str(&format!(" ({c})"));
        }
        Recommendation {
            desired: s.desired,
            reason,
            detail: Some(Detail {
                inputs,
                raw: s.raw,
                stabilized: s.stabilized,
                clipped_by: s.clipped_by,
            }),
        }
    }
}

/// One forecast check: the pool's total demand from the members' values, into the forecast,
/// and the size it asks for. Returns (desired, reason, total demand seen, members with a value).
///
/// The total is the sum of the members' values: each is the member's share averaged over the
/// rate window, so the sum is the pool's demand averaged over that window, whoever joined or
/// left in it. With no value at all (or stale data, which the caller blanks) the forecast
/// learns nothing and the check holds the current size.
fn forecast_check(
    f: &forecast::Forecast,
    state: &mut forecast::State,
    input: &Input,
    now: Duration,
) -> (u64, String, Option<f64>, usize) {
    let values: Vec<f64> = input.members.iter().filter_map(|m| m.value).collect();
    if values.is_empty() {
        return (
            input.current,
            "no member with a fresh value: hold".into(),
            None,
            0,
        );
    }
    let total: f64 = values.iter().sum();
    f.observe(state, now, total);
    let o = f.outlook(state, total, input.current);
    let reason = format!(
        "demand {:.2} (level {:.2}{}, trend {:+.4}/s{}), forecast {:.2} in {}s, error {} over {} residual(s){}{}, headroom {:.2} -> sized for {:.2} / {} per member",
        o.observed,
        o.level,
        if o.dropped { " since a drop" } else { "" },
        o.trend,
        o.trend_z.map_or(String::new(), |z| format!(", z {z:+.1}")),
        o.forecast,
        f.horizon.as_secs(),
        o.error.map_or_else(
            || format!("unknown (warm-up headroom {} x demand)", f.warm_up_headroom),
            |e| format!("{e:.2}")
        ),
        o.residuals,
        o.burst.map_or(String::new(), |b| format!(
            ", burst {b:.2} (#{} of {})",
            f.burst_rank, o.bursts
        )),
        o.jitter_floor
            .map_or(String::new(), |j| format!(", jitter floor {j:.2}")),
        o.headroom,
        o.sized_for,
        f.target,
    );
    (o.desired, reason, Some(total), values.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(strategy: &str, max: u64) -> PolicyFile {
        PolicyFile::parse(&format!(
            "[policy]\nname = \"p\"\nmin = 1\nmax = {max}\n[[check]]\nstrategy = \"{strategy}\"\n{}",
            if strategy == "target-tracking" { "target = 0.5\n" } else { "" }
        ))
        .unwrap()
    }

    fn obs(size: u64) -> Observation {
        Observation {
            size,
            state: "running".into(),
            members: size,
            running: size,
            busy: None,
            member_list: vec![],
        }
    }

    fn up() -> Signals {
        let mut s = Signals::default();
        s.intents.up = 1;
        s
    }

    #[tokio::test]
    async fn a_reload_applies_at_the_next_tick_unless_it_changes_the_bounds() {
        let mut s = PolicyStrategy::new(policy("webhook-step", 5));
        assert_eq!(s.recommend(&obs(2), &up()).desired, 3);
        // Reloaded to target tracking with no metrics: an up-intent no longer counts.
        *s.reload_slot().lock().unwrap() = Some(policy("target-tracking", 5));
        assert_eq!(s.recommend(&obs(2), &up()).desired, 2);
        assert!(matches!(s.file().checks[0], Check::TargetTracking { .. }));
        // A reload that changes max is refused; the running policy stays.
        *s.reload_slot().lock().unwrap() = Some(policy("webhook-step", 9));
        assert_eq!(s.recommend(&obs(2), &up()).desired, 2);
        assert!(matches!(s.file().checks[0], Check::TargetTracking { .. }));
        assert!(
            s.reload_slot().lock().unwrap().is_none(),
            "taken either way"
        );
    }

    fn builtin(name: &str) -> PolicyFile {
        PolicyFile::parse(crate::policy::builtin::get(name).unwrap()).unwrap()
    }

    /// A pool of `size` members with the given in-flight values, sampled `age` seconds before
    /// `unix`.
    fn reading(size: u64, values: &[f64], unix: f64, age: f64) -> (Observation, Signals) {
        let ip = |i: usize| std::net::Ipv4Addr::new(198, 51, 100, i as u8 + 1);
        let obs = Observation {
            size,
            state: "running".into(),
            members: size,
            running: size,
            busy: None,
            member_list: (0..size as usize)
                .map(|i| crate::autoscaler::target::MemberInfo {
                    ip: Some(ip(i)),
                    age: Some(Duration::from_secs(3600)),
                    running: true,
                })
                .collect(),
        };
        let signals = Signals {
            in_flight: values
                .iter()
                .take(size as usize)
                .enumerate()
                .map(|(i, v)| crate::autoscaler::source::Sample {
                    instance: format!("{}:9100", ip(i)),
                    value: *v,
                    at: unix - age,
                })
                .collect(),
            ..Signals::default()
        };
        (obs, signals)
    }

    /// The default policy through its decision record: the forecast, its error and the
    /// headroom are in the reason; the total demand is the input's value.
    #[test]
    fn the_default_policy_explains_its_forecast() {
        let mut s = PolicyStrategy::new(builtin("default"));
        let mut last = None;
        for tick in 0..20u64 {
            let unix = 1_767_600_000.0 + 15.0 * tick as f64;
            let (obs, signals) = reading(3, &[0.7, 0.7, 0.7], unix, 5.0);
            let clock = Clock {
                elapsed: Duration::from_secs(15 * tick),
                unix,
                utc: chrono::DateTime::from_timestamp(unix as i64, 0).unwrap(),
            };
            last = Some(s.recommend_at(&obs, &signals, clock));
        }
        let r = last.unwrap();
        // 2.1 requests in flight, steady: error 0, headroom 0 -> ceil(2.1 / 1.0) = 3.
        assert_eq!(r.desired, 3, "{}", r.reason);
        for word in ["forecast", "error 0.00", "headroom 0.00", "sized for 2.10"] {
            assert!(r.reason.contains(word), "{word}: {}", r.reason);
        }
        let input = &r.detail.unwrap().inputs[0];
        assert_eq!(
            (input.strategy, input.metric),
            ("forecast", "load-in-flight")
        );
        assert!((input.value.unwrap() - 2.1).abs() < 1e-9);
    }

    proptest::proptest! {
        /// On random readings (random demand per member, random sample ages, some stale,
        /// some missing), the default policy never leaves its bounds and never scales in on
        /// stale or missing data.
        #[test]
        fn the_default_policy_stays_in_bounds_and_never_scales_in_on_stale_data(
            steps in proptest::collection::vec(
                (proptest::collection::vec(0.0f64..4.0, 10), 0u64..120, proptest::bool::weighted(0.1)),
                1..80,
            ),
        ) {
            let pf = builtin("default");
            let (min, max) = (pf.policy.min, pf.policy.max);
            let max_age = pf.behaviour().max_sample_age.as_secs_f64();
            let mut s = PolicyStrategy::new(pf);
            let mut size = 2u64;
            for (tick, (values, age, missing)) in steps.into_iter().enumerate() {
                let unix = 1_767_600_000.0 + 15.0 * tick as f64;
                let values = if missing { vec![] } else { values };
                let (obs, signals) = reading(size, &values, unix, age as f64);
                let clock = Clock {
                    elapsed: Duration::from_secs(15 * tick as u64),
                    unix,
                    utc: chrono::DateTime::from_timestamp(unix as i64, 0).unwrap(),
                };
                let r = s.recommend_at(&obs, &signals, clock);
                proptest::prop_assert!((min..=max).contains(&r.desired), "{} outside {min}..={max}", r.desired);
                let stale = missing || age as f64 > max_age;
                if stale {
                    proptest::prop_assert!(r.desired >= size, "scaled in from {size} to {} on stale data: {}", r.desired, r.reason);
                }
                if r.desired != size {
                    s.applied_at(clock.elapsed, size, r.desired);
                    size = r.desired;
                }
            }
        }
    }
}
