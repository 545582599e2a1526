//! `poolpilot simulate`: policies side by side on a workload, in virtual time.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::CliError;
use crate::autoscaler::{Bounds, MAX_POOL};
use crate::config::{ConfigError, Dur};
use crate::policy::builtin;
use crate::policy::file::PolicyFile;
use crate::policy::simulate::{self, Model, report, trace::Trace};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The workload: step, ramp, sine, spike, noisy, or a CSV file (`time_s,requests_per_s`).
    #[arg(long, value_name = "NAME|FILE", default_value = "step")]
    pub trace: String,
    /// A policy to run (repeat to compare): a file, a built-in (default, course, hpa,
    /// target-tracking, office-hours), or `oracle` (the best possible, computed from the whole
    /// trace). Default: course, hpa, default and oracle.
    #[arg(long = "policy", value_name = "FILE|NAME")]
    pub policies: Vec<String>,
    /// Seed of the boot delays and the noisy trace.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Requests per second one instance serves within the SLO.
    #[arg(long, value_name = "RPS", default_value_t = 10.0)]
    pub capacity: f64,
    /// Multiply the trace's rates by this (maps a recorded site onto a pool of a few members;
    /// traces/README.md gives each trace's factor).
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    pub scale: f64,
    /// Members at the start (within each policy's bounds).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub initial: u64,
    /// Override every policy's max (e.g. to compare the course's rule at the same ceiling).
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Mean boot time of a new member.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub boot: Dur,
    /// Boot times are uniform in boot ± this.
    #[arg(long, value_name = "DURATION", default_value = "20s")]
    pub boot_jitter: Dur,
    /// The autoscaler's interval for metric policies (the course's webhook rule ticks every 60 s).
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub tick: Dur,
    /// EUR per instance-hour (standard.micro list price by default).
    #[arg(long, value_name = "EUR", default_value_t = 0.00729)]
    pub price: f64,
    /// Print the results as JSON (with elastic speedups over course and hpa) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where to write the SVG chart of demand and supply.
    #[arg(long, value_name = "FILE", default_value = "simulate-out/chart.svg")]
    pub svg: PathBuf,
}

fn load_policy(arg: &str, max: Option<u64>) -> Result<PolicyFile, ConfigError> {
    let src = builtin::load(arg).map_err(|e| ConfigError::invalid("policy", e))?;
    let mut p = src.parse().map_err(|e| ConfigError::invalid("policy", e))?;
    if let Some(m) = max {
        p.policy.max = m;
        p.policy.min = p.policy.min.min(m);
    }
    Ok(p)
}

pub async fn run(args: SimulateArgs) -> Result<(), CliError> {
    if !(args.capacity.is_finite() && args.capacity > 0.0 && args.capacity <= 1e6) {
        return Err(ConfigError::invalid("capacity", "must be in (0, 1000000] requests/s").into());
    }
    if let Some(m) = args.max {
        Bounds::new(1, m).map_err(|e| ConfigError::invalid(e.field, e.rule))?;
    }
    if args.initial > MAX_POOL {
        return Err(ConfigError::invalid("initial", format!("must be at most {MAX_POOL}")).into());
    }
    if args.boot_jitter.get() > args.boot.get() {
        return Err(ConfigError::invalid("boot-jitter", "must not exceed --boot").into());
    }
    if args.tick.get() < std::time::Duration::from_secs(1) {
        return Err(ConfigError::invalid("tick", "must be at least 1s").into());
    }
    if !(args.scale.is_finite() && args.scale > 0.0 && args.scale <= 1e6) {
        return Err(ConfigError::invalid("scale", "must be in (0, 1000000]").into());
    }
    if !(args.price.is_finite() && args.price >= 0.0) {
        return Err(ConfigError::invalid("price", "must be >= 0").into());
    }
    let trace = match Trace::builtin(&args.trace, args.capacity, args.seed) {
        Some(t) => t,
        None if args.trace.contains('.') || args.trace.contains('/') => {
            let text = std::fs::read_to_string(&args.trace).map_err(|e| {
                ConfigError::invalid("trace", format!("cannot read {}: {e}", args.trace))
            })?;
            Trace::csv(&args.trace, &text)
                .map_err(|e| ConfigError::invalid("trace", format!("{}: {e}", args.trace)))?
        }
        None => {
            return Err(ConfigError::invalid(
                "trace",
                format!(
                    "`{}` is neither a built-in trace ({}) nor a CSV file",
                    args.trace,
                    simulate::trace::BUILTIN.join(", ")
                ),
            )
            .into());
        }
    };
    let trace = trace.scaled(args.scale);
    let names: Vec<String> = if args.policies.is_empty() {
        vec![
            "course".into(),
            "hpa".into(),
            "default".into(),
            "oracle".into(),
        ]
    } else {
        args.policies.clone()
    };
    // `oracle` is not a policy file: it is computed, with the default policy's bounds.
    let policies = names
        .iter()
        .map(|n| {
            if n == "oracle" {
                Ok(None)
            } else {
                load_policy(n, args.max).map(Some)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let default_bounds = load_policy("default", args.max)?.policy;
    let model = Model {
        capacity: args.capacity,
        boot: args.boot.get(),
        boot_jitter: args.boot_jitter.get(),
        tick: args.tick.get(),
        price_per_hour: args.price,
        initial: args.initial,
        seed: args.seed,
        ..Model::default()
    };
    let oracle = simulate::oracle::run(&model, &trace, default_bounds.min, default_bounds.max);
    let runs: Vec<simulate::Run> = policies
        .iter()
        .map(|p| match p {
            Some(p) => simulate::run(&model, p, &trace),
            None => oracle.clone(),
        })
        .collect();
    // The references, run the same way when they were not asked for.
    let reference = |name: &str| -> Result<simulate::Run, ConfigError> {
        match runs.iter().position(|r| r.policy == name) {
            Some(i) => Ok(runs[i].clone()),
            None => Ok(simulate::run(&model, &load_policy(name, args.max)?, &trace)),
        }
    };
    let course = reference("course")?;
    let hpa = reference("hpa")?;
    let lines = report::lines(&runs, Some(&course), Some(&hpa), Some(&oracle));

    if let Some(dir) = args.svg.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.svg, report::svg(&trace.name, &runs))
        .with_context(|| format!("writing {}", args.svg.display()))?;
    if args.json {
        let out = serde_json::json!({
            "trace": trace.name,
            "seed": args.seed,
            "scale": args.scale,
            "model": model,
            "oracle": {
                "instance_seconds": oracle.scores.instance_seconds,
                "slo_violation_minutes": oracle.scores.slo_violation_minutes,
            },
            "policies": lines,
            "svg": args.svg,
        });
        println!("{}", serde_json::to_string_pretty(&out).context("json")?);
    } else {
        print!("{}", report::table(&trace.name, &lines));
        println!(
            "\nx course / x hpa: elastic speedup (geometric mean of the four ratios, +1 point each; > 1 is better)\nh/oracle: instance-hours over the oracle's; oracle-SLO: the oracle's SLO-violation minutes\nchart: {}",
            args.svg.display()
        );
    }
    Ok(())
}
