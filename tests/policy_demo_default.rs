//! `poolpilot demo --fast --monitoring embedded --policy default`: the default policy's forecast
//! check in the real loop, with real app processes behind the local NLB. In a file of its own:
//! test binaries run one after the other, so this demo never shares the machine with
//! tests/policy_demo.rs's (two demos at once on two cores slow each other's members).

mod common;

/// The same story with `--policy default`: the forecast check at the demo's time scale
/// (examples/policies/demo-default.toml), one request in flight per member. The demo starts
/// the load once the forecast's error is known (no decision input `warming-up`). 2 clients need
/// ceil(2 / 1) = 2 members: the first decision goes from 1 to exactly what its reading needed,
/// its record shows the forecast, the pool never passes 2, and it goes back to 1 through drain
/// and eviction with no failed request. Why it cannot pass 2: the embedded scraper reads every
/// member at one instant, so no reading exceeds the 2 clients; the warm-up headroom is over
/// before the load starts; the error is the median shortfall, 0 while most forecasts meet the
/// demand (the idle pool's residuals are 0, the load's step makes one or two positive ones);
/// the level is the highest reading of 30 s, so the forecast is not short of a reading after
/// the step and only that one burst forms (the headroom takes the 3rd); and the trend counts
/// only when Mann-Kendall's z reaches 3.5, which 13 readings of 0, 1 and 2 cannot (at most
/// 3.4: tied readings count 0).
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
    let o = &report["summary"]["outcome"];
    assert_eq!(o["max_size"], 2, "no overshoot: {o} {scaled:?}");
}
