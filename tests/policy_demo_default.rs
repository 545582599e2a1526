//! `poolpilot demo --fast --monitoring embedded --policy default`: the default policy's forecast
//! check in the real loop, with real app processes behind the local NLB. In a file of its own:
//! test binaries run one after the other, so this demo never shares the machine with
//! tests/policy_demo.rs's (two demos at once on two cores slow each other's members).

mod common;

/// The same story with `--policy default`: the forecast check at the demo's time scale
/// (examples/policies/demo-default.toml), one request in flight per member. 2 clients need
/// ceil(2 / 1) = 2 members: the first decision goes from 1 to exactly 2, its record shows the
/// forecast, and the pool goes back to 1 through drain and eviction with no failed request.
/// It does not hold at 2: the step's own forecast error, the first residual, gives a headroom
/// (-> 4), or the trend still rising after the step does (2.09 -> 3); docs/POLICY.md says so.
#[test]
fn the_default_policy_reaches_the_needed_size_in_one_decision_and_scales_in_without_drops() {
    let (_out, report) = common::policy_demo("default");
    let scaled = common::scaled(&report);
    let up = scaled
        .iter()
        .find(|d| d["action"] == "up")
        .expect("a scale-up");
    let input = &up["inputs"][0];
    assert_eq!(input["strategy"], "forecast", "{up}");
    assert_eq!(input["metric"], "load-in-flight", "{up}");
    // What the reading needed, in one decision from 1 (2 clients: 2 when the scrape saw both).
    let in_flight = input["value"].as_f64().unwrap();
    let needed = (in_flight - 1e-9).ceil() as u64;
    assert_eq!(
        (up["from"].as_u64(), up["to"].as_u64()),
        (Some(1), Some(needed)),
        "{up}"
    );
    let reason = up["reason"].as_str().unwrap();
    assert!(
        reason.contains("forecast") && reason.contains("headroom"),
        "the record shows the forecast: {up}"
    );
    assert!(
        scaled.iter().any(|d| d["action"] == "down"),
        "scale-in happened: {scaled:?}"
    );
}
