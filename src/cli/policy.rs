//! `poolpilot policy check FILE`: every problem of a policy file, with its field.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::CliError;
use crate::config::ConfigError;
use crate::policy::file::{Check, PolicyFile};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and explain every problem (exit 64 when there is one).
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy file (TOML).
    pub file: std::path::PathBuf,
}

pub async fn run(cmd: PolicyCommand) -> Result<(), CliError> {
    match cmd {
        PolicyCommand::Check(a) => {
            let text = std::fs::read_to_string(&a.file)
                .with_context(|| format!("reading {}", a.file.display()))?;
            match PolicyFile::parse(&text) {
                Ok(p) => {
                    let checks: Vec<&str> = p
                        .checks
                        .iter()
                        .map(|c| match c {
                            Check::WebhookStep => "webhook-step",
                            Check::Threshold { .. } => "threshold",
                            Check::TargetTracking { .. } => "target-tracking",
                            Check::Forecast { .. } => "forecast",
                        })
                        .collect();
                    let b = p.behaviour();
                    println!(
                        "{}: ok: policy `{}`, size {}..{}, checks {} (safest wins), scale-down window {}s, {} schedule window(s), scale-in victims {}",
                        a.file.display(),
                        p.policy.name,
                        p.policy.min,
                        p.policy.max,
                        checks.join(", "),
                        b.down_window.as_secs(),
                        p.schedule.len(),
                        p.scale_in.victims.join(" > ")
                    );
                    Ok(())
                }
                Err(problems) => {
                    for pr in &problems {
                        eprintln!("{}: {pr}", a.file.display());
                    }
                    Err(ConfigError::invalid(
                        "policy",
                        format!("{} problem(s) in {}", problems.len(), a.file.display()),
                    )
                    .into())
                }
            }
        }
    }
}
