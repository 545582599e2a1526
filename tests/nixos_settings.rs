//! The NixOS module and the binary read one truth: `nixos-modules/settings.json` holds the
//! settings the module writes to each unit's TOML file (its option defaults and key names), and
//! `nixos-modules/units.json` the fixed part of each unit's command line. Here both go through
//! poolpilot's own parsing, as the units run them: the JSON becomes the TOML the module writes
//! (nulls dropped, as the module drops them), the config structs refuse unknown keys, and each
//! command's `resolve` validates the result.

use std::time::Duration;

use clap::Parser;
use poolpilot::cli::autoscaler::MetricsFrom;
use poolpilot::cli::{Cli, Command, FileConfig};
use serde_json::Value;

const POOL: &str = "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";

fn json(name: &str) -> Value {
    let path = format!("{}/nixos-modules/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What the module's `clean` does: nulls are left out, so the binary's defaults apply.
fn drop_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), drop_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `over` laid over `base`, table by table (the module's option values over its defaults).
fn overlay(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut m = b.clone();
            for (k, v) in o {
                let merged = match m.get(k) {
                    Some(old) => overlay(old, v),
                    None => v.clone(),
                };
                m.insert(k.clone(), merged);
            }
            Value::Object(m)
        }
        (_, o) => o.clone(),
    }
}

/// The TOML text the module would write, parsed as the binary parses `--config`.
fn as_toml(settings: &Value) -> FileConfig {
    let text = toml::to_string(&drop_nulls(settings)).expect("settings are TOML-able");
    toml::from_str(&text)
        .unwrap_or_else(|e| panic!("poolpilot refuses the module's TOML: {e}\n{text}"))
}

/// The unit's command line: `poolpilot <units.json args> --pool POOL` (no pool for the app and
/// the front).
fn command(unit: &str) -> Command {
    let units = json("units.json");
    let mut argv = vec!["poolpilot".to_owned()];
    argv.extend(
        units[unit]
            .as_array()
            .unwrap_or_else(|| panic!("units.json has no list `{unit}`"))
            .iter()
            .map(|a| a.as_str().expect("string arguments").to_owned()),
    );
    if unit != "app" && unit != "front" {
        argv.extend(["--pool".to_owned(), POOL.to_owned()]);
    }
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("units.json `{unit}`: {e}"))
        .command
}

fn autoscaler(file: &FileConfig) -> poolpilot::cli::autoscaler::Resolved {
    let Command::Autoscaler(args) = command("autoscaler") else {
        panic!("units.json `autoscaler` is not the autoscaler command")
    };
    poolpilot::cli::autoscaler::resolve(&args, file).expect("the autoscaler accepts the settings")
}

#[test]
fn the_module_defaults_are_a_valid_configuration_for_every_unit() {
    let s = json("settings.json");
    let file = as_toml(&s["defaults"]);

    let a = autoscaler(&file);
    assert_eq!(a.listen.to_string(), "127.0.0.1:8090");
    let p = &a.pools[0];
    assert_eq!(p.pool.name, "default", "a plain --pool id");
    assert_eq!((p.controller.bounds.min, p.controller.bounds.max), (1, 4));
    assert_eq!(p.controller.interval, Duration::from_secs(60));
    assert_eq!(p.controller.settle_timeout, Duration::from_secs(600));
    assert!(!p.controller.dry_run);
    assert!(
        p.policy.is_none(),
        "no policy by default: the course's one-step rule"
    );
    assert!(a.metrics.is_none());

    let Command::Discovery(args) = command("discovery") else {
        panic!("units.json `discovery` is not the discovery command")
    };
    let (d, metrics_listen) =
        poolpilot::cli::discovery::resolve(&args, &file).expect("discovery accepts the settings");
    assert_eq!(
        d.output.to_str(),
        s["defaults"]["discovery"]["output"].as_str()
    );
    assert_eq!(d.interval, Duration::from_secs(10));
    assert_eq!(metrics_listen.to_string(), "127.0.0.1:9111");

    let Command::App(args) = command("app") else {
        panic!("units.json `app` is not the app command")
    };
    let app = poolpilot::cli::app::resolve(&args, &file.app).expect("the app accepts the settings");
    assert_eq!(app.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(app.load_duration, Duration::from_secs(10));
}

#[test]
fn the_monitor_runs_the_default_policy_against_its_own_prometheus() {
    let s = json("settings.json");
    let file = as_toml(&overlay(&s["defaults"], &s["monitor"]));
    let mut a = autoscaler(&file);
    let p = a.pools.remove(0);
    let source = p.policy_source.expect("the monitor names a policy");
    assert!(
        source.path.is_none(),
        "a built-in, not a file: {}",
        source.label
    );
    assert!(source.label.contains("`default`"), "{}", source.label);
    // The policy's own bounds (min 1, max 10) replace the module's.
    let policy = p.policy.expect("the default policy parses");
    assert_eq!(policy.policy.name, "default");
    assert_eq!(
        a.metrics,
        Some(MetricsFrom::Prometheus(
            "http://127.0.0.1:9090".parse().unwrap()
        ))
    );
}

#[test]
fn the_module_renders_per_pool_tables_the_binary_reads() {
    let s = json("settings.json");
    let file = as_toml(&overlay(&s["defaults"], &s["multi"]));
    // The unit's command line without `--pool`: the pools come from the file here, as they come
    // from EXOSCALE_INSTANCEPOOL_ID (same syntax) on the images.
    let units = json("units.json");
    let mut argv = vec!["poolpilot".to_owned()];
    argv.extend(
        units["autoscaler"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    let Command::Autoscaler(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("units.json `autoscaler` is not the autoscaler command")
    };
    let a = poolpilot::cli::autoscaler::resolve(&args, &file).expect("two pools, one table");
    let pools: Vec<_> = a
        .pools
        .iter()
        .map(|p| {
            let b = p.controller.bounds;
            (p.pool.name.as_str(), b.min, b.max, p.policy.is_some())
        })
        .collect();
    // ch-gva-2 keeps the module's shared settings; de-fra-1 has its own policy and bounds.
    assert_eq!(pools, [("ch-gva-2", 1, 4, false), ("de-fra-1", 2, 3, true)]);
}

#[test]
fn the_module_offers_exactly_the_built_in_policies() {
    let s = json("settings.json");
    let listed: Vec<&str> = s["policies"]
        .as_array()
        .expect("settings.json lists the policies")
        .iter()
        .map(|p| p.as_str().expect("names"))
        .collect();
    assert_eq!(listed, poolpilot::policy::builtin::names());
}

#[test]
fn the_metric_source_keys_are_read_and_refused_like_the_flags() {
    let s = json("settings.json");
    let with = |over: Value| as_toml(&overlay(&s["defaults"], &over));
    let Command::Autoscaler(args) = command("autoscaler") else {
        panic!("units.json `autoscaler` is not the autoscaler command")
    };
    let resolve = |f: &FileConfig| poolpilot::cli::autoscaler::resolve(&args, f);

    let f = with(serde_json::json!({"autoscaler": {
        "policy": "hpa", "scrape": "/run/poolpilot-discovery/config.json", "scrape-window": "30s"
    }}));
    let a = resolve(&f).expect("a scrape source");
    assert_eq!(
        a.metrics,
        Some(MetricsFrom::Scrape(
            "/run/poolpilot-discovery/config.json".into()
        ))
    );
    assert_eq!(a.scrape_window, Duration::from_secs(30));

    for (over, field) in [
        (
            serde_json::json!({"autoscaler": {"policy": "default", "prometheus": "http://p:9090", "scrape": "/x.json"}}),
            "prometheus",
        ),
        (
            serde_json::json!({"autoscaler": {"policy": "default", "prometheus": "ftp://p"}}),
            "prometheus",
        ),
        (
            serde_json::json!({"autoscaler": {"prometheus": "http://127.0.0.1:9090"}}),
            "prometheus",
        ),
        (
            serde_json::json!({"autoscaler": {"policy": "target-tracking"}}),
            "prometheus",
        ),
        (
            serde_json::json!({"autoscaler": {"policy": "no-such-policy"}}),
            "policy",
        ),
    ] {
        let e = resolve(&with(over.clone())).expect_err(&over.to_string());
        assert!(e.to_string().contains(field), "{over}: {e}");
    }
}

#[test]
fn the_front_units_settings_with_backends_are_a_valid_configuration() {
    let s = json("settings.json");
    let Command::Front(args) = command("front") else {
        panic!("units.json `front` is not the front command")
    };
    // The defaults alone name no backend: the module asserts one is given, as the binary does.
    let bare = as_toml(&s["defaults"]);
    let err = poolpilot::cli::front::resolve(&args, &bare.front).unwrap_err();
    assert!(err.to_string().contains("backend"), "{err}");

    let file = as_toml(&overlay(
        &s["defaults"],
        &serde_json::json!({"front": {"backends": ["ch-gva-2=http://198.51.100.10", "de-fra-1=http://198.51.100.20"]}}),
    ));
    let f =
        poolpilot::cli::front::resolve(&args, &file.front).expect("the front accepts the settings");
    assert_eq!(f.listen.to_string(), "0.0.0.0:80");
    assert_eq!(f.admin_listen.to_string(), "127.0.0.1:9180");
    assert_eq!(f.backends.len(), 2);
    assert_eq!(f.ejection.after, 10);
    assert_eq!(f.ejection.cooldown, Duration::from_secs(30));
    assert_eq!(f.try_timeout, Duration::from_secs(15));
}

/// The command line of a unit that takes no pool (`kv`, `replica`): units.json's, then `extra`.
fn command_without_pool(unit: &str, extra: &[&str]) -> Command {
    let units = json("units.json");
    let mut argv = vec!["poolpilot".to_owned()];
    argv.extend(
        units[unit]
            .as_array()
            .unwrap_or_else(|| panic!("units.json has no list `{unit}`"))
            .iter()
            .map(|a| a.as_str().expect("string arguments").to_owned()),
    );
    argv.extend(extra.iter().map(|a| (*a).to_owned()));
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("units.json `{unit}`: {e}"))
        .command
}

#[test]
fn the_kv_and_replica_units_settings_are_a_valid_configuration() {
    let s = json("settings.json");
    let file = as_toml(&s["defaults"]);

    // The kv unit: the primary's and the replicas' URLs come from the environment file on the
    // images (REDIS_URL, REDIS_REPLICAS_URL); here as the flags they stand for.
    let Command::Kv(args) = command_without_pool(
        "kv",
        &[
            "--redis-url",
            "redis://198.51.100.30:6379",
            "--redis-replicas-url",
            "redis://198.51.100.31:6379",
        ],
    ) else {
        panic!("units.json `kv` is not the kv command")
    };
    let kv = poolpilot::cli::kv::resolve(&args, &file.kv).expect("kv accepts the settings");
    assert_eq!(kv.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(kv.kv.replica_conns.max_age, Duration::from_secs(30));
    assert_eq!(kv.kv.replicas.len(), 1);

    // The replica sidecar, with the module's default and with the replica role's 3 s.
    let Command::Replica(args) = command_without_pool("replica", &[]) else {
        panic!("units.json `replica` is not the replica command")
    };
    let r = poolpilot::cli::replica::resolve(&args, &file.replica)
        .expect("the sidecar accepts the settings");
    assert_eq!(r.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(r.redis, "redis://127.0.0.1:6379");
    assert_eq!(r.max_last_io, Duration::from_secs(12));
    let role = as_toml(&overlay(
        &s["defaults"],
        &serde_json::json!({"replica": {"max-last-io": "3s"}}),
    ));
    let r = poolpilot::cli::replica::resolve(&args, &role.replica).expect("3s");
    assert_eq!(r.max_last_io, Duration::from_secs(3));

    // A key the binary does not know is refused, as for every table.
    let bad = toml::to_string(&drop_nulls(&overlay(
        &s["defaults"],
        &serde_json::json!({"kv": {"redis-replica-url": "x"}}),
    )))
    .unwrap();
    assert!(toml::from_str::<FileConfig>(&bad).is_err());
}
