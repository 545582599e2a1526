//! The monitoring files the images ship and the demo runs, checked by the real tools (Debian's
//! promtool and amtool). Grafana's files are checked against Grafana's own rules in
//! tests/grafana.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn tool(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} (Debian's prometheus packages) must be installed: {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_rules_and_config_pass_promtool() {
    let rules = repo("monitoring/prometheus/rules.yml");
    tool("promtool", &["check", "rules", rules.to_str().unwrap()]);
    // The monitor's configuration, with the rules where the image puts them.
    let dir = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(repo("monitoring/prometheus/prometheus.yml"))
        .unwrap()
        .replace(
            "/etc/poolpilot/prometheus/rules.yml",
            rules.to_str().unwrap(),
        );
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, cfg).unwrap();
    tool("promtool", &["check", "config", path.to_str().unwrap()]);
    // And the demo's fast variant of the rules.
    let fast = dir.path().join("rules-fast.yml");
    std::fs::write(
        &fast,
        poolpilot::demo::demo_rules(&poolpilot::demo::Timings::fast()).unwrap(),
    )
    .unwrap();
    tool("promtool", &["check", "rules", fast.to_str().unwrap()]);
}

#[test]
fn the_alertmanager_file_passes_amtool_as_shipped_and_as_the_demo_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token-of-sixteen-or-more").unwrap();
    let shipped = std::fs::read_to_string(repo("monitoring/alertmanager/alertmanager.yml"))
        .unwrap()
        .replace(
            "/run/credentials/alertmanager.service/webhook-token",
            token.to_str().unwrap(),
        );
    let a = dir.path().join("shipped.yml");
    std::fs::write(&a, shipped).unwrap();
    tool("amtool", &["check-config", a.to_str().unwrap()]);
    let demo = poolpilot::demo::demo_alertmanager(
        &poolpilot::demo::Timings::fast(),
        "http://127.0.0.1:18090/webhook",
        &token,
    )
    .unwrap();
    let b = dir.path().join("demo.yml");
    std::fs::write(&b, demo).unwrap();
    tool("amtool", &["check-config", b.to_str().unwrap()]);
}
