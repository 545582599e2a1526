//! The policy file (TOML): what `poolpilot policy check` explains and the engine runs.
//!
//! ```toml
//! [policy]
//! name = "target-tracking"
//! min = 1
//! max = 10
//!
//! [[check]]
//! strategy = "target-tracking"   # webhook-step | threshold | target-tracking | forecast
//! target = 0.6                   # per-member CPU utilisation, 0..1
//! tolerance = 0.1
//! warm-up = "60s"
//!
//! [behaviour]
//! scale-down-window = "300s"
//! scale-up-window = "0s"
//! max-sample-age = "60s"
//! scale-up-limits = [{ instances = 4, period = "60s" }, { percent = 100, period = "60s" }]
//! scale-down-limits = [{ percent = 50, period = "60s" }]
//!
//! [[schedule]]                   # time windows that raise the minimum
//! days = ["mon", "tue", "wed", "thu", "fri"]
//! start = "08:00"
//! end = "18:00"
//! timezone = "Europe/Zurich"
//! min = 3
//!
//! [scale-in]
//! victims = ["unhealthy-first", "oldest"]   # oldest | newest | least-busy | unhealthy-first
//! ```

use serde::Deserialize;

use super::engine::{Band, Behaviour, RateLimit, TargetTracking};
use crate::autoscaler::target::victims::VictimOrder;
use crate::config::Dur;

mod validate;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicyFile {
    pub policy: Header,
    #[serde(default, rename = "check")]
    pub checks: Vec<Check>,
    #[serde(default)]
    pub behaviour: BehaviourFile,
    #[serde(default)]
    pub schedule: Vec<Window>,
    #[serde(default)]
    pub scale_in: ScaleIn,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Header {
    pub name: String,
    pub min: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(
    tag = "strategy",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Check {
    /// The course's rule: one step per tick on alert webhooks.
    WebhookStep,
    Threshold {
        bands: Vec<BandFile>,
    },
    TargetTracking {
        /// `cpu` (per-member CPU utilisation, 0..1; the default) or `load-in-flight` (the app's
        /// `/load` requests in flight per member).
        #[serde(default)]
        metric: Metric,
        target: f64,
        #[serde(default = "default_tolerance")]
        tolerance: f64,
        #[serde(default = "default_warm_up")]
        warm_up: Dur,
    },
    /// A forecast of the pool's total demand (`load-in-flight` summed over members), `horizon`
    /// ahead, with a headroom of `k` x the recent error, at least the `burst-rank`-th largest
    /// recent burst (see [`super::forecast`]).
    Forecast {
        /// Requests in flight one member serves within the SLO.
        target: f64,
        horizon: Dur,
        /// `holt` (alpha, beta; the default, as before models existed) or `robust`
        /// (trend-window, peak-window, trend-significance, drop-readings).
        #[serde(default)]
        model: ForecastModel,
        alpha: Option<f64>,
        beta: Option<f64>,
        trend_window: Option<Dur>,
        peak_window: Option<Dur>,
        /// Mann-Kendall's |z| a trend must reach to be used (0: always, after a warm-up).
        trend_significance: Option<f64>,
        /// Readings below all before them in the peak window that end it (0: never).
        drop_readings: Option<usize>,
        #[serde(default = "default_k")]
        k: f64,
        #[serde(default = "default_quantile")]
        error_quantile: f64,
        /// `absolute` or `shortfall`: which residuals the error is a quantile of.
        #[serde(default)]
        error_measure: crate::policy::forecast::Measure,
        /// Until the error is known, the headroom is this times the demand.
        #[serde(default)]
        warm_up_headroom: f64,
        #[serde(default = "default_error_window")]
        error_window: Dur,
        /// 0: the headroom does not use bursts.
        #[serde(default)]
        burst_rank: usize,
        /// The headroom is at least this times the demand's jitter (robust; 0: off) ...
        jitter_k: Option<f64>,
        /// ... and that floor is at most this many members.
        jitter_max: Option<f64>,
    },
}

/// The forecast's model (`model = "..."`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecastModel {
    #[default]
    Holt,
    Robust,
}

const DEFAULT_ALPHA: f64 = 0.5;
const DEFAULT_BETA: f64 = 0.2;
const DEFAULT_TREND_WINDOW: Dur = Dur::secs(300);
/// A fifth of a member: what the default policy uses.
const DEFAULT_JITTER_MAX: f64 = 0.2;
const DEFAULT_PEAK_WINDOW: Dur = Dur::secs(300);

fn default_k() -> f64 {
    1.0
}
fn default_quantile() -> f64 {
    0.9
}
fn default_error_window() -> Dur {
    Dur::secs(1800)
}

/// What a target-tracking check tracks: CPU, or a load gauge each member exports, summed over
/// the members and divided by the target per member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    #[default]
    Cpu,
    /// The app's `/load` requests in flight.
    LoadInFlight,
    /// The kv API's requests per second (over its last 5 s).
    RequestsPerSecond,
    /// A Redis replica's commands per second (its sidecar's reading of Redis' own rate).
    RedisOps,
}

impl Metric {
    /// Its name in policy files and decision records.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::LoadInFlight => "load-in-flight",
            Metric::RequestsPerSecond => "requests-per-second",
            Metric::RedisOps => "redis-ops",
        }
    }

    /// The gauge each member exports on its `app` target port (`None`: CPU, from node_exporter).
    pub fn gauge(self) -> Option<&'static str> {
        match self {
            Metric::Cpu => None,
            Metric::LoadInFlight => Some("poolpilot_app_load_in_flight"),
            Metric::RequestsPerSecond => Some("poolpilot_kv_http_requests_per_second"),
            Metric::RedisOps => Some("poolpilot_replica_redis_ops_per_second"),
        }
    }
}

fn default_tolerance() -> f64 {
    0.1
}
fn default_warm_up() -> Dur {
    Dur::secs(60)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BandFile {
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub change: i64,
    #[serde(default = "one")]
    pub for_evaluations: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BehaviourFile {
    #[serde(default = "default_down_window")]
    pub scale_down_window: Dur,
    #[serde(default = "zero")]
    pub scale_up_window: Dur,
    #[serde(default = "default_sample_age")]
    pub max_sample_age: Dur,
    #[serde(default)]
    pub scale_up_limits: Vec<LimitFile>,
    #[serde(default)]
    pub scale_down_limits: Vec<LimitFile>,
}

impl Default for BehaviourFile {
    fn default() -> Self {
        Self {
            scale_down_window: default_down_window(),
            scale_up_window: zero(),
            max_sample_age: default_sample_age(),
            scale_up_limits: Vec::new(),
            scale_down_limits: Vec::new(),
        }
    }
}

fn default_down_window() -> Dur {
    Dur::secs(300)
}
fn zero() -> Dur {
    Dur::secs(0)
}
fn default_sample_age() -> Dur {
    Dur::secs(60)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LimitFile {
    pub instances: Option<u64>,
    pub percent: Option<f64>,
    pub period: Dur,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Window {
    pub days: Vec<String>,
    pub start: String,
    pub end: String,
    pub timezone: String,
    pub min: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ScaleIn {
    #[serde(default = "default_victims")]
    pub victims: Vec<String>,
}

impl Default for ScaleIn {
    fn default() -> Self {
        Self {
            victims: default_victims(),
        }
    }
}

fn default_victims() -> Vec<String> {
    vec!["unhealthy-first".into(), "oldest".into()]
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

/// One problem, with the path of the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub rule: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.rule)
    }
}

impl PolicyFile {
    /// Parses; `Err` holds every problem found (a parse error is one problem with its place).
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        let p: PolicyFile = toml::from_str(text).map_err(|e| {
            vec![Problem {
                field: "(file)".into(),
                rule: e.to_string().trim().replace('\n', " "),
            }]
        })?;
        let problems = p.validate();
        if problems.is_empty() {
            Ok(p)
        } else {
            Err(problems)
        }
    }

    /// The scale-in victim orders (validated).
    pub fn victims(&self) -> Vec<VictimOrder> {
        self.scale_in
            .victims
            .iter()
            .filter_map(|v| VictimOrder::parse(v))
            .collect()
    }

    /// The shared behaviour as the engine takes it.
    pub fn behaviour(&self) -> Behaviour {
        let limit = |l: &LimitFile| match (l.instances, l.percent) {
            (Some(n), _) => RateLimit::Instances {
                value: n,
                period: l.period.get(),
            },
            (None, p) => RateLimit::Percent {
                value: p.unwrap_or(100.0),
                period: l.period.get(),
            },
        };
        Behaviour {
            min: self.policy.min,
            max: self.policy.max,
            down_window: self.behaviour.scale_down_window.get(),
            up_window: self.behaviour.scale_up_window.get(),
            up_limits: self.behaviour.scale_up_limits.iter().map(limit).collect(),
            down_limits: self.behaviour.scale_down_limits.iter().map(limit).collect(),
            max_sample_age: self.behaviour.max_sample_age.get(),
        }
    }

    /// The target-tracking checks as the engine takes them, with their metric.
    pub fn target_tracking(&self) -> Vec<(Metric, TargetTracking)> {
        self.checks
            .iter()
            .filter_map(|c| match c {
                Check::TargetTracking {
                    metric,
                    target,
                    tolerance,
                    warm_up,
                } => Some((
                    *metric,
                    TargetTracking {
                        target: *target,
                        tolerance: *tolerance,
                        warm_up: warm_up.get(),
                    },
                )),
                _ => None,
            })
            .collect()
    }

    /// The forecast checks as the engine takes them.
    pub fn forecasts(&self) -> Vec<crate::policy::forecast::Forecast> {
        self.checks
            .iter()
            .filter_map(|c| match c {
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
                    error_measure,
                    warm_up_headroom,
                    error_window,
                    burst_rank,
                    jitter_k,
                    jitter_max,
                } => Some(crate::policy::forecast::Forecast {
                    model: match model {
                        ForecastModel::Holt => crate::policy::forecast::Model::Holt {
                            alpha: alpha.unwrap_or(DEFAULT_ALPHA),
                            beta: beta.unwrap_or(DEFAULT_BETA),
                        },
                        ForecastModel::Robust => crate::policy::forecast::Model::Robust {
                            trend_window: trend_window.unwrap_or(DEFAULT_TREND_WINDOW).get(),
                            peak_window: peak_window.unwrap_or(DEFAULT_PEAK_WINDOW).get(),
                            significance: trend_significance.unwrap_or(0.0),
                            drop_readings: drop_readings.unwrap_or(0),
                        },
                    },
                    horizon: horizon.get(),
                    target: *target,
                    k: *k,
                    quantile: *error_quantile,
                    measure: *error_measure,
                    warm_up_headroom: *warm_up_headroom,
                    error_window: error_window.get(),
                    burst_rank: *burst_rank,
                    jitter: crate::policy::forecast::Jitter {
                        k: jitter_k.unwrap_or(0.0),
                        max: jitter_max.unwrap_or(DEFAULT_JITTER_MAX),
                    },
                }),
                _ => None,
            })
            .collect()
    }

    /// The member gauge the policy reads, if any (the first check on one: validation refuses
    /// two different ones).
    pub fn gauge_metric(&self) -> Option<Metric> {
        self.checks.iter().find_map(|c| match c {
            Check::TargetTracking { metric, .. } if metric.gauge().is_some() => Some(*metric),
            Check::Forecast { .. } => Some(Metric::LoadInFlight),
            _ => None,
        })
    }

    /// Whether any check reads this metric.
    pub fn uses(&self, m: Metric) -> bool {
        self.checks.iter().any(|c| match c {
            Check::TargetTracking { metric, .. } => *metric == m,
            Check::Forecast { .. } => m == Metric::LoadInFlight,
            Check::Threshold { .. } => m == Metric::Cpu,
            Check::WebhookStep => false,
        })
    }

    /// The threshold checks' bands.
    pub fn bands(&self) -> Vec<Vec<Band>> {
        self.checks
            .iter()
            .filter_map(|c| match c {
                Check::Threshold { bands } => Some(
                    bands
                        .iter()
                        .map(|b| Band {
                            above: b.above,
                            below: b.below,
                            change: b.change,
                            for_evaluations: b.for_evaluations,
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// The minimum in force at `now` (the schedule's windows raise it).
    pub fn min_at(&self, now: chrono::DateTime<chrono::Utc>) -> u64 {
        use chrono::{Datelike, Timelike};
        let mut min = self.policy.min;
        for w in &self.schedule {
            let Ok(tz) = w.timezone.parse::<chrono_tz::Tz>() else {
                continue;
            };
            let local = now.with_timezone(&tz);
            let day = DAYS[local.weekday().num_days_from_monday() as usize];
            let minute = local.hour() * 60 + local.minute();
            let (Some(s), Some(e)) = (hhmm(&w.start), hhmm(&w.end)) else {
                continue;
            };
            if w.days.iter().any(|d| d == day) && (s..e).contains(&minute) {
                min = min.max(w.min);
            }
        }
        min.min(self.policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Vec<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policies");
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_policy_tracks_one_member_gauge_and_names_it() {
        let head = "[policy]\nname = \"x\"\nmin = 1\nmax = 5\n";
        let check = |metric: &str, target: f64| {
            format!(
                "[[check]]\nstrategy = \"target-tracking\"\nmetric = \"{metric}\"\ntarget = {target}\n"
            )
        };
        for (metric, m, gauge) in [
            (
                "redis-ops",
                Metric::RedisOps,
                "poolpilot_replica_redis_ops_per_second",
            ),
            (
                "requests-per-second",
                Metric::RequestsPerSecond,
                "poolpilot_kv_http_requests_per_second",
            ),
        ] {
            let p = PolicyFile::parse(&format!(
                "{head}{}{}",
                check(metric, 200.0),
                check("cpu", 0.7)
            ))
            .unwrap();
            assert_eq!(p.gauge_metric(), Some(m));
            assert_eq!(m.gauge(), Some(gauge));
            assert_eq!(m.name(), metric);
            assert!(p.uses(Metric::Cpu) && p.uses(m));
        }
        // Two different gauges in one policy: refused, naming the second check's metric.
        let two = format!(
            "{head}{}{}",
            check("redis-ops", 200.0),
            check("requests-per-second", 100.0)
        );
        let problems = PolicyFile::parse(&two).unwrap_err();
        assert!(
            problems.iter().any(|p| p.field == "check[1].metric"),
            "{problems:?}"
        );
        let zero = PolicyFile::parse(&format!("{head}{}", check("redis-ops", 0.0))).unwrap_err();
        assert!(
            zero.iter().any(|p| p.field == "check[0].target"),
            "{zero:?}"
        );
        assert_eq!(
            PolicyFile::parse(&format!("{head}{}", check("cpu", 0.6)))
                .unwrap()
                .gauge_metric(),
            None
        );
    }

    /// A forecast's model takes its own parameters: Holt's alpha and beta are refused on the
    /// robust model and its windows on Holt, each naming the field; out-of-range values too.
    /// Without `model` a check is Holt (files written before models existed keep meaning).
    #[test]
    fn a_forecast_takes_the_parameters_of_its_model() {
        let head = "[policy]\nname = \"x\"\nmin = 1\nmax = 5\n[[check]]\nstrategy = \"forecast\"\ntarget = 1.0\nhorizon = \"60s\"\n";
        let fields = |body: &str| -> Vec<String> {
            PolicyFile::parse(&format!("{head}{body}"))
                .map(|_| Vec::new())
                .unwrap_or_else(|p| p.into_iter().map(|p| p.field).collect())
        };
        assert_eq!(
            fields("model = \"robust\"\nalpha = 0.5\nbeta = 0.1\n"),
            ["check[0].alpha", "check[0].beta"]
        );
        assert_eq!(
            fields(
                "trend-window = \"5m\"\npeak-window = \"1m\"\ntrend-significance = 3\ndrop-readings = 4\n"
            ),
            [
                "check[0].trend-window",
                "check[0].peak-window",
                "check[0].trend-significance",
                "check[0].drop-readings"
            ]
        );
        assert_eq!(
            fields(
                "model = \"robust\"\ntrend-significance = -1\nwarm-up-headroom = 11\ndrop-readings = 1001\n"
            ),
            [
                "check[0].trend-significance",
                "check[0].drop-readings",
                "check[0].warm-up-headroom"
            ]
        );
        assert!(
            PolicyFile::parse(&format!("{head}error-measure = \"signed\"\n"))
                .is_err_and(|p| p.iter().any(|p| p.rule.contains("shortfall"))),
            "an unknown measure names the ones there are"
        );
        assert_eq!(
            fields(
                "model = \"robust\"\ntrend-window = \"0s\"\npeak-window = \"2h\"\nburst-rank = 5000\n"
            ),
            [
                "check[0].trend-window",
                "check[0].peak-window",
                "check[0].burst-rank"
            ]
        );
        assert_eq!(fields("alpha = 0\n"), ["check[0].alpha"]);
        assert_eq!(
            fields("jitter-k = 10\njitter-max = 0.2\n"),
            ["check[0].jitter-k", "check[0].jitter-max"],
            "the jitter is the robust model's readings"
        );
        assert_eq!(
            fields("model = \"robust\"\njitter-k = 101\njitter-max = -0.1\n"),
            ["check[0].jitter-k", "check[0].jitter-max"]
        );
        assert_eq!(
            fields("model = \"robust\"\njitter-max = 0.3\n"),
            ["check[0].jitter-max"],
            "a cap with no floor to cap is refused, not ignored"
        );
        let f = PolicyFile::parse(&format!(
            "{head}model = \"robust\"\nburst-rank = 3\ntrend-significance = 3.5\ndrop-readings = 6\n\
             error-measure = \"shortfall\"\nwarm-up-headroom = 0.5\njitter-k = 10\n"
        ))
        .unwrap()
        .forecasts();
        let jitter = crate::policy::forecast::Jitter { k: 10.0, max: 0.2 };
        assert_eq!(
            f[0].jitter, jitter,
            "jitter-max defaults to a fifth of a member"
        );
        assert_eq!(
            (
                &f[0].model,
                f[0].burst_rank,
                f[0].measure,
                f[0].warm_up_headroom
            ),
            (
                &crate::policy::forecast::Model::Robust {
                    trend_window: std::time::Duration::from_secs(300),
                    peak_window: std::time::Duration::from_secs(300),
                    significance: 3.5,
                    drop_readings: 6,
                },
                3,
                crate::policy::forecast::Measure::Shortfall,
                0.5
            )
        );
        let holt = PolicyFile::parse(head).unwrap().forecasts();
        assert_eq!(holt[0].jitter.k, 0.0, "no jitter floor unless asked");
        assert_eq!(
            (holt[0].measure, holt[0].warm_up_headroom),
            (crate::policy::forecast::Measure::Absolute, 0.0)
        );
        assert_eq!(
            holt[0].model,
            crate::policy::forecast::Model::Holt {
                alpha: 0.5,
                beta: 0.2
            }
        );
    }

    #[test]
    fn the_example_policies_are_valid() {
        let ex = examples();
        assert!(ex.len() >= 3, "{ex:?}");
        for (path, text) in ex {
            if let Err(problems) = PolicyFile::parse(&text) {
                panic!("{path}: {problems:?}");
            }
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let text = r#"
            [policy]
            name = ""
            min = 5
            max = 3
            [[check]]
            strategy = "target-tracking"
            target = 60
            [[check]]
            strategy = "threshold"
            bands = [{ above = 0.8, change = -1 }, { change = 0 }]
            [behaviour]
            scale-up-limits = [{ instances = 2, percent = 50, period = "1m" }]
            [[schedule]]
            days = ["monday"]
            start = "18:00"
            end = "08:00"
            timezone = "Mars/Olympus"
            min = 9
            [scale-in]
            victims = ["random"]
        "#;
        let problems = PolicyFile::parse(text).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "policy.name",
            "policy.min",
            "check[0].target",
            "check[1].bands[0].change",
            "check[1].bands[1]",
            "check[1].bands[1].change",
            "behaviour.scale-up-limits[0]",
            "schedule[0].days",
            "schedule[0].end",
            "schedule[0].timezone",
            "schedule[0].min",
            "scale-in.victims",
        ] {
            assert!(fields.contains(&f), "{f} missing from {problems:#?}");
        }
        // A typo is a parse error that says where.
        let p =
            PolicyFile::parse("[policy]\nname = \"x\"\nmin = 1\nmax = 2\nmaxx = 3\n").unwrap_err();
        assert!(p[0].rule.contains("maxx"), "{p:?}");
    }

    #[test]
    fn a_schedule_raises_the_minimum_in_its_window_and_time_zone() {
        let p = PolicyFile::parse(
            r#"
            [policy]
            name = "office-hours"
            min = 1
            max = 6
            [[check]]
            strategy = "webhook-step"
            [[schedule]]
            days = ["mon", "tue", "wed", "thu", "fri"]
            start = "08:00"
            end = "18:00"
            timezone = "Europe/Zurich"
            min = 3
            "#,
        )
        .unwrap();
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        // Monday 2026-11-23, 07:30 UTC = 08:30 in Zurich (CET).
        assert_eq!(p.min_at(at("2026-11-23T07:30:00Z")), 3);
        assert_eq!(p.min_at(at("2026-11-23T06:30:00Z")), 1);
        assert_eq!(p.min_at(at("2026-11-23T17:30:00Z")), 1);
        // Saturday.
        assert_eq!(p.min_at(at("2026-11-28T10:00:00Z")), 1);
    }
}
