//! The demo's report: the timeline as CSV and JSON, and an SVG chart of load, CPU and pool size
//! with the scaling decisions marked.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

/// One second of the demo.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since the load started (negative while the pool boots).
    pub t: f64,
    /// Concurrent `/load` clients the profile asks for.
    pub load_clients: f64,
    /// Requests per second at the NLB over the last second (`/load` and `/health` probes).
    pub rps: f64,
    pub failed_total: u64,
    pub p99_ms: f64,
    /// Pool-average CPU, percent; `None` before any member reports.
    pub cpu_pct: Option<f64>,
    pub size: u64,
    pub running: u64,
    pub healthy: u64,
}

/// A scaling decision as the chart marks it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Mark {
    pub t: f64,
    pub action: String,
    pub outcome: String,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub reason: String,
    pub strategy: String,
    /// A policy's raw (safest-wins) and stabilized sizes, the rule that clipped, and each
    /// check's input with its sample time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommended: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stabilized: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipped_by: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<serde_json::Value>,
}

pub fn csv(samples: &[Sample]) -> String {
    let mut out =
        String::from("t_s,load_clients,rps,failed_total,p99_ms,cpu_pct,size,running,healthy\n");
    for s in samples {
        let cpu = s.cpu_pct.map(|c| format!("{c:.1}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:.1},{},{:.1},{},{:.1},{},{},{},{}",
            s.t, s.load_clients, s.rps, s.failed_total, s.p99_ms, cpu, s.size, s.running, s.healthy
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart: time on x (seconds); pool size and load clients on the left axis (count); CPU on
/// the right axis (percent, with the 20 % and 80 % thresholds); decisions as vertical markers.
pub fn svg(title: &str, samples: &[Sample], marks: &[Mark], max_size: u64) -> String {
    let (w, h) = (960.0, 520.0);
    let (left, right, top, bottom) = (70.0, 70.0, 60.0, 110.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let t0 = samples.first().map(|s| s.t).unwrap_or(0.0).min(0.0);
    let t1 = samples.last().map(|s| s.t).unwrap_or(1.0).max(t0 + 1.0);
    let count_max = samples
        .iter()
        .map(|s| s.size.max(s.load_clients.ceil() as u64))
        .max()
        .unwrap_or(1)
        .max(max_size)
        .max(1) as f64;
    let x = |t: f64| left + (t - t0) / (t1 - t0) * pw;
    let yc = |c: f64| top + ph - c / count_max * ph;
    let yp = |p: f64| top + ph - p / 100.0 * ph;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Grid and axes.
    let step = nice_step(t1 - t0);
    let mut t = (t0 / step).ceil() * step;
    while t <= t1 {
        let xx = x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle">{t:.0}</text>"##,
            top + ph,
            top + ph + 16.0
        );
        t += step;
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">time since the load started (s)</text>"#,
        left + pw / 2.0,
        top + ph + 34.0
    );
    for c in 0..=(count_max as u64) {
        let yy = yc(c as f64);
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#f3f3f3"/><text x="{}" y="{:.1}" text-anchor="end">{c}</text>"##,
            left + pw,
            left - 8.0,
            yy + 4.0
        );
    }
    for p in [0, 20, 40, 60, 80, 100] {
        let yy = yp(p as f64);
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{:.1}">{p} %</text>"#,
            left + pw + 8.0,
            yy + 4.0
        );
    }
    for (p, label) in [
        (80.0, "scale up above 80 %"),
        (20.0, "scale down below 20 %"),
    ] {
        let yy = yp(p);
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#d62728" stroke-dasharray="2 4" stroke-opacity="0.6"/><text x="{}" y="{:.1}" fill="#d62728" text-anchor="end" font-size="10">{label}</text>"##,
            left + pw,
            left + pw - 4.0,
            yy - 4.0
        );
    }
    let _ = writeln!(
        o,
        r#"<text transform="translate(20,{}) rotate(-90)" text-anchor="middle">instances / clients (count)</text>"#,
        top + ph / 2.0
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate({},{}) rotate(90)" text-anchor="middle">pool-average CPU (%)</text>"#,
        w - 18.0,
        top + ph / 2.0
    );
    let _ = writeln!(
        o,
        r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );

    // Series.
    let series = |o: &mut String,
                  color: &str,
                  width: f64,
                  dash: &str,
                  pts: Vec<(f64, f64)>,
                  stepped: bool| {
        if pts.is_empty() {
            return;
        }
        let mut d = format!("M{:.1},{:.1}", pts[0].0, pts[0].1);
        for w in pts.windows(2) {
            if stepped {
                let _ = write!(d, " L{:.1},{:.1}", w[1].0, w[0].1);
            }
            let _ = write!(d, " L{:.1},{:.1}", w[1].0, w[1].1);
        }
        let _ = writeln!(
            o,
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="{width}" stroke-dasharray="{dash}"/>"#
        );
    };
    series(
        &mut o,
        "#999999",
        1.5,
        "6 3",
        samples
            .iter()
            .map(|s| (x(s.t), yc(s.load_clients)))
            .collect(),
        true,
    );
    series(
        &mut o,
        "#ff7f0e",
        1.5,
        "",
        samples
            .iter()
            .filter_map(|s| s.cpu_pct.map(|c| (x(s.t), yp(c))))
            .collect(),
        false,
    );
    series(
        &mut o,
        "#1f77b4",
        2.5,
        "",
        samples
            .iter()
            .map(|s| (x(s.t), yc(s.size as f64)))
            .collect(),
        true,
    );
    series(
        &mut o,
        "#2ca02c",
        1.5,
        "3 2",
        samples
            .iter()
            .map(|s| (x(s.t), yc(s.healthy as f64)))
            .collect(),
        true,
    );
    // Decisions.
    for m in marks
        .iter()
        .filter(|m| m.outcome == "scaled" || m.outcome == "dry-run")
    {
        let xx = x(m.t.clamp(t0, t1));
        let (sym, color) = if m.action == "up" {
            ("▲", "#1f77b4")
        } else {
            ("▼", "#9467bd")
        };
        let _ = writeln!(
            o,
            r#"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{}" stroke="{color}" stroke-opacity="0.5"/><text x="{xx:.1}" y="{}" fill="{color}" text-anchor="middle">{sym}</text><title>{}</title>"#,
            top + ph,
            top - 6.0,
            esc(&format!(
                "t={:.0}s {} {:?} -> {:?}: {}",
                m.t, m.action, m.from, m.to, m.reason
            ))
        );
    }
    // Legend.
    let items = [
        ("#1f77b4", "", "pool size (instances)"),
        ("#2ca02c", "3 2", "healthy at the NLB (instances)"),
        ("#ff7f0e", "", "pool-average CPU (%, right axis)"),
        ("#999999", "6 3", "load (concurrent /load clients)"),
    ];
    for (i, (color, dash, label)) in items.iter().enumerate() {
        let lx = left + (i % 2) as f64 * 380.0;
        let ly = h - 58.0 + (i / 2) as f64 * 18.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2.5" stroke-dasharray="{dash}"/><text x="{}" y="{}">{label}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
    }
    let _ = writeln!(
        o,
        r##"<text x="{left}" y="{}" fill="#555">▲ scale-up and ▼ scale-down decisions (hover for the reason)</text>"##,
        h - 12.0
    );
    o.push_str("</svg>\n");
    o
}

fn nice_step(span: f64) -> f64 {
    for s in [5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0] {
        if span / s <= 12.0 {
            return s;
        }
    }
    3600.0
}

pub fn write_all(
    dir: &Path,
    samples: &[Sample],
    marks: &[Mark],
    summary: &serde_json::Value,
    chart: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("timeline.csv"), csv(samples))?;
    let json = serde_json::json!({
        "summary": summary,
        "samples": samples,
        "decisions": marks,
    });
    std::fs::write(
        dir.join("timeline.json"),
        serde_json::to_vec_pretty(&json).expect("serializable"),
    )?;
    std::fs::write(dir.join("chart.svg"), chart)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_axes_legend_and_marks() {
        let samples: Vec<Sample> = (0..60)
            .map(|i| Sample {
                t: i as f64,
                load_clients: if i < 40 { 2.0 } else { 0.0 },
                cpu_pct: Some(if i < 40 { 90.0 } else { 5.0 }),
                size: 1 + (i / 20) as u64,
                healthy: 1,
                ..Default::default()
            })
            .collect();
        let marks = vec![Mark {
            t: 20.0,
            action: "up".into(),
            outcome: "scaled".into(),
            from: Some(1),
            to: Some(2),
            reason: "1 up intent(s) <cpu>".into(),
            ..Mark::default()
        }];
        let s = svg("demo", &samples, &marks, 4);
        assert!(s.starts_with("<svg"));
        assert!(s.contains("time since the load started (s)"));
        assert!(s.contains("pool-average CPU (%)"));
        assert!(s.contains("pool size (instances)"));
        assert!(s.contains("▲"));
        assert!(s.contains("&lt;cpu&gt;"), "text is escaped");
        assert_eq!(csv(&samples).lines().count(), 61);
    }
}
