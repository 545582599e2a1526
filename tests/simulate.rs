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
