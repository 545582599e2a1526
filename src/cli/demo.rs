//! `poolpilot demo`: flags and exit code of the local story.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::CliError;
use crate::config::ConfigError;
use crate::demo::{self, DemoConfig, MonitoringChoice};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Monitoring {
    /// Debian's Prometheus and Alertmanager when installed, else the embedded evaluator.
    Auto,
    /// Debian's Prometheus and Alertmanager, or fail.
    Real,
    /// The embedded evaluator (same rules and thresholds, inside poolpilot).
    Embedded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// The course's appliance: the slow app in one pool (or one per zone with --zones).
    Course,
    /// The key-value appliance: a Redis primary, a replica pool, an API pool (poolpilot kv).
    Redis,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which appliance the story runs.
    #[arg(long, value_enum, default_value_t = Profile::Course)]
    pub profile: Profile,
    /// Shorten every timer so the story takes about three minutes (else the course's: 60 s
    /// ticks, 1 m pending, 10 s /load, 30 s boots).
    #[arg(long)]
    pub fast: bool,
    /// Where the report (timeline.csv, timeline.json, chart.svg) and logs go.
    #[arg(long, value_name = "DIR", default_value = "demo-out")]
    pub out: PathBuf,
    /// The local NLB's address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub nlb_listen: SocketAddr,
    /// The pool's upper bound.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max: u64,
    /// Concurrent /load clients while the load holds (each keeps one instance busy).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub clients: u32,
    /// Cores per local instance.
    #[arg(long, value_name = "CORES", default_value_t = 0.5)]
    pub capacity: f64,
    /// Which alerting runs.
    #[arg(long, value_enum, default_value_t = Monitoring::Auto)]
    pub monitoring: Monitoring,
    /// Decide with this policy instead of the course's rule: a file, or a built-in name
    /// (`target-tracking` runs target tracking at the demo's time scale, on requests in flight:
    /// examples/policies/demo-in-flight.toml).
    #[arg(long, value_name = "FILE|NAME")]
    pub policy: Option<String>,
    /// 2 (or 3): that many zones behind `poolpilot front`; mid-run the last zone is lost (its
    /// members killed, its NLB answering 503) and comes back. Each zone scales on its own load
    /// with --policy (default: target-tracking on requests in flight).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub zones: u8,
}

pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    let policy = match &args.policy {
        None => None,
        Some(arg) => {
            let src =
                crate::demo::resolve_policy(arg).map_err(|e| ConfigError::invalid("policy", e))?;
            src.parse().map_err(|e| ConfigError::invalid("policy", e))?;
            Some(src)
        }
    };
    if !(2..=20).contains(&args.max) {
        return Err(ConfigError::invalid("max", "must be between 2 and 20").into());
    }
    if !(1..=3).contains(&args.zones) {
        return Err(ConfigError::invalid("zones", "must be 1, 2 or 3").into());
    }
    if args.profile == Profile::Redis && (args.zones != 1 || args.policy.is_some()) {
        return Err(ConfigError::invalid(
            "profile",
            "redis runs in one zone with its own two policies (no --zones, no --policy)",
        )
        .into());
    }
    if !(1..=50).contains(&args.clients) {
        return Err(ConfigError::invalid("clients", "must be between 1 and 50").into());
    }
    if !(args.capacity.is_finite() && (0.05..=4.0).contains(&args.capacity)) {
        return Err(ConfigError::invalid("capacity", "must be between 0.05 and 4 cores").into());
    }
    let binary = std::env::current_exe().map_err(|e| {
        ConfigError::invalid("binary", format!("cannot find poolpilot itself: {e}"))
    })?;
    let outcome = demo::run(DemoConfig {
        fast: args.fast,
        out: args.out,
        nlb_listen: args.nlb_listen,
        max: args.max,
        clients: args.clients,
        capacity: args.capacity,
        monitoring: match args.monitoring {
            Monitoring::Auto => MonitoringChoice::Auto,
            Monitoring::Real => MonitoringChoice::Real,
            Monitoring::Embedded => MonitoringChoice::Embedded,
        },
        binary,
        policy,
        zones: args.zones,
        redis: args.profile == Profile::Redis,
    })
    .await?;
    if outcome.success() {
        println!("demo: success");
        Ok(())
    } else {
        Err(anyhow::anyhow!("demo: {}", outcome.problems.join("; ")).into())
    }
}
