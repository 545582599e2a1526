//! `poolpilot front`: the entry point over several backends (see `crate::front`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::{CliError, FileConfig};
use crate::config::{self, ConfigError, Dur, Layer, Zone, env};
use crate::exoscale::{Client, ClientConfig};
use crate::front::backend::{EjectMode, Ejection};
use crate::front::nlb::{PoolSpec, Pools};
use crate::front::{self, FrontConfig};
use crate::shutdown::Limits;

/// Port 80, as the service is asked to answer on.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:80";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9180";

#[derive(Debug, Args)]
pub struct FrontArgs {
    /// Address clients connect to.
    #[arg(long, value_name = "ADDR", env = env::FRONT_LISTEN)]
    pub listen: Option<SocketAddr>,
    /// The status page (GET /v1/backends), /metrics and /healthz.
    #[arg(long, value_name = "ADDR", env = env::FRONT_ADMIN_LISTEN)]
    pub admin_listen: Option<SocketAddr>,
    /// A backend, `[NAME=]http://HOST:PORT[/PREFIX]` (repeatable): e.g. each zone's NLB.
    #[arg(long = "backend", value_name = "[NAME=]URL")]
    pub backends: Vec<String>,
    /// An instance pool as a backend, `[NAME=]ZONE:POOL_ID` (repeatable): its NLB's address is
    /// found through the Exoscale API (EXOSCALE_API_KEY/SECRET) and followed; NAME defaults to
    /// the zone.
    #[arg(long = "pool", value_name = "[NAME=]ZONE:POOL_ID")]
    pub pools: Vec<String>,
    /// How often the pools' NLB addresses are looked up again.
    #[arg(long, value_name = "DURATION")]
    pub pool_refresh: Option<Dur>,
    /// A backend is ejected after more than this many failures (non-200, timeout, refused).
    #[arg(long, value_name = "N")]
    pub eject_after: Option<u32>,
    /// total: failures since the backend was admitted; consecutive: failures in a row.
    #[arg(long, value_enum)]
    pub eject_mode: Option<EjectMode>,
    /// Out of rotation for this long after the first ejection, n times it after the n-th.
    #[arg(long, value_name = "DURATION")]
    pub cooldown: Option<Dur>,
    /// The longest cool-down.
    #[arg(long, value_name = "DURATION")]
    pub max_cooldown: Option<Dur>,
    /// How often an ejected backend past its cool-down is probed.
    #[arg(long, value_name = "DURATION")]
    pub probe_interval: Option<Dur>,
    /// The path probed; a 200 re-admits the backend.
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// Retries after the first attempt, each on another backend.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Retries under way may be this fraction of the requests under way (Envoy's budget)...
    #[arg(long, value_name = "FRACTION")]
    pub retry_budget: Option<f64>,
    /// ...and at least this many, whatever the load.
    #[arg(long, value_name = "N")]
    pub retry_min: Option<u64>,
    /// Also retry POST and PATCH (not idempotent: only if the backends tolerate repeats).
    #[arg(long)]
    pub retry_non_idempotent: bool,
    /// How long one attempt may take to start answering.
    #[arg(long, value_name = "DURATION")]
    pub try_timeout: Option<Dur>,
    /// How long connecting to a backend may take.
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<Dur>,
    /// A client must send its request headers within this time.
    #[arg(long, value_name = "DURATION")]
    pub header_timeout: Option<Dur>,
}

/// `[front]` in the configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FrontFile {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub backends: Option<Vec<String>>,
    pub pools: Option<Vec<String>>,
    pub pool_refresh: Option<Dur>,
    pub eject_after: Option<u32>,
    pub eject_mode: Option<EjectMode>,
    pub cooldown: Option<Dur>,
    pub max_cooldown: Option<Dur>,
    pub probe_interval: Option<Dur>,
    pub health_path: Option<String>,
    pub retries: Option<u32>,
    pub retry_budget: Option<f64>,
    pub retry_min: Option<u64>,
    pub retry_non_idempotent: Option<bool>,
    pub try_timeout: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    pub header_timeout: Option<Dur>,
}

/// `[NAME=]URL` into (name, base URL without a trailing slash).
fn parse_backend(spec: &str, index: usize) -> Result<(String, String), ConfigError> {
    let (name, url) = match spec.split_once('=') {
        Some((n, u)) if !n.contains("://") => (n.trim().to_owned(), u.trim()),
        _ => (String::new(), spec.trim()),
    };
    let parsed = url::Url::parse(url)
        .map_err(|e| ConfigError::invalid("backend", format!("`{spec}` is not a URL: {e}")))?;
    if parsed.scheme() != "http" {
        return Err(ConfigError::invalid(
            "backend",
            format!("`{spec}`: only http:// backends (the NLBs speak plain HTTP)"),
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| ConfigError::invalid("backend", format!("`{spec}` has no host")))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError::invalid(
            "backend",
            format!("`{spec}`: a backend is a base URL, without query or fragment"),
        ));
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let base = format!(
        "http://{host}:{port}{}",
        parsed.path().trim_end_matches('/')
    );
    let name = if name.is_empty() {
        format!("{host}:{port}")
    } else if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        name
    } else {
        return Err(ConfigError::invalid(
            "backend",
            format!("name `{name}` (backend {index}): letters, digits, `-`, `_`, `.` only"),
        ));
    };
    Ok((name, base))
}

pub fn resolve(args: &FrontArgs, file: &FrontFile) -> Result<FrontConfig, ConfigError> {
    let listen = args
        .listen
        .pick(file.listen, DEFAULT_LISTEN.parse().expect("valid default"));
    let admin_listen = args.admin_listen.pick(
        file.admin_listen,
        DEFAULT_ADMIN_LISTEN.parse().expect("valid default"),
    );
    if listen == admin_listen && listen.port() != 0 {
        return Err(ConfigError::invalid(
            "admin-listen",
            "must differ from --listen",
        ));
    }
    let specs: Vec<String> = if args.backends.is_empty() {
        file.backends.clone().unwrap_or_default()
    } else {
        args.backends.clone()
    };
    if specs.is_empty() && pool_specs(args, file).is_empty() {
        return Err(ConfigError::invalid(
            "backend",
            "give at least one (--backend NAME=http://HOST:PORT or --pool ZONE:POOL_ID, repeatable)",
        ));
    }
    let mut backends = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let b = parse_backend(s, i + 1)?;
        if backends.iter().any(|(n, _): &(String, String)| *n == b.0) {
            return Err(ConfigError::invalid(
                "backend",
                format!("the name `{}` is given twice", b.0),
            ));
        }
        backends.push(b);
    }
    let after = args.eject_after.pick(file.eject_after, 10);
    if after == 0 {
        return Err(ConfigError::invalid("eject-after", "must be at least 1"));
    }
    let cooldown = args.cooldown.pick(file.cooldown, Dur::secs(30)).get();
    let max_cooldown = args
        .max_cooldown
        .pick(file.max_cooldown, Dur::secs(300))
        .get();
    if cooldown.is_zero() || max_cooldown < cooldown {
        return Err(ConfigError::invalid(
            "cooldown",
            "must be greater than 0 and at most max-cooldown",
        ));
    }
    let probe_interval = args
        .probe_interval
        .pick(file.probe_interval, Dur::secs(2))
        .get();
    if probe_interval < Duration::from_millis(10) {
        return Err(ConfigError::invalid(
            "probe-interval",
            "must be at least 10ms",
        ));
    }
    let health_path = args
        .health_path
        .clone()
        .or(file.health_path.clone())
        .unwrap_or_else(|| "/health".into());
    if !health_path.starts_with('/') {
        return Err(ConfigError::invalid("health-path", "must start with /"));
    }
    let retries = args.retries.pick(file.retries, 2);
    if retries > 10 {
        return Err(ConfigError::invalid("retries", "must be at most 10"));
    }
    let retry_ratio = args.retry_budget.pick(file.retry_budget, 0.2);
    if !(0.0..=1.0).contains(&retry_ratio) {
        return Err(ConfigError::invalid(
            "retry-budget",
            "must be a fraction between 0 and 1",
        ));
    }
    let retry_min = args.retry_min.pick(file.retry_min, 3);
    let try_timeout = args.try_timeout.pick(file.try_timeout, Dur::secs(15)).get();
    let connect_timeout = args
        .connect_timeout
        .pick(file.connect_timeout, Dur::secs(2))
        .get();
    let header_timeout = args
        .header_timeout
        .pick(file.header_timeout, Dur::secs(30))
        .get();
    for (field, d) in [
        ("try-timeout", try_timeout),
        ("connect-timeout", connect_timeout),
        ("header-timeout", header_timeout),
    ] {
        if d.is_zero() || d > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(field, "must be between 1ms and 1h"));
        }
    }
    Ok(FrontConfig {
        listen,
        admin_listen,
        backends,
        ejection: Ejection {
            after,
            mode: args.eject_mode.pick(file.eject_mode, EjectMode::Total),
            cooldown,
            max_cooldown,
        },
        retries,
        retry_ratio,
        retry_min,
        retry_non_idempotent: args.retry_non_idempotent
            || file.retry_non_idempotent.unwrap_or(false),
        retry_body_limit: 1 << 20,
        try_timeout,
        connect_timeout,
        probe_interval,
        health_path,
        limits: Limits {
            header_timeout,
            ..Limits::default()
        },
    })
}

fn pool_specs(args: &FrontArgs, file: &FrontFile) -> Vec<String> {
    if args.pools.is_empty() {
        file.pools.clone().unwrap_or_default()
    } else {
        args.pools.clone()
    }
}

/// `[NAME=]ZONE:POOL_ID`.
fn parse_pool(spec: &str) -> Result<PoolSpec, ConfigError> {
    let (name, rest) = match spec.split_once('=') {
        Some((n, r)) => (Some(n.trim()), r.trim()),
        None => (None, spec.trim()),
    };
    let (zone, id) = rest.split_once(':').ok_or_else(|| {
        ConfigError::invalid("pool", format!("`{spec}`: expected [NAME=]ZONE:POOL_ID"))
    })?;
    let zone: Zone = zone
        .parse()
        .map_err(|e| ConfigError::invalid("pool", format!("`{spec}`: {e}")))?;
    let pool = config::parse_pool_id("pool", Some(id))?;
    let name = name.map_or_else(|| zone.name().to_owned(), str::to_owned);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ConfigError::invalid(
            "pool",
            format!("name `{name}` (`{spec}`): letters, digits, `-`, `_`, `.` only"),
        ));
    }
    Ok(PoolSpec { name, zone, pool })
}

/// The `--pool` backends (none: `None`), with one API client per zone (credentials and
/// endpoint from the environment, as the other subcommands'), named apart from `backends`.
pub fn resolve_pools(
    args: &FrontArgs,
    file: &FrontFile,
    backends: &[(String, String)],
) -> Result<Option<Pools>, ConfigError> {
    let specs = pool_specs(args, file);
    if specs.is_empty() {
        return Ok(None);
    }
    let mut pools: Vec<PoolSpec> = Vec::new();
    for s in &specs {
        let p = parse_pool(s)?;
        if backends.iter().any(|(n, _)| *n == p.name) || pools.iter().any(|q| q.name == p.name) {
            return Err(ConfigError::invalid(
                "pool",
                format!(
                    "the backend name `{}` is given twice (name pools of one zone: NAME=ZONE:POOL_ID)",
                    p.name
                ),
            ));
        }
        pools.push(p);
    }
    let refresh = args
        .pool_refresh
        .pick(file.pool_refresh, Dur::secs(60))
        .get();
    if refresh < Duration::from_millis(100) {
        return Err(ConfigError::invalid(
            "pool-refresh",
            "must be at least 100ms",
        ));
    }
    let mut clients: Vec<(Zone, Client)> = Vec::new();
    for p in &pools {
        if clients.iter().any(|(z, _)| *z == p.zone) {
            continue;
        }
        let mut cfg = ClientConfig::from_env(p.zone)?;
        // The front retries a failed listing itself, with its own backoff, keeping the last
        // known addresses meanwhile.
        cfg.retry.max_retries = 0;
        cfg.request_timeout = Duration::from_secs(10);
        let client =
            Client::new(cfg).map_err(|e| ConfigError::invalid("api client", e.to_string()))?;
        clients.push((p.zone, client));
    }
    Ok(Some(Pools {
        pools,
        clients,
        refresh,
    }))
}

pub async fn run(args: FrontArgs, file: FileConfig) -> Result<(), CliError> {
    let cfg = resolve(&args, &file.front)?;
    let pools = resolve_pools(&args, &file.front, &cfg.backends)?;
    front::run(cfg, pools).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_named_and_normalised() {
        assert_eq!(
            parse_backend("gva=http://198.51.100.7/", 1).unwrap(),
            ("gva".into(), "http://198.51.100.7:80".into())
        );
        assert_eq!(
            parse_backend("http://127.0.0.1:8081/app/", 1).unwrap(),
            ("127.0.0.1:8081".into(), "http://127.0.0.1:8081/app".into())
        );
        let p = parse_pool("de-fra-1:7d4b3c2a-0000-4000-8000-000000000001").unwrap();
        assert_eq!((p.name.as_str(), p.zone), ("de-fra-1", Zone::DeFra1));
        let p = parse_pool("fra=de-fra-1:7d4b3c2a-0000-4000-8000-000000000001").unwrap();
        assert_eq!(p.name, "fra");
        for bad in [
            "de-fra-1",
            "mars-1:7d4b3c2a-0000-4000-8000-000000000001",
            "de-fra-1:not-a-uuid",
            "a b=de-fra-1:7d4b3c2a-0000-4000-8000-000000000001",
        ] {
            assert!(parse_pool(bad).is_err(), "{bad}");
        }
        for bad in [
            "https://x",
            "gva=ftp://x",
            "x y=http://a",
            "http://a/?q",
            "nothing",
        ] {
            assert!(parse_backend(bad, 1).is_err(), "{bad}");
        }
    }
}
