//! `poolpilot kv`: the key-value API members serve.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use tracing::info;

use super::{CliError, FileConfig};
use crate::config::{ConfigError, Dur, Layer, Secret, env};
use crate::kv::{self, KvConfig, RedisUrl};
use crate::{shutdown, telemetry};

/// The port when neither `--listen`, `PORT` nor the file give one.
pub const DEFAULT_PORT: u16 = 8080;
/// The primary when none is given: a Redis on this machine.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Args)]
pub struct KvArgs {
    /// Address to serve on (wins over --port).
    #[arg(long, value_name = "ADDR", env = env::KV_LISTEN)]
    pub listen: Option<SocketAddr>,
    /// Port to serve on, on all addresses (the reference's PORT).
    #[arg(long, value_name = "PORT", env = env::PORT)]
    pub port: Option<String>,
    /// The Redis primary, which takes every write: redis://[:PASSWORD@]HOST[:PORT][/DB]
    /// (prefer the variable: a flag shows in `ps`).
    #[arg(long, value_name = "URL", env = env::REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// The replicas, which take every read: one URL (a load balancer in front of them) or
    /// several, comma-separated, read in turn. Default: the primary's URL.
    #[arg(long, value_name = "URL[,URL...]", env = env::REDIS_REPLICAS_URL, hide_env_values = true)]
    pub redis_replicas_url: Option<Secret>,
    /// The bound on every Redis call, connecting included; past it the request answers 503.
    #[arg(long, value_name = "DURATION")]
    pub redis_timeout: Option<Dur>,
    /// Connections per replica address, used in turn.
    #[arg(long, value_name = "N")]
    pub replica_connections: Option<usize>,
    /// Each replica connection is replaced after this long, so that behind a TCP load balancer
    /// reads follow its rotation (new replicas get some, drained ones lose theirs).
    #[arg(long, value_name = "DURATION")]
    pub replica_reconnect: Option<Dur>,
    /// Shown by `GET /` (default: the host name).
    #[arg(long, value_name = "ID", env = env::KV_INSTANCE_ID)]
    pub instance_id: Option<String>,
}

/// `[kv]` in the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KvFile {
    pub listen: Option<SocketAddr>,
    pub redis_url: Option<Secret>,
    pub redis_replicas_url: Option<Secret>,
    pub redis_timeout: Option<Dur>,
    pub replica_connections: Option<usize>,
    pub replica_reconnect: Option<Dur>,
    pub instance_id: Option<String>,
}

/// The validated configuration and the address to serve on.
#[derive(Debug)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub kv: KvConfig,
}

fn parse_port(raw: &str) -> Result<u16, ConfigError> {
    raw.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ConfigError::invalid(
                format!("port ({})", env::PORT),
                format!(
                    "must be a port number from 1 to 65535, got `{}`",
                    raw.trim()
                ),
            )
        })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub fn resolve(args: &KvArgs, file: &KvFile) -> Result<Resolved, ConfigError> {
    let listen = match (args.listen, &args.port) {
        (Some(l), _) => l,
        (None, Some(p)) => SocketAddr::from(([0, 0, 0, 0], parse_port(p)?)),
        (None, None) => file
            .listen
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
    };
    let primary_raw = args
        .redis_url
        .clone()
        .or(file.redis_url.clone())
        .unwrap_or_else(|| Secret::new(DEFAULT_REDIS_URL));
    let primary = RedisUrl::parse(primary_raw.expose())
        .map_err(|e| ConfigError::invalid(format!("redis-url ({})", env::REDIS_URL), e))?;
    let replicas = match args
        .redis_replicas_url
        .clone()
        .or(file.redis_replicas_url.clone())
    {
        Some(raw) => RedisUrl::parse_list(raw.expose()).map_err(|e| {
            ConfigError::invalid(
                format!("redis-replicas-url ({})", env::REDIS_REPLICAS_URL),
                e,
            )
        })?,
        None => vec![primary.clone()],
    };
    let timeout = args
        .redis_timeout
        .pick(file.redis_timeout, Dur::secs(1))
        .get();
    if timeout.is_zero() || timeout > std::time::Duration::from_secs(60) {
        return Err(ConfigError::invalid(
            "redis-timeout",
            "must be between 1ms and 60s",
        ));
    }
    let defaults = kv::ReplicaConns::default();
    let per_address = args
        .replica_connections
        .or(file.replica_connections)
        .unwrap_or(defaults.per_address);
    if !(1..=64).contains(&per_address) {
        return Err(ConfigError::invalid(
            "replica-connections",
            "must be between 1 and 64",
        ));
    }
    let max_age = args
        .replica_reconnect
        .pick(file.replica_reconnect, Dur(defaults.max_age))
        .get();
    if max_age < std::time::Duration::from_secs(1)
        || max_age > std::time::Duration::from_secs(86400)
    {
        return Err(ConfigError::invalid(
            "replica-reconnect",
            "must be between 1s and 24h",
        ));
    }
    let drain_token = std::env::var(env::DRAIN_TOKEN)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    let instance_id = args
        .instance_id
        .clone()
        .or(file.instance_id.clone())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(host_name);
    if instance_id.is_empty()
        || instance_id.len() > 255
        || instance_id.chars().any(char::is_control)
    {
        return Err(ConfigError::invalid(
            "instance-id",
            "must be 1 to 255 bytes with no control character",
        ));
    }
    Ok(Resolved {
        listen,
        kv: KvConfig {
            instance_id,
            primary,
            replicas,
            timeout,
            replica_conns: kv::ReplicaConns {
                per_address,
                max_age,
            },
            drain_token,
        },
    })
}

pub async fn run(args: KvArgs, file: FileConfig) -> Result<(), CliError> {
    let cfg = resolve(&args, &file.kv)?;
    let router = kv::router(&cfg.kv)
        .map_err(|e| ConfigError::invalid(format!("redis-url ({})", env::REDIS_URL), e))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let replicas: Vec<&str> = cfg.kv.replicas.iter().map(RedisUrl::shown).collect();
    info!(
        addr = %listener.local_addr().context("listener address")?,
        instance = %cfg.kv.instance_id,
        primary = cfg.kv.primary.shown(),
        replicas = %replicas.join(","),
        redis_timeout_ms = cfg.kv.timeout.as_millis() as u64,
        "kv serving"
    );
    telemetry::notify_ready();
    let _watchdog = telemetry::spawn_watchdog();
    shutdown::serve(listener, router)
        .await
        .context("kv server")?;
    Ok(())
}
