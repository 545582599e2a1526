//! End to end in local mode with a policy: `poolpilot demo --fast --policy target-tracking`,
//! the real binary with real app processes behind the local NLB, the autoscaler scraping the
//! discovery targets itself (no Prometheus: the embedded default). The report must show the
//! needed size reached in one decision (the course rule moves one step per tick), decision
//! records with their inputs and sample times, a scale-in back to the minimum while the probe's
//! requests keep flowing, and not one failed request.

mod common;

use std::process::Command;

#[test]
fn target_tracking_reaches_the_needed_size_in_one_decision_and_scales_in_without_drops() {
    let out = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let status = Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(["demo", "--fast", "--monitoring", "embedded"])
        .args(["--policy", "target-tracking", "--clients", "2"])
        .arg("--out")
        .arg(out.path())
        .args(["--nlb-listen", &format!("127.0.0.1:{port}")])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the demo failed: {status}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("timeline.json")).unwrap()).unwrap();
    let o = &report["summary"]["outcome"];
    assert_eq!(o["failed_requests"], 0, "{o}");
    assert!(o["ok_requests"].as_u64().unwrap() > 500, "{o}");
    assert_eq!(o["final_size"], 1, "{o}");

    let scaled: Vec<&serde_json::Value> = report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["outcome"] == "scaled")
        .collect();
    let ups: Vec<_> = scaled.iter().filter(|d| d["action"] == "up").collect();
    let downs: Vec<_> = scaled.iter().filter(|d| d["action"] == "down").collect();
    // 2 clients, 0.8 requests in flight per member as the target: ceil(1 x 2 / 0.8) = 3.
    assert_eq!(ups.len(), 1, "one scale-up decision: {ups:?}");
    let up = ups[0];
    assert_eq!(
        (up["from"].as_u64(), up["to"].as_u64()),
        (Some(1), Some(3)),
        "{up}"
    );
    assert_eq!(o["max_size"], 3, "{o}");
    assert!(
        up["strategy"].as_str().unwrap().starts_with("policy "),
        "{up}"
    );
    let input = &up["inputs"][0];
    assert_eq!(input["metric"], "load-in-flight", "{up}");
    assert!(input["value"].as_f64().unwrap() > 1.2, "{up}");
    assert!(
        input["sample-at"].as_str().is_some_and(|t| t.contains('T')),
        "each input has its sample time: {up}"
    );
    // Scale-in happened (to 1), never below the minimum, each through drain and eviction.
    assert!(!downs.is_empty(), "{scaled:?}");
    for d in &downs {
        assert!(d["to"].as_u64().unwrap() >= 1, "{d}");
    }
    let log = std::fs::read_to_string(out.path().join("logs/autoscaler.log")).unwrap();
    assert!(log.contains("chosen for scale-in"), "victims are logged");
    assert!(
        log.contains("draining before eviction"),
        "scale-in drains first"
    );
}
