//! The comparison: a text table, JSON for scripts (with elastic speedups over `course` and
//! `hpa`), and an SVG of demand and each policy's supply.

use std::fmt::Write;

use serde::Serialize;

use super::Run;
use super::metrics::speedup;

/// One policy's line of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Line<'a> {
    pub policy: &'a str,
    pub scores: &'a super::Scores,
    /// Elastic speedup over the `course` run (> 1: better); `None` without one.
    pub speedup_over_course: Option<f64>,
    pub speedup_over_hpa: Option<f64>,
    /// This policy's instance-hours over the oracle's (1 = as cheap as the best possible).
    pub instance_hours_over_oracle: Option<f64>,
    /// The oracle's SLO-violation minutes on the same trace, beside this policy's.
    pub oracle_slo_violation_minutes: Option<f64>,
    /// [from, to) seconds of each stretch with fewer members in the NLB than the demand needed.
    pub slo_violations: Vec<(f64, f64)>,
    pub changes: &'a [super::Change],
}

/// The stretches of `run` when fewer members served than the demand needed.
pub fn violations(run: &Run) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (i, (d, r)) in run.demand.iter().zip(&run.ready).enumerate() {
        if r >= d {
            continue;
        }
        let t = i as f64 * run.sample_s;
        match out.last_mut() {
            Some((_, to)) if *to == t => *to = t + run.sample_s,
            _ => out.push((t, t + run.sample_s)),
        }
    }
    out
}

pub fn lines<'a>(
    runs: &'a [Run],
    course: Option<&'a Run>,
    hpa: Option<&'a Run>,
    oracle: Option<&'a Run>,
) -> Vec<Line<'a>> {
    runs.iter()
        .map(|r| Line {
            policy: &r.policy,
            scores: &r.scores,
            speedup_over_course: course
                .map(|c| speedup(&r.scores.elasticity, &c.scores.elasticity)),
            speedup_over_hpa: hpa.map(|h| speedup(&r.scores.elasticity, &h.scores.elasticity)),
            instance_hours_over_oracle: oracle
                .filter(|o| o.scores.instance_seconds > 0.0)
                .map(|o| r.scores.instance_seconds / o.scores.instance_seconds),
            oracle_slo_violation_minutes: oracle.map(|o| o.scores.slo_violation_minutes),
            slo_violations: violations(r),
            changes: &r.changes,
        })
        .collect()
}

pub fn table(trace: &str, lines: &[Line]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {trace}: accuracy θU/θO and timeshare τU/τO in % (lower is better)\n"
    );
    let _ = writeln!(
        out,
        "{:<18} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8} {:>10}",
        "policy",
        "θU",
        "θO",
        "τU",
        "τO",
        "instab%",
        "jitter/h",
        "inst-h",
        "EUR",
        "SLO-min",
        "changes",
        "x course",
        "x hpa",
        "h/oracle",
        "oracle-SLO"
    );
    for l in lines {
        let e = &l.scores.elasticity;
        let sp = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(
            out,
            "{:<18} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>8.1} {:>8.2} {:>9.4} {:>8.1} {:>7} {:>8} {:>8} {:>8} {:>10}",
            l.policy,
            e.theta_u,
            e.theta_o,
            e.tau_u,
            e.tau_o,
            e.instability,
            e.jitter_per_hour,
            l.scores.instance_seconds / 3600.0,
            l.scores.cost_eur,
            l.scores.slo_violation_minutes,
            l.scores.scale_changes,
            sp(l.speedup_over_course),
            sp(l.speedup_over_hpa),
            sp(l.instance_hours_over_oracle),
            l.oracle_slo_violation_minutes
                .map_or("-".to_owned(), |v| format!("{v:.1}")),
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Demand (grey, filled) and each policy's supply (a step line each), over time.
pub fn svg(trace: &str, runs: &[Run]) -> String {
    const COLORS: [&str; 6] = [
        "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let (w, h, left, right, top, bottom) = (900.0, 420.0, 60.0, 160.0, 40.0, 50.0);
    let Some(first) = runs.first() else {
        return String::new();
    };
    let n = first.demand.len().max(1);
    let dt = first.sample_s;
    let length = n as f64 * dt;
    let peak = runs
        .iter()
        .flat_map(|r| r.supply.iter().chain(&r.demand))
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64
        + 1.0;
    let x = |t: f64| left + (w - left - right) * t / length;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / peak);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{left}" y="20" font-size="14">{}</text>"##,
        esc(&format!("poolpilot simulate: trace {trace}"))
    );
    // Axes and grid.
    let step = (peak / 8.0).ceil().max(1.0);
    let mut v = 0.0;
    while v <= peak {
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{v}</text>"##,
            w - right,
            left - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
        v += step;
    }
    let minutes = (length / 60.0).ceil() as u64;
    let tick = [5u64, 10, 15, 30, 60]
        .into_iter()
        .find(|m| minutes / m <= 12)
        .unwrap_or(120);
    for m in (0..=minutes).step_by(tick as usize) {
        let xx = x(m as f64 * 60.0);
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle">{m}</text>"##,
            h - bottom,
            h - bottom + 16.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle">time (minutes)</text><text transform="translate(16 {}) rotate(-90)" text-anchor="middle">instances</text>"##,
        (left + w - right) / 2.0,
        h - 10.0,
        (top + h - bottom) / 2.0
    );
    let steps = |series: &[u64]| {
        let mut d = String::new();
        for (i, v) in series.iter().enumerate() {
            let t0 = i as f64 * dt;
            let cmd = if i == 0 { 'M' } else { 'L' };
            let _ = write!(
                d,
                "{cmd}{:.1},{:.1} L{:.1},{:.1} ",
                x(t0),
                y(*v as f64),
                x(t0 + dt),
                y(*v as f64)
            );
        }
        d
    };
    let _ = write!(
        s,
        r##"<path d="{}L{:.1},{:.1} L{:.1},{:.1} Z" fill="#ddd" stroke="none"><title>demand</title></path>"##,
        steps(&first.demand),
        x(length),
        y(0.0),
        x(0.0),
        y(0.0)
    );
    let _ = write!(
        s,
        r##"<rect x="{}" y="{top}" width="12" height="12" fill="#ddd"/><text x="{}" y="{}">demand</text>"##,
        w - right + 10.0,
        w - right + 28.0,
        top + 10.0
    );
    for (i, r) in runs.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let _ = write!(
            s,
            r##"<path d="{}" fill="none" stroke="{c}" stroke-width="2"><title>{}</title></path><rect x="{}" y="{}" width="12" height="3" fill="{c}"/><text x="{}" y="{}">{}</text>"##,
            steps(&r.supply),
            esc(&r.policy),
            w - right + 10.0,
            top + 30.0 + 20.0 * i as f64,
            w - right + 28.0,
            top + 36.0 + 20.0 * i as f64,
            esc(&r.policy)
        );
    }
    s.push_str("</svg>\n");
    s
}
