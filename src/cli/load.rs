//! `poolpilot load`: the load generator for the demo and for users.

use std::io::{IsTerminal, Write};

use clap::Args;

use super::CliError;
use crate::config::{ConfigError, Dur};
use crate::load::{self, LoadConfig, Mode, Profile};

/// What each request is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RequestProfile {
    /// A GET of the URL.
    #[default]
    Get,
    /// `poolpilot kv` at the URL: writes (`POST /item`, each to a new key) and reads
    /// (`GET /item?id=`) mixed by --write-ratio.
    Kv,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).args(["concurrency", "rate", "verify"]))]
pub struct LoadArgs {
    /// The URL to load, e.g. http://<nlb>/load (with --profile kv or --verify: the API's base URL).
    #[arg(long)]
    pub url: String,
    /// What each request is.
    #[arg(long, value_enum, default_value_t = RequestProfile::Get)]
    pub profile: RequestProfile,
    /// With --profile kv: the share of requests that are writes, 0 to 1.
    #[arg(long, value_name = "RATIO", default_value_t = 0.1)]
    pub write_ratio: f64,
    /// With --profile kv: reads go to the run's first N keys.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub keys: u64,
    /// With --profile kv: record every write answered `ok` in FILE (JSON lines), for --verify.
    #[arg(long, value_name = "FILE")]
    pub acked: Option<std::path::PathBuf>,
    /// Instead of a load: read back every write recorded in FILE through the API at --url and
    /// count the lost ones (exit 1 unless every one reads back with its value).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["concurrency", "rate", "acked"])]
    pub verify: Option<std::path::PathBuf>,
    /// With --verify: how long a write that does not read back yet is tried again (replication
    /// is asynchronous).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub verify_wait: Dur,
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
        // --verify reads the record back; no load runs.
        (None, None) if a.verify.is_some() => Mode::Closed(Profile::Constant(0.0)),
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
    if a.profile == RequestProfile::Kv || a.verify.is_some() {
        check_kv(a)?;
        return Ok(cfg);
    }
    if a.acked.is_some() {
        return Err(ConfigError::invalid("acked", "needs --profile kv"));
    }
    if cfg.time_bound().is_none() && cfg.requests.is_none() {
        return Err(ConfigError::invalid(
            "duration",
            "every run is bounded: give --duration or --requests (or a profile that ends)",
        ));
    }
    Ok(cfg)
}

fn check_kv(a: &LoadArgs) -> Result<(), ConfigError> {
    if !(a.write_ratio.is_finite() && (0.0..=1.0).contains(&a.write_ratio)) {
        return Err(ConfigError::invalid(
            "write-ratio",
            "must be between 0 and 1",
        ));
    }
    if a.keys == 0 {
        return Err(ConfigError::invalid("keys", "must be greater than 0"));
    }
    if a.verify.is_none() && a.duration.is_none() && a.requests.is_none() {
        let cfg_end = a
            .concurrency
            .as_ref()
            .or(a.rate.as_ref())
            .and_then(Profile::end);
        if cfg_end.is_none() {
            return Err(ConfigError::invalid(
                "duration",
                "every run is bounded: give --duration or --requests (or a profile that ends)",
            ));
        }
    }
    Ok(())
}

fn kv_load(a: &LoadArgs, cfg: &LoadConfig) -> load::kv::KvLoad {
    load::kv::KvLoad {
        base: cfg.url.clone(),
        write_ratio: a.write_ratio,
        keys: a.keys,
        acked: a.acked.clone(),
    }
}

async fn verify(a: &LoadArgs, cfg: &LoadConfig, file: &std::path::Path) -> Result<(), CliError> {
    let records = load::kv::read_record(file)?;
    let v = load::kv::verify(&cfg.url, records, cfg.timeout, a.verify_wait.get(), 32).await?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serializable")
        );
    } else {
        print!("{}", v.render());
    }
    if !v.all_ok() {
        return Err(anyhow::anyhow!(
            "{} of {} acknowledged writes did not read back ({} lost, {} wrong, {} errors)",
            v.acknowledged - v.ok,
            v.acknowledged,
            v.lost,
            v.wrong,
            v.errors
        )
        .into());
    }
    Ok(())
}

pub async fn run(a: LoadArgs) -> Result<(), CliError> {
    let cfg = resolve(&a)?;
    if let Some(file) = &a.verify {
        return verify(&a, &cfg, file).await;
    }
    let workload = match a.profile {
        RequestProfile::Kv => Some(std::sync::Arc::new(load::kv::KvWorkload::new(kv_load(
            &a, &cfg,
        ))?)),
        RequestProfile::Get => None,
    };
    let bound = cfg.time_bound();
    let tty = std::io::stderr().is_terminal();
    let tick = |s: &load::Summary| {
        if tty {
            let total = bound
                .map(|b| format!("/{}s", b.as_secs()))
                .unwrap_or_default();
            let _ = write!(
                std::io::stderr(),
                "\r[{:>4.0}s{total}] {:>8} req {:>8.1} req/s  errors {:<5} p50 {:>7.1}ms  p99 {:>7.1}ms  target {:.0}   ",
                s.elapsed_seconds,
                s.requests,
                s.rate,
                s.failed,
                s.latency_ms.p50,
                s.latency_ms.p99,
                s.target
            );
        }
    };
    let (summary, kv) = match workload {
        Some(w) => {
            let summary = load::run_kv(cfg, w.clone(), tick).await?;
            (summary, Some(w.finish()?))
        }
        None => (load::run(cfg, tick).await?, None),
    };
    if tty {
        eprintln!();
    }
    if a.json {
        let mut v = serde_json::to_value(&summary).expect("serializable");
        if let Some(k) = &kv {
            v["kv"] = serde_json::to_value(k).expect("serializable");
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serializable")
        );
    } else {
        print!("{}", summary.render());
        if let Some(k) = &kv {
            println!(
                "  kv: {} writes acknowledged{}, reads {} hit  {} missed (404: not written or not replicated yet)",
                k.writes_acknowledged,
                a.acked
                    .as_ref()
                    .map(|p| format!(" (recorded in {})", p.display()))
                    .unwrap_or_default(),
                k.reads_hit,
                k.reads_missed
            );
        }
    }
    Ok(())
}
