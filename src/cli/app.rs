//! `poolpilot app`: the slow app pool members serve.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use tracing::info;

use super::{CliError, FileConfig};
use crate::app::{self, AppConfig};
use crate::config::{ConfigError, Dur, Layer, Seconds, Secret, env};
use crate::{shutdown, telemetry};

/// The course app's port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

#[derive(Debug, Args)]
pub struct AppArgs {
    /// Address to serve on.
    #[arg(long, value_name = "ADDR", env = env::APP_LISTEN)]
    pub listen: Option<SocketAddr>,
    /// How long one /load request keeps every core busy: seconds (`10`, `0.5`) or a duration
    /// with a unit (`500ms`).
    #[arg(long, value_name = "SECONDS", env = env::LOAD_SECONDS)]
    pub load_seconds: Option<Seconds>,
    /// The cores /load keeps busy, fractions allowed (default: every core).
    #[arg(long, value_name = "CORES", alias = "burners")]
    pub cpu_capacity: Option<f64>,
    /// Also serve node_exporter-style CPU metrics, relative to the capacity, on this address
    /// (the local mode's stand-in for node_exporter on port 9100).
    #[arg(long, value_name = "ADDR")]
    pub node_listen: Option<SocketAddr>,
}

/// `[app]` in the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AppFile {
    pub listen: Option<SocketAddr>,
    pub load_seconds: Option<Seconds>,
    pub cpu_capacity: Option<f64>,
}

pub fn resolve(args: &AppArgs, file: &AppFile) -> Result<AppConfig, ConfigError> {
    let listen = args
        .listen
        .pick(file.listen, DEFAULT_LISTEN.parse().expect("valid default"));
    let load = args
        .load_seconds
        .pick(file.load_seconds, Seconds(Dur::secs(10)))
        .get();
    if load.is_zero() || load > std::time::Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            "load-seconds",
            "must be between 1ms and 1h",
        ));
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let capacity = args
        .cpu_capacity
        .or(file.cpu_capacity)
        .unwrap_or(cores as f64);
    if !(capacity.is_finite() && (0.01..=1024.0).contains(&capacity)) {
        return Err(ConfigError::invalid(
            "cpu-capacity",
            "must be between 0.01 and 1024 cores",
        ));
    }
    // The drain token is never a flag: it would show in `ps`.
    let drain_token = std::env::var(env::DRAIN_TOKEN)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    Ok(AppConfig {
        listen,
        load_duration: load,
        capacity,
        drain_token,
    })
}

pub async fn run(args: AppArgs, file: FileConfig) -> Result<(), CliError> {
    let cfg = resolve(&args, &file.app)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    info!(
        addr = %listener.local_addr().context("listener address")?,
        load_ms = cfg.load_duration.as_millis() as u64,
        cpu_capacity = cfg.capacity,
        drain = cfg.drain_token.is_some(),
        "app serving"
    );
    let burner = app::burn::Burner::new(cfg.capacity);
    let node = match args.node_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let router = crate::local::node::router(burner.clone());
            Some(tokio::spawn(async move { axum::serve(l, router).await }))
        }
        None => None,
    };
    telemetry::notify_ready();
    let _watchdog = telemetry::spawn_watchdog();
    let app = app::router_with_burner(cfg, std::sync::Arc::new(chrono::Utc::now), burner);
    let served = shutdown::serve(listener, app).await.context("app server");
    if let Some(n) = node {
        n.abort();
    }
    served?;
    Ok(())
}
