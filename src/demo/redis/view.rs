//! The Redis profile's live view and report: both pools' sizes and health, the request rate,
//! the replication as the primary reports it; the load's summary and the write check.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::PoolRun;
use crate::sim::Sim;

/// One pool in one line of the view.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoolSample {
    pub size: u64,
    pub healthy: u64,
}

/// One line of the live view, kept for the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    pub t: f64,
    /// The replicas, then the API.
    pub pools: Vec<PoolSample>,
    /// Requests per second through the API's NLB over the last second.
    pub rps: f64,
    /// Replicas the primary counts as online.
    pub replicas_online: u64,
    /// The bytes the furthest-behind online replica lags the primary by.
    pub lag_bytes: Option<u64>,
}

/// What the primary says about its replicas.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replication {
    pub online: u64,
    pub lag_bytes: Option<u64>,
}

/// Parses the primary's `INFO replication`: `master_repl_offset` and each
/// `slaveN:ip=..,port=..,state=online,offset=N,lag=S`.
pub fn parse_primary(info: &str) -> Replication {
    let mut master = None;
    let mut offsets = Vec::new();
    for line in info.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("master_repl_offset:") {
            master = v.parse::<u64>().ok();
        } else if line.starts_with("slave") && line.contains(":ip=") {
            let fields = line.split_once(':').map(|(_, f)| f).unwrap_or("");
            let get = |k: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            };
            if get("state") == Some("online")
                && let Some(o) = get("offset").and_then(|o| o.parse::<u64>().ok())
            {
                offsets.push(o);
            }
        }
    }
    Replication {
        online: offsets.len() as u64,
        lag_bytes: master
            .zip(offsets.iter().min().copied())
            .map(|(m, o)| m.saturating_sub(o)),
    }
}

/// The primary's `INFO replication`.
pub async fn primary_info(primary: SocketAddr) -> anyhow::Result<String> {
    let client = redis::Client::open(format!("redis://{primary}"))?;
    let info = tokio::time::timeout(Duration::from_secs(2), async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("replication")
            .query_async::<String>(&mut c)
            .await
    })
    .await
    .context("the primary did not answer within 2 s")??;
    Ok(info)
}

/// Samples every second and prints the live view.
pub struct Watch<'a> {
    t0: Instant,
    sim: &'a Arc<Sim>,
    pools: [&'a PoolRun; 2],
    primary: SocketAddr,
    last: (Instant, u64),
    pub samples: Vec<Sample>,
}

impl<'a> Watch<'a> {
    pub fn new(
        t0: Instant,
        sim: &'a Arc<Sim>,
        pools: [&'a PoolRun; 2],
        primary: SocketAddr,
    ) -> Self {
        let forwarded = pools[1].nlb.stats().forwarded.load(Ordering::SeqCst);
        Self {
            t0,
            sim,
            pools,
            primary,
            last: (Instant::now(), forwarded),
            samples: Vec::new(),
        }
    }

    async fn sample(&mut self) -> Sample {
        let pools = self
            .pools
            .iter()
            .map(|p| PoolSample {
                size: self
                    .sim
                    .with_state(|s| s.pool_view(p.id).map(|v| v.size).unwrap_or(0)),
                healthy: p.nlb.members().iter().filter(|m| m.healthy).count() as u64,
            })
            .collect();
        let now = Instant::now();
        let forwarded = self.pools[1].nlb.stats().forwarded.load(Ordering::SeqCst);
        let dt = now.duration_since(self.last.0).as_secs_f64().max(1e-3);
        let rps = (forwarded - self.last.1) as f64 / dt;
        self.last = (now, forwarded);
        let rep = primary_info(self.primary)
            .await
            .map(|i| parse_primary(&i))
            .unwrap_or_default();
        Sample {
            t: self.t0.elapsed().as_secs_f64(),
            pools,
            rps,
            replicas_online: rep.online,
            lag_bytes: rep.lag_bytes,
        }
    }

    /// Samples every second until `done` holds or `limit` passes; returns whether it held.
    pub async fn until(&mut self, limit: Duration, mut done: impl FnMut(&Sample) -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            let s = self.sample().await;
            println!(
                "[{:>4.0}s] replicas {} ({} healthy, {} online at the primary, lag {}) | api {} ({} healthy) | {:>4.0} req/s",
                s.t,
                s.pools[0].size,
                s.pools[0].healthy,
                s.replicas_online,
                s.lag_bytes
                    .map(|b| format!("{b} B"))
                    .unwrap_or_else(|| "-".into()),
                s.pools[1].size,
                s.pools[1].healthy,
                s.rps
            );
            let held = done(&s);
            self.samples.push(s);
            if held {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The load generator's summary (`poolpilot load --json`).
#[derive(Debug, serde::Serialize)]
pub struct LoadSummary {
    pub ok: u64,
    pub failed: u64,
    /// Failures by kind, as one line.
    pub errors: String,
    pub summary: serde_json::Value,
}

/// Reads the summary the load generator printed last (pretty JSON from a line `{`).
pub fn load_summary(file: &Path) -> anyhow::Result<LoadSummary> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let start = text
        .rfind("\n{\n")
        .map(|i| i + 1)
        .or_else(|| text.starts_with("{\n").then_some(0))
        .with_context(|| format!("no JSON summary in {}", file.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text[start..])
        .with_context(|| format!("the summary in {}", file.display()))?;
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let errors = v
        .get("errors")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, c)| format!("{k}: {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Ok(LoadSummary {
        ok: n("ok"),
        failed: n("failed"),
        errors,
        summary: v,
    })
}

/// What reading every acknowledged write back found.
#[derive(Debug, serde::Serialize)]
pub struct Verified {
    pub checked: u64,
    /// Not read back with the acknowledged value.
    pub lost: u64,
    pub report: serde_json::Value,
}

/// `poolpilot load --verify`: every acknowledged write read back through the API.
pub async fn verify(binary: &Path, base: &str, acked: &Path) -> anyhow::Result<Verified> {
    let out = tokio::process::Command::new(binary)
        .args(["load", "--url", base, "--json", "--verify"])
        .arg(acked)
        .env_remove(crate::config::env::NOTIFY_SOCKET)
        .kill_on_drop(true)
        .output()
        .await
        .context("running poolpilot load --verify")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "poolpilot load --verify printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let checked = n("acknowledged");
    Ok(Verified {
        checked,
        lost: checked.saturating_sub(n("ok")),
        report: v,
    })
}

/// `redis.json` and `redis.svg`.
pub fn report(
    out: &Path,
    samples: &[Sample],
    load: &LoadSummary,
    verified: &Verified,
    problems: &[String],
) -> anyhow::Result<()> {
    let json = serde_json::json!({
        "pools": ["replicas", "api"],
        "load": load,
        "verify": verified,
        "problems": problems,
        "samples": samples,
    });
    std::fs::write(out.join("redis.json"), serde_json::to_string_pretty(&json)?)?;
    std::fs::write(out.join("redis.svg"), svg(samples))?;
    Ok(())
}

/// Both pools' sizes (left axis) and the request rate (right axis) over time; below, in a strip
/// of its own, how far the furthest-behind replica lags the primary.
pub fn svg(samples: &[Sample]) -> String {
    let (w, h, l, r, top, bottom) = (760.0, 320.0, 50.0, 60.0, 30.0, 40.0);
    // The lag strip under the chart.
    let (strip_top, strip_h) = (h + 20.0, 70.0);
    let lag_max = samples
        .iter()
        .filter_map(|s| s.lag_bytes)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let t_max = samples.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
    let size_max = samples
        .iter()
        .flat_map(|s| s.pools.iter().map(|p| p.size))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        + 1.0;
    let rps_max = samples.iter().map(|s| s.rps).fold(1.0, f64::max) * 1.1;
    let x = |t: f64| l + (w - l - r) * t / t_max;
    let y = |v: f64, max: f64| top + (h - top - bottom) * (1.0 - v / max);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" viewBox="0 0 {w} {}" font-family="sans-serif" font-size="12">"#,
        strip_top + strip_h + 10.0,
        strip_top + strip_h + 10.0
    );
    let _ = write!(
        out,
        r#"<text x="{l}" y="18">poolpilot demo --profile redis: pool sizes and the request rate</text>"#
    );
    let _ = write!(
        out,
        r##"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="#444"/><line x1="{l}" y1="{top}" x2="{l}" y2="{}" stroke="#444"/>"##,
        h - bottom,
        w - r,
        h - bottom,
        h - bottom
    );
    for v in 0..=(size_max as u64) {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"#,
            l - 6.0,
            y(v as f64, size_max) + 4.0
        );
    }
    let line = |pts: Vec<(f64, f64)>, colour: &str, dash: &str| {
        let d: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        format!(
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
            d.join(" ")
        )
    };
    for (i, (name, colour)) in [("replicas", "#c0392b"), ("api", "#2471a3")]
        .iter()
        .enumerate()
    {
        out.push_str(&line(
            samples
                .iter()
                .map(|s| (x(s.t), y(s.pools[i].size as f64, size_max)))
                .collect(),
            colour,
            "",
        ));
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" fill="{colour}">{name} pool size</text>"#,
            l + 10.0 + 150.0 * i as f64,
            h - 8.0
        );
    }
    out.push_str(&line(
        samples
            .iter()
            .map(|s| (x(s.t), y(s.rps, rps_max)))
            .collect(),
        "#7f8c8d",
        "4 3",
    ));
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" fill="#7f8c8d">requests/s (right axis, max {:.0})</text>"##,
        l + 310.0,
        h - 8.0,
        rps_max
    );
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{t_max:.0} s</text>"#,
        w - r,
        h - bottom + 16.0
    );
    out.push_str(&line(
        samples
            .iter()
            .filter_map(|s| {
                s.lag_bytes
                    .map(|b| (x(s.t), strip_top + strip_h * (1.0 - b as f64 / lag_max)))
            })
            .collect(),
        "#8e44ad",
        "",
    ));
    let _ = write!(
        out,
        r##"<text x="{l}" y="{:.1}" fill="#8e44ad">replication lag of the furthest-behind replica (bytes, max {lag_max:.0})</text></svg>"##,
        strip_top - 4.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_reports_its_online_replicas_and_the_furthest_behind() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
                    slave0:ip=127.0.3.1,port=6379,state=online,offset=1000,lag=0\r\n\
                    slave1:ip=127.0.3.2,port=6379,state=online,offset=940,lag=1\r\n\
                    slave2:ip=127.0.3.3,port=6379,state=wait_bgsave,offset=0,lag=0\r\n\
                    master_replid:abc\r\nmaster_repl_offset:1010\r\n";
        assert_eq!(
            parse_primary(info),
            Replication {
                online: 2,
                lag_bytes: Some(70)
            }
        );
        assert_eq!(
            parse_primary("role:master\r\nmaster_repl_offset:5\r\n"),
            Replication {
                online: 0,
                lag_bytes: None
            }
        );
    }

    #[test]
    fn the_chart_draws_both_pools_and_the_rate() {
        let s = |t: f64, a: u64, b: u64| Sample {
            t,
            pools: vec![
                PoolSample {
                    size: a,
                    healthy: a,
                },
                PoolSample {
                    size: b,
                    healthy: b,
                },
            ],
            rps: 100.0 * a as f64,
            replicas_online: a,
            lag_bytes: Some(0),
        };
        let svg = svg(&[s(0.0, 1, 1), s(10.0, 3, 2), s(20.0, 1, 1)]);
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("replication lag"));
        assert!(svg.contains("replicas pool size") && svg.contains("api pool size"));
        assert!(svg.ends_with("</svg>"));
    }
}
