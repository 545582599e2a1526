//! `poolpilot sim`: the local Exoscale API v2 simulator as a command.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rand::RngExt;
use tracing::info;

use super::{CliError, FileConfig};
use crate::config::{ConfigError, Dur, Layer, Zone, env};
use crate::exoscale::Credentials;
use crate::sim::seed::{self, SeedPool};
use crate::sim::{RecordBackend, Sim, State, Timing};
use crate::{shutdown, telemetry};

/// The simulator's default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8079";

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to serve the API on (`/v2`) and the admin API (`/admin`).
    #[arg(long, value_name = "ADDR", env = env::SIM_LISTEN)]
    pub listen: Option<SocketAddr>,
    /// The simulated zone.
    #[arg(long, value_name = "ZONE", env = env::ZONE)]
    pub zone: Option<Zone>,
    /// Create one pool of this size (members already running) with an NLB in front of it.
    /// Default: 1 when the configuration file seeds no pool.
    #[arg(long, value_name = "N")]
    pub pool_size: Option<u64>,
    /// Time from a write to its operation's success.
    #[arg(long, value_name = "DURATION")]
    pub operation_delay: Option<Dur>,
    /// Time from an instance's creation to `running`.
    #[arg(long, value_name = "DURATION")]
    pub boot_delay: Option<Dur>,
    /// The API key to accept (default: generated). The secret comes from
    /// POOLPILOT_SIM_API_SECRET or the file; it is generated when neither sets it.
    #[arg(long, value_name = "KEY", env = env::SIM_API_KEY)]
    pub api_key: Option<String>,
    /// Also write the client environment (endpoint, key, secret, zone, pool) to this file, mode 0600.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Give instances these addresses, in order, instead of 198.51.100.x: for machines that
    /// really exist (the VMs of a NixOS test). Repeatable.
    #[arg(long, value_name = "IP")]
    pub member_address: Vec<std::net::Ipv4Addr>,
}

/// The most members one simulated pool may have (the documentation range has 250 addresses).
const MAX_POOL_SIZE: u64 = 250;

fn random_key() -> String {
    let mut rng = rand::rng();
    let bytes: [u8; 12] = rng.random();
    format!("EXO{}", hex::encode(bytes))
}

fn random_secret() -> String {
    use base64::Engine as _;
    let mut rng = rand::rng();
    let bytes: [u8; 32] = rng.random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub async fn run(args: SimArgs, file: FileConfig) -> Result<(), CliError> {
    let s = &file.sim;
    let listen = args
        .listen
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
    let zone = args.zone.pick(file.zone, Zone::DEFAULT);
    let timing = Timing {
        operation_delay: args
            .operation_delay
            .pick(s.operation_delay, Dur::secs(2))
            .get(),
        boot_delay: args.boot_delay.pick(s.boot_delay, Dur::secs(5)).get(),
    };
    let pools: Vec<SeedPool> = match (args.pool_size, s.pools.is_empty()) {
        (Some(n), _) => vec![SeedPool::default_with_size(n)],
        (None, true) => vec![SeedPool::default_with_size(1)],
        (None, false) => s.pools.clone(),
    };
    for (i, p) in pools.iter().enumerate() {
        if p.size > MAX_POOL_SIZE {
            let field = if args.pool_size.is_some() {
                "pool-size".to_owned()
            } else {
                format!("sim.pool[{i}].size")
            };
            return Err(ConfigError::invalid(
                field,
                format!("must be at most {MAX_POOL_SIZE} (the simulator's address range)"),
            )
            .into());
        }
    }
    let key = args
        .api_key
        .clone()
        .or(s.api_key.clone())
        .unwrap_or_else(random_key);
    let secret = std::env::var(env::SIM_API_SECRET)
        .ok()
        .filter(|v| !v.is_empty())
        .or(s.api_secret.as_ref().map(|s| s.expose().to_owned()))
        .unwrap_or_else(random_secret);
    if key.trim().is_empty() {
        return Err(ConfigError::invalid("api-key", "must not be empty").into());
    }

    let backend: std::sync::Arc<dyn crate::sim::InstanceBackend> = if args.member_address.is_empty()
    {
        std::sync::Arc::new(RecordBackend::new())
    } else {
        std::sync::Arc::new(crate::sim::AddressBackend::new(args.member_address.clone()))
    };
    let mut state = State::new(zone, timing, backend);
    let seeded =
        seed::apply(&mut state, &pools).map_err(|e| ConfigError::invalid("sim.pool", e.message))?;
    let sim = Sim::new(state, vec![Credentials::new(&key, &secret)]);

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr().context("listener address")?;
    let endpoint = format!("http://{addr}/v2");

    let mut envs = vec![
        (env::API_ENDPOINT, endpoint.clone()),
        (env::API_KEY, key.clone()),
        (env::API_SECRET, secret),
        (env::ZONE, zone.name().to_owned()),
    ];
    if let Some(first) = seeded.first() {
        envs.push((env::POOL, first.pool.to_string()));
    }
    let text: String = envs
        .iter()
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect();
    if let Some(path) = &args.env_file {
        write_private(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The simulator's own, throw-away credentials go to stdout so a user can paste them;
    // they are never logged.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "# poolpilot sim: Exoscale API v2 simulator for {zone} on http://{addr}"
    );
    for p in &seeded {
        let _ = writeln!(
            out,
            "# pool {} ({} members){}",
            p.pool,
            file_pool_size(&pools, &seeded, p.pool),
            p.load_balancer
                .map(|l| format!(", load balancer {l}"))
                .unwrap_or_default()
        );
    }
    let _ = write!(out, "{text}");
    let _ = out.flush();
    drop(out);

    info!(%addr, zone = %zone, pools = seeded.len(), "simulator serving");
    telemetry::notify_ready();
    let _watchdog = telemetry::spawn_watchdog();
    shutdown::serve(listener, crate::sim::router(sim))
        .await
        .context("simulator server")?;
    Ok(())
}

fn file_pool_size(pools: &[SeedPool], seeded: &[seed::Seeded], id: uuid::Uuid) -> u64 {
    seeded
        .iter()
        .position(|s| s.pool == id)
        .map(|i| pools[i].size)
        .unwrap_or(0)
}

/// Mode 0600 (it holds the secret), written whole or not at all: a script waiting for the file
/// never reads half of it.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    crate::discovery::file_sd::write_atomic_mode(path, text.as_bytes(), 0o600)
}
