//! `poolpilot replica`: the sidecar of a Redis read-replica pool member (health, drain, state).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use tracing::info;

use super::{CliError, FileConfig};
use crate::config::{ConfigError, Dur, Layer, Secret, env};
use crate::replica::{self, ReplicaConfig};
use crate::{shutdown, telemetry};

/// The port the load balancer checks and the autoscaler drains, as for the app.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// The member's own Redis.
pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Args)]
pub struct ReplicaArgs {
    /// Address to serve /health, /admin/drain and /metrics on.
    #[arg(long, value_name = "ADDR", env = env::REPLICA_LISTEN)]
    pub listen: Option<SocketAddr>,
    /// The local replica's URL.
    #[arg(long, value_name = "URL", env = env::REPLICA_REDIS)]
    pub redis: Option<String>,
    /// The longest silence from the primary a replica in sync may show (Redis pings its
    /// replicas every `repl-ping-replica-period`, 10 s by default: keep this above it).
    #[arg(long, value_name = "DURATION")]
    pub max_last_io: Option<Dur>,
}

/// `[replica]` in the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ReplicaFile {
    pub listen: Option<SocketAddr>,
    pub redis: Option<String>,
    pub max_last_io: Option<Dur>,
}

pub fn resolve(args: &ReplicaArgs, file: &ReplicaFile) -> Result<ReplicaConfig, ConfigError> {
    let listen = args
        .listen
        .pick(file.listen, DEFAULT_LISTEN.parse().expect("valid default"));
    let redis = args
        .redis
        .clone()
        .or(file.redis.clone())
        .unwrap_or_else(|| DEFAULT_REDIS.to_owned());
    let parsed = redis::Client::open(redis.as_str())
        .map_err(|e| ConfigError::invalid("redis", format!("not a Redis URL: {e}")))?;
    if !matches!(
        parsed.get_connection_info().addr(),
        redis::ConnectionAddr::Tcp(..)
    ) {
        return Err(ConfigError::invalid("redis", "must be a redis:// URL"));
    }
    let max_last_io = args.max_last_io.pick(file.max_last_io, Dur::secs(12)).get();
    if max_last_io.as_secs() < 1 || max_last_io.as_secs() > 3600 {
        return Err(ConfigError::invalid(
            "max-last-io",
            "must be between 1s and 1h (whole seconds, as Redis counts them)",
        ));
    }
    let drain_token = std::env::var(env::DRAIN_TOKEN)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    Ok(ReplicaConfig {
        listen,
        redis,
        max_last_io,
        timeout: std::time::Duration::from_secs(1),
        drain_token,
    })
}

pub async fn run(args: ReplicaArgs, file: FileConfig) -> Result<(), CliError> {
    let cfg = resolve(&args, &file.replica)?;
    let router = replica::router(cfg.clone()).context("the Redis URL")?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    info!(
        addr = %listener.local_addr().context("listener address")?,
        max_last_io_s = cfg.max_last_io.as_secs(),
        drain = cfg.drain_token.is_some(),
        "replica sidecar serving"
    );
    telemetry::notify_ready();
    let _watchdog = telemetry::spawn_watchdog();
    shutdown::serve(listener, router)
        .await
        .context("replica sidecar")?;
    Ok(())
}
