//! The monitoring files the images ship and the demo runs, checked by the real tools (Debian's
//! promtool and amtool) and against Grafana's documented provisioning format.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn yaml(p: &str) -> Value {
    let text = std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"))
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

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` must be a string in {v:?}"))
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

#[test]
fn grafana_provisioning_is_consistent_and_its_promql_parses() {
    let ds = yaml("monitoring/grafana/provisioning/datasources/prometheus.yaml");
    assert_eq!(ds["apiVersion"].as_u64(), Some(1));
    let uids: BTreeSet<&str> = ds["datasources"]
        .as_sequence()
        .expect("datasources")
        .iter()
        .map(|d| {
            for k in ["name", "type", "url", "access"] {
                s(d, k);
            }
            s(d, "uid")
        })
        .collect();
    let prometheus_uid = "poolpilot-prometheus";
    assert!(uids.contains(prometheus_uid));

    let mut promql: Vec<String> = Vec::new();
    let rules = yaml("monitoring/grafana/provisioning/alerting/rules.yaml");
    assert_eq!(rules["apiVersion"].as_u64(), Some(1));
    let mut scales = BTreeSet::new();
    for g in rules["groups"].as_sequence().expect("groups") {
        for k in ["name", "folder", "interval"] {
            s(g, k);
        }
        for r in g["rules"].as_sequence().expect("rules") {
            let title = s(r, "title");
            s(r, "uid");
            let refs: Vec<&str> = r["data"]
                .as_sequence()
                .expect("data")
                .iter()
                .map(|q| {
                    let uid = s(q, "datasourceUid");
                    assert!(
                        uid == "__expr__" || uids.contains(uid),
                        "{title}: unknown datasource {uid}"
                    );
                    if uid == prometheus_uid {
                        promql.push(s(&q["model"], "expr").to_owned());
                    }
                    if let Some(e) = q["model"]["expression"].as_str() {
                        assert!(
                            r["data"]
                                .as_sequence()
                                .unwrap()
                                .iter()
                                .any(|o| o["refId"].as_str() == Some(e)),
                            "{title}: expression refers to missing refId {e}"
                        );
                    }
                    s(q, "refId")
                })
                .collect();
            let condition = s(r, "condition");
            assert!(
                refs.contains(&condition),
                "{title}: condition {condition} is not a refId"
            );
            assert_eq!(s(r, "for"), "1m", "{title}");
            assert_eq!(s(r, "noDataState"), "OK", "{title}: no data must not scale");
            assert_eq!(s(r, "execErrState"), "OK", "{title}: errors must not scale");
            scales.insert(s(&r["labels"], "scale").to_owned());
        }
    }
    assert_eq!(scales, BTreeSet::from(["up".to_owned(), "down".to_owned()]));

    let cps = yaml("monitoring/grafana/provisioning/alerting/contact-points.yaml");
    let mut names = BTreeSet::new();
    for cp in cps["contactPoints"].as_sequence().expect("contactPoints") {
        let name = s(cp, "name");
        names.insert(name.to_owned());
        for r in cp["receivers"].as_sequence().expect("receivers") {
            assert_eq!(s(r, "type"), "webhook");
            assert_eq!(
                r["disableResolveMessage"].as_bool(),
                Some(true),
                "{name}: no resolve messages"
            );
            let url = s(&r["settings"], "url");
            assert!(
                url.ends_with("/up") || url.ends_with("/down"),
                "{name}: {url}"
            );
            assert_eq!(
                s(&r["settings"], "authorization_credentials"),
                "$POOLPILOT_WEBHOOK_TOKEN",
                "{name}: the token comes from the environment, never the file"
            );
        }
    }
    let policies = yaml("monitoring/grafana/provisioning/alerting/policies.yaml");
    fn receivers<'a>(p: &'a Value, out: &mut Vec<&'a str>) {
        if let Some(r) = p["receiver"].as_str() {
            out.push(r);
        }
        for child in p["routes"].as_sequence().into_iter().flatten() {
            receivers(child, out);
        }
    }
    let mut used = Vec::new();
    for p in policies["policies"].as_sequence().expect("policies") {
        assert_eq!(
            s(p, "repeat_interval"),
            "5m",
            "repeat every 5 minutes while true"
        );
        receivers(p, &mut used);
    }
    for r in used {
        assert!(names.contains(r), "policy names unknown contact point {r}");
    }

    let dash: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo("monitoring/grafana/dashboards/poolpilot.json")).unwrap(),
    )
    .unwrap();
    let titles: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["datasource"]["uid"], prometheus_uid);
            for t in p["targets"].as_array().unwrap() {
                promql.push(t["expr"].as_str().unwrap().to_owned());
            }
            p["title"].as_str().unwrap()
        })
        .collect();
    for wanted in [
        "Pool-average CPU",
        "CPU per instance",
        "Pool size",
        "Request rate",
        "Scaling decisions",
    ] {
        assert!(titles.contains(&wanted), "the dashboard lacks {wanted}");
    }
    let provider = yaml("monitoring/grafana/provisioning/dashboards/poolpilot.yaml");
    s(&provider["providers"][0]["options"], "path");

    // The policy engine's own queries too.
    promql.push(poolpilot::policy::prometheus::MEMBER_CPU.to_owned());
    promql.push(poolpilot::policy::prometheus::MEMBER_LOAD_IN_FLIGHT.to_owned());
    // Every expression parses: as recording rules, checked by promtool.
    let mut file = String::from("groups:\n  - name: parse\n    rules:\n");
    for (i, e) in promql.iter().enumerate() {
        file.push_str(&format!(
            "      - record: poolpilot:check_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("exprs.yml");
    std::fs::write(&p, file).unwrap();
    tool("promtool", &["check", "rules", p.to_str().unwrap()]);
    assert!(promql.len() >= 8);
}
