//! One autoscaler and one discovery agent for two pools in two zones: the real binary against two
//! simulators (one per zone; `EXOSCALE_API_ENDPOINT=ZONE=URL,ZONE=URL` gives each zone its
//! endpoint), with the reference Alertmanager body of `reference/`.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::base_command;
use common::scaler::{Scaler, ticks};
use poolpilot::config::Zone;
use serde_json::{Value, json};

/// Two simulators, `gva` (ch-gva-2) and `fra` (de-fra-1).
async fn two_zones(gva_size: u64, fra_size: u64) -> (common::TestSim, common::TestSim) {
    let gva = common::start_in(Zone::ChGva2, gva_size, common::quick()).await;
    let fra = common::start_in(Zone::DeFra1, fra_size, common::quick()).await;
    (gva, fra)
}

fn endpoints(gva: &common::TestSim, fra: &common::TestSim) -> String {
    format!(
        "ch-gva-2={},de-fra-1={}",
        gva.running.endpoint(),
        fra.running.endpoint()
    )
}

fn size(sim: &common::TestSim) -> u64 {
    sim.sim().with_state(|s| s.pools_view()[0].size)
}

/// The reference Alertmanager body with one firing alert per entry of `labels` (each laid over
/// the reference alert's labels).
fn alerts(labels: &[Value]) -> Value {
    let path = format!(
        "{}/reference/alertmanager-webhook.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut body: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let alert = body["alerts"][0].clone();
    body["alerts"] = labels
        .iter()
        .map(|over| {
            let mut a = alert.clone();
            for (k, v) in over.as_object().unwrap() {
                a["labels"][k] = v.clone();
            }
            a
        })
        .collect();
    body
}

impl Scaler {
    /// `poolpilot autoscaler --pool gva=ch-gva-2:ID --pool fra=de-fra-1:ID` with `config`.
    async fn start(gva: &common::TestSim, fra: &common::TestSim, config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("steps.toml");
        std::fs::write(
            &policy,
            "[policy]\nname = \"steps\"\nmin = 1\nmax = 10\n\n[[check]]\nstrategy = \"webhook-step\"\n",
        )
        .unwrap();
        let config = config.replace("POLICY", &policy.display().to_string());
        let config_path = dir.path().join("autoscaler.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = base_command();
        cmd.args(["autoscaler", "--interval", "1s", "--api-retries", "2"])
            .arg("--config")
            .arg(&config_path)
            .arg("--pool")
            .arg(format!("gva=ch-gva-2:{}", gva.pool))
            .arg("--pool")
            .arg(format!("fra=de-fra-1:{}", fra.pool))
            .env("EXOSCALE_API_ENDPOINT", endpoints(gva, fra))
            .env("EXOSCALE_API_KEY", common::KEY)
            .env("EXOSCALE_API_SECRET", common::SECRET);
        Self::spawn(cmd, dir).await
    }

    async fn decisions(&self, path: &str) -> Vec<Value> {
        self.decisions_at(path).await
    }

    /// Waits for a decision of `pool` satisfying `pred`.
    async fn wait_decision(&self, pool: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_decision_at(&format!("/v1/decisions/{pool}"), 0, pred)
            .await
    }

    async fn metrics(&self) -> String {
        let r = self.http.get(format!("{}/metrics", self.base)).send().await;
        r.unwrap().text().await.unwrap()
    }
}

fn scaled(from: u64, to: u64) -> impl Fn(&Value) -> bool {
    move |d| d["outcome"] == "scaled" && d["current"] == from && d["desired"] == to
}

/// The intents' `up` counts of a pool's decisions that had any.
fn ups(decisions: &[Value]) -> Vec<u64> {
    decisions
        .iter()
        .filter(|d| d["intents"]["up"].as_u64().unwrap_or(0) > 0)
        .map(|d| d["intents"]["up"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn two_pools_in_two_zones_scale_each_on_its_own() {
    let (gva, fra) = two_zones(1, 2).await;
    // gva: the shared bounds and the course's rule; fra: its own bounds and its own policy.
    let s = Scaler::start(
        &gva,
        &fra,
        "[autoscaler]\nmin = 1\nmax = 3\n[autoscaler.pools.fra]\nmin = 2\nmax = 4\npolicy = \"POLICY\"\n",
    )
    .await;
    let up = json!({"scale": "up"});
    let one_up = || alerts(std::slice::from_ref(&up));

    // /webhook/fra scales fra only.
    let (status, body) = s.post("/webhook/fra", &one_up()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pool"]["name"], "fra", "{body}");
    assert_eq!(body["pool"]["max"], 4, "{body}");
    let d = s.wait_decision("fra", scaled(2, 3)).await;
    assert_eq!(d["pool"], "fra");
    assert_eq!(d["pool-id"], fra.pool.to_string());
    assert_eq!(
        d["strategy"], "policy steps",
        "fra decides with its own policy"
    );
    assert_eq!(d["bounds"], json!({"min": 2, "max": 4}));
    assert_eq!(size(&fra), 3);

    // Plain /webhook with two pools and no label saying which: 422, and nothing is recorded:
    // both loops tick twice more and neither pool changes.
    let (status, body) = s.post("/webhook", &alerts(&[up.clone(), up.clone()])).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("/webhook/NAME"),
        "{body}"
    );
    let (g, f) = (size(&gva), size(&fra));
    ticks(&gva, 2).await;
    ticks(&fra, 2).await;
    assert_eq!((size(&gva), size(&fra)), (g, f));
    assert_eq!((g, f), (1, 3));

    // Routed by label: `pool` (a name) for gva, `exoscale_instance_pool_id` for fra.
    let body = alerts(&[
        json!({"scale": "up", "pool": "gva"}),
        json!({"scale": "up", "exoscale_instance_pool_id": fra.pool.to_string()}),
    ]);
    let (status, answer) = s.post("/webhook", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pools"].as_array().unwrap().len(), 2, "{answer}");
    let d = s.wait_decision("gva", scaled(1, 2)).await;
    assert_eq!(d["strategy"], "webhook-step", "gva keeps the course's rule");
    assert_eq!(d["bounds"], json!({"min": 1, "max": 3}));
    s.wait_decision("fra", scaled(3, 4)).await;
    // Every recorded intent is one of the routed alerts: the 422 left none behind.
    assert_eq!(ups(&s.decisions("/v1/decisions/gva").await), [1]);
    assert_eq!(ups(&s.decisions("/v1/decisions/fra").await), [1, 1]);
    // A label naming no pool is refused too.
    let (status, _) = s
        .post(
            "/webhook",
            &alerts(&[json!({"scale": "up", "pool": "vie"})]),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = s.post("/webhook/vie", &one_up()).await;
    assert_eq!(status, 404);

    // fra's API fails: its ticks end in errors, and gva still decides and scales meanwhile.
    // (First fra's last scale settles: its tick reads the pool again once the operation is done.)
    ticks(&fra, 1).await;
    let r = reqwest::Client::new()
        .post(fra.admin("/faults"))
        .json(&json!({"status": 500, "count": 100000}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    s.post("/webhook/fra", &one_up()).await;
    s.wait_decision("fra", |d| d["outcome"] == "error").await;
    let (status, _) = s.post("/webhook/gva", &one_up()).await;
    assert_eq!(status, 200);
    s.wait_decision("gva", scaled(2, 3)).await;
    assert_eq!(size(&gva), 3);

    // Every family carries the pool.
    let text = s.metrics().await;
    for series in [
        "poolpilot_autoscaler_pool_size{pool=\"gva\"} 3",
        "poolpilot_autoscaler_max_size{pool=\"gva\"} 3",
        "poolpilot_autoscaler_max_size{pool=\"fra\"} 4",
        "poolpilot_autoscaler_min_size{pool=\"fra\"} 2",
        "poolpilot_autoscaler_decisions_total{pool=\"fra\",direction=\"up\",outcome=\"scaled\"} 2",
        "poolpilot_autoscaler_decisions_total{pool=\"gva\",direction=\"up\",outcome=\"scaled\"} 2",
        "poolpilot_autoscaler_webhook_requests_total{pool=\"\",route=\"/webhook\",format=\"alertmanager\",result=\"no_pool\"} 2",
    ] {
        assert!(text.contains(series), "missing {series}:\n{text}");
    }
    assert!(
        text.contains("poolpilot_autoscaler_target_errors_total{pool=\"fra\""),
        "{text}"
    );
    assert!(
        !text.contains("poolpilot_autoscaler_target_errors_total{pool=\"gva\""),
        "{text}"
    );
    common::promtool_accepts(&text);
    // The JSON log's decisions name their pool and its id.
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"decision\"") && l.contains("\"pool\":\"gva\""))
        .unwrap_or_else(|| panic!("no decision line for gva:\n{log}"));
    assert!(line.contains(&gva.pool.to_string()), "{line}");
}

#[tokio::test]
async fn one_pool_keeps_plain_webhook_and_the_default_name() {
    let (gva, _fra) = two_zones(1, 1).await;
    let port = common::free_port();
    let mut child = base_command()
        .args(["autoscaler", "--interval", "1s", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("EXOSCALE_API_ENDPOINT", gva.running.endpoint())
        .env("EXOSCALE_API_KEY", common::KEY)
        .env("EXOSCALE_API_SECRET", common::SECRET)
        .env("EXOSCALE_INSTANCEPOOL_ID", gva.pool.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let answer = loop {
        let r = http
            .post(format!("{base}/webhook"))
            .json(&alerts(&[json!({"scale": "up"})]))
            .send()
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status(), 200);
            break r.json::<Value>().await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer["pool"]["name"], "default", "{answer}");
    let started = Instant::now();
    while size(&gva) != 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "never scaled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d: Value = http
        .get(format!("{base}/v1/decisions/default"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d[0]["pool"], "default", "{d}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_pools_exit_64_naming_pool_before_binding() {
    let id = "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
    let other = "5c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
    let port = common::free_port().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--pool".into(), "Gva=ch-gva-2:x".into()], "`pool`"),
        (vec!["--pool".into(), format!("mars-1:{id}")], "`pool`"),
        (vec!["--pool".into(), format!("a={id},b={id}")], "`pool`"),
        (vec!["--pool".into(), format!("a={id},a:{other}")], "`pool`"),
    ];
    // Two pools both named after their zone: the autoscaler needs the names (discovery not).
    let names_clash = (
        vec!["--pool".into(), format!("ch-gva-2:{id},ch-gva-2:{other}")],
        "`pool`",
    );
    for cmd in ["autoscaler", "discovery"] {
        let mut cases = cases.clone();
        if cmd == "autoscaler" {
            cases.push(names_clash.clone());
        }
        common::each_exits_64_naming_the_field(
            cases.iter().map(|(a, f)| (a.clone(), *f)),
            |args| {
                let listen = if cmd == "autoscaler" {
                    "--listen"
                } else {
                    "--metrics-listen"
                };
                base_command()
                    .arg(cmd)
                    .args(args)
                    .args([listen, &format!("127.0.0.1:{port}")])
                    .env("EXOSCALE_API_KEY", common::KEY)
                    .env("EXOSCALE_API_SECRET", common::SECRET)
                    .output()
                    .unwrap()
            },
            common::stderr,
        );
    }
    // A table for a pool --pool does not give.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("a.toml");
    std::fs::write(&config, "[autoscaler.pools.fra]\nmax = 3\n").unwrap();
    let o = base_command()
        .args(["autoscaler", "--config"])
        .arg(&config)
        .args(["--pool", &format!("gva=ch-gva-2:{id}")])
        .env("EXOSCALE_API_KEY", common::KEY)
        .env("EXOSCALE_API_SECRET", common::SECRET)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("autoscaler.pools.fra"),
        "{}",
        common::stderr(&o)
    );
    // Nothing was bound: the port is still free.
    std::net::TcpListener::bind(format!("127.0.0.1:{port}")).expect("the port was never bound");
}

#[tokio::test]
async fn discovery_writes_both_zones_pools_to_one_file() {
    let (gva, fra) = two_zones(2, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sd").join("config.json");
    let mut child = base_command()
        .args(["discovery", "--interval", "1s", "--metrics-listen"])
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--output")
        .arg(&out)
        .env(
            "EXOSCALE_INSTANCEPOOL_ID",
            format!("ch-gva-2:{},fra=de-fra-1:{}", gva.pool, fra.pool),
        )
        .env("EXOSCALE_API_ENDPOINT", endpoints(&gva, &fra))
        .env("EXOSCALE_API_KEY", common::KEY)
        .env("EXOSCALE_API_SECRET", common::SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let groups: Vec<Value> = loop {
        if let Ok(bytes) = std::fs::read(&out) {
            let groups: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
            if groups.len() == 3 {
                break groups;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never wrote 3 targets"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut seen: Vec<(String, String)> = groups
        .iter()
        .map(|g| {
            let l = &g["labels"];
            assert_eq!(l["exoscale_target_name"], "node", "{g}");
            (
                l["exoscale_instance_pool_id"].as_str().unwrap().to_owned(),
                l["exoscale_zone"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![
        (gva.pool.to_string(), "ch-gva-2".to_owned()),
        (gva.pool.to_string(), "ch-gva-2".to_owned()),
        (fra.pool.to_string(), "de-fra-1".to_owned()),
    ];
    want.sort();
    assert_eq!(seen, want);
}
