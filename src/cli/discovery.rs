//! `poolpilot discovery`: configuration, the metrics/health server, and the stop signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use tracing::info;

use super::{ApiArgs, CliError, FileConfig};
use crate::config::{self, ConfigError, Dur, Layer, PoolRef};
use crate::discovery::{self, Agent, DiscoveryConfig, Health, Metrics, TargetPort};
use crate::exoscale::ApiMetrics;
use crate::{shutdown, telemetry};

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9111";

#[derive(Debug, Args)]
pub struct DiscoveryArgs {
    /// A pool to watch, `[NAME=][ZONE:]ID` as the autoscaler takes it (a plain id is in --zone);
    /// repeat it (or separate them with commas) to watch several, in several zones: all go to
    /// the one file, each target with its pool's `exoscale_zone`.
    #[arg(long, value_name = "[NAME=][ZONE:]ID", env = config::env::POOL, value_delimiter = ',')]
    pub pool: Vec<String>,
    /// A port to list every member on, `NAME=PORT` or `PORT`; repeatable (default: node=9100).
    #[arg(long, value_name = "[NAME=]PORT", env = config::env::TARGET_PORT, value_delimiter = ',')]
    pub target_port: Vec<TargetPort>,
    /// The file_sd file to write (its directory is created when missing).
    #[arg(long, value_name = "PATH", env = config::env::DISCOVERY_OUTPUT)]
    pub output: Option<PathBuf>,
    /// How often to read the pools.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<Dur>,
    /// Where to serve /metrics and /healthz.
    #[arg(long, value_name = "ADDR", env = config::env::DISCOVERY_METRICS_LISTEN)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `[discovery]` in the configuration file (the pool may also be the top-level `pool`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DiscoveryFile {
    pub pools: Option<Vec<String>>,
    pub target_ports: Option<Vec<TargetPort>>,
    pub output: Option<PathBuf>,
    pub interval: Option<Dur>,
    pub metrics_listen: Option<SocketAddr>,
}

pub fn resolve(
    args: &DiscoveryArgs,
    file: &FileConfig,
) -> Result<(DiscoveryConfig, SocketAddr), ConfigError> {
    let d = &file.discovery;
    let raw_pools: Vec<String> = if !args.pool.is_empty() {
        args.pool.clone()
    } else if let Some(p) = &d.pools {
        p.clone()
    } else {
        file.pool.iter().cloned().collect()
    };
    // Names are not used here (no label carries them), so plain ids need not differ in name.
    let pools = PoolRef::parse_all("pool", &raw_pools, args.api.zone(file), false)?;

    let ports = if !args.target_port.is_empty() {
        args.target_port.clone()
    } else {
        d.target_ports
            .clone()
            .unwrap_or_else(|| vec![discovery::DEFAULT_TARGET])
    };
    if ports.is_empty() {
        return Err(ConfigError::invalid(
            "target-port",
            "at least one port is required",
        ));
    }
    for (i, p) in ports.iter().enumerate() {
        if ports[..i].iter().any(|q| q.port == p.port) {
            return Err(ConfigError::invalid(
                "target-port",
                format!("port {} is listed twice", p.port),
            ));
        }
        if ports[..i].iter().any(|q| q.name == p.name) {
            return Err(ConfigError::invalid(
                "target-port",
                format!("name `{}` is used twice", p.name.as_str()),
            ));
        }
    }

    let output = args
        .output
        .clone()
        .or(d.output.clone())
        .unwrap_or_else(|| PathBuf::from(discovery::DEFAULT_OUTPUT));
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned());
    if !name.as_deref().is_some_and(|n| n.ends_with(".json")) {
        return Err(ConfigError::invalid(
            "output",
            format!(
                "must be a file ending in .json (Prometheus' file_sd reads *.json), got `{}`",
                output.display()
            ),
        ));
    }

    let interval = args.interval.pick(d.interval, Dur::secs(10)).get();
    if interval < Duration::from_secs(1) || interval > Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            "interval",
            "must be between 1s and 1h",
        ));
    }
    let listen = args.metrics_listen.pick(
        d.metrics_listen,
        DEFAULT_METRICS_LISTEN.parse().expect("valid default"),
    );
    Ok((
        DiscoveryConfig {
            pools,
            ports,
            output,
            interval,
        },
        listen,
    ))
}

#[derive(Clone)]
struct ServerState {
    registry: Arc<prometheus_client::registry::Registry>,
    health: Arc<Health>,
    max_age: Duration,
}

async fn healthz(State(s): State<ServerState>) -> (StatusCode, String) {
    match s.health.check(s.max_age) {
        Ok(text) => (StatusCode::OK, text + "\n"),
        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text + "\n"),
    }
}

async fn metrics_text(State(s): State<ServerState>) -> axum::response::Response {
    telemetry::metrics::handler(State(s.registry)).await
}

pub async fn run(args: DiscoveryArgs, file: FileConfig) -> Result<(), CliError> {
    let (cfg, listen) = resolve(&args, &file)?;
    let mut registry = telemetry::metrics::registry("discovery");
    let api_metrics = ApiMetrics::register(&mut registry);
    // One client per zone the pools are in (credentials and patience shared).
    let mut clients: Vec<crate::exoscale::Client> = Vec::new();
    for p in &cfg.pools {
        if clients.iter().any(|c| c.zone() == p.zone) {
            continue;
        }
        let mut api = args.api.clone();
        api.zone = Some(p.zone);
        clients.push(api.client(&file)?.with_metrics(api_metrics.clone()));
    }
    let metrics = Metrics::register(&mut registry);

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    info!(
        pools = ?cfg.pools.iter().map(|p| format!("{}:{}", p.zone, p.id)).collect::<Vec<_>>(),
        ports = ?cfg.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        output = %cfg.output.display(),
        interval_ms = cfg.interval.as_millis() as u64,
        metrics = %listener.local_addr().context("listener address")?,
        "discovery starting"
    );
    // Healthy while the last success is at most three intervals (or a minute) old.
    let max_age = (cfg.interval * 3).max(Duration::from_secs(60));
    let agent = Agent::new(clients, cfg, metrics);
    let state = ServerState {
        registry: Arc::new(registry),
        health: agent.health(),
        max_age,
    };
    let router = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .with_state(state);
    // A refresh in progress (even one waiting out retries) is abandoned at the signal: the file
    // is only ever replaced by a rename, so stopping mid-way leaves the last good one.
    shutdown::serve_while(listener, router, agent.run())
        .await
        .context("metrics server")?;
    Ok(())
}
