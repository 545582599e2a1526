//! `poolpilot autoscaler`, the real binary against the simulator, with the reference webhook
//! bodies of `reference/`.

mod common;

use common::base_command;
use common::scaler::{Scaler, ticks};

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "a-webhook-token-for-tests";

fn reference(name: &str) -> Value {
    let path = format!("{}/reference/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// `poolpilot autoscaler --interval 2s` on the simulator's pool, with `extra` flags.
async fn start(sim: &common::TestSim, extra: &[&str]) -> Scaler {
    let mut cmd = base_command();
    cmd.args(["autoscaler", "--interval", "2s"])
        .args(extra)
        .env("EXOSCALE_API_ENDPOINT", sim.running.endpoint())
        .env("EXOSCALE_API_KEY", common::KEY)
        .env("EXOSCALE_API_SECRET", common::SECRET)
        .env("EXOSCALE_INSTANCEPOOL_ID", sim.pool.to_string());
    Scaler::spawn(cmd, tempfile::tempdir().unwrap()).await
}

impl Scaler {
    async fn decisions(&self) -> Vec<Value> {
        self.decisions_at("/v1/decisions").await
    }

    /// Waits for a decision recorded after `after` decisions that satisfies `pred`.
    async fn wait_decision(&self, after: usize, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_decision_at("/v1/decisions", after, pred).await
    }
}

fn scale_calls(sim: &common::TestSim) -> Vec<u16> {
    let path = format!("/v2/instance-pool/{}:scale", sim.pool);
    sim.sim()
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path == path)
        .map(|r| r.status)
        .collect()
}

async fn size(sim: &common::TestSim) -> u64 {
    sim.client().get_instance_pool(sim.pool).await.unwrap().size
}

async fn post_faults(sim: &common::TestSim, body: Value) {
    let r = reqwest::Client::new()
        .post(sim.admin("/faults"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test]
async fn get_up_scales_at_the_next_tick_and_down_at_min_changes_nothing() {
    let sim = common::start(1, common::quick()).await;
    let s = start(&sim, &["--min", "1", "--max", "3"]).await;

    let (status, body) = s.get("/down").await;
    assert_eq!(status, 200);
    assert_eq!(body["recorded"]["down"], 1);
    assert!(body["note"].as_str().unwrap().contains("minimum"), "{body}");
    let d = s.wait_decision(0, |d| d["intents"]["down"] == 1).await;
    assert_eq!(d["outcome"], "at-bound", "{d:#}");
    assert!(scale_calls(&sim).is_empty(), "no API call at the bound");

    // Counted before the trigger, so the decision it causes cannot fall before `n`.
    let n = s.decisions().await.len();
    let (status, body) = s.get("/up").await;
    assert_eq!(status, 200);
    assert_eq!(body["recorded"]["up"], 1);
    let d = s.wait_decision(n, |d| d["action"] == "up").await;
    assert_eq!(d["outcome"], "scaled", "{d:#}");
    // The handler only recorded the intent; the tick that took it from the box scaled.
    assert_eq!(d["intents"]["up"], 1, "{d:#}");
    assert_eq!(
        (d["current"].as_u64(), d["desired"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(d["operation"].is_string());
    assert_eq!(size(&sim).await, 2);
    assert_eq!(scale_calls(&sim), vec![200]);
    // The decision was logged as one structured record.
    let logged = s
        .log()
        .lines()
        .filter(|l| l.contains("\"message\":\"decision\"") && l.contains("\"outcome\":\"scaled\""))
        .count();
    assert_eq!(logged, 1, "{}", s.log());
}

#[tokio::test]
async fn grafana_and_alertmanager_bodies_fire_resolved_ones_do_not() {
    let sim = common::start(2, common::quick()).await;
    let s = start(&sim, &["--min", "1", "--max", "4"]).await;

    // Resolved (unified), ok (legacy) and Grafana's no-data alert: recorded as nothing.
    let mut resolved = reference("grafana-unified-webhook.json");
    resolved["status"] = "resolved".into();
    for a in resolved["alerts"].as_array_mut().unwrap() {
        a["status"] = "resolved".into();
    }
    let mut ok = reference("grafana-legacy-webhook.json");
    ok["state"] = "ok".into();
    let mut nodata = reference("grafana-unified-webhook.json");
    for a in nodata["alerts"].as_array_mut().unwrap() {
        a["labels"]["alertname"] = "DatasourceNoData".into();
    }
    for body in [&resolved, &ok, &nodata] {
        let (status, reply) = s.post("/up", body).await;
        assert_eq!(status, 200);
        assert_eq!(reply["recorded"]["up"], 0, "{reply}");
    }
    ticks(&sim, 2).await;
    assert!(scale_calls(&sim).is_empty());

    // Grafana unified, firing, on /up: acts.
    let (status, reply) = s
        .post("/up", &reference("grafana-unified-webhook.json"))
        .await;
    assert_eq!(
        (status, reply["format"].as_str()),
        (200, Some("grafana-unified"))
    );
    let d = s.wait_decision(0, |d| d["outcome"] == "scaled").await;
    assert_eq!(d["desired"], 3);

    // Alertmanager on /webhook: the `scale` label gives the direction.
    let mut am = reference("alertmanager-webhook.json");
    am["alerts"][0]["labels"]["scale"] = "down".into();
    let n = s.decisions().await.len();
    let (status, reply) = s.post("/webhook", &am).await;
    assert_eq!(
        (status, reply["format"].as_str()),
        (200, Some("alertmanager"))
    );
    assert_eq!(reply["recorded"]["down"], 1);
    let d = s
        .wait_decision(n, |d| d["action"] == "down" && d["outcome"] == "scaled")
        .await;
    assert_eq!(d["desired"], 2);

    // Grafana legacy on /up: acts.
    let n = s.decisions().await.len();
    let (status, reply) = s
        .post("/up", &reference("grafana-legacy-webhook.json"))
        .await;
    assert_eq!(
        (status, reply["format"].as_str()),
        (200, Some("grafana-legacy"))
    );
    s.wait_decision(n, |d| d["action"] == "up" && d["outcome"] == "scaled")
        .await;
    assert_eq!(size(&sim).await, 3);
    assert_eq!(scale_calls(&sim), vec![200, 200, 200]);
}

#[tokio::test]
async fn api_errors_during_a_tick_are_retried_and_the_scale_happens_once() {
    let sim = common::start(1, common::quick()).await;
    let s = start(&sim, &["--max", "3"]).await;
    // Right after a tick, so that the faults meet the next one.
    ticks(&sim, 1).await;
    post_faults(&sim, json!({"status": 429, "count": 1, "retry-after": 1})).await;
    post_faults(&sim, json!({"status": 500, "count": 1})).await;
    assert_eq!(s.get("/up").await.0, 200);
    let d = s.wait_decision(0, |d| d["action"] == "up").await;
    assert_eq!(d["outcome"], "scaled", "{d:#}");
    let statuses: Vec<u16> = sim.sim().requests().iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&429) && statuses.contains(&500),
        "{statuses:?}"
    );
    assert_eq!(scale_calls(&sim), vec![200], "exactly one scale");
    assert_eq!(size(&sim).await, 2);
    // A few ticks later, still exactly one.
    ticks(&sim, 2).await;
    assert_eq!(scale_calls(&sim), vec![200]);
}

#[tokio::test]
async fn bad_requests_are_refused_and_scale_nothing() {
    let sim = common::start(2, common::quick()).await;
    let s = start(&sim, &["--webhook-token", TOKEN]).await;
    let url = |p: &str| format!("{}{p}", s.base);
    let c = &s.http;
    let unified = reference("grafana-unified-webhook.json");

    let r = c.get(url("/up")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = c
        .get(url("/up"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(url("/up"))
        .basic_auth("grafana", Some("nope"))
        .json(&unified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let authed = |rb: reqwest::RequestBuilder| rb.bearer_auth(TOKEN);
    let r = authed(c.post(url("/up")))
        .header("content-type", "application/json")
        .body("{\"alerts\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("not valid JSON"),
        "{v}"
    );
    let r = authed(c.post(url("/webhook")))
        .json(&json!({"hello": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = authed(c.post(url("/up")))
        .header("content-type", "text/plain")
        .body("scale up please")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let big = vec![b' '; 2 * 1024 * 1024];
    let r = authed(c.post(url("/up")))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = authed(c.delete(url("/up"))).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = authed(c.get(url("/webhook"))).send().await.unwrap();
    assert_eq!(r.status(), 405);

    ticks(&sim, 2).await;
    assert!(scale_calls(&sim).is_empty(), "a refused request scaled");
    assert!(s.decisions().await.is_empty());

    // The token as a bearer token or as Grafana's basic-auth password: accepted.
    let r = authed(c.get(url("/up"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(url("/up"))
        .basic_auth("grafana", Some(TOKEN))
        .json(&unified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // One plain trigger and two firing alerts: 3 intents, taken by one tick or two (a tick may
    // fall between the two requests); each decision that took some scaled one step, or was
    // held while the pool was busy with the first.
    let started = Instant::now();
    let decisions = loop {
        let d = s.decisions().await;
        let up: u64 = d
            .iter()
            .map(|d| d["intents"]["up"].as_u64().unwrap_or(0))
            .sum();
        if up == 3 {
            break d;
        }
        assert!(up <= 3, "more intents than sent: {d:#?}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the intents were not all taken: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let scaled = decisions
        .iter()
        .filter(|d| d["action"] == "up" && d["outcome"] == "scaled")
        .count() as u64;
    assert!((1..=2).contains(&scaled), "{decisions:#?}");
    let expected = 2 + scaled;
    assert_eq!(size(&sim).await, expected, "{decisions:#?}");
    assert!(!s.log().contains(TOKEN), "the token reached the log");

    // Metrics are well-formed and count what happened.
    let text = c
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        // A single plain `--pool ID` is the pool named `default`.
        "poolpilot_autoscaler_webhook_requests_total{pool=\"default\",route=\"/up\",format=\"unknown\",result=\"unauthorized\"} 3".to_string(),
        "poolpilot_autoscaler_webhook_requests_total{pool=\"default\",route=\"/up\",format=\"unknown\",result=\"too_large\"} 1".to_string(),
        format!("poolpilot_autoscaler_decisions_total{{pool=\"default\",direction=\"up\",outcome=\"scaled\"}} {scaled}"),
        "poolpilot_autoscaler_max_size{pool=\"default\"} 5".to_string(),
        format!("poolpilot_autoscaler_pool_size{{pool=\"default\"}} {expected}"),
    ] {
        assert!(text.contains(&series), "missing {series}:\n{text}");
    }
    common::promtool_accepts(&text);
}

#[tokio::test]
async fn dry_run_decides_and_never_calls_the_api_to_scale() {
    let sim = common::start(1, common::quick()).await;
    let s = start(&sim, &["--dry-run"]).await;
    assert_eq!(s.get("/up").await.0, 200);
    let d = s.wait_decision(0, |d| d["action"] == "up").await;
    assert_eq!(d["outcome"], "dry-run");
    assert!(scale_calls(&sim).is_empty());
    assert_eq!(size(&sim).await, 1);
}

#[tokio::test]
async fn sigterm_in_the_middle_of_a_tick_exits_0_within_5s() {
    let sim = common::start(1, common::quick()).await;
    let mut s = start(&sim, &[]).await;
    ticks(&sim, 1).await;
    // The next API request hangs for 30 s: the next tick is stuck in it.
    post_faults(&sim, json!({"latency": "30s", "count": 5})).await;
    assert_eq!(s.get("/up").await.0, 200);
    let started = Instant::now();
    while !sim.sim().requests().iter().any(|r| r.status == 0) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the tick never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, took) = s.terminate();
    assert_eq!(code, 0, "{}", s.log());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(scale_calls(&sim).is_empty());
}

#[tokio::test]
async fn the_course_environment_alone_is_enough() {
    let sim = common::start(1, common::quick()).await;
    let port = common::free_port();
    let mut child = base_command()
        .arg("autoscaler")
        .env("EXOSCALE_API_ENDPOINT", sim.running.endpoint())
        .env("EXOSCALE_KEY", common::KEY)
        .env("EXOSCALE_SECRET", common::SECRET)
        .env("EXOSCALE_ZONE", "ch-gva-2")
        .env("EXOSCALE_INSTANCEPOOL_ID", sim.pool.to_string())
        .env("LISTEN_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not ready on LISTEN_PORT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn invalid_configuration_exits_64_naming_the_field_before_binding() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let pool = "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "`pool`"),
        (vec!["--pool", pool, "--min", "4", "--max", "2"], "min"),
        (vec!["--pool", pool, "--max", "0"], "max"),
        (vec!["--pool", pool, "--interval", "60"], "--interval"),
        (vec!["--pool", pool, "--interval", "10ms"], "interval"),
        (
            vec!["--pool", pool, "--webhook-token", "short"],
            "webhook-token",
        ),
        (vec!["--pool", pool, "--min=-1"], "--min"),
        (vec!["--pool", pool, "--zone", "mars-1"], "--zone"),
        (
            vec![
                "--pool",
                pool,
                "--policy",
                "examples/policies/target-tracking.toml",
            ],
            "prometheus",
        ),
        (
            vec!["--pool", pool, "--policy", "/nonexistent/policy.toml"],
            "policy",
        ),
        (
            vec!["--pool", pool, "--policy", "no-such-builtin"],
            "policy",
        ),
        (
            vec![
                "--pool",
                pool,
                "--policy",
                "hpa",
                "--scrape",
                "sd.json",
                "--scrape-window",
                "0s",
            ],
            "scrape-window",
        ),
    ];
    common::each_exits_64_naming_the_field(
        cases,
        |args| {
            base_command()
                .arg("autoscaler")
                .args(args)
                .args(["--listen", &listen])
                .env("EXOSCALE_KEY", "k")
                .env("EXOSCALE_SECRET", "s")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        },
        common::all_output,
    );
    let o = base_command()
        .args(["autoscaler", "--pool", pool])
        .env("EXOSCALE_KEY", "k")
        .env("EXOSCALE_SECRET", "s")
        .env("LISTEN_PORT", "http")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("LISTEN_PORT"));
}
