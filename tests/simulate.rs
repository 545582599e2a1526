//! `poolpilot simulate` as a user runs it: policies side by side, JSON for scripts, the chart,
//! and bad input refused with exit 64 naming the field.

mod common;

use std::process::Command;

fn simulate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .arg("simulate")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn compares_policies_in_json_with_speedups_and_draws_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("step.svg");
    let csv = dir.path().join("trace.csv");
    std::fs::write(&csv, "time_s,rps\n0,20\n600,60\n2400,20\n3600,20\n").unwrap();
    for trace in ["step", csv.to_str().unwrap()] {
        let o = simulate(&[
            "--trace",
            trace,
            "--policy",
            "course",
            "--policy",
            "default",
            "--max",
            "10",
            "--json",
            "--svg",
            svg.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let p = v["policies"].as_array().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["policy"], "course");
        assert_eq!(
            p[0]["speedup_over_course"], 1.0,
            "the course against itself"
        );
        for line in p {
            let s = &line["scores"];
            for k in [
                "theta_u",
                "theta_o",
                "tau_u",
                "tau_o",
                "instability",
                "jitter_per_hour",
                "instance_seconds",
                "cost_eur",
                "slo_violation_minutes",
            ] {
                assert!(s[k].is_number(), "{k} in {s}");
            }
            assert!(line["speedup_over_hpa"].as_f64().unwrap() > 0.0);
            let max = line["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["to"].as_u64().unwrap())
                .max()
                .unwrap_or(0);
            assert!(max <= 10, "bounds hold: {line}");
        }
        // The default policy follows the step from 2 to 6 instances' worth.
        assert!(
            p[1]["scores"]["slo_violation_minutes"].as_f64().unwrap()
                <= p[0]["scores"]["slo_violation_minutes"].as_f64().unwrap()
        );
        let chart = std::fs::read_to_string(&svg).unwrap();
        assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
        assert!(
            chart.contains(">demand<") && chart.contains(">course<") && chart.contains(">default<")
        );
    }
    // The same seed, the same output.
    let a = simulate(&[
        "--trace",
        "noisy",
        "--seed",
        "5",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let b = simulate(&[
        "--trace",
        "noisy",
        "--seed",
        "5",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn bad_input_exits_64_naming_the_field() {
    let cases = [
        (vec!["--trace", "nope"], "trace"),
        (vec!["--trace", "./missing.csv"], "trace"),
        (vec!["--policy", "nope"], "policy"),
        (vec!["--capacity", "0"], "capacity"),
        (vec!["--max", "0"], "max"),
        (vec!["--boot", "10s", "--boot-jitter", "20s"], "boot-jitter"),
    ];
    common::each_exits_64_naming_the_field(cases, |args| simulate(args), common::stderr);
}

/// The real traces of traces/, each with the scale its README gives.
const REAL: [(&str, &str); 4] = [
    ("wisc-diurnal.csv", "30"),
    ("wc98-flash.csv", "0.085"),
    ("wc98-night.csv", "0.5"),
    ("nasa-launch.csv", "30"),
];

fn trace_path(name: &str) -> String {
    format!("{}/traces/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn json_run(args: &[&str]) -> serde_json::Value {
    let o = simulate(args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn line<'a>(v: &'a serde_json::Value, policy: &str) -> &'a serde_json::Value {
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == policy)
        .unwrap_or_else(|| panic!("{policy} missing"))
}

/// By default course, hpa, default and the oracle run side by side, and every line has its
/// instance-hours over the oracle's and the oracle's SLO minutes beside its own.
#[test]
fn every_result_stands_beside_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("c.svg");
    let v = json_run(&["--trace", "step", "--json", "--svg", svg.to_str().unwrap()]);
    let names: Vec<&str> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["course", "hpa", "default", "oracle"]);
    let oracle = line(&v, "oracle");
    assert_eq!(oracle["instance_hours_over_oracle"], 1.0);
    let oracle_slo = oracle["scores"]["slo_violation_minutes"].as_f64().unwrap();
    assert_eq!(
        v["oracle"]["slo_violation_minutes"].as_f64(),
        Some(oracle_slo)
    );
    for p in v["policies"].as_array().unwrap() {
        assert_eq!(p["oracle_slo_violation_minutes"].as_f64(), Some(oracle_slo));
        assert!(
            p["instance_hours_over_oracle"].as_f64().unwrap() > 0.0,
            "{p}"
        );
        // The violation stretches add up to the SLO minutes.
        let stretches: f64 = p["slo_violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[1].as_f64().unwrap() - s[0].as_f64().unwrap())
            .sum();
        let minutes = p["scores"]["slo_violation_minutes"].as_f64().unwrap();
        assert!((stretches / 60.0 - minutes).abs() < 1e-9, "{p}");
    }
    // On a step from 2 to 6 instances' worth at 10 min, the oracle has its members in the NLB
    // when the step comes (and pays for them only from one lead time before).
    assert_eq!(oracle_slo, 0.0);
    let up = &oracle["changes"][0];
    assert_eq!(
        (up["t"].as_f64(), up["to"].as_u64()),
        (Some(600.0 - 80.0), Some(6))
    );
    // The table shows the columns too.
    let o = simulate(&["--trace", "step", "--svg", svg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("h/oracle") && text.contains("oracle-SLO"),
        "{text}"
    );
}

/// The real traces map onto a pool of 1 to 20 members at their scale; every policy stays in
/// its bounds; the oracle misses demand only before its first members can be ready.
#[test]
fn the_real_traces_run_at_their_scale() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("c.svg");
    for (name, scale) in REAL {
        let path = trace_path(name);
        let v = json_run(&[
            "--trace",
            &path,
            "--scale",
            scale,
            "--max",
            "20",
            "--json",
            "--svg",
            svg.to_str().unwrap(),
        ]);
        let oracle = line(&v, "oracle");
        let sizes: Vec<u64> = oracle["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["to"].as_u64().unwrap())
            .collect();
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*lo >= 1 && *hi <= 20 && hi - lo >= 3, "{name}: {lo}..{hi}");
        // Boot 60 s + health check 20 s.
        assert!(
            oracle["scores"]["slo_violation_minutes"].as_f64().unwrap() <= 80.0 / 60.0 + 1e-9,
            "{name}: {oracle}"
        );
        for p in v["policies"].as_array().unwrap() {
            for c in p["changes"].as_array().unwrap() {
                assert!((1..=20).contains(&c["to"].as_u64().unwrap()), "{name}: {p}");
            }
            // Nobody beats the oracle's cost by more than the boot jitter could explain.
            assert!(
                p["instance_hours_over_oracle"].as_f64().unwrap() > 0.9,
                "{name}: {p}"
            );
        }
    }
}

#[test]
fn a_bad_scale_exits_64() {
    let cases = [
        (vec!["--scale", "0"], "scale"),
        (vec!["--scale=-2"], "scale"),
    ];
    common::each_exits_64_naming_the_field(cases, |args| simulate(args), common::stderr);
}
