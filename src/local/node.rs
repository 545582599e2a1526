//! A node_exporter stand-in for the local mode: `node_cpu_seconds_total` by mode, relative to
//! the instance's capacity, so that the course's PromQL works unchanged on a laptop.
//!
//! A local instance is one `poolpilot app` process given `capacity` cores. Its CPU is reported
//! as one cpu (`cpu="0"`) whose modes add up to `capacity` seconds per second of wall time:
//! `user` and `system` are the process's own CPU time, `steal` the time its `/load` burners
//! wanted and the machine did not give them (as a VM on a busy host reports it), `idle` the rest
//! of the capacity. The
//! course's expression `sum(rate(node_cpu_seconds_total{mode!="idle"}[1m])) /
//! sum(rate(node_cpu_seconds_total[1m]))` then gives the share of the instance's capacity in use,
//! as it gives the share of a VM's cores on Exoscale.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// This process's user and system CPU seconds.
pub fn cpu_times() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = crate::telemetry::metrics::clock_ticks();
    Some((
        f.get(11)?.parse::<f64>().ok()? / ticks,
        f.get(12)?.parse::<f64>().ok()? / ticks,
    ))
}

/// The idle counter: the capacity not used so far, never going down. A process may briefly use
/// a little more than its capacity (scheduling jitter around the quota); reporting a smaller
/// idle value then would look like a counter reset to Prometheus, and `rate()` would read a
/// huge idle rate, an almost idle instance, just when it is busiest.
#[derive(Debug, Default)]
pub struct IdleCounter(std::sync::Mutex<f64>);

impl IdleCounter {
    pub fn next(&self, capacity: f64, elapsed: f64, busy: f64) -> f64 {
        let mut last = self.0.lock().expect("idle counter lock");
        *last = last.max(capacity * elapsed - busy).max(0.0);
        *last
    }
}

/// CPU seconds by mode, as node_exporter reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Modes {
    pub idle: f64,
    pub user: f64,
    pub system: f64,
    pub steal: f64,
}

/// The metrics text for `capacity` cores with the given CPU seconds by mode.
pub fn render(capacity: f64, m: Modes) -> String {
    let mut out = String::new();
    out.push_str("# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n");
    out.push_str("# TYPE node_cpu_seconds_total counter\n");
    for (mode, v) in [
        ("idle", m.idle),
        ("steal", m.steal),
        ("system", m.system),
        ("user", m.user),
    ] {
        let _ = writeln!(
            out,
            "node_cpu_seconds_total{{cpu=\"0\",mode=\"{mode}\"}} {v:.3}"
        );
    }
    out.push_str(
        "# HELP poolpilot_local_cpu_capacity_cores The cores this local instance may use.\n",
    );
    out.push_str("# TYPE poolpilot_local_cpu_capacity_cores gauge\n");
    let _ = writeln!(out, "poolpilot_local_cpu_capacity_cores {capacity}");
    out
}

/// `/metrics` of the stand-in, for the app whose `/load` burns with `burner`.
pub fn router(burner: crate::app::burn::Burner) -> Router {
    let capacity = burner.capacity();
    let started = Arc::new(Instant::now());
    let idle = Arc::new(IdleCounter::default());
    // CPU time already spent before the first scrape (start-up) counts from the start.
    Router::new().route(
        "/metrics",
        get(move || {
            let (started, idle, burner) = (started.clone(), idle.clone(), burner.clone());
            async move {
                let (user, system) = cpu_times().unwrap_or((0.0, 0.0));
                let steal = burner.stolen_seconds();
                let idle = idle.next(
                    capacity,
                    started.elapsed().as_secs_f64(),
                    user + system + steal,
                );
                let body = render(
                    capacity,
                    Modes {
                        idle,
                        user,
                        system,
                        steal,
                    },
                );
                (
                    [(
                        header::CONTENT_TYPE,
                        crate::telemetry::metrics::CONTENT_TYPE,
                    )],
                    body,
                )
                    .into_response()
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_add_up_to_the_capacity_and_idle_never_goes_down() {
        let c = IdleCounter::default();
        let idle = c.next(0.5, 100.0, 25.0);
        assert_eq!(idle, 25.0);
        let text = render(
            0.5,
            Modes {
                idle,
                user: 20.0,
                system: 3.0,
                steal: 2.0,
            },
        );
        assert!(text.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 25.000"));
        assert!(text.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 20.000"));
        assert!(text.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"steal\"} 2.000"));
        assert_eq!(
            crate::autoscaler::source::scrape::parse_node_cpu(&text),
            Some((25.0, 50.0))
        );
        // A burst above capacity: idle holds instead of going backwards (a counter reset).
        assert_eq!(c.next(0.5, 101.0, 25.6), 25.0);
        assert_eq!(c.next(0.5, 102.0, 25.6), 25.4);
        // Never negative.
        assert_eq!(IdleCounter::default().next(0.5, 1.0, 2.0), 0.0);
    }
}
