//! Grafana's provisioning files against the rules Grafana itself enforces, each test citing the
//! Grafana source it follows (grafana/grafana unless named otherwise). Grafana cannot run here;
//! what only a running Grafana shows is listed in the README.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml_ng::Value;

const RULES: &str = "monitoring/grafana/provisioning/alerting/rules.yaml";
const CONTACT_POINTS: &str = "monitoring/grafana/provisioning/alerting/contact-points.yaml";
const POLICIES: &str = "monitoring/grafana/provisioning/alerting/policies.yaml";
const DATASOURCES: &str = "monitoring/grafana/provisioning/datasources/prometheus.yaml";
const PROVIDER: &str = "monitoring/grafana/provisioning/dashboards/poolpilot.yaml";
const DASHBOARD: &str = "monitoring/grafana/dashboards/poolpilot.json";

/// `SchedulerBaseInterval = 10 * time.Second` (pkg/setting/setting_unified_alerting.go); only the
/// `configurableSchedulerTick` feature toggle changes it.
const SCHEDULER_BASE_INTERVAL: Duration = Duration::from_secs(10);

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn text(p: &str) -> String {
    std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn yaml(p: &str) -> Value {
    serde_yaml_ng::from_str(&text(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` must be a string in {v:?}"))
}

fn seq<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key]
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("`{key}` must be a list in {v:?}"))
}

/// Prometheus' `model.ParseDuration`, which Grafana uses for `interval`, `for` and the policy
/// timers: units y w d h m s ms, largest first, each at most once (`4m30s`).
fn duration(text: &str) -> Duration {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    assert!(!text.is_empty(), "empty duration");
    let mut rest = text;
    let mut millis = 0;
    let mut last = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        assert!(digits > 0, "`{text}` is not a Prometheus duration");
        let n: u64 = rest[..digits].parse().unwrap();
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest, |i| &rest[..i]);
        let i = UNITS
            .iter()
            .position(|(u, _)| *u == unit)
            .unwrap_or_else(|| panic!("`{text}`: unknown unit `{unit}`"));
        assert!(
            last.is_none_or(|l| i > l),
            "`{text}`: units must go from largest to smallest, once each"
        );
        last = Some(i);
        millis += n * UNITS[i].1;
        rest = &rest[unit.len()..];
    }
    Duration::from_millis(millis)
}

fn groups() -> Vec<Value> {
    let rules = yaml(RULES);
    assert_eq!(rules["apiVersion"].as_u64(), Some(1));
    seq(&rules, "groups").to_vec()
}

fn all_rules() -> Vec<Value> {
    groups()
        .iter()
        .flat_map(|g| seq(g, "rules").to_vec())
        .collect()
}

#[test]
fn duration_parsing_follows_prometheus() {
    assert_eq!(duration("10s"), Duration::from_secs(10));
    assert_eq!(duration("4m30s"), Duration::from_secs(270));
    assert_eq!(duration("1h"), Duration::from_secs(3600));
    assert!(std::panic::catch_unwind(|| duration("30s4m")).is_err());
    assert!(std::panic::catch_unwind(|| duration("1.5m")).is_err());
}

/// `ValidateRuleGroupInterval` (pkg/services/ngalert/models/alert_rule.go): "interval should be
/// non-zero and divided exactly by scheduler interval". `UpdateRuleGroup`
/// (pkg/services/ngalert/provisioning/alert_rules.go) calls it while provisioning, and a failed
/// alerting provisioning stops Grafana (`ProvisionAlerting` in
/// pkg/services/provisioning/provisioning.go).
#[test]
fn rule_group_interval_is_a_positive_multiple_of_the_scheduler_tick() {
    for g in groups() {
        let interval = duration(s(&g, "interval"));
        assert!(
            !interval.is_zero()
                && interval
                    .as_millis()
                    .is_multiple_of(SCHEDULER_BASE_INTERVAL.as_millis()),
            "group {}: interval {interval:?} is not a positive multiple of Grafana's 10 s scheduler tick",
            s(&g, "name")
        );
    }
}

/// The rule editor accepts a pending period only if it is at least the group's interval
/// (`forValidationOptions` in
/// public/app/features/alerting/unified/components/rule-editor/GrafanaEvaluationBehavior.tsx).
/// The state manager moves Pending to Alerting at the first evaluation at which `for` has
/// passed, so a `for` that the interval does not divide is rounded up: we require a multiple,
/// so the pending time is exactly the one written (the course's 1 minute).
#[test]
fn for_is_a_multiple_of_the_group_interval() {
    for g in groups() {
        let interval = duration(s(&g, "interval"));
        for r in seq(&g, "rules") {
            let pending = duration(s(r, "for"));
            assert!(
                pending >= interval && pending.as_millis().is_multiple_of(interval.as_millis()),
                "{}: for {pending:?} is not a multiple of the interval {interval:?}",
                s(r, "title")
            );
        }
    }
}

/// The condition must name one of the rule's queries (`ErrConditionNotExistBase`,
/// "Condition {{ .Given }} does not exist, must be one of {{ .Existing }}", in
/// pkg/services/ngalert/models/errors.go), every expression's input must exist, and the refIds
/// are unique (the expression pipeline keys its nodes by refId, pkg/expr/graph.go).
#[test]
fn the_condition_and_every_expression_input_are_refids_of_the_rule() {
    for r in all_rules() {
        let title = s(&r, "title");
        let data = seq(&r, "data");
        let refs: Vec<&str> = data.iter().map(|q| s(q, "refId")).collect();
        let unique: BTreeSet<&str> = refs.iter().copied().collect();
        assert_eq!(
            unique.len(),
            refs.len(),
            "{title}: duplicate refIds {refs:?}"
        );
        let condition = s(&r, "condition");
        assert!(
            refs.contains(&condition),
            "{title}: condition {condition} does not exist, must be one of {refs:?}"
        );
        for q in data {
            assert_eq!(
                q["model"]["refId"].as_str(),
                Some(s(q, "refId")),
                "{title}: the model's refId differs from the query's"
            );
            if let Some(input) = q["model"]["expression"].as_str() {
                assert!(
                    refs.contains(&input),
                    "{title}: {} reads {input}, which is not a refId",
                    s(q, "refId")
                );
            }
        }
    }
}

/// Reduce: `reducer` is one of the functions `mathexp.GetReduceFunc` knows (pkg/expr/mathexp/
/// reduce.go: sum, mean, min, max, count, last, median). Threshold: `UnmarshalThresholdCommand`
/// (pkg/expr/threshold.go) requires an `expression` and "exactly one condition", whose
/// `evaluator.type` is in its supported set (gt, lt, within_range, outside_range in every
/// version from 11.6 on), with one parameter for gt/lt and two for the ranges.
#[test]
fn reduce_and_threshold_models_are_in_the_shapes_grafana_accepts() {
    let reducers = ["sum", "mean", "min", "max", "count", "last", "median"];
    let mut thresholds = 0;
    for r in all_rules() {
        let title = s(&r, "title");
        for q in seq(&r, "data") {
            if s(q, "datasourceUid") != "__expr__" {
                continue;
            }
            let m = &q["model"];
            match s(m, "type") {
                "reduce" => {
                    s(m, "expression");
                    let reducer = s(m, "reducer");
                    assert!(
                        reducers.contains(&reducer),
                        "{title}: unknown reducer {reducer}"
                    );
                }
                "threshold" => {
                    thresholds += 1;
                    s(m, "expression");
                    let conditions = seq(m, "conditions");
                    assert_eq!(
                        conditions.len(),
                        1,
                        "{title}: threshold expression requires exactly one condition"
                    );
                    let ev = &conditions[0]["evaluator"];
                    let params = seq(ev, "params").len();
                    match s(ev, "type") {
                        "gt" | "lt" => assert_eq!(params, 1, "{title}: gt/lt take one param"),
                        "within_range" | "outside_range" => {
                            assert_eq!(params, 2, "{title}: ranges take two params")
                        }
                        other => panic!("{title}: evaluator type {other} is not supported"),
                    }
                    assert!(
                        seq(ev, "params").iter().all(Value::is_number),
                        "{title}: params must be numbers"
                    );
                }
                "math" | "classic_conditions" | "resample" | "sql" => {}
                other => panic!("{title}: unknown expression type {other}"),
            }
        }
    }
    assert!(thresholds >= 2, "each rule ends in a threshold");
}

/// Every data source query needs a relative time range with from > to (`AlertQuery.PreSave`,
/// pkg/services/ngalert/models/alert_query.go: "invalid relative time range"); expressions are
/// exempt. `RelativeTimeRange` is read as integer seconds (`Duration.UnmarshalYAML` accepts an
/// int only).
#[test]
fn data_source_queries_have_a_relative_time_range_in_integer_seconds() {
    for r in all_rules() {
        for q in seq(&r, "data") {
            if s(q, "datasourceUid") == "__expr__" {
                continue;
            }
            let range = &q["relativeTimeRange"];
            let (from, to) = (range["from"].as_u64(), range["to"].as_u64());
            let (Some(from), Some(to)) = (from, to) else {
                panic!(
                    "{} {}: relativeTimeRange needs integer seconds, got {range:?}",
                    s(&r, "title"),
                    s(q, "refId")
                );
            };
            assert!(from > to, "{}: invalid relative time range", s(&r, "title"));
        }
    }
}

/// Rule, contact point receiver and dashboard UIDs: at most 40 characters of [A-Za-z0-9_-]
/// (`util.IsValidShortUID` and `MaxUIDLength = 40`, pkg/util/shortid_generator.go).
#[test]
fn uids_are_valid_grafana_short_uids() {
    let valid = |uid: &str| {
        !uid.is_empty()
            && uid.len() <= 40
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let mut uids = Vec::new();
    for r in all_rules() {
        uids.push(s(&r, "uid").to_owned());
    }
    for cp in seq(&yaml(CONTACT_POINTS), "contactPoints") {
        for r in seq(cp, "receivers") {
            uids.push(s(r, "uid").to_owned());
        }
    }
    for d in seq(&yaml(DATASOURCES), "datasources") {
        uids.push(s(d, "uid").to_owned());
    }
    let dash: serde_json::Value = serde_json::from_str(&text(DASHBOARD)).unwrap();
    uids.push(dash["uid"].as_str().unwrap().to_owned());
    for uid in &uids {
        assert!(valid(uid), "`{uid}` is not a valid Grafana UID");
    }
    let unique: BTreeSet<&String> = uids.iter().collect();
    assert_eq!(unique.len(), uids.len(), "UIDs must be unique: {uids:?}");
}

/// `NoDataStateFromString` (NoData, Alerting, OK, KeepLast) and `ErrStateFromString` (Error,
/// Alerting, OK, KeepLast) in pkg/services/ngalert/models/alert_rule.go; an unknown value fails
/// provisioning (`mapToModel`, pkg/services/provisioning/alerting/rules_types.go). Ours are OK:
/// no data and query errors must never scale the pool.
#[test]
fn no_data_and_error_states_are_grafana_states_and_never_scale() {
    for r in all_rules() {
        let title = s(&r, "title");
        let no_data = s(&r, "noDataState");
        let exec_err = s(&r, "execErrState");
        assert!(
            ["NoData", "Alerting", "OK", "KeepLast"].contains(&no_data),
            "{title}: noDataState {no_data}"
        );
        assert!(
            ["Error", "Alerting", "OK", "KeepLast"].contains(&exec_err),
            "{title}: execErrState {exec_err}"
        );
        assert_eq!(no_data, "OK", "{title}: no data must not scale");
        assert_eq!(exec_err, "OK", "{title}: errors must not scale");
    }
}

/// The routes' `object_matchers` ([label, op, value], parsed into `definition.Route` by
/// notification_policy_types.go) must match labels the rules actually carry, each rule must be
/// caught by exactly one child route, and that route's contact point must call the endpoint of
/// the rule's direction.
#[test]
fn every_rule_is_routed_by_its_own_labels_to_its_own_endpoint() {
    let policies = yaml(POLICIES);
    let root = &seq(&policies, "policies")[0];
    let urls = contact_point_urls();
    for r in all_rules() {
        let title = s(&r, "title");
        let labels: BTreeMap<String, String> =
            serde_yaml_ng::from_value(r["labels"].clone()).unwrap();
        let matching: Vec<&Value> = seq(root, "routes")
            .iter()
            .filter(|route| {
                seq(route, "object_matchers").iter().all(|m| {
                    let m = m.as_sequence().expect("[label, op, value]");
                    let (label, op, value) = (
                        m[0].as_str().unwrap(),
                        m[1].as_str().unwrap(),
                        m[2].as_str().unwrap(),
                    );
                    assert_eq!(op, "=", "only equality matchers are used");
                    labels.get(label).map(String::as_str) == Some(value)
                })
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{title}: caught by {} routes",
            matching.len()
        );
        let url = &urls[s(matching[0], "receiver")];
        let scale = &labels["scale"];
        assert!(
            url.ends_with(&format!("/{scale}")),
            "{title} (scale={scale}) goes to {url}"
        );
    }
}

/// Contact point name → webhook URL.
fn contact_point_urls() -> BTreeMap<String, String> {
    seq(&yaml(CONTACT_POINTS), "contactPoints")
        .iter()
        .map(|cp| {
            let receivers = seq(cp, "receivers");
            assert_eq!(receivers.len(), 1, "one webhook per contact point");
            (
                s(cp, "name").to_owned(),
                s(&receivers[0]["settings"], "url").to_owned(),
            )
        })
        .collect()
}

/// An alert no child route matches (a rule added in the UI, or one without a `scale` label) goes
/// to the root receiver. It must not be /up or /down, where the route alone sets the direction:
/// it is /webhook, and the autoscaler ignores an alert without a `scale` label there.
#[test]
fn the_root_policy_never_sends_an_unlabelled_alert_to_a_scaling_endpoint() {
    let policies = yaml(POLICIES);
    let root = &seq(&policies, "policies")[0];
    let url = &contact_point_urls()[s(root, "receiver")];
    assert!(
        !url.ends_with("/up") && !url.ends_with("/down"),
        "the root receiver calls {url}"
    );
    assert!(url.ends_with("/webhook"), "{url}");

    // And the autoscaler's /webhook really ignores it: Grafana's own body, with the rule's
    // labels but no `scale`.
    let mut body: serde_json::Value =
        serde_json::from_str(&text("reference/grafana-unified-webhook.json")).unwrap();
    for a in body["alerts"].as_array_mut().unwrap() {
        a["status"] = "firing".into();
        a["labels"].as_object_mut().unwrap().remove("scale");
    }
    let parsed = poolpilot::autoscaler::source::webhook::parse(
        &serde_json::to_vec(&body).unwrap(),
        poolpilot::autoscaler::source::webhook::Route::Labelled,
    )
    .unwrap();
    assert!(parsed.firing.is_empty(), "an unlabelled alert scaled");
    assert!(!parsed.ignored.is_empty());
}

/// Webhook settings by the names grafana/alerting reads (receivers/webhook/v1/config.go: `url`
/// required, `httpMethod` POST or PUT, `authorization_scheme`, `authorization_credentials`, a
/// secure field), resolve messages off (`disableResolveMessage`, contact_point_types.go), and
/// the token read with `$__file{}` from a systemd credential (pkg/setting/expanders.go: a
/// missing file is an error, so provisioning fails loudly instead of sending no token).
#[test]
fn contact_points_use_grafanas_webhook_field_names_and_a_credential_file() {
    let known = [
        "url",
        "httpMethod",
        "authorization_scheme",
        "authorization_credentials",
        "maxAlerts",
        "title",
        "message",
    ];
    let cps = yaml(CONTACT_POINTS);
    assert_eq!(cps["apiVersion"].as_u64(), Some(1));
    let mut urls = BTreeSet::new();
    for cp in seq(&cps, "contactPoints") {
        let name = s(cp, "name");
        for r in seq(cp, "receivers") {
            assert_eq!(s(r, "type"), "webhook");
            assert_eq!(r["disableResolveMessage"].as_bool(), Some(true), "{name}");
            let settings = r["settings"].as_mapping().expect("settings");
            for k in settings.keys() {
                let k = k.as_str().unwrap();
                assert!(known.contains(&k), "{name}: `{k}` is not a webhook setting");
            }
            let url = s(&r["settings"], "url");
            assert!(url.starts_with("http://127.0.0.1:8090/"), "{name}: {url}");
            urls.insert(url.rsplit('/').next().unwrap().to_owned());
            assert!(["POST", "PUT"].contains(&s(&r["settings"], "httpMethod")));
            assert_eq!(s(&r["settings"], "authorization_scheme"), "Bearer");
            assert_eq!(
                s(&r["settings"], "authorization_credentials"),
                "$__file{/run/credentials/grafana.service/webhook-token}",
                "{name}: the token comes from grafana.service's credential"
            );
        }
    }
    assert_eq!(
        urls,
        BTreeSet::from(["up".into(), "down".into(), "webhook".into()])
    );
}

/// Alertmanager's dedup (`DedupStage.needsUpdate`, prometheus/alertmanager notify/notify.go,
/// used by Grafana through grafana/alerting) re-sends at a flush only if the last send is older
/// than repeat_interval; flushes come every group_interval and the send is logged just after
/// its flush. So the repeat comes at flush number floor(repeat / group_interval) + 1: the
/// course's 5 minutes needs repeat_interval strictly between 4 and 5 group intervals.
#[test]
fn the_policy_repeats_a_firing_alert_every_five_minutes() {
    let policies = yaml(POLICIES);
    let root = &seq(&policies, "policies")[0];
    let group_interval = duration(s(root, "group_interval"));
    let repeat = duration(s(root, "repeat_interval"));
    duration(s(root, "group_wait"));
    let flushes = repeat.as_millis() / group_interval.as_millis() + 1;
    assert_eq!(
        Duration::from_millis((flushes * group_interval.as_millis()) as u64),
        Duration::from_secs(300),
        "group_interval {group_interval:?} with repeat_interval {repeat:?} does not repeat every 5 minutes"
    );
    for route in seq(root, "routes") {
        for k in ["group_wait", "group_interval", "repeat_interval"] {
            assert!(route[k].is_null(), "child routes inherit {k}");
        }
    }
}

/// One source of truth for the timings: the Grafana files, the Prometheus rules, the demo and
/// `poolpilot simulate` agree. The demo runs Prometheus and Alertmanager (not Grafana), whose
/// reminders are every minute by design (monitoring/alertmanager/alertmanager.yml); its pending
/// time is the rules' one.
#[test]
fn grafana_prometheus_demo_and_simulate_use_the_same_timings() {
    let model = poolpilot::policy::simulate::Model::default();
    for g in groups() {
        assert_eq!(duration(s(&g, "interval")), model.eval, "simulate's eval");
        for r in seq(&g, "rules") {
            assert_eq!(duration(s(r, "for")), model.pending, "simulate's pending");
        }
    }
    let policies = yaml(POLICIES);
    let root = &seq(&policies, "policies")[0];
    assert_eq!(duration(s(root, "group_wait")), model.group_wait);
    assert_eq!(duration(s(root, "group_interval")), model.group_interval);
    assert_eq!(duration(s(root, "repeat_interval")), model.repeat);
    assert_eq!(model.effective_repeat(), Duration::from_secs(300));

    let prom = yaml("monitoring/prometheus/rules.yml");
    let mut alerts = 0;
    for g in seq(&prom, "groups") {
        for r in seq(g, "rules") {
            if r["alert"].is_string() {
                alerts += 1;
                assert_eq!(duration(s(r, "for")), model.pending, "{}", s(r, "alert"));
            }
        }
    }
    assert_eq!(alerts, 2);

    let course = poolpilot::demo::Timings::course();
    assert_eq!(course.pending, model.pending, "the demo's pending time");
    let am = yaml("monitoring/alertmanager/alertmanager.yml");
    let route = &am["route"];
    assert_eq!(duration(s(route, "group_wait")), course.group_wait);
    assert_eq!(duration(s(route, "group_interval")), course.group_interval);
    assert_eq!(duration(s(route, "repeat_interval")), course.repeat);
}

/// Folders are created by title when missing, by the alerting provisioner
/// (`getOrCreateFolderByTitle`, rules_provisioner.go) and the dashboard one (`getOrCreateFolder`,
/// pkg/services/provisioning/dashboards/file_reader.go), and newer Grafana runs them
/// concurrently: the titles differ.
#[test]
fn dashboard_and_alert_folders_have_distinct_titles() {
    let provider = yaml(PROVIDER);
    let dashboards: BTreeSet<&str> = seq(&provider, "providers")
        .iter()
        .map(|p| s(p, "folder"))
        .collect();
    for g in groups() {
        assert!(
            !dashboards.contains(s(&g, "folder")),
            "rule folder {} is also a dashboard folder",
            s(&g, "folder")
        );
    }
}

/// The course's manual review expects two pool-average CPU graphs, each carrying one alert: each
/// rule links a panel (`dashboardUid`/`panelId`, rules_types.go) of the provisioned dashboard
/// that plots the pool average, with a threshold at the rule's own threshold.
#[test]
fn each_rule_is_linked_to_its_own_pool_average_panel() {
    let dash: serde_json::Value = serde_json::from_str(&text(DASHBOARD)).unwrap();
    let mut panels = BTreeSet::new();
    for r in all_rules() {
        let title = s(&r, "title");
        assert_eq!(
            s(&r, "dashboardUid"),
            dash["uid"].as_str().unwrap(),
            "{title}"
        );
        let id = r["panelId"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: panelId"));
        assert!(panels.insert(id), "{title}: panel {id} carries two rules");
        let panel = dash["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("{title}: no panel {id}"));
        let promql = seq(&r, "data")
            .iter()
            .find(|q| s(q, "datasourceUid") != "__expr__")
            .map(|q| s(&q["model"], "expr"))
            .unwrap();
        assert!(
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["expr"].as_str().unwrap().contains(promql)),
            "{title}: panel {id} does not plot {promql}"
        );
        let threshold = seq(&r, "data")
            .iter()
            .find(|q| q["model"]["type"].as_str() == Some("threshold"))
            .map(|q| {
                q["model"]["conditions"][0]["evaluator"]["params"][0]
                    .as_f64()
                    .unwrap()
            })
            .unwrap();
        let steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .unwrap();
        assert!(
            steps
                .iter()
                .any(|st| st["value"].as_f64() == Some(threshold * 100.0)),
            "{title}: panel {id} shows no threshold at {}",
            threshold * 100.0
        );
    }
    assert_eq!(panels.len(), 2);
}

/// The dashboard against Grafana's dashboard model. No package on npm or PyPI ships it as a JSON
/// schema (@grafana/schema and the foundation SDKs ship TypeScript, Go and Python code), so these
/// are the structural rules of @grafana/schema's `raw/dashboard/x/types.gen.ts` (Dashboard,
/// Panel, GridPos, ThresholdsConfig, DataSourceRef): `schemaVersion` and `title` set, panel ids
/// unique, grid positions within the 24-column grid and not overlapping, thresholds `absolute`
/// or `percentage` with the first step's value null (-Infinity) and the rest ascending, every
/// panel and target on the provisioned Prometheus data source.
#[test]
fn the_dashboard_follows_grafanas_dashboard_model() {
    let dash: serde_json::Value = serde_json::from_str(&text(DASHBOARD)).unwrap();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let prometheus_uid = s(&seq(&yaml(DATASOURCES), "datasources")[0], "uid").to_owned();
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(p["type"].as_str().is_some() && p["title"].as_str().is_some());
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(w > 0 && h > 0 && x + w <= 24, "panel {id}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "panel {id} overlaps another");
            }
        }
        assert_eq!(p["datasource"]["type"], "prometheus");
        assert_eq!(p["datasource"]["uid"], prometheus_uid.as_str());
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty());
        for t in targets {
            assert!(t["refId"].as_str().is_some(), "panel {id}: target refId");
            assert!(t["expr"].as_str().is_some(), "panel {id}: target expr");
        }
        if let Some(th) = p["fieldConfig"]["defaults"].get("thresholds") {
            assert!(["absolute", "percentage"].contains(&th["mode"].as_str().unwrap()));
            let steps = th["steps"].as_array().unwrap();
            assert!(steps[0]["value"].is_null(), "panel {id}: base step");
            let values: Vec<f64> = steps[1..]
                .iter()
                .map(|s| s["value"].as_f64().unwrap())
                .collect();
            assert!(values.windows(2).all(|w| w[0] < w[1]), "panel {id}: steps");
            assert!(steps.iter().all(|s| s["color"].is_string()));
        }
    }
}

/// Every PromQL expression of the rules and the dashboard parses (checked by Debian's promtool
/// as recording rules), and the dashboard's request rate leaves out Prometheus' own scrapes.
#[test]
fn every_promql_expression_parses() {
    let mut promql: Vec<String> = Vec::new();
    for r in all_rules() {
        for q in seq(&r, "data") {
            if s(q, "datasourceUid") != "__expr__" {
                promql.push(s(&q["model"], "expr").to_owned());
            }
        }
    }
    let dash: serde_json::Value = serde_json::from_str(&text(DASHBOARD)).unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            if e.contains("poolpilot_app_http_requests_total") {
                assert!(e.contains(r#"route!="metrics""#), "{e}");
            }
            promql.push(e.to_owned());
        }
    }
    promql.push(poolpilot::autoscaler::source::prometheus::MEMBER_CPU.to_owned());
    promql.push(poolpilot::autoscaler::source::prometheus::MEMBER_LOAD_IN_FLIGHT.to_owned());
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
    let out = Command::new("promtool")
        .args(["check", "rules", p.to_str().unwrap()])
        .output()
        .expect("promtool (Debian's prometheus package) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(promql.len() >= 9);
}

/// What nixos-modules/monitor.nix gives grafana.service, evaluated by Nix with a minimal `lib`
/// (nixpkgs cannot be evaluated here): the module's own `systemd.services.grafana` and
/// `services.grafana.settings`.
fn grafana_unit_from_the_module() -> serde_json::Value {
    let module = repo("nixos-modules/monitor.nix");
    let expr = format!(
        r#"
let
  lib = {{
    mkOption = x: x;
    mkEnableOption = x: {{ }};
    mkPackageOption = a: b: c: {{ }};
    mkIf = c: v: if c then v else {{ }};
    mkDefault = v: v;
    mkForce = v: v;
    optional = c: v: if c then [ v ] else [ ];
    optionals = c: v: if c then v else [ ];
    types = {{ str = "str"; bool = "bool"; }};
  }};
  m = import (/. + {path}) {{
    inherit lib;
    pkgs = {{ }};
    config = {{
      poolpilot.monitor = {{ adminCidr = "0.0.0.0/0"; alertmanager.enable = false; }};
      services.poolpilot.environmentFile = "/etc/poolpilot/env";
    }};
  }};
in {{
  unit = m.config.systemd.services.grafana;
  settings = m.config.services.grafana.settings;
}}"#,
        path = serde_json::to_string(module.to_str().unwrap()).unwrap()
    );
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--expr", &expr])
        .output()
        .expect("nix-instantiate (Debian's nix-bin) must be installed");
    assert!(
        out.status.success(),
        "nix-instantiate:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Grafana's unit holds no Exoscale secret: no EnvironmentFile (the settings file carries the
/// API secret) and no environment of ours; every secret it uses is a `$__file{}` of one of its
/// own credentials (LoadCredential), and the secret key is set (the 26.05 module asserts it) and
/// not in the store.
#[test]
fn grafanas_unit_gets_its_own_credentials_and_no_exoscale_secret() {
    let v = grafana_unit_from_the_module();
    let unit = &v["unit"];
    let service = &unit["serviceConfig"];
    assert!(service.get("EnvironmentFile").is_none(), "{unit}");
    assert!(unit.get("environment").is_none(), "{unit}");
    let all = v.to_string();
    for secret in ["EXOSCALE", "/etc/poolpilot/env", "$__env{"] {
        assert!(
            !all.contains(secret),
            "grafana's unit or settings mention {secret}: {all}"
        );
    }
    let credentials: BTreeMap<String, String> = service["LoadCredential"]
        .as_array()
        .expect("LoadCredential")
        .iter()
        .map(|c| {
            let (name, file) = c.as_str().unwrap().split_once(':').unwrap();
            (name.to_owned(), file.to_owned())
        })
        .collect();
    let security = &v["settings"]["security"];
    for key in ["admin_password", "secret_key"] {
        assert!(
            security[key]
                .as_str()
                .is_some_and(|s| s.starts_with("$__file{/run/credentials/grafana.service/")),
            "{key}: {}",
            security[key]
        );
    }
    assert_eq!(v["settings"]["plugins"]["preinstall_disabled"], true);
    // Every credential Grafana reads is loaded, from a file cloud-init writes root-only.
    let used = format!("{all}{}{}", text(CONTACT_POINTS), text(DATASOURCES));
    let prefix = "$__file{/run/credentials/grafana.service/";
    let names: BTreeSet<&str> = used
        .match_indices(prefix)
        .map(|(i, _)| {
            let rest = &used[i + prefix.len()..];
            &rest[..rest.find('}').unwrap()]
        })
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "admin-password",
            "prometheus-password",
            "secret-key",
            "webhook-token"
        ])
    );
    let userdata = text("terraform/userdata/monitor.yaml.tftpl");
    let vm_test = text("checks/vm-autoscaling.nix");
    for name in names {
        let file = credentials
            .get(name)
            .unwrap_or_else(|| panic!("{name} is read but not a LoadCredential"));
        let written = userdata
            .split("  - path: ")
            .find(|entry| entry.starts_with(file.as_str()))
            .unwrap_or_else(|| panic!("cloud-init does not write {file}"));
        assert!(
            written.contains(r#"permissions: "0600""#),
            "{file}: {written}"
        );
        assert!(
            vm_test.contains(&format!("environment.etc.\"{}\"", &file[5..])),
            "the VM test does not provide {file}"
        );
    }
    // The Exoscale secret stays in the env file (the module's `api` values), which Grafana
    // does not read.
    let env = userdata.split("  - path: ").nth(1).unwrap();
    assert!(env.starts_with("/etc/poolpilot/env") && env.contains("jsonencode(api_env)"));
    let module = text("terraform/userdata/main.tf");
    let api = &module[module.find("    api = {").unwrap()..];
    // To the block's own closing brace (its values interpolate `${...}`).
    let api = &api[..api.find("\n    }").unwrap()];
    assert!(api.contains("EXOSCALE_API_SECRET"), "{api}");
    assert!(
        !api.contains("GRAFANA"),
        "Grafana's secrets have their own files"
    );
}
