//! Load profiles: how the concurrency (closed loop) or the request rate (open loop) changes over
//! a run.
//!
//! | written | meaning |
//! |---|---|
//! | `8` | constant |
//! | `step:0s=1,60s=4,120s=0` | holds each value from its time until the next point |
//! | `ramp:0s=1,60s=8,120s=8,150s=0` | linear between points |
//! | `sine:min=1,max=8,period=2m` | `min + (max-min)(1 - cos(2πt/period))/2`, starting at `min` |
//! | `csv:FILE` | lines `seconds,value` (a header and `#` comments allowed), held like `step` |
//!
//! Point profiles end at their last point; a constant or sine runs until `--duration` or
//! `--requests`.

use std::str::FromStr;
use std::time::Duration;

use crate::config::Dur;

#[derive(Clone, Debug, PartialEq)]
pub enum Profile {
    Constant(f64),
    Points {
        points: Vec<(Duration, f64)>,
        linear: bool,
    },
    Sine {
        min: f64,
        max: f64,
        period: Duration,
    },
}

impl Profile {
    /// The target value `t` into the run.
    pub fn value_at(&self, t: Duration) -> f64 {
        match self {
            Profile::Constant(v) => *v,
            Profile::Sine { min, max, period } => {
                let phase = t.as_secs_f64() / period.as_secs_f64() * std::f64::consts::TAU;
                min + (max - min) * (1.0 - phase.cos()) / 2.0
            }
            Profile::Points { points, linear } => {
                let idx = points.partition_point(|(at, _)| *at <= t);
                if idx == 0 {
                    return if *linear { points[0].1 } else { 0.0 };
                }
                let (t0, v0) = points[idx - 1];
                match (linear, points.get(idx)) {
                    (true, Some(&(t1, v1))) => {
                        let span = (t1 - t0).as_secs_f64();
                        if span <= 0.0 {
                            v1
                        } else {
                            v0 + (v1 - v0) * (t - t0).as_secs_f64() / span
                        }
                    }
                    _ => v0,
                }
            }
        }
    }

    /// Where the profile itself ends, if it does.
    pub fn end(&self) -> Option<Duration> {
        match self {
            Profile::Points { points, .. } => points.last().map(|p| p.0),
            _ => None,
        }
    }

    /// The largest value the profile reaches.
    pub fn peak(&self) -> f64 {
        match self {
            Profile::Constant(v) => *v,
            Profile::Sine { max, min, .. } => max.max(*min),
            Profile::Points { points, .. } => points.iter().map(|p| p.1).fold(0.0, f64::max),
        }
    }
}

fn parse_points(spec: &str, linear: bool) -> Result<Profile, String> {
    let mut points = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (t, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not TIME=VALUE (e.g. 60s=4)"))?;
        let t: Dur = t.parse()?;
        points.push((t.get(), parse_value(v)?));
    }
    finish_points(points, linear)
}

fn finish_points(points: Vec<(Duration, f64)>, linear: bool) -> Result<Profile, String> {
    if points.is_empty() {
        return Err("a profile needs at least one point".into());
    }
    if points.windows(2).any(|w| w[1].0 < w[0].0) {
        return Err("profile times must not go backwards".into());
    }
    Ok(Profile::Points { points, linear })
}

fn parse_value(v: &str) -> Result<f64, String> {
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("`{v}` is not a number"))?;
    if !x.is_finite() || x < 0.0 {
        return Err(format!("`{v}` must be a number >= 0"));
    }
    Ok(x)
}

/// Reads `seconds,value` lines.
pub fn parse_csv(text: &str) -> Result<Profile, String> {
    let mut points = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (t, v) = line
            .split_once(',')
            .ok_or_else(|| format!("line {}: expected `seconds,value`", n + 1))?;
        let Ok(secs) = t.trim().parse::<f64>() else {
            if points.is_empty() && n == 0 {
                continue; // a header line
            }
            return Err(format!("line {}: `{t}` is not a number of seconds", n + 1));
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("line {}: time must be >= 0", n + 1));
        }
        let v = parse_value(v).map_err(|e| format!("line {}: {e}", n + 1))?;
        points.push((Duration::from_secs_f64(secs), v));
    }
    finish_points(points, false)
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("step:") {
            return parse_points(rest, false);
        }
        if let Some(rest) = s.strip_prefix("ramp:") {
            return parse_points(rest, true);
        }
        if let Some(path) = s.strip_prefix("csv:") {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            return parse_csv(&text);
        }
        if let Some(rest) = s.strip_prefix("sine:") {
            let (mut min, mut max, mut period) = (None, None, None);
            for part in rest.split(',') {
                match part.trim().split_once('=') {
                    Some(("min", v)) => min = Some(parse_value(v)?),
                    Some(("max", v)) => max = Some(parse_value(v)?),
                    Some(("period", v)) => period = Some(v.parse::<Dur>()?.get()),
                    _ => return Err(format!("`{part}`: sine takes min=, max= and period=")),
                }
            }
            let period = period.ok_or("sine needs period=")?;
            if period.is_zero() {
                return Err("period must be greater than 0".into());
            }
            return Ok(Profile::Sine {
                min: min.unwrap_or(0.0),
                max: max.ok_or("sine needs max=")?,
                period,
            });
        }
        parse_value(s).map(Profile::Constant).map_err(|_| {
            format!("`{s}` is neither a number nor a profile (step:, ramp:, sine:, csv:)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn step_holds_each_value_until_the_next_point() {
        let p: Profile = "step:0s=1,60s=4,120s=0".parse().unwrap();
        assert_eq!(p.value_at(secs(0)), 1.0);
        assert_eq!(p.value_at(secs(59)), 1.0);
        assert_eq!(p.value_at(secs(60)), 4.0);
        assert_eq!(p.value_at(secs(200)), 0.0);
        assert_eq!(p.end(), Some(secs(120)));
        assert_eq!(p.peak(), 4.0);
    }

    #[test]
    fn ramp_interpolates_linearly() {
        let p: Profile = "ramp:0s=0,10s=10,20s=10".parse().unwrap();
        assert_eq!(p.value_at(secs(5)), 5.0);
        assert_eq!(p.value_at(secs(15)), 10.0);
    }

    #[test]
    fn sine_starts_at_min_and_peaks_at_half_period() {
        let p: Profile = "sine:min=2,max=10,period=60s".parse().unwrap();
        assert!((p.value_at(secs(0)) - 2.0).abs() < 1e-9);
        assert!((p.value_at(secs(30)) - 10.0).abs() < 1e-9);
        assert_eq!(p.end(), None);
    }

    #[test]
    fn csv_takes_a_header_and_comments() {
        let p = parse_csv("seconds,rps\n# warm\n0,5\n30,50\n60,0\n").unwrap();
        assert_eq!(p.value_at(secs(45)), 50.0);
        assert!(parse_csv("0,5\nx,1\n").is_err());
    }

    #[test]
    fn bad_profiles_say_why() {
        assert!(
            "step:60s=4,0s=1"
                .parse::<Profile>()
                .unwrap_err()
                .contains("backwards")
        );
        assert!("step:60=4".parse::<Profile>().unwrap_err().contains("unit"));
        assert!(
            "ramp:0s=-1"
                .parse::<Profile>()
                .unwrap_err()
                .contains(">= 0")
        );
        assert!(
            "sine:max=3"
                .parse::<Profile>()
                .unwrap_err()
                .contains("period")
        );
        assert!("lots".parse::<Profile>().unwrap_err().contains("profile"));
    }
}
