//! Every token is a `Secret`: the `Debug` of each struct that holds one never shows it, so a
//! stray `?args` in a log line cannot leak it.

use std::time::Duration;

use clap::Parser;
use poolpilot::autoscaler::source::scrape::Scraper;
use poolpilot::cli::{Cli, Command};
use poolpilot::demo::embedded::Embedded;
use poolpilot::local::backend::{LocalConfig, QuotaMode};
use poolpilot::sim::seed::Seed;

const TOKEN: &str = "a-token-that-must-never-show";

fn assert_redacted(what: &str, debug: String) {
    assert!(!debug.contains(TOKEN), "{what} shows its token: {debug}");
    assert!(debug.contains("redacted"), "{what}: {debug}");
}

#[test]
fn the_autoscalers_webhook_and_drain_tokens_are_redacted() {
    for flag in ["--webhook-token", "--drain-token"] {
        let cli = Cli::try_parse_from(["poolpilot", "autoscaler", flag, TOKEN]).unwrap();
        let Command::Autoscaler(args) = &cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_redacted(flag, format!("{args:?}"));
    }
}

#[test]
fn the_local_backends_drain_token_is_redacted() {
    let cfg = LocalConfig {
        binary: "poolpilot".into(),
        capacity: 1.0,
        load_duration: Duration::from_secs(1),
        drain_token: TOKEN.into(),
        log_dir: "logs".into(),
        quota: QuotaMode::DutyCycleOnly("test".into()),
        subnet: 1,
        kind: poolpilot::local::backend::MemberKind::App,
    };
    assert_redacted("LocalConfig", format!("{cfg:?}"));
}

#[tokio::test]
async fn the_embedded_evaluators_webhook_token_is_redacted() {
    let e = Embedded {
        sampler: Scraper::new("file_sd.json".into(), Duration::from_secs(60)),
        webhook: "http://127.0.0.1:8090/webhook".into(),
        token: TOKEN.into(),
        eval_interval: Duration::from_secs(1),
        pending: Duration::from_secs(1),
        repeat: Duration::from_secs(1),
    };
    assert_redacted("Embedded", format!("{e:?}"));
}

#[test]
fn the_simulator_seeds_api_secret_is_redacted() {
    let seed: Seed =
        toml::from_str(&format!("api-key = \"EXOkey\"\napi-secret = \"{TOKEN}\"")).unwrap();
    assert_eq!(seed.api_secret.as_ref().map(|s| s.expose()), Some(TOKEN));
    assert_redacted("Seed", format!("{seed:?}"));
}
