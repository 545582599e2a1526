//! The forecast strategy's arithmetic: Holt's linear trend (double exponential smoothing) on
//! the pool's total demand, its own error measured on its own past forecasts, and the size that
//! covers the forecast plus a headroom derived from that error. Pure and clock-free like the
//! rest of the engine: the caller passes the time of each observation.
//!
//! Holt's method on an irregular series (`dt` seconds since the last observation):
//!
//! ```text
//! level  = alpha * y + (1 - alpha) * (level + trend * dt)
//! trend  = beta * (level - previous level) / dt + (1 - beta) * trend      (per second)
//! y(t+h) = level + trend * h
//! ```
//!
//! Every observation also resolves the forecasts made `horizon` ago: `y - forecast` is one
//! residual. The error is a quantile of the absolute residuals of the last `error_window`, and
//! the headroom is `k` times it: the pool is sized for what the forecast may have missed, as
//! often as it has missed it lately, instead of for a fixed utilisation target.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// The forecast's parameters (the policy file's `strategy = "forecast"` check).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Forecast {
    /// Level smoothing, (0, 1].
    pub alpha: f64,
    /// Trend smoothing, [0, 1].
    pub beta: f64,
    /// How far ahead the pool must be right: boot + health check + the metric's lag + a tick.
    pub horizon: Duration,
    /// The metric one member serves (`load-in-flight`: requests in flight per member).
    pub target: f64,
    /// Headroom = k x error.
    pub k: f64,
    /// Which quantile of the recent absolute residuals is the error, (0, 1].
    pub quantile: f64,
    /// Residuals older than this are forgotten.
    pub error_window: Duration,
}

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
}

/// One tick's outcome, for the decision record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outlook {
    pub observed: f64,
    pub level: f64,
    /// Per second.
    pub trend: f64,
    /// The forecast `horizon` ahead.
    pub forecast: f64,
    /// The error (the quantile of recent absolute residuals), `None` before the first residual.
    pub error: Option<f64>,
    pub residuals: usize,
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

impl Forecast {
    /// Takes the observation `y` (the pool's total demand, in the metric's units) at `now`.
    pub fn observe(&self, state: &mut State, now: Duration, y: f64) {
        match state.level {
            None => {
                state.level = Some(y);
                state.trend = 0.0;
            }
            Some(level) => {
                let dt = now.saturating_sub(state.last).as_secs_f64();
                if dt <= 0.0 {
                    return;
                }
                let new = self.alpha * y + (1.0 - self.alpha) * (level + state.trend * dt);
                state.trend = self.beta * (new - level) / dt + (1.0 - self.beta) * state.trend;
                state.level = Some(new);
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
        while state
            .residuals
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > self.error_window)
        {
            state.residuals.pop_front();
        }
        let ahead = self.ahead(state);
        state.pending.push_back((now + self.horizon, ahead));
    }

    /// The forecast `horizon` after the last observation (0 before any).
    pub fn ahead(&self, state: &State) -> f64 {
        state.level.map_or(0.0, |l| {
            (l + state.trend * self.horizon.as_secs_f64()).max(0.0)
        })
    }

    /// The error: the quantile of the recent absolute residuals.
    pub fn error(&self, state: &State) -> Option<f64> {
        let abs: Vec<f64> = state.residuals.iter().map(|(_, e)| e.abs()).collect();
        quantile(&abs, self.quantile)
    }

    /// The size for the last observation `observed`: enough members for the higher of the
    /// smoothed level and the forecast, plus the headroom. Never below what the observation
    /// needs: a forecast that lags a step does not undo the step. Before its
    /// first residual the forecast's error is unknown: it never asks for fewer than `current`
    /// members then.
    pub fn outlook(&self, state: &State, observed: f64, current: u64) -> Outlook {
        let level = state.level.unwrap_or(observed);
        let forecast = self.ahead(state);
        let error = self.error(state);
        let headroom = self.k * error.unwrap_or(0.0);
        let sized_for = (level.max(forecast) + headroom).max(observed);
        Outlook {
            observed,
            level,
            trend: state.trend,
            forecast,
            error,
            residuals: state.residuals.len(),
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
            alpha,
            beta,
            horizon: Duration::from_secs(horizon),
            target: 1.0,
            k: 2.0,
            quantile: 0.5,
            error_window: Duration::from_secs(600),
        }
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

    /// Until one forecast has been checked against what came, the error is unknown: up is
    /// allowed, down is not.
    #[test]
    fn no_scale_in_before_the_error_is_known() {
        let f = holt(0.5, 0.0, 60);
        let mut s = State::default();
        f.observe(&mut s, Duration::from_secs(0), 1.0);
        let o = f.outlook(&s, 1.0, 4);
        assert_eq!((o.error, o.desired), (None, 4));
        assert_eq!(f.outlook(&s, 6.0, 4).desired, 6);
        // 60 s later the first forecast is checked: error 0, and down is allowed.
        f.observe(&mut s, Duration::from_secs(60), 1.0);
        let o = f.outlook(&s, 1.0, 4);
        assert_eq!((o.error, o.desired), (Some(0.0), 1));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.9), Some(3.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.25), Some(1.0));
    }
}
