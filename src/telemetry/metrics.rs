//! The Prometheus side of telemetry: a registry with `poolpilot_build_info` and the standard
//! `process_*` metrics, and the `/metrics` handler every server mounts.
//!
//! Names follow Prometheus conventions: base units (seconds, bytes), counters end in `_total`,
//! label values come from enums, never from free text.
#![allow(
    unsafe_code,
    reason = "libc: sysconf and clock_gettime for the process metrics"
)]

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The content type of Prometheus' text exposition format, which every Prometheus and `promtool
/// check metrics` read.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A registry that already holds `poolpilot_build_info` and the process metrics.
pub fn registry(component: &str) -> Registry {
    let mut r = Registry::default();
    r.register(
        "poolpilot_build",
        "poolpilot's version and the component serving these metrics",
        Info::new(vec![
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            ("component".to_owned(), component.to_owned()),
        ]),
    );
    r.register_collector(Box::new(ProcessCollector));
    r
}

/// Renders the registry in Prometheus' text format (0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    openmetrics_to_text(&out)
}

/// `prometheus-client` writes OpenMetrics; Prometheus' older text format differs only in the
/// metadata: counter families are named with their `_total` suffix, `info` is a gauge named
/// `_info`, and there are no `# UNIT` or `# EOF` lines.
fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gaugehistogram" | "stateset" | "unknown" => (name.to_owned(), "untyped"),
                k => (name.to_owned(), k),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `GET /metrics` for any router whose state can give the registry.
pub async fn handler(State(registry): State<Arc<Registry>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&registry)).into_response()
}

/// A gauge for a boolean state (1 or 0).
pub fn flag(g: &Gauge, on: bool) {
    g.set(i64::from(on));
}

/// `process_*` metrics read from `/proc/self` at scrape time, as the Go and Python clients export.
#[derive(Debug)]
pub struct ProcessCollector;

#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub threads: u64,
}

impl ProcessStats {
    /// Reads this process's figures; `None` off Linux.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Indices are the stat(5) field numbers minus 3.
        let ticks = clock_ticks();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        let threads: u64 = f.get(17)?.parse().ok()?;
        let start_ticks: f64 = f.get(19)?.parse().ok()?;
        let vsize: u64 = f.get(20)?.parse().ok()?;
        let rss_pages: u64 = f.get(21)?.parse().ok()?;
        let page = page_size();
        let boot = boot_time()?;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        Some(Self {
            cpu_seconds: (utime + stime) / ticks,
            resident_bytes: rss_pages * page,
            virtual_bytes: vsize,
            start_time_seconds: boot + start_ticks / ticks,
            open_fds,
            threads,
        })
    }
}

/// The kernel's clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc` CPU times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// When the machine booted, in Unix seconds: the wall clock minus CLOCK_BOOTTIME (the clock
/// `/proc/self/stat`'s start time counts on). This is how the kernel derives `btime` in
/// `/proc/stat`, which the units' `ProcSubset=pid` hides.
fn boot_time() -> Option<f64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    Some(now - (ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<&Unit>, f64); 5] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(&Unit::Bytes),
                s.resident_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(&Unit::Bytes),
                s.virtual_bytes as f64,
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(&Unit::Seconds),
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                s.open_fds as f64,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                None,
                s.threads as f64,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, unit, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_plausible() {
        let s = ProcessStats::read().expect("Linux /proc");
        assert!(s.resident_bytes > 1024 * 1024);
        assert!(s.threads >= 1 && s.open_fds >= 3);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 3600.0);
    }

    #[test]
    fn the_boot_time_from_the_clocks_matches_proc_stat() {
        // /proc/stat is readable here (not under the units' ProcSubset=pid); its btime is
        // whole seconds.
        let stat = std::fs::read_to_string("/proc/stat").expect("Linux /proc/stat");
        let btime: f64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .expect("btime");
        let ours = boot_time().expect("the clocks");
        assert!((ours - btime).abs() < 2.0, "{ours} vs btime {btime}");
    }

    #[test]
    fn the_registry_renders_build_info_and_process_metrics() {
        let text = render(&registry("test"));
        assert!(text.contains("poolpilot_build_info{version=\""), "{text}");
        assert!(text.contains("component=\"test\""));
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE poolpilot_build_info gauge"), "{text}");
    }
}
