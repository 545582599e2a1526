//! End to end in local mode with a policy: `poolpilot demo --fast --policy target-tracking`,
//! the real binary with real app processes behind the local NLB, the autoscaler scraping the
//! discovery targets itself (no Prometheus: the embedded default). The report must show the
//! needed size reached in one decision (the course rule moves one step per tick), decision
//! records with their inputs and sample times, a scale-in back to the minimum while the probe's
//! requests keep flowing, and not one failed request.

mod common;

#[test]
fn target_tracking_reaches_the_needed_size_in_one_decision_and_scales_in_without_drops() {
    let (out, report) = common::policy_demo("target-tracking");
    let o = &report["summary"]["outcome"];
    let scaled = common::scaled(&report);
    let ups: Vec<_> = scaled.iter().filter(|d| d["action"] == "up").collect();
    let downs: Vec<_> = scaled.iter().filter(|d| d["action"] == "down").collect();
    // 2 clients, 0.8 requests in flight per member as the target: ceil(2 / 0.8) = 3. The
    // scrape source reads every member at one instant, so the members' values add up to the
    // requests in flight then, whatever the membership: never more than the 2 clients, so the
    // pool never overshoots 3, however the ticks fall.
    const CLIENTS: f64 = 2.0;
    let needed = |in_flight: f64| (in_flight / 0.8 - 1e-9).ceil() as u64;
    assert_eq!(o["max_size"], needed(CLIENTS), "no overshoot: {o}");
    assert!(!ups.is_empty(), "{scaled:?}");
    for up in &ups {
        assert!(
            up["strategy"].as_str().unwrap().starts_with("policy "),
            "{up}"
        );
        let input = &up["inputs"][0];
        assert_eq!(input["metric"], "load-in-flight", "{up}");
        assert!(
            input["sample-at"].as_str().is_some_and(|t| t.contains('T')),
            "each input has its sample time: {up}"
        );
    }
    // The claim "one decision" needs a reading that saw the whole step: the first decision after
    // the step did, unless its scrape fell in the sub-millisecond gap between one client's
    // response and its next request. Whatever it read, it went to exactly the size its reading
    // needs, in one step from 1.
    let first = ups[0];
    let input = &first["inputs"][0];
    let in_flight =
        input["value"].as_f64().unwrap() * input["members-with-value"].as_f64().unwrap();
    assert_eq!(first["from"].as_u64(), Some(1), "{first}");
    assert_eq!(first["to"].as_u64(), Some(needed(in_flight)), "{first}");
    if in_flight >= CLIENTS - 1e-9 {
        assert_eq!(ups.len(), 1, "one scale-up decision: {ups:?}");
        assert_eq!(first["to"].as_u64(), Some(3), "{first}");
    } else {
        eprintln!("the first reading caught a client between two requests: {first}");
    }
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
