//! Shared configuration vocabulary: environment variable names, durations, zones, and the
//! validation error that makes the binary exit 64 naming the field and the rule.
//!
//! Every subcommand layers its settings the same way: built-in defaults, then the TOML file given
//! with `--config`, then environment variables, then flags, then `validate()`. Clap merges the
//! environment and the flags (a flag wins); [`Layer::pick`] puts the file underneath them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

mod pools;
pub use pools::{DEFAULT_POOL_NAME, PoolRef, endpoint_override, valid_pool_name};

/// Names of every environment variable poolpilot reads, in one place.
pub mod env {
    /// Overrides the API base URL (any scheme), as in Exoscale's own tools.
    pub const API_ENDPOINT: &str = "EXOSCALE_API_ENDPOINT";
    /// API key, the name used by Exoscale's CLI and SDKs.
    pub const API_KEY: &str = "EXOSCALE_API_KEY";
    /// API secret, the name used by Exoscale's CLI and SDKs.
    pub const API_SECRET: &str = "EXOSCALE_API_SECRET";
    /// API key, the course's name (and the Terraform provider's fallback).
    pub const COURSE_KEY: &str = "EXOSCALE_KEY";
    /// API secret, the course's name (and the Terraform provider's fallback).
    pub const COURSE_SECRET: &str = "EXOSCALE_SECRET";
    /// The zone, as the course's tools read it.
    pub const ZONE: &str = "EXOSCALE_ZONE";
    /// The instance pool id, as the course's tools read it.
    pub const POOL: &str = "EXOSCALE_INSTANCEPOOL_ID";
    /// Set by systemd when stdout/stderr go to the journal.
    pub const JOURNAL_STREAM: &str = "JOURNAL_STREAM";
    /// Log filter directives (tracing-subscriber's `EnvFilter` syntax).
    pub const LOG: &str = "POOLPILOT_LOG";
    /// `--log-format`.
    pub const LOG_FORMAT: &str = "POOLPILOT_LOG_FORMAT";
    /// `--config`: the TOML configuration file.
    pub const CONFIG: &str = "POOLPILOT_CONFIG";
    /// Set by systemd for `Type=notify` services (read by sd-notify; never passed to children).
    pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
    /// Set by systemd when the unit has a watchdog (read by sd-notify; never passed to children).
    pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";

    /// `autoscaler --listen`.
    pub const AUTOSCALER_LISTEN: &str = "POOLPILOT_AUTOSCALER_LISTEN";
    /// The course's variable: the autoscaler's port, on all addresses.
    pub const LISTEN_PORT: &str = "LISTEN_PORT";
    /// `autoscaler --min`.
    pub const MIN: &str = "POOLPILOT_MIN";
    /// `autoscaler --max`.
    pub const MAX: &str = "POOLPILOT_MAX";
    /// `autoscaler --webhook-token`.
    pub const WEBHOOK_TOKEN: &str = "POOLPILOT_WEBHOOK_TOKEN";
    /// `autoscaler --policy`.
    pub const POLICY: &str = "POOLPILOT_POLICY";
    /// `autoscaler --prometheus`.
    pub const PROMETHEUS_URL: &str = "POOLPILOT_PROMETHEUS_URL";
    /// `autoscaler --prometheus-user`.
    pub const PROMETHEUS_USER: &str = "POOLPILOT_PROMETHEUS_USER";
    /// `autoscaler --prometheus-password`: basic auth for Prometheus' web config.
    pub const PROMETHEUS_PASSWORD: &str = "POOLPILOT_PROMETHEUS_PASSWORD";
    /// `autoscaler --scrape`.
    pub const SCRAPE_FILE_SD: &str = "POOLPILOT_SCRAPE_FILE_SD";
    /// `autoscaler --drain-wait` (Terraform derives it from the NLB's health check).
    pub const DRAIN_WAIT: &str = "POOLPILOT_DRAIN_WAIT";
    /// The app's drain token (never a flag there), and `autoscaler --drain-token`.
    pub const DRAIN_TOKEN: &str = "POOLPILOT_DRAIN_TOKEN";

    /// `app --listen`.
    pub const APP_LISTEN: &str = "POOLPILOT_APP_LISTEN";
    /// `front --listen`.
    pub const FRONT_LISTEN: &str = "POOLPILOT_FRONT_LISTEN";
    /// `front --admin-listen`.
    pub const FRONT_ADMIN_LISTEN: &str = "POOLPILOT_FRONT_ADMIN_LISTEN";
    /// `replica --listen`.
    pub const REPLICA_LISTEN: &str = "POOLPILOT_REPLICA_LISTEN";
    /// `replica --redis`.
    pub const REPLICA_REDIS: &str = "POOLPILOT_REPLICA_REDIS";
    /// `app --load-seconds`.
    pub const LOAD_SECONDS: &str = "POOLPILOT_LOAD_SECONDS";

    /// The course's variable: `discovery --target-port`.
    pub const TARGET_PORT: &str = "TARGET_PORT";
    /// `discovery --output`.
    pub const DISCOVERY_OUTPUT: &str = "POOLPILOT_DISCOVERY_OUTPUT";
    /// `discovery --metrics-listen`.
    pub const DISCOVERY_METRICS_LISTEN: &str = "POOLPILOT_DISCOVERY_METRICS_LISTEN";

    /// The reference key-value API's variable: `kv --redis-url`, the Redis primary.
    pub const REDIS_URL: &str = "REDIS_URL";
    /// The reference key-value API's variable: `kv --redis-replicas-url` (comma-separated).
    pub const REDIS_REPLICAS_URL: &str = "REDIS_REPLICAS_URL";
    /// The reference key-value API's variable: `kv --port`, on all addresses.
    pub const PORT: &str = "PORT";
    /// `kv --listen`.
    pub const KV_LISTEN: &str = "POOLPILOT_KV_LISTEN";
    /// `kv --instance-id`.
    pub const KV_INSTANCE_ID: &str = "POOLPILOT_KV_INSTANCE_ID";

    /// `sim --listen`.
    pub const SIM_LISTEN: &str = "POOLPILOT_SIM_LISTEN";
    /// `sim --api-key`.
    pub const SIM_API_KEY: &str = "POOLPILOT_SIM_API_KEY";
    /// The simulator's API secret (never a flag).
    pub const SIM_API_SECRET: &str = "POOLPILOT_SIM_API_SECRET";

    /// Every name above: what the integration tests scrub from the environment they inherit.
    pub const ALL: &[&str] = &[
        API_ENDPOINT,
        API_KEY,
        API_SECRET,
        COURSE_KEY,
        COURSE_SECRET,
        ZONE,
        POOL,
        JOURNAL_STREAM,
        LOG,
        LOG_FORMAT,
        CONFIG,
        NOTIFY_SOCKET,
        WATCHDOG_USEC,
        AUTOSCALER_LISTEN,
        LISTEN_PORT,
        MIN,
        MAX,
        WEBHOOK_TOKEN,
        POLICY,
        PROMETHEUS_URL,
        PROMETHEUS_USER,
        PROMETHEUS_PASSWORD,
        SCRAPE_FILE_SD,
        DRAIN_WAIT,
        DRAIN_TOKEN,
        APP_LISTEN,
        FRONT_LISTEN,
        FRONT_ADMIN_LISTEN,
        REPLICA_LISTEN,
        REPLICA_REDIS,
        LOAD_SECONDS,
        TARGET_PORT,
        DISCOVERY_OUTPUT,
        DISCOVERY_METRICS_LISTEN,
        REDIS_URL,
        REDIS_REPLICAS_URL,
        PORT,
        KV_LISTEN,
        KV_INSTANCE_ID,
        SIM_LISTEN,
        SIM_API_KEY,
        SIM_API_SECRET,
    ];
}

/// The fixed part of each unit's command line (`nixos-modules/units.json`), shared by the NixOS
/// modules, the demo and the local mode's instances.
pub const UNITS: &str = include_str!("../nixos-modules/units.json");

/// A unit's shared arguments from [`UNITS`] (`discovery`, `autoscaler`, `app`).
pub fn unit_args(unit: &str) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let v: serde_json::Value = serde_json::from_str(UNITS).context("nixos-modules/units.json")?;
    v[unit]
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_owned)).collect())
        .with_context(|| format!("nixos-modules/units.json has no string list `{unit}`"))
}

/// The process exit code for a configuration or usage error (sysexits' EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// A configuration that cannot be used: names the field and the rule it breaks.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: `{field}` {rule}")]
    Invalid { field: String, rule: String },
    #[error("invalid configuration: cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: `{path}`: {message}")]
    Parse { path: PathBuf, message: String },
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// A secret (an API secret, a webhook or drain token). Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for signing and for handing it to a child process only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, compared in constant time (only the length leaks).
    pub fn matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(candidate.as_bytes().ct_eq(self.0.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// For clap: a flag or variable read as a secret.
impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(s))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// Reads a TOML configuration file into `T` (unknown keys are an error, so typos surface).
pub fn load_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

/// Picks the value of one setting from its layers: flag or environment, then file, then default.
pub trait Layer<T> {
    fn pick(self, file: Option<T>, default: T) -> T;
}

impl<T> Layer<T> for Option<T> {
    fn pick(self, file: Option<T>, default: T) -> T {
        self.or(file).unwrap_or(default)
    }
}

/// A duration written `500ms`, `10s`, `5m`, `1h` (or combined, `1m30s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err("is empty; write a duration such as 500ms, 10s or 5m".into());
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "`{t}` has no unit; write a duration such as {t}s or {t}ms"
            ));
        }
        humantime::parse_duration(t)
            .map(Dur)
            .map_err(|e| format!("`{t}` is not a duration ({e}); write e.g. 500ms, 10s or 5m"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The wall clock as time since the Unix epoch (zero for a clock set before 1970).
pub fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// A duration where a bare number means seconds (`--load-seconds 1`, `load-seconds = 1.5`),
/// for settings named in seconds; a unit is still accepted (`500ms`, `10s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seconds(pub Dur);

impl Seconds {
    pub fn get(self) -> Duration {
        self.0.get()
    }
}

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t.parse::<f64>() {
            Ok(n) if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
                Duration::try_from_secs_f64(n)
                    .map(|d| Seconds(Dur(d)))
                    .map_err(|_| format!("`{t}` is not a number of seconds"))
            }
            _ => t.parse().map(Seconds),
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Duration::try_from_secs_f64(n)
                .map(|d| Seconds(Dur(d)))
                .map_err(|_| serde::de::Error::custom(format!("`{n}` is not a number of seconds"))),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl serde::Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// An Exoscale zone. The API is zone-local: every call, even polling an operation, goes to the
/// zone's own endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Zone {
    #[serde(rename = "ch-gva-2")]
    ChGva2,
    #[serde(rename = "ch-dk-2")]
    ChDk2,
    #[serde(rename = "de-fra-1")]
    DeFra1,
    #[serde(rename = "de-muc-1")]
    DeMuc1,
    #[serde(rename = "at-vie-1")]
    AtVie1,
    #[serde(rename = "at-vie-2")]
    AtVie2,
    #[serde(rename = "bg-sof-1")]
    BgSof1,
    #[serde(rename = "hr-zag-1")]
    HrZag1,
}

impl Zone {
    /// All zones, in the order of Exoscale's documentation.
    pub const ALL: [Zone; 8] = [
        Zone::ChGva2,
        Zone::ChDk2,
        Zone::DeFra1,
        Zone::DeMuc1,
        Zone::AtVie1,
        Zone::AtVie2,
        Zone::BgSof1,
        Zone::HrZag1,
    ];

    /// Exoscale's default zone.
    pub const DEFAULT: Zone = Zone::ChGva2;

    pub fn name(self) -> &'static str {
        match self {
            Zone::ChGva2 => "ch-gva-2",
            Zone::ChDk2 => "ch-dk-2",
            Zone::DeFra1 => "de-fra-1",
            Zone::DeMuc1 => "de-muc-1",
            Zone::AtVie1 => "at-vie-1",
            Zone::AtVie2 => "at-vie-2",
            Zone::BgSof1 => "bg-sof-1",
            Zone::HrZag1 => "hr-zag-1",
        }
    }

    /// The zone's API v2 base URL (`https://api-{zone}.exoscale.com/v2`).
    pub fn endpoint(self) -> String {
        format!("https://api-{}.exoscale.com/v2", self.name())
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Zone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Zone::ALL
            .into_iter()
            .find(|z| z.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                let names: Vec<_> = Zone::ALL.iter().map(|z| z.name()).collect();
                format!(
                    "`{t}` is not an Exoscale zone (one of {})",
                    names.join(", ")
                )
            })
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses an instance pool id (a UUID), naming the field on failure.
pub fn parse_pool_id(field: &str, raw: Option<&str>) -> Result<uuid::Uuid, ConfigError> {
    let raw = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ConfigError::invalid(
                field,
                format!("is required: give --pool ID or set {}", env::POOL),
            )
        })?;
    raw.parse()
        .map_err(|_| ConfigError::invalid(field, format!("must be a UUID, got `{raw}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_has_shared_arguments_starting_with_its_subcommand() {
        for unit in ["discovery", "autoscaler", "app"] {
            let args = unit_args(unit).unwrap();
            assert_eq!(args[0], unit);
        }
        assert!(unit_args("nope").is_err());
    }

    #[test]
    fn durations_parse_the_documented_forms() {
        assert_eq!("500ms".parse::<Dur>().unwrap(), Dur::millis(500));
        assert_eq!("10s".parse::<Dur>().unwrap(), Dur::secs(10));
        assert_eq!("5m".parse::<Dur>().unwrap(), Dur::secs(300));
        assert_eq!("1m30s".parse::<Dur>().unwrap(), Dur::secs(90));
    }

    #[test]
    fn seconds_take_a_bare_number_or_a_duration() {
        let secs = |t: &str| t.parse::<Seconds>().map(Seconds::get);
        assert_eq!(secs("1"), Ok(Duration::from_secs(1)));
        assert_eq!(secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(secs("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(secs("250ms"), Ok(Duration::from_millis(250)));
        assert!(secs("").is_err());
        assert!(secs("-1").is_err());
        assert!(secs("1e999").is_err());
        assert!(secs("ten").is_err());
        #[derive(Deserialize)]
        struct F {
            a: Seconds,
            b: Seconds,
            c: Seconds,
        }
        let f: F = toml::from_str("a = 2\nb = 1.5\nc = \"3s\"").unwrap();
        assert_eq!(
            (f.a.get(), f.b.get(), f.c.get()),
            (
                Duration::from_secs(2),
                Duration::from_millis(1500),
                Duration::from_secs(3)
            )
        );
        assert!(toml::from_str::<F>("a = -2\nb = 1\nc = 1").is_err());
    }

    #[test]
    fn durations_without_unit_or_garbage_are_refused_with_a_hint() {
        assert!("10".parse::<Dur>().unwrap_err().contains("10s"));
        assert!(
            "soon"
                .parse::<Dur>()
                .unwrap_err()
                .contains("not a duration")
        );
        assert!("".parse::<Dur>().is_err());
    }

    #[test]
    fn zones_round_trip_and_map_to_their_endpoint() {
        for z in Zone::ALL {
            assert_eq!(z.name().parse::<Zone>().unwrap(), z);
        }
        assert_eq!(
            Zone::DeFra1.endpoint(),
            "https://api-de-fra-1.exoscale.com/v2"
        );
        assert!(
            "us-east-1"
                .parse::<Zone>()
                .unwrap_err()
                .contains("ch-gva-2")
        );
    }

    #[test]
    fn layers_prefer_flag_then_file_then_default() {
        assert_eq!(Some(1).pick(Some(2), 3), 1);
        assert_eq!(None.pick(Some(2), 3), 2);
        assert_eq!(None.pick(None, 3), 3);
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The names quoted on a line: `"EXOSCALE_..."` and `"POOLPILOT_..."`.
    fn quoted_names(line: &str) -> Vec<&str> {
        let mut names = Vec::new();
        for prefix in ["\"EXOSCALE_", "\"POOLPILOT_"] {
            for (at, _) in line.match_indices(prefix) {
                let rest = &line[at + 1..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                names.push(&rest[..end]);
            }
        }
        names
    }

    /// Every variable named anywhere in `src/` is in `env::ALL`, and outside this file only test
    /// modules spell a name out (they pin the public names on purpose).
    #[test]
    fn every_environment_variable_is_named_in_env_and_listed_in_all() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        files.sort();
        let mut unlisted = Vec::new();
        let mut literals = Vec::new();
        for file in &files {
            let rel = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == "src/config.rs" {
                continue;
            }
            let text = std::fs::read_to_string(file).unwrap();
            let code_lines = text
                .find("#[cfg(test)]")
                .map_or(usize::MAX, |at| text[..at].lines().count());
            for (i, line) in text.lines().enumerate() {
                for name in quoted_names(line) {
                    if !env::ALL.contains(&name) {
                        unlisted.push(format!("{rel}:{}: {name}", i + 1));
                    }
                }
                let spelled = !quoted_names(line).is_empty() || line.contains("env = \"");
                if i < code_lines && spelled {
                    literals.push(format!("{rel}:{}: {}", i + 1, line.trim()));
                }
            }
        }
        assert!(
            unlisted.is_empty(),
            "not in config::env::ALL: {unlisted:#?}"
        );
        assert!(
            literals.is_empty(),
            "use the config::env constants: {literals:#?}"
        );
        let mut seen = std::collections::HashSet::new();
        assert!(
            env::ALL.iter().all(|n| seen.insert(n)),
            "a name twice in ALL"
        );
    }

    /// The integration tests scrub `env::ALL` from the environment they inherit, not lists of
    /// their own.
    #[test]
    fn the_integration_tests_scrub_env_all() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let common = std::fs::read_to_string(root.join("tests/common/mod.rs")).unwrap();
        assert!(
            common.contains("config::env::ALL"),
            "tests/common scrubs env::ALL"
        );
        let mut tests = Vec::new();
        rust_files(&root.join("tests"), &mut tests);
        for file in tests {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                !text.contains("env_remove(\""),
                "{}: scrub with common::base_command (config::env::ALL)",
                file.display()
            );
        }
    }

    #[test]
    fn a_secret_never_shows_and_matches_only_itself() {
        let s = Secret::new("topsecret");
        assert!(!format!("{s:?} {s}").contains("topsecret"));
        assert!(s.matches("topsecret"));
        for other in ["", "topsecre", "topsecret ", "TOPSECRET", "topsecreu"] {
            assert!(!s.matches(other), "{other:?}");
        }
        #[derive(Deserialize)]
        struct F {
            t: Secret,
        }
        let f: F = toml::from_str("t = \"x\"").unwrap();
        assert_eq!(f.t.expose(), "x");
    }

    #[test]
    fn pool_id_must_be_present_and_a_uuid() {
        let e = parse_pool_id("pool", None).unwrap_err().to_string();
        assert!(e.contains("`pool`") && e.contains("required"), "{e}");
        let e = parse_pool_id("pool", Some("nope")).unwrap_err().to_string();
        assert!(e.contains("UUID"), "{e}");
        assert!(parse_pool_id("pool", Some("4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6")).is_ok());
    }
}
