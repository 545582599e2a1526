//! `poolpilot load`: the load generator for the demo and for users.

use std::io::{IsTerminal, Write};

use clap::Args;

use super::CliError;
use crate::config::{ConfigError, Dur};
use crate::load::{self, LoadConfig, Mode, Profile};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).args(["concurrency", "rate"]))]
pub struct LoadArgs {
    /// The URL to load, e.g. http://<nlb>/load.
    #[arg(long)]
    pub url: String,
    /// Closed loop: this many concurrent clients; a number or a profile
    /// (step:0s=1,60s=4 | ramp:0s=1,60s=8 | sine:min=1,max=8,period=2m | csv:FILE).
    #[arg(long, value_name = "N|PROFILE")]
    pub concurrency: Option<Profile>,
    /// Open loop: this many requests per second; a number or a profile.
    #[arg(long, value_name = "RPS|PROFILE")]
    pub rate: Option<Profile>,
    /// Stop after this long.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<Dur>,
    /// Stop after this many requests.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Give up on one request after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub timeout: Dur,
    /// Print the summary as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

pub fn resolve(a: &LoadArgs) -> Result<LoadConfig, ConfigError> {
    let url = url::Url::parse(&a.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            ConfigError::invalid("url", format!("must be an http(s) URL, got `{}`", a.url))
        })?;
    let mode = match (&a.concurrency, &a.rate) {
        (Some(p), None) => Mode::Closed(p.clone()),
        (None, Some(p)) => Mode::Open(p.clone()),
        _ => {
            return Err(ConfigError::invalid(
                "concurrency",
                "give exactly one of --concurrency or --rate",
            ));
        }
    };
    if let Mode::Closed(p) = &mode
        && p.peak() > load::MAX_WORKERS as f64
    {
        return Err(ConfigError::invalid(
            "concurrency",
            format!("must be at most {}", load::MAX_WORKERS),
        ));
    }
    if a.timeout.get().is_zero() {
        return Err(ConfigError::invalid("timeout", "must be greater than 0"));
    }
    if a.requests == Some(0) {
        return Err(ConfigError::invalid("requests", "must be greater than 0"));
    }
    let cfg = LoadConfig {
        url,
        mode,
        duration: a.duration.map(Dur::get),
        requests: a.requests,
        timeout: a.timeout.get(),
    };
    if cfg.time_bound().is_none() && cfg.requests.is_none() {
        return Err(ConfigError::invalid(
            "duration",
            "every run is bounded: give --duration or --requests (or a profile that ends)",
        ));
    }
    Ok(cfg)
}

pub async fn run(a: LoadArgs) -> Result<(), CliError> {
    let cfg = resolve(&a)?;
    let bound = cfg.time_bound();
    let tty = std::io::stderr().is_terminal();
    let summary = load::run(cfg, |s| {
        if tty {
            let total = bound.map(|b| format!("/{}s", b.as_secs())).unwrap_or_default();
            let _ = write!(
                std::io::stderr(),
                "\r[{:>4.0}s{total}] {:>8} req {:>8.1} req/s  errors {:<5} p50 {:>7.1}ms  p99 {:>7.1}ms  target {:.0}   ",
                s.elapsed_seconds, s.requests, s.rate, s.failed, s.latency_ms.p50, s.latency_ms.p99, s.target
            );
        }
    })
    .await?;
    if tty {
        eprintln!();
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("serializable")
        );
    } else {
        print!("{}", summary.render());
    }
    Ok(())
}
