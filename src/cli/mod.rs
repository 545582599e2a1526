//! The command line: one binary, one subcommand per role. Parsing errors and invalid
//! configuration exit 64 (EX_USAGE) before any port is bound; runtime failures exit 1.

pub mod app;
pub mod autoscaler;
pub mod demo;
pub mod discovery;
pub mod front;
pub mod kv;
mod load;
mod policy;
mod pool;
pub mod replica;
pub mod sim;
mod simulate;
pub mod template;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::config::{self, ConfigError, Dur, Layer, Zone, env};
use crate::exoscale::{Client, ClientConfig};
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "poolpilot",
    version,
    about = "An autoscaling appliance for Exoscale instance pools",
    propagate_version = true
)]
pub struct Cli {
    /// How to write logs (to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = env::LOG_FORMAT)]
    pub log_format: LogFormat,

    /// A TOML configuration file; environment variables and flags override it.
    #[arg(long, global = true, value_name = "FILE", env = env::CONFIG)]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local Exoscale API v2 simulator (no cloud account needed).
    Sim(sim::SimArgs),
    /// Inspect or resize an instance pool.
    #[command(subcommand)]
    Pool(pool::PoolCommand),
    /// Check a policy file.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Register an image as a template (the Terraform provider cannot).
    #[command(subcommand)]
    Template(template::TemplateCommand),
    /// Serve the deliberately slow app (the course's http-load-generator, with an exporter).
    App(app::AppArgs),
    /// The sidecar of a Redis read-replica pool member: health (in sync?), drain, state.
    Replica(replica::ReplicaArgs),
    /// One entry point over several backends (pools in several zones): ejects failing ones,
    /// retries on another, so every request gets a successful answer.
    Front(Box<front::FrontArgs>),
    /// Write the pools' members to a Prometheus file_sd file, every interval.
    Discovery(discovery::DiscoveryArgs),
    /// Run the whole autoscaling loop on this machine: no cloud account needed.
    Demo(demo::DemoArgs),
    /// Scale a pool on alert webhooks: at most one step per interval, within bounds.
    Autoscaler(Box<autoscaler::AutoscalerArgs>),
    /// Serve the key-value API: writes to the Redis primary, reads from its replicas.
    Kv(kv::KvArgs),
    /// Load a URL: closed loop (--concurrency) or open loop (--rate), bounded in time or count.
    Load(load::LoadArgs),
    /// Compare policies on a workload in virtual time: elasticity scores, cost, SLO minutes.
    Simulate(Box<simulate::SimulateArgs>),
}

/// Why a command failed, and so which exit code it gets.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) => config::EXIT_CONFIG,
            CliError::Runtime(_) => 1,
        }
    }
}

/// The configuration file: shared keys at the top, one table per subcommand.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub zone: Option<Zone>,
    pub pool: Option<String>,
    pub api_timeout: Option<Dur>,
    pub api_retries: Option<u32>,
    #[serde(default)]
    pub discovery: discovery::DiscoveryFile,
    #[serde(default)]
    pub autoscaler: autoscaler::AutoscalerFile,
    #[serde(default)]
    pub sim: crate::sim::seed::Seed,
    #[serde(default)]
    pub app: app::AppFile,
    #[serde(default)]
    pub front: front::FrontFile,
    #[serde(default)]
    pub replica: replica::ReplicaFile,
    #[serde(default)]
    pub kv: kv::KvFile,
}

/// Which pool, in which zone: the same names in every subcommand, each with its environment
/// variable (the course's names).
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The instance pool's id.
    #[arg(long, value_name = "ID", env = env::POOL)]
    pub pool: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// How to reach the API: the zone and the client's patience.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The Exoscale zone (ch-gva-2, ch-dk-2, de-fra-1, de-muc-1, at-vie-1, at-vie-2, bg-sof-1, hr-zag-1).
    #[arg(long, value_name = "ZONE", env = env::ZONE)]
    pub zone: Option<Zone>,
    /// How long one API request may take before it is abandoned (and retried when safe).
    #[arg(long, value_name = "DURATION")]
    pub api_timeout: Option<Dur>,
    /// How many times a failed API request is retried (with exponential backoff from 1 s).
    #[arg(long, value_name = "N")]
    pub api_retries: Option<u32>,
}

/// A validated target: the pool, the zone and a client for it.
pub struct PoolTarget {
    pub pool: uuid::Uuid,
    pub client: Client,
}

impl ApiArgs {
    /// The zone, layered over the file.
    pub fn zone(&self, file: &FileConfig) -> Zone {
        self.zone.pick(file.zone, Zone::DEFAULT)
    }

    /// Validates and builds the API client (credentials and endpoint from the environment).
    pub fn client(&self, file: &FileConfig) -> Result<Client, ConfigError> {
        let timeout = self.api_timeout.pick(file.api_timeout, Dur::secs(30));
        if timeout.get().is_zero() {
            return Err(ConfigError::invalid(
                "api-timeout",
                "must be greater than 0",
            ));
        }
        let retries = self.api_retries.pick(file.api_retries, 4);
        if retries > 10 {
            return Err(ConfigError::invalid("api-retries", "must be at most 10"));
        }
        let mut cfg = ClientConfig::from_env(self.zone(file))?;
        cfg.request_timeout = timeout.get();
        cfg.retry.max_retries = retries;
        Client::new(cfg).map_err(|e| ConfigError::invalid("api client", e.to_string()))
    }
}

impl TargetArgs {
    /// Layers flags/env over the file, validates, and builds the API client.
    pub fn resolve(&self, file: &FileConfig) -> Result<PoolTarget, ConfigError> {
        let pool =
            config::parse_pool_id("pool", self.pool.clone().or(file.pool.clone()).as_deref())?;
        let client = self.api.client(file)?;
        Ok(PoolTarget { pool, client })
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    // Long-running commands catch SIGTERM/SIGINT from the start (before they announce
    // themselves); one-shot commands keep the default: a signal ends them at once.
    if matches!(
        cli.command,
        Command::Sim(_)
            | Command::App(_)
            | Command::Front(_)
            | Command::Replica(_)
            | Command::Kv(_)
            | Command::Discovery(_)
            | Command::Autoscaler(_)
            | Command::Demo(_)
    ) {
        crate::shutdown::install();
    }
    let file: FileConfig = config::load_file(cli.config.as_deref())?;
    match cli.command {
        Command::Sim(args) => sim::run(args, file).await,
        Command::Pool(cmd) => pool::run(cmd, file).await,
        Command::App(args) => app::run(args, file).await,
        Command::Front(args) => front::run(*args, file).await,
        Command::Replica(args) => replica::run(args, file).await,
        Command::Kv(args) => kv::run(args, file).await,
        Command::Load(args) => load::run(args).await,
        Command::Discovery(args) => discovery::run(args, file).await,
        Command::Autoscaler(args) => autoscaler::run(*args, file).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Template(cmd) => template::run(cmd, file).await,
        Command::Policy(cmd) => policy::run(cmd).await,
        Command::Simulate(args) => simulate::run(*args).await,
    }
}
