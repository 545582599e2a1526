//! The demo's monitoring: Debian's Prometheus and Alertmanager with the project's own
//! `monitoring/` files, adapted to the demo's timers and ports, checked by promtool and amtool,
//! and started as children that die with us.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use super::{MonitoringChoice, Paths, Ports, Timings, secs, spawn, wait_http};
use crate::local::process::Process;

/// The rule and Alertmanager files, compiled in from `monitoring/` (the same files the monitor
/// image installs).
pub const RULES: &str = include_str!("../../monitoring/prometheus/rules.yml");
pub const ALERTMANAGER: &str = include_str!("../../monitoring/alertmanager/alertmanager.yml");

/// The monitoring binaries found on `PATH`, and whether the demo runs them.
pub(super) struct Tools {
    prometheus: Option<PathBuf>,
    alertmanager: Option<PathBuf>,
    promtool: Option<PathBuf>,
    /// Debian's Prometheus and Alertmanager, rather than the embedded evaluator.
    pub real: bool,
}

impl Tools {
    /// Looks for the tools and applies `--monitoring`.
    pub fn find(choice: &MonitoringChoice) -> anyhow::Result<Self> {
        let prometheus = which(&["prometheus"]);
        let alertmanager = which(&["prometheus-alertmanager", "alertmanager"]);
        let promtool = which(&["promtool"]);
        let real = match choice {
            MonitoringChoice::Embedded => false,
            MonitoringChoice::Auto => prometheus.is_some() && alertmanager.is_some(),
            MonitoringChoice::Real => {
                if prometheus.is_none() || alertmanager.is_none() {
                    bail!(
                        "--monitoring real: prometheus and prometheus-alertmanager must be installed (apt-get install prometheus prometheus-alertmanager)"
                    );
                }
                true
            }
        };
        Ok(Self {
            prometheus,
            alertmanager,
            promtool,
            real,
        })
    }

    /// The line that says which monitoring this run uses.
    pub fn banner(&self) -> String {
        match (&self.prometheus, &self.alertmanager) {
            (Some(p), Some(a)) if self.real => format!(
                "MONITORING: Debian's Prometheus ({}) and Alertmanager ({}) with monitoring/prometheus/rules.yml and monitoring/alertmanager/alertmanager.yml",
                p.display(),
                a.display()
            ),
            _ => "MONITORING: EMBEDDED FALLBACK (Prometheus/Alertmanager not used): the same targets, thresholds, pending time and webhooks, evaluated inside poolpilot. Install them with: apt-get install prometheus prometheus-alertmanager".to_owned(),
        }
    }

    /// Writes the demo's rules and configurations under `out/monitoring`, checks them with
    /// promtool and amtool where installed, starts Alertmanager and Prometheus (pushed onto
    /// `procs`, so they are stopped whatever happens next) and waits until both are ready.
    pub async fn start(
        &self,
        t: &Timings,
        paths: &Paths,
        ports: &Ports,
        webhook: &str,
        procs: &mut Vec<Process>,
    ) -> anyhow::Result<()> {
        let (Some(prometheus), Some(alertmanager)) = (&self.prometheus, &self.alertmanager) else {
            bail!("Prometheus and Alertmanager are not installed");
        };
        let mon = paths.out.join("monitoring");
        std::fs::create_dir_all(&mon)?;
        let rules = mon.join("rules.yml");
        std::fs::write(&rules, demo_rules(t)?)?;
        let am_cfg = mon.join("alertmanager.yml");
        std::fs::write(&am_cfg, demo_alertmanager(t, webhook, &paths.token_file)?)?;
        let prom_cfg = mon.join("prometheus.yml");
        std::fs::write(
            &prom_cfg,
            prometheus_config(
                t,
                &paths.sd_dir,
                &rules,
                Some(ports.alertmanager),
                ports.autoscaler,
            ),
        )?;
        if let Some(pt) = &self.promtool {
            check_tool(pt, &["check", "rules", &rules.display().to_string()]).await?;
            check_tool(pt, &["check", "config", &prom_cfg.display().to_string()]).await?;
        }
        if let Some(amtool) = which(&["amtool"]) {
            check_tool(&amtool, &["check-config", &am_cfg.display().to_string()]).await?;
        }
        let (am_port, prom_port) = (ports.alertmanager, ports.prometheus);
        procs.push(spawn(
            "alertmanager",
            alertmanager,
            &[
                format!("--config.file={}", am_cfg.display()),
                format!(
                    "--storage.path={}",
                    paths.out.join("alertmanager-data").display()
                ),
                format!("--web.listen-address=127.0.0.1:{am_port}"),
                "--cluster.listen-address=".into(),
                "--log.level=warn".into(),
            ],
            &[],
            &paths.logs.join("alertmanager.log"),
        )?);
        procs.push(spawn(
            "prometheus",
            prometheus,
            &[
                format!("--config.file={}", prom_cfg.display()),
                format!(
                    "--storage.tsdb.path={}",
                    paths.out.join("prometheus-data").display()
                ),
                format!("--web.listen-address=127.0.0.1:{prom_port}"),
                "--log.level=warn".into(),
            ],
            &[],
            &paths.logs.join("prometheus.log"),
        )?);
        let ready = Duration::from_secs(30);
        wait_http(&format!("http://127.0.0.1:{am_port}/-/ready"), ready).await?;
        wait_http(&format!("http://127.0.0.1:{prom_port}/-/ready"), ready).await?;
        println!(
            "prometheus: http://127.0.0.1:{prom_port}   alertmanager: http://127.0.0.1:{am_port}"
        );
        Ok(())
    }
}

/// Which binary provides a tool, from a list of names.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Replaces `from` with `to` in `text`, insisting that it is there (so a change to the shared
/// files cannot silently disable a rewrite).
fn rewrite(text: &str, from: &str, to: &str, file: &str) -> anyhow::Result<String> {
    if !text.contains(from) {
        bail!("{file} no longer contains `{from}`: the demo cannot adapt it");
    }
    Ok(text.replace(from, to))
}

/// The rule file as the demo runs it.
pub fn demo_rules(t: &Timings) -> anyhow::Result<String> {
    let r = rewrite(RULES, "[1m]", &format!("[{}]", secs(t.window)), "rules.yml")?;
    rewrite(
        &r,
        "for: 1m",
        &format!("for: {}", secs(t.pending)),
        "rules.yml",
    )
}

/// The Alertmanager configuration as the demo runs it.
pub fn demo_alertmanager(t: &Timings, webhook: &str, token_file: &Path) -> anyhow::Result<String> {
    let f = "alertmanager.yml";
    let a = rewrite(ALERTMANAGER, "http://127.0.0.1:8090/webhook", webhook, f)?;
    let a = rewrite(
        &a,
        "/run/credentials/alertmanager.service/webhook-token",
        &token_file.display().to_string(),
        f,
    )?;
    let a = rewrite(
        &a,
        "group_wait: 10s",
        &format!("group_wait: {}", secs(t.group_wait)),
        f,
    )?;
    let a = rewrite(
        &a,
        "group_interval: 1m",
        &format!("group_interval: {}", secs(t.group_interval)),
        f,
    )?;
    rewrite(
        &a,
        "repeat_interval: 1m",
        &format!("repeat_interval: {}", secs(t.repeat)),
        f,
    )
}

/// Prometheus' configuration: the node job from the discovery agent's directory, the project's
/// rules, the local Alertmanager.
pub fn prometheus_config(
    t: &Timings,
    sd_dir: &Path,
    rules: &Path,
    alertmanager: Option<u16>,
    autoscaler: u16,
) -> String {
    let am = alertmanager
        .map(|p| format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{p}']\n"))
        .unwrap_or_default();
    format!(
        r#"global:
  scrape_interval: {scrape}
  evaluation_interval: {scrape}
rule_files:
  - {rules}
{am}scrape_configs:
  - job_name: node
    file_sd_configs:
      - files: ['{sd}/*.json']
        refresh_interval: {scrape}
    relabel_configs:
      - source_labels: [exoscale_target_name]
        regex: node
        action: keep
  - job_name: app
    file_sd_configs:
      - files: ['{sd}/*.json']
        refresh_interval: {scrape}
    relabel_configs:
      - source_labels: [exoscale_target_name]
        regex: app
        action: keep
  - job_name: poolpilot-autoscaler
    static_configs:
      - targets: ['127.0.0.1:{autoscaler}']
"#,
        scrape = secs(t.scrape),
        rules = rules.display(),
        sd = sd_dir.display(),
    )
}

async fn check_tool(program: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed:\n{}{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_rewrites_apply_to_the_shipped_files() {
        let t = Timings::fast();
        let r = demo_rules(&t).unwrap();
        assert!(r.contains("[10s]") && r.contains("for: 10s") && !r.contains("[1m]"));
        let a = demo_alertmanager(&t, "http://127.0.0.1:1/webhook", Path::new("/tmp/t")).unwrap();
        assert!(a.contains("repeat_interval: 5s") && a.contains("credentials_file: /tmp/t"));
    }
}
