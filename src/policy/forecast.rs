//! The forecast strategy's arithmetic: a model of the pool's total demand that looks `horizon`
//! ahead, its own error measured on its own past forecasts, and the size that covers the
//! forecast plus a headroom derived from that error. Pure and clock-free like the rest of the
//! engine: the caller passes the time of each observation.
//!
//! Two models (`model` in the policy file):
//!
//! - **robust** (the default policy's): the trend is Theil-Sen's slope, the median of the slopes
//!   between every pair of readings of the last `trend_window`, so a plateau gives exactly 0 and
//!   a step moves it only once it fills half the window. With a `significance` z > 0 the slope
//!   is used only when Mann-Kendall's test finds a monotonic trend in the same readings
//!   (`|z| >= significance`): noise around a plateau tilts Theil-Sen's median a little on every
//!   tick, and that tilt times the horizon was a member held for nothing; a ramp passes the
//!   test within a few readings. With `significance = 0` the slope is always used, but only once
//!   the readings cover the window (two readings across a step would be all step). The level is
//!   the highest reading of
//!   the last `peak_window`, each carried to now along that trend (`y_i + slope * (now - t_i)`):
//!   a member the demand needed a few minutes ago stays while it may be needed again, which is
//!   how the oracle keeps members through short dips. `y(t+h) = level + slope * h`. With
//!   `drop_readings` N > 0, a **drop** ends that: when the last N readings of the peak window
//!   are all below every reading before them, the level forgets the readings before the drop,
//!   unless the error window holds `burst_rank` bursts (a site whose jumps keep coming: its
//!   drops come back too, and holding through them is what saves a restart). A calm site's
//!   crowd that ends is let go after N readings instead of the whole peak window.
//! - **holt**: Holt's linear trend (double exponential smoothing) on an irregular series (`dt`
//!   seconds since the last observation):
//!
//! ```text
//! level  = alpha * y + (1 - alpha) * (level + trend * dt)
//! trend  = beta * (level - previous level) / dt + (1 - beta) * trend      (per second)
//! y(t+h) = level + trend * h
//! ```
//!
//! Every observation also resolves the forecasts made `horizon` ago: `y - forecast` is one
//! residual. The error is a quantile of the residuals of the last `error_window`, either of
//! their absolute values or of their **shortfalls** (`max(residual, 0)`: only how far the
//! forecast fell short of the demand; a forecast that holds a peak is above the demand most of
//! the time, and those misses cost money, not SLO), and the headroom is `k` times it: the pool
//! is sized for what the forecast may have missed, as often as it has missed it lately, instead
//! of for a fixed utilisation target. Until the error is known (`MIN_RESIDUALS` checked
//! forecasts), the headroom is `warm_up_headroom` times the demand: a forecast without a track
//! record is given a margin, as HPA's target gives one, instead of none. With a
//! `burst_rank` N, the headroom is at least the N-th largest **burst** of the window: a burst is
//! one run of positive residuals (the forecast short of the demand), its size the run's largest.
//! One step up makes one burst however many ticks it lasts, so a single step does not keep a
//! headroom for the whole window, while jumps that keep coming (N of them within the window)
//! do: the pool then holds a margin as large as the jumps it has seen.
//!
//! With a [`Jitter`] (robust model), the headroom is also at least `k` times the demand's
//! **jitter**, at most `max` members: the jitter is the 75th percentile of the changes between
//! consecutive readings of the trend window. A step or a spike moves a few of those changes, a
//! live demand moves most of them. The level holds the highest reading, so a demand that creeps
//! over a whole number of members (4.99 for minutes, then 5.01) finds no member ready, and its
//! shortfall history says nothing, because the forecast never fell short while it sat just below;
//! a fraction of a member above a moving demand covers that crossing. A demand that sits still
//! (an idle site, a plateau) gets none, and needs none.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use super::timed;

/// How the demand is followed and extrapolated.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "model")]
pub enum Model {
    /// Holt's linear trend: level smoothing alpha in (0, 1], trend smoothing beta in [0, 1].
    Holt { alpha: f64, beta: f64 },
    /// Theil-Sen's slope over `trend_window` (when Mann-Kendall's |z| reaches `significance`;
    /// 0: always, once the window is covered), the level the highest reading of `peak_window`
    /// carried to now along it.
    Robust {
        trend_window: Duration,
        peak_window: Duration,
        significance: f64,
        /// Readings below everything before them in the peak window that make a drop (0: off).
        drop_readings: usize,
    },
}

/// Which residuals the error is a quantile of (`error-measure = "..."` in the policy file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// `|observed - forecast|`: misses both ways.
    #[default]
    Absolute,
    /// `max(observed - forecast, 0)`: only how far the forecast fell short of the demand.
    Shortfall,
}

/// The error is unknown until this many forecasts have been checked: a quantile of one
/// residual is that residual, and the first one after a start is usually the start's own step.
pub const MIN_RESIDUALS: usize = 3;

/// The forecast's parameters (the policy file's `strategy = "forecast"` check).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Forecast {
    pub model: Model,
    /// How far ahead the pool must be right: boot + health check + the metric's lag + a tick.
    pub horizon: Duration,
    /// The metric one member serves (`load-in-flight`: requests in flight per member).
    pub target: f64,
    /// Headroom = k x error.
    pub k: f64,
    /// Which quantile of the recent residuals (as `measure` takes them) is the error, (0, 1].
    pub quantile: f64,
    pub measure: Measure,
    /// Until the error is known, the headroom is this times the demand.
    pub warm_up_headroom: f64,
    /// Residuals older than this are forgotten.
    pub error_window: Duration,
    /// The headroom is at least the N-th largest burst of the window (0: bursts are not used).
    pub burst_rank: usize,
    /// The headroom is at least this much of the demand's jitter (robust model).
    pub jitter: Jitter,
}

/// A headroom floor from how much the demand moves between readings: `k` x the jitter, at most
/// `max` members (`jitter-k`, `jitter-max` in the policy file; `k = 0`: off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Jitter {
    pub k: f64,
    /// In members (the floor is at most `max x target` in the metric's units).
    pub max: f64,
}

/// Which quantile of the changes between consecutive readings is the jitter: a step changes a
/// few readings of a trend window, noise changes most.
pub const JITTER_QUANTILE: f64 = 0.75;

/// What the forecast remembers between ticks.
#[derive(Clone, Debug, Default)]
pub struct State {
    level: Option<f64>,
    /// Per second.
    trend: f64,
    last: Duration,
    /// (due, forecast) of forecasts not yet compared with an observation, oldest first.
    pending: VecDeque<(Duration, f64)>,
    /// (time, observed - forecast), oldest first.
    residuals: VecDeque<(Duration, f64)>,
    /// (time, observed) of the robust model's windows, oldest first.
    readings: VecDeque<(Duration, f64)>,
    /// The robust model's first observation.
    first: Option<Duration>,
    /// Mann-Kendall's z of the last trend window (robust model with a significance).
    trend_z: Option<f64>,
    /// The robust level forgot the readings before a drop.
    dropped: bool,
}

/// One tick's outcome, for the decision record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outlook {
    pub observed: f64,
    pub level: f64,
    /// Per second.
    pub trend: f64,
    /// Mann-Kendall's z the trend was tested with (robust model with a significance).
    pub trend_z: Option<f64>,
    /// The level forgot the readings before a drop.
    pub dropped: bool,
    /// The forecast `horizon` ahead.
    pub forecast: f64,
    /// The error (the quantile of recent residuals), `None` until `MIN_RESIDUALS` were checked.
    pub error: Option<f64>,
    pub residuals: usize,
    /// The `burst_rank`-th largest burst of the window (0 when fewer), `None` when not used.
    pub burst: Option<f64>,
    /// The jitter's floor, `min(k x jitter, max x target)`, `None` when not used.
    pub jitter_floor: Option<f64>,
    /// The bursts in the window.
    pub bursts: usize,
    pub headroom: f64,
    /// What the pool must serve: max(level, forecast) + headroom, and never less than observed.
    pub sized_for: f64,
    pub desired: u64,
}

/// `ceil`, forgiving the last bits of floating-point error.
fn ceil(x: f64) -> u64 {
    (x - 1e-9).ceil().max(0.0) as u64
}

/// The `q` quantile of `values` (nearest rank: the smallest value with at least q of them at or
/// below it); `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Theil-Sen's slope (per second): the median of the slopes between every pair of `points`
/// (time, value) at different times; 0 with fewer than two.
pub fn theil_sen(points: &[(Duration, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, (ti, yi)) in points.iter().enumerate() {
        for (tj, yj) in &points[i + 1..] {
            let dt = tj.as_secs_f64() - ti.as_secs_f64();
            if dt > 0.0 {
                slopes.push((yj - yi) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    let n = slopes.len();
    if n % 2 == 1 {
        slopes[n / 2]
    } else {
        (slopes[n / 2 - 1] + slopes[n / 2]) / 2.0
    }
}

/// Mann-Kendall's trend statistic as a z score: `S` is the number of rising pairs of readings
/// minus the falling ones (ties count 0), its variance `n(n-1)(2n+5)/18` under "no trend", and
/// `z = (S - sign S) / sqrt(var)` with the continuity correction; 0 with fewer than 3 readings.
/// The variance is not reduced for ties, which only makes |z| smaller: a stricter test.
/// |z| >= 1.96 rejects "no trend" at 5 % for independent readings; ours overlap (each is an
/// average over the metric's window), so a useful threshold is higher.
pub fn mann_kendall_z(points: &[(Duration, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 3 {
        return 0.0;
    }
    let mut s: f64 = 0.0;
    for (i, (_, yi)) in points.iter().enumerate() {
        for (_, yj) in &points[i + 1..] {
            if yj > yi {
                s += 1.0;
            } else if yj < yi {
                s -= 1.0;
            }
        }
    }
    if s == 0.0 {
        return 0.0;
    }
    let var = n * (n - 1.0) * (2.0 * n + 5.0) / 18.0;
    (s - s.signum()) / var.sqrt()
}

/// Where a drop starts in `points` (oldest first): the earliest index `j` such that the
/// `points[j..]`, at least `n` of them, are all below every value of `points[..j]`.
pub fn drop_start(points: &[(Duration, f64)], n: usize) -> Option<usize> {
    if n == 0 || points.len() <= n {
        return None;
    }
    // suffix_max[j] = the largest value of points[j..].
    let mut suffix_max = vec![f64::NEG_INFINITY; points.len() + 1];
    for j in (0..points.len()).rev() {
        suffix_max[j] = suffix_max[j + 1].max(points[j].1);
    }
    let mut prefix_min = f64::INFINITY;
    for j in 1..=points.len() - n {
        prefix_min = prefix_min.min(points[j - 1].1);
        if suffix_max[j] < prefix_min {
            return Some(j);
        }
    }
    None
}

impl Forecast {
    /// Takes the observation `y` (the pool's total demand, in the metric's units) at `now`.
    pub fn observe(&self, state: &mut State, now: Duration, y: f64) {
        if state.level.is_some() && now <= state.last {
            return;
        }
        match &self.model {
            Model::Holt { alpha, beta } => match state.level {
                None => {
                    state.level = Some(y);
                    state.trend = 0.0;
                }
                Some(level) => {
                    let dt = now.saturating_sub(state.last).as_secs_f64();
                    let new = alpha * y + (1.0 - alpha) * (level + state.trend * dt);
                    state.trend = beta * (new - level) / dt + (1.0 - beta) * state.trend;
                    state.level = Some(new);
                }
            },
            Model::Robust {
                trend_window,
                peak_window,
                significance,
                drop_readings,
            } => {
                state.readings.push_back((now, y));
                let keep = (*trend_window).max(*peak_window);
                timed::forget_older(&mut state.readings, now, keep, |r| r.0);
                let within = |w: Duration| timed::within(&state.readings, now, w);
                let points: Vec<_> = within(*trend_window).copied().collect();
                let first = *state.first.get_or_insert(now);
                (state.trend, state.trend_z) = if *significance > 0.0 {
                    // The test decides, from the first readings on: a handful of readings
                    // across a step cannot reach a useful z (8 rising ones give 3.3).
                    let z = mann_kendall_z(&points);
                    let slope = if z.abs() >= *significance {
                        theil_sen(&points)
                    } else {
                        0.0
                    };
                    (slope, Some(z))
                } else if now.saturating_sub(first) >= *trend_window {
                    (theil_sen(&points), None)
                } else {
                    // Until the readings cover the window, a slope would rest on the few first
                    // pairs (two readings across a step are the whole step): no trend yet.
                    (0.0, None)
                };
                let slope = state.trend;
                let mut peak: Vec<_> = within(*peak_window).copied().collect();
                // A drop lets the level go, unless the site is bursty (its drops come back).
                state.dropped = false;
                if let Some(j) = drop_start(&peak, *drop_readings)
                    && (self.burst_rank == 0 || self.bursts(state).len() < self.burst_rank)
                {
                    peak.drain(..j);
                    state.dropped = true;
                }
                state.level = peak
                    .iter()
                    .map(|(t, v)| v + slope * now.saturating_sub(*t).as_secs_f64())
                    .reduce(f64::max);
            }
        }
        state.last = now;
        while let Some(&(due, f)) = state.pending.front() {
            if due > now {
                break;
            }
            state.pending.pop_front();
            state.residuals.push_back((now, y - f));
        }
        timed::forget_older(&mut state.residuals, now, self.error_window, |r| r.0);
        let ahead = self.ahead(state);
        state.pending.push_back((now + self.horizon, ahead));
    }

    /// The forecast `horizon` after the last observation (0 before any).
    pub fn ahead(&self, state: &State) -> f64 {
        state.level.map_or(0.0, |l| {
            (l + state.trend * self.horizon.as_secs_f64()).max(0.0)
        })
    }

    /// Fewer than `MIN_RESIDUALS` forecasts were checked: the error is unknown, the warm-up
    /// headroom applies and the check never scales in.
    pub fn warming_up(&self, state: &State) -> bool {
        state.residuals.len() < MIN_RESIDUALS
    }

    /// The error: the quantile of the recent residuals, as `measure` takes them; `None` while
    /// [`Self::warming_up`].
    pub fn error(&self, state: &State) -> Option<f64> {
        if self.warming_up(state) {
            return None;
        }
        let taken: Vec<f64> = state
            .residuals
            .iter()
            .map(|(_, e)| match self.measure {
                Measure::Absolute => e.abs(),
                Measure::Shortfall => e.max(0.0),
            })
            .collect();
        quantile(&taken, self.quantile)
    }

    /// The sizes of the bursts of the window, oldest first: each run of positive residuals
    /// is one burst, its size the run's largest residual.
    pub fn bursts(&self, state: &State) -> Vec<f64> {
        let mut out = Vec::new();
        let mut run: Option<f64> = None;
        for &(_, e) in &state.residuals {
            if e > 0.0 {
                run = Some(run.map_or(e, |r| r.max(e)));
            } else if let Some(r) = run.take() {
                out.push(r);
            }
        }
        out.extend(run);
        out
    }

    /// The demand's jitter: the [`JITTER_QUANTILE`] of the absolute changes between consecutive
    /// readings of the trend window (0 with fewer than two; robust model only, `None` for holt).
    pub fn jitter(&self, state: &State) -> Option<f64> {
        let Model::Robust { trend_window, .. } = &self.model else {
            return None;
        };
        let values: Vec<f64> = timed::within(&state.readings, state.last, *trend_window)
            .map(|r| r.1)
            .collect();
        let changes: Vec<f64> = values.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
        Some(quantile(&changes, JITTER_QUANTILE).unwrap_or(0.0))
    }

    /// The jitter's headroom floor in the metric's units, `None` when off.
    fn jitter_floor(&self, state: &State) -> Option<f64> {
        if self.jitter.k <= 0.0 {
            return None;
        }
        self.jitter(state)
            .map(|j| (self.jitter.k * j).min(self.jitter.max * self.target))
    }

    /// The `burst_rank`-th largest of `bursts` (0 when there are fewer), `None` when the
    /// check does not use bursts.
    pub fn burst(&self, bursts: &[f64]) -> Option<f64> {
        if self.burst_rank == 0 {
            return None;
        }
        let mut b = bursts.to_vec();
        b.sort_by(|x, y| y.total_cmp(x));
        Some(b.get(self.burst_rank - 1).copied().unwrap_or(0.0))
    }

    /// The size for the last observation `observed`: enough members for the higher of the
    /// smoothed level and the forecast, plus the headroom. Never below what the observation
    /// needs: a forecast that lags a step does not undo the step. Until its error is known, the
    /// headroom is `warm_up_headroom` x the demand and it never asks for fewer than `current`
    /// members.
    pub fn outlook(&self, state: &State, observed: f64, current: u64) -> Outlook {
        let level = state.level.unwrap_or(observed);
        let forecast = self.ahead(state);
        let error = self.error(state);
        let bursts = self.bursts(state);
        let burst = error.and(self.burst(&bursts));
        let jitter_floor = error.and(self.jitter_floor(state));
        let headroom = match error {
            Some(e) => (self.k * e)
                .max(burst.unwrap_or(0.0))
                .max(jitter_floor.unwrap_or(0.0)),
            None => self.warm_up_headroom * observed.max(0.0),
        };
        let sized_for = (level.max(forecast) + headroom).max(observed);
        Outlook {
            observed,
            level,
            trend: state.trend,
            trend_z: state.trend_z,
            dropped: state.dropped,
            forecast,
            error,
            residuals: state.residuals.len(),
            burst,
            jitter_floor,
            bursts: bursts.len(),
            headroom,
            sized_for,
            desired: match error {
                Some(_) => ceil(sized_for / self.target),
                None => ceil(sized_for / self.target).max(current),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holt(alpha: f64, beta: f64, horizon: u64) -> Forecast {
        Forecast {
            model: Model::Holt { alpha, beta },
            horizon: Duration::from_secs(horizon),
            target: 1.0,
            k: 2.0,
            quantile: 0.5,
            measure: Measure::Absolute,
            warm_up_headroom: 0.0,
            error_window: Duration::from_secs(600),
            burst_rank: 0,
            jitter: Jitter::default(),
        }
    }

    fn robust(trend_window: u64, peak_window: u64, horizon: u64) -> Forecast {
        Forecast {
            model: Model::Robust {
                trend_window: Duration::from_secs(trend_window),
                peak_window: Duration::from_secs(peak_window),
                significance: 0.0,
                drop_readings: 0,
            },
            ..holt(1.0, 0.0, horizon)
        }
    }

    fn significant(trend_window: u64, z: f64) -> Forecast {
        let mut f = robust(trend_window, 0, 10);
        if let Model::Robust { significance, .. } = &mut f.model {
            *significance = z;
        }
        f
    }

    /// Mann-Kendall on hand-counted pairs. 1, 2, 4, 3: five pairs rise, one falls, S = 4;
    /// var = 4 * 3 * 13 / 18 = 26/3; z = (4 - 1) / sqrt(26/3) = 1.0190. A ramp of 9 readings:
    /// S = 36, var = 9 * 8 * 23 / 18 = 92, z = 35 / sqrt(92) = 3.6490. Ties count 0, and
    /// fewer than three readings or S = 0 give 0.
    #[test]
    fn mann_kendall_counts_rising_and_falling_pairs() {
        let z = mann_kendall_z(&secs(&[(0, 1.0), (1, 2.0), (2, 4.0), (3, 3.0)]));
        assert!((z - 3.0 / (26.0f64 / 3.0).sqrt()).abs() < 1e-12, "{z}");
        assert!((z - 1.0190).abs() < 1e-4);
        let ramp: Vec<(u64, f64)> = (0..9).map(|t| (t, t as f64)).collect();
        let z = mann_kendall_z(&secs(&ramp));
        assert!((z - 35.0 / 92f64.sqrt()).abs() < 1e-12 && (z - 3.6490).abs() < 1e-4);
        let fall: Vec<(u64, f64)> = (0..9).map(|t| (t, -(t as f64))).collect();
        assert!((mann_kendall_z(&secs(&fall)) + z).abs() < 1e-12);
        // 2, 2, 5, 5: four rising pairs, two ties: S = 4, var = 26/3, as the first series.
        let ties = mann_kendall_z(&secs(&[(0, 2.0), (1, 2.0), (2, 5.0), (3, 5.0)]));
        assert!((ties - 3.0 / (26.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mann_kendall_z(&secs(&[(0, 1.0), (1, 5.0)])), 0.0);
        assert_eq!(mann_kendall_z(&secs(&[(0, 1.0), (1, 5.0), (2, 1.0)])), 0.0);
    }

    /// With a significance, the slope is used only when the test passes, and from the first
    /// readings on (no warm-up). A ramp of 1/s: at 8 readings z = 27 / sqrt(65.33) = 3.34 <
    /// 3.5, no trend yet; at 9 readings z = 3.65, the slope 1. Noise around a plateau
    /// (3, 6, 4, 5, 3, 6, 5, 4, 6): Theil-Sen's median is 0.17/s (1.7 members over a 10 s
    /// horizon), z = 0.73, so the test holds the trend at 0.
    #[test]
    fn a_slope_counts_only_once_mann_kendall_finds_a_trend() {
        let f = significant(60, 3.5);
        let mut s = State::default();
        for t in 0..8u64 {
            f.observe(&mut s, Duration::from_secs(t), t as f64);
        }
        assert!((s.trend_z.unwrap() - 27.0 / (8.0f64 * 7.0 * 21.0 / 18.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.trend, 0.0);
        f.observe(&mut s, Duration::from_secs(8), 8.0);
        assert!(s.trend_z.unwrap() >= 3.5 && close(s.trend, 1.0), "{s:?}");

        let noise = [3.0, 6.0, 4.0, 5.0, 3.0, 6.0, 5.0, 4.0, 6.0];
        let points: Vec<(u64, f64)> = noise
            .iter()
            .enumerate()
            .map(|(t, y)| (t as u64, *y))
            .collect();
        assert!(
            close(theil_sen(&secs(&points)), 6.0 / 35.0),
            "the median alone tilts"
        );
        let mut s = State::default();
        for (t, y) in points {
            f.observe(&mut s, Duration::from_secs(t), y);
        }
        assert!((s.trend_z.unwrap() - 0.7298).abs() < 1e-4, "{s:?}");
        assert_eq!((s.trend, s.level), (0.0, Some(6.0)));
    }

    /// A drop: the earliest start of at least n readings all below every reading before them.
    /// 5, 6, 5 | 2, 1, 2: from index 3 (2 < 5, the smallest before); index 2 does not qualify
    /// (5 is not below 5). Noise that comes back above an earlier low never makes one.
    #[test]
    fn a_drop_is_a_run_below_everything_before_it() {
        let pts = secs(&[(0, 5.0), (1, 6.0), (2, 5.0), (3, 2.0), (4, 1.0), (5, 2.0)]);
        assert_eq!(drop_start(&pts, 3), Some(3));
        assert_eq!(drop_start(&pts, 2), Some(3));
        assert_eq!(drop_start(&pts, 4), None, "only 3 readings after the drop");
        assert_eq!(drop_start(&pts, 0), None, "0: off");
        let noise: Vec<(u64, f64)> = [4.0, 6.0, 3.0, 5.0, 4.0, 6.0, 3.0, 5.0]
            .into_iter()
            .enumerate()
            .map(|(t, y)| (t as u64, y))
            .collect();
        assert_eq!(drop_start(&secs(&noise), 3), None);
    }

    /// The level lets go after `drop_readings` readings below the crowd, unless the window
    /// holds `burst_rank` bursts. Horizon 1 s, so each forecast is the last level: 5, then 9
    /// (residual +4, one burst), 9, 9, 9, then 2, 2, 2 (residuals -7, then 0): below the 5,
    /// so a drop once three of them came (a reading as low as the drop's, before the crowd,
    /// would keep it from being one until it left the window).
    #[test]
    fn a_drop_ends_the_peak_unless_the_site_is_bursty() {
        for (rank, level_after) in [(2, 2.0), (1, 9.0)] {
            let mut f = robust(60, 60, 1);
            if let Model::Robust { drop_readings, .. } = &mut f.model {
                *drop_readings = 3;
            }
            f.burst_rank = rank;
            let mut s = State::default();
            for (t, y) in [5.0, 9.0, 9.0, 9.0, 9.0, 2.0, 2.0].into_iter().enumerate() {
                f.observe(&mut s, Duration::from_secs(t as u64), y);
            }
            assert_eq!(
                (s.level, s.dropped),
                (Some(9.0), false),
                "two readings: no drop yet"
            );
            f.observe(&mut s, Duration::from_secs(7), 2.0);
            assert_eq!(f.bursts(&s), vec![4.0]);
            assert_eq!(
                (s.level, s.dropped),
                (Some(level_after), rank == 2),
                "burst rank {rank}"
            );
        }
    }

    /// The shortfall measure takes max(residual, 0): residuals +2, 0, -2, 0, +3, +1, -4 (the
    /// burst test's series) give shortfalls 2, 0, 0, 0, 3, 1, 0; sorted 0, 0, 0, 0, 1, 2, 3:
    /// the median (rank 4) is 0, the 0.8 quantile (rank ceil(5.6) = 6) 2. The absolute median
    /// is 2.
    #[test]
    fn the_shortfall_error_counts_only_forecasts_below_the_demand() {
        for (measure, q, error) in [
            (Measure::Absolute, 0.5, 2.0),
            (Measure::Shortfall, 0.5, 0.0),
            (Measure::Shortfall, 0.8, 2.0),
        ] {
            let mut f = holt(1.0, 0.0, 1);
            f.measure = measure;
            f.quantile = q;
            let mut s = State::default();
            for (t, y) in [0.0, 2.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0]
                .into_iter()
                .enumerate()
            {
                f.observe(&mut s, Duration::from_secs(t as u64), y);
            }
            assert_eq!(f.error(&s), Some(error), "{measure:?} {q}");
        }
    }

    /// Until 3 forecasts were checked the headroom is `warm_up_headroom` x the demand: 0.5 x 4
    /// = 2, sized for 6; once the error is known it is k x the error (0 on a flat series).
    #[test]
    fn the_warm_up_headroom_holds_until_the_error_is_known() {
        let mut f = holt(1.0, 0.0, 1);
        f.warm_up_headroom = 0.5;
        let mut s = State::default();
        f.observe(&mut s, Duration::from_secs(0), 4.0);
        let o = f.outlook(&s, 4.0, 2);
        assert_eq!((o.error, o.headroom, o.desired), (None, 2.0, 6));
        for t in 1..=3 {
            f.observe(&mut s, Duration::from_secs(t), 4.0);
        }
        let o = f.outlook(&s, 4.0, 6);
        assert_eq!((o.error, o.headroom, o.desired), (Some(0.0), 0.0, 4));
    }

    fn secs(points: &[(u64, f64)]) -> Vec<(Duration, f64)> {
        points
            .iter()
            .map(|(t, y)| (Duration::from_secs(*t), *y))
            .collect()
    }

    /// Pairs of (0, 1), (1, 2), (2, 4), (3, 4): slopes 1, 1.5, 1, 2, 1, 0; sorted 0, 1, 1, 1,
    /// 1.5, 2; the median of six is (1 + 1) / 2 = 1.
    #[test]
    fn theil_sen_is_the_median_of_the_pairwise_slopes() {
        assert!(close(
            theil_sen(&secs(&[(0, 1.0), (1, 2.0), (2, 4.0), (3, 4.0)])),
            1.0
        ));
        assert_eq!(theil_sen(&secs(&[(5, 3.0)])), 0.0);
        assert_eq!(theil_sen(&[]), 0.0);
        // A plateau of four and a step: six slopes of 0 and four of 4, 2, 1.33, 1; the median
        // of ten is (0 + 0) / 2. A step moves the trend only once it fills half the window.
        assert_eq!(
            theil_sen(&secs(&[(0, 2.0), (1, 2.0), (2, 2.0), (3, 2.0), (4, 6.0)])),
            0.0
        );
        // Irregular times: (0, 0), (1, 1), (4, 4): every slope is 1.
        assert!(close(
            theil_sen(&secs(&[(0, 0.0), (1, 1.0), (4, 4.0)])),
            1.0
        ));
    }

    /// The robust model on 4, 4, 4, 4, 1 (a dip at t = 4): Theil-Sen's slope is 0 (six pairs
    /// of 0, four negative), so the level is the highest reading of the peak window: 4 while
    /// the window still holds a 4, the dip itself once it holds only the dip.
    #[test]
    fn the_robust_level_holds_the_peak_of_its_window_through_a_dip() {
        for (peak_window, level) in [(2, 4.0), (0, 1.0)] {
            let f = robust(60, peak_window, 10);
            let mut s = State::default();
            for (t, y) in [4.0, 4.0, 4.0, 4.0, 1.0].into_iter().enumerate() {
                f.observe(&mut s, Duration::from_secs(t as u64), y);
            }
            assert_eq!((s.trend, s.level), (0.0, Some(level)), "{peak_window}");
            assert_eq!(f.ahead(&s), level);
        }
    }

    /// A ramp of 1 per second, 0..=4: no trend until the readings cover the 3 s window (t = 3),
    /// then the slope is 1, every reading carried to now is 4, and 10 s ahead is 14. Readings
    /// older than the windows are dropped.
    #[test]
    fn the_robust_model_extrapolates_a_ramp_and_forgets_old_readings() {
        let f = robust(3, 2, 10);
        let mut s = State::default();
        for t in 0..=4u64 {
            f.observe(&mut s, Duration::from_secs(t), t as f64);
            if t < 3 {
                assert_eq!((s.trend, f.ahead(&s)), (0.0, t as f64), "t = {t}");
            }
        }
        assert!(close(s.trend, 1.0), "{s:?}");
        assert!(close(s.level.unwrap(), 4.0), "{s:?}");
        assert!(close(f.ahead(&s), 14.0));
        assert_eq!(s.readings.len(), 4, "t = 1..=4 are within 3 s of 4");
    }

    /// Bursts: alpha = 1, beta = 0, horizon 1 s (the forecast is the last value). Series 0, 2,
    /// 2, 0, 0, 3, 4, 0: residuals +2, 0, -2, 0, +3, +1, -4; the runs of positive residuals are
    /// [2] and [3, 1], so two bursts, 2 and 3. With k = 0 the headroom is the ranked burst.
    #[test]
    fn a_burst_is_a_run_of_positive_residuals_and_the_headroom_covers_the_ranked_one() {
        let mut f = holt(1.0, 0.0, 1);
        f.k = 0.0;
        let mut s = State::default();
        for (t, y) in [0.0, 2.0, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0]
            .into_iter()
            .enumerate()
        {
            f.observe(&mut s, Duration::from_secs(t as u64), y);
        }
        assert_eq!(f.bursts(&s), vec![2.0, 3.0]);
        assert_eq!(f.burst(&f.bursts(&s)), None, "rank 0: bursts are not used");
        for (rank, burst) in [(1, 3.0), (2, 2.0), (3, 0.0)] {
            f.burst_rank = rank;
            let o = f.outlook(&s, 0.0, 1);
            assert_eq!((o.burst, o.bursts, o.headroom), (Some(burst), 2, burst));
            // Sized for the last value (0) plus the burst.
            assert_eq!(o.desired, burst as u64);
        }
        // With k = 2 the error's share wins when larger: median |r| of 2, 0, 2, 0, 3, 1, 4 is
        // 2, so 4 against a burst of 3.
        f.k = 2.0;
        f.burst_rank = 1;
        assert_eq!(f.outlook(&s, 0.0, 1).headroom, 4.0);
    }

    /// The jitter floor, k = 10 and at most 0.2 member, on the robust model (60 s windows,
    /// horizon 1 s, k = 0 so the floor is the whole headroom). A still plateau of 5s: every
    /// change is 0, no floor. A step, 1 x 7 then 4 x 5: one change of 3 among eleven, the
    /// 75th percentile (nearest rank, the 9th of 11) is 0: no floor. A live demand 4.9, 5.0,
    /// 4.95, 4.99, 4.97: changes 0.1, 0.05, 0.04, 0.02, the 75th percentile (3rd of 4) 0.05,
    /// 10 x 0.05 = 0.5 capped at 0.2: sized for the peak 5.0 + 0.2, so 6 members, where the
    /// peak alone gives 5. With k = 2 the floor is 0.1, under the cap. Holt keeps no readings:
    /// no jitter.
    #[test]
    fn the_jitter_floor_covers_a_live_demand_and_not_a_still_one() {
        let mut f = robust(60, 60, 1);
        f.k = 0.0;
        f.jitter = Jitter { k: 10.0, max: 0.2 };
        let run = |f: &Forecast, ys: &[f64]| {
            let mut s = State::default();
            for (t, y) in ys.iter().enumerate() {
                f.observe(&mut s, Duration::from_secs(t as u64), *y);
            }
            let o = f.outlook(&s, *ys.last().unwrap(), 1);
            (f.jitter(&s).unwrap(), o)
        };
        let (j, o) = run(&f, &[5.0; 5]);
        assert_eq!(
            (j, o.jitter_floor, o.headroom, o.desired),
            (0.0, Some(0.0), 0.0, 5)
        );
        let step: Vec<f64> = [1.0; 7].into_iter().chain([4.0; 5]).collect();
        let (j, o) = run(&f, &step);
        assert_eq!((j, o.jitter_floor, o.desired), (0.0, Some(0.0), 4));
        let live = [4.9, 5.0, 4.95, 4.99, 4.97];
        let (j, o) = run(&f, &live);
        assert!(close(j, 0.05), "{j}");
        assert!(close(o.jitter_floor.unwrap(), 0.2) && close(o.headroom, 0.2));
        assert!(close(o.sized_for, 5.2) && o.desired == 6, "{o:?}");
        f.jitter.k = 2.0;
        let (_, o) = run(&f, &live);
        assert!(close(o.headroom, 0.1) && o.desired == 6, "{o:?}");
        f.jitter.k = 0.0;
        let (_, o) = run(&f, &live);
        assert_eq!((o.jitter_floor, o.headroom, o.desired), (None, 0.0, 5));
        let mut h = holt(1.0, 0.0, 1);
        h.jitter = Jitter { k: 10.0, max: 0.2 };
        let mut s = State::default();
        for (t, y) in live.iter().enumerate() {
            h.observe(&mut s, Duration::from_secs(t as u64), *y);
        }
        assert_eq!(h.jitter(&s), None);
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// alpha = beta = 0.5, one observation a second: 1, 2, 3.
    /// t0: level 1, trend 0.
    /// t1: level 0.5 x 2 + 0.5 x (1 + 0) = 1.5; trend 0.5 x 0.5 + 0.5 x 0 = 0.25.
    /// t2: level 0.5 x 3 + 0.5 x (1.5 + 0.25) = 2.375; trend 0.5 x 0.875 + 0.5 x 0.25 = 0.5625.
    /// Two seconds ahead: 2.375 + 2 x 0.5625 = 3.5.
    #[test]
    fn holt_reproduces_the_hand_computed_series() {
        let f = holt(0.5, 0.5, 2);
        let mut s = State::default();
        for (t, y) in [(0, 1.0), (1, 2.0), (2, 3.0)] {
            f.observe(&mut s, Duration::from_secs(t), y);
        }
        assert!(close(s.level.unwrap(), 2.375), "{s:?}");
        assert!(close(s.trend, 0.5625), "{s:?}");
        assert!(close(f.ahead(&s), 3.5));
    }

    /// Irregular ticks: the trend is per second, so a 3 s gap extrapolates three seconds of it.
    /// alpha = 1, beta = 1: level = y, trend = the last slope.
    #[test]
    fn the_trend_is_per_second_on_irregular_ticks() {
        let f = holt(1.0, 1.0, 10);
        let mut s = State::default();
        f.observe(&mut s, Duration::from_secs(0), 2.0);
        f.observe(&mut s, Duration::from_secs(3), 8.0);
        assert!(close(s.trend, 2.0));
        assert!(close(f.ahead(&s), 8.0 + 20.0));
        // A repeated time changes nothing.
        f.observe(&mut s, Duration::from_secs(3), 100.0);
        assert!(close(s.level.unwrap(), 8.0));
    }

    /// Residuals are each observation minus the forecast made `horizon` earlier.
    /// alpha = 1, beta = 0 (no trend): the forecast is the last value.
    /// Series 4, 4, 6, 5, 5 one second apart, horizon 1 s: residuals 0, +2, -1, 0.
    /// |e| = 0, 2, 1, 0; median (nearest rank 2 of 4) = 0; 0.75 quantile = 1; max = 2.
    #[test]
    fn the_error_is_a_quantile_of_the_residuals_of_its_own_forecasts() {
        let mut f = holt(1.0, 0.0, 1);
        let mut s = State::default();
        for (t, y) in [4.0, 4.0, 6.0, 5.0, 5.0].into_iter().enumerate() {
            f.observe(&mut s, Duration::from_secs(t as u64), y);
        }
        let r: Vec<f64> = s.residuals.iter().map(|(_, e)| *e).collect();
        assert_eq!(r, vec![0.0, 2.0, -1.0, 0.0]);
        assert_eq!(f.error(&s), Some(0.0));
        f.quantile = 0.75;
        assert_eq!(f.error(&s), Some(1.0));
        f.quantile = 1.0;
        assert_eq!(f.error(&s), Some(2.0));
        // Headroom 2 x 2 = 4 over the highest of observed 5, level 5, forecast 5: 9 members.
        let o = f.outlook(&s, 5.0, 1);
        assert_eq!((o.headroom, o.sized_for, o.desired), (4.0, 9.0, 9));
    }

    #[test]
    fn old_residuals_are_forgotten() {
        let mut f = holt(1.0, 0.0, 1);
        f.error_window = Duration::from_secs(2);
        let mut s = State::default();
        for (t, y) in [0.0, 10.0, 10.0, 10.0, 10.0, 10.0].into_iter().enumerate() {
            f.observe(&mut s, Duration::from_secs(t as u64), y);
        }
        // The +10 of t=1 left the window at t=4; only zeros remain.
        f.quantile = 1.0;
        assert_eq!(f.error(&s), Some(0.0));
        assert_eq!(s.residuals.len(), 3);
    }

    /// A step: the smoothed level lags, but the size never drops below what is served now.
    #[test]
    fn a_step_is_followed_at_once_and_the_target_divides() {
        let mut f = holt(0.5, 0.0, 60);
        f.target = 0.8;
        f.k = 0.0;
        let mut s = State::default();
        f.observe(&mut s, Duration::from_secs(0), 0.0);
        f.observe(&mut s, Duration::from_secs(15), 2.0);
        let o = f.outlook(&s, 2.0, 1);
        assert_eq!(o.level, 1.0);
        // ceil(2 / 0.8) = 3.
        assert_eq!(o.desired, 3);
    }

    /// Until MIN_RESIDUALS (3) forecasts have been checked against what came, the error is
    /// unknown: up is allowed, down is not, and no headroom is taken from one residual (the
    /// first is usually the start's own step: 0 forecast, 6 came).
    #[test]
    fn no_scale_in_before_the_error_is_known() {
        let f = holt(1.0, 0.0, 60);
        let mut s = State::default();
        f.observe(&mut s, Duration::from_secs(0), 0.0);
        let o = f.outlook(&s, 0.0, 4);
        assert_eq!((o.error, o.desired), (None, 4));
        assert_eq!(f.outlook(&s, 6.0, 4).desired, 6);
        // Residuals +6 (t = 60), then 0 (t = 120): still unknown, no headroom, no way down.
        for t in [60, 120] {
            f.observe(&mut s, Duration::from_secs(t), 6.0);
            let o = f.outlook(&s, 6.0, 8);
            assert_eq!((o.error, o.headroom, o.desired), (None, 0.0, 8), "t = {t}");
        }
        // The third: 0 again. Median of 6, 0, 0 is 0, and down is allowed.
        f.observe(&mut s, Duration::from_secs(180), 6.0);
        let o = f.outlook(&s, 6.0, 8);
        assert_eq!((o.error, o.residuals, o.desired), (Some(0.0), 3, 6));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.9), Some(3.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.25), Some(1.0));
    }
}
