//! `poolpilot front`: the entry point over several backends (see `crate::front`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::{CliError, FileConfig};
use crate::config::{ConfigError, Dur, Layer, env};
use crate::front::backend::{EjectMode, Ejection};
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
    if specs.is_empty() {
        return Err(ConfigError::invalid(
            "backend",
            "give at least one (--backend NAME=http://HOST:PORT, repeatable)",
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

pub async fn run(args: FrontArgs, file: FileConfig) -> Result<(), CliError> {
    let cfg = resolve(&args, &file.front)?;
    front::run(cfg).await?;
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
