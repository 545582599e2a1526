//! Workloads: requests per second over virtual time. Built-in shapes are given in "instances'
//! worth" (multiples of one instance's capacity), so that they mean the same at any capacity;
//! CSV traces are in requests per second.

use std::time::Duration;

/// A seeded generator (SplitMix64): the same seed gives the same run on every platform and
/// every version of this program.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A workload: piecewise-constant requests per second.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub name: String,
    /// (start second, requests per second), sorted by time; the first starts at 0.
    pub points: Vec<(f64, f64)>,
    /// How long the run lasts.
    pub length: Duration,
}

pub const BUILTIN: [&str; 5] = ["step", "ramp", "sine", "spike", "noisy"];

impl Trace {
    /// The load at `t` seconds.
    pub fn at(&self, t: f64) -> f64 {
        let i = self.points.partition_point(|(s, _)| *s <= t);
        if i == 0 { 0.0 } else { self.points[i - 1].1 }
    }

    /// A built-in shape for instances of `capacity` requests/s; `seed` drives the noise.
    pub fn builtin(name: &str, capacity: f64, seed: u64) -> Option<Self> {
        let min = |m: f64| m * 60.0;
        let mut points: Vec<(f64, f64)> = Vec::new();
        let length;
        match name {
            // 2 instances' worth for 10 min, 6 for 30 min, back to 2 for 20 min.
            "step" => {
                points = vec![(0.0, 2.0), (min(10.0), 6.0), (min(40.0), 2.0)];
                length = min(60.0);
            }
            // 1 -> 8 over 30 min, hold 10 min, 8 -> 1 over 30 min, then 10 min at 1.
            "ramp" => {
                for s in (0..=1800).step_by(30) {
                    points.push((s as f64, 1.0 + 7.0 * s as f64 / 1800.0));
                }
                for s in (0..=1800).step_by(30) {
                    points.push((2400.0 + s as f64, 8.0 - 7.0 * s as f64 / 1800.0));
                }
                length = min(80.0);
            }
            // A day compressed into an hour, twice: 1 to 8 instances' worth.
            "sine" => {
                for s in (0..7200).step_by(30) {
                    let phase = s as f64 / 3600.0 * std::f64::consts::TAU;
                    points.push((s as f64, 4.5 - 3.5 * phase.cos()));
                }
                length = min(120.0);
            }
            // A flash crowd: 2 instances' worth, 9 for 5 minutes at minute 20.
            "spike" => {
                points = vec![(0.0, 2.0), (min(20.0), 9.0), (min(25.0), 2.0)];
                length = min(60.0);
            }
            // A plateau of 4 instances' worth, ±40 % noise every 30 s.
            "noisy" => {
                let mut rng = Rng::new(seed ^ 0x006E_6F69_7379);
                for s in (0..3600).step_by(30) {
                    points.push((s as f64, 4.0 * (1.0 + 0.8 * (rng.unit() - 0.5))));
                }
                length = min(60.0);
            }
            _ => return None,
        }
        Some(Self {
            name: name.to_owned(),
            points: points.into_iter().map(|(t, x)| (t, x * capacity)).collect(),
            length: Duration::from_secs_f64(length),
        })
    }

    /// The same workload with every rate multiplied by `factor` (to map a recorded site's
    /// traffic onto a pool of a few members).
    pub fn scaled(mut self, factor: f64) -> Self {
        for (_, r) in &mut self.points {
            *r *= factor;
        }
        self
    }

    /// A CSV trace: `time_s,requests_per_s` per line (a header line and `#` comments are
    /// skipped); the load holds until the next line; the run ends at the last line's time (or
    /// one minute after it when that is its only line).
    pub fn csv(name: &str, text: &str) -> Result<Self, String> {
        let mut points = Vec::new();
        let mut header_seen = false;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split(',').map(str::trim);
            let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `time_s,requests_per_s`", i + 1));
            };
            let (t, r) = match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(t), Ok(r)) => (t, r),
                // A header: the first line that is not a comment, before any data.
                _ if points.is_empty() && !header_seen => {
                    header_seen = true;
                    continue;
                }
                _ => return Err(format!("line {}: `{line}` is not two numbers", i + 1)),
            };
            if !(t.is_finite() && t >= 0.0 && r.is_finite() && r >= 0.0) {
                return Err(format!("line {}: time and rate must be >= 0", i + 1));
            }
            if let Some((prev, _)) = points.last()
                && t <= *prev
            {
                return Err(format!("line {}: times must increase", i + 1));
            }
            points.push((t, r));
        }
        let Some(&(last, _)) = points.last() else {
            return Err("no data lines".into());
        };
        if points[0].0 != 0.0 {
            points.insert(0, (0.0, 0.0));
        }
        let length = if points.len() == 1 { 60.0 } else { last };
        if length > 7.0 * 86400.0 {
            return Err("a trace may last at most 7 days".into());
        }
        Ok(Self {
            name: name.to_owned(),
            points,
            length: Duration::from_secs_f64(length),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_scale_with_capacity_and_noise_follows_the_seed() {
        let s = Trace::builtin("step", 10.0, 1).unwrap();
        assert_eq!(
            (s.at(0.0), s.at(599.0), s.at(600.0), s.at(2400.0)),
            (20.0, 20.0, 60.0, 20.0)
        );
        for name in BUILTIN {
            let t = Trace::builtin(name, 10.0, 7).unwrap();
            assert!(t.points.iter().all(|(_, r)| *r >= 0.0), "{name}");
        }
        assert_eq!(
            Trace::builtin("noisy", 10.0, 1),
            Trace::builtin("noisy", 10.0, 1)
        );
        assert_ne!(
            Trace::builtin("noisy", 10.0, 1),
            Trace::builtin("noisy", 10.0, 2)
        );
    }

    #[test]
    fn csv_traces_parse_and_explain_errors() {
        let t = Trace::csv("x", "time_s,rps\n0,10\n60,30\n# note\n120,0\n").unwrap();
        assert_eq!(
            (t.at(30.0), t.at(60.0), t.length.as_secs()),
            (10.0, 30.0, 120)
        );
        assert!(
            Trace::csv("x", "0,1\n0,2\n")
                .unwrap_err()
                .contains("increase")
        );
        assert!(
            Trace::csv("x", "0,1\nten,2\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(Trace::csv("x", "").unwrap_err().contains("no data"));
        // Comments before the header, as the traces of traces/ have them.
        let t = Trace::csv("x", "# source\n# cut\ntime_s,rps\n0,5\n60,5\n").unwrap();
        assert_eq!(t.scaled(2.0).at(10.0), 10.0);
        assert!(
            Trace::csv("x", "time_s,rps\nagain,a header\n0,1\n")
                .unwrap_err()
                .contains("line 2")
        );
    }
}
