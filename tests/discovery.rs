//! `poolpilot discovery`, the real binary against the simulator, and the real Prometheus reading
//! what it writes.

mod common;

use common::base_command;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use poolpilot::discovery::{TargetGroup, file_sd};

/// A `poolpilot discovery` child writing into its own temp directory.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    metrics_port: u16,
}

impl Agent {
    fn start(sim: &common::TestSim, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let metrics_port = common::free_port();
        let output = dir.path().join("sd/config.json");
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let mut c = base_command();
        c.args(["discovery", "--interval", "1s", "--output"])
            .arg(&output)
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(extra)
            .env("EXOSCALE_API_ENDPOINT", sim.running.endpoint())
            .env("EXOSCALE_API_KEY", common::KEY)
            .env("EXOSCALE_API_SECRET", common::SECRET)
            .env("EXOSCALE_INSTANCEPOOL_ID", sim.pool.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Self {
            child: c.spawn().unwrap(),
            dir,
            metrics_port,
        }
    }

    fn output(&self) -> PathBuf {
        self.dir.path().join("sd/config.json")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|v| v.strip_prefix(' '))
                .map(|v| v.parse().unwrap())
        })
    }

    fn terminate(&mut self) -> (i32, Duration) {
        common::sigterm(&mut self.child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> Option<Vec<TargetGroup>> {
    let bytes = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).expect("the file always parses"))
}

fn addresses(groups: &[TargetGroup]) -> BTreeSet<String> {
    groups.iter().flat_map(|g| g.targets.clone()).collect()
}

/// The simulator's members with an address, as `ip:port`.
async fn member_addresses(sim: &common::TestSim, port: u16) -> BTreeSet<String> {
    sim.client()
        .list_pool_members(sim.pool)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|i| i.public_ip.map(|ip| format!("{ip}:{port}")))
        .collect()
}

async fn set_size(sim: &common::TestSim, size: u64) {
    let r = reqwest::Client::new()
        .put(sim.admin(&format!("/pool/{}/size", sim.pool)))
        .json(&serde_json::json!({ "size": size }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Polls until `pred` holds for the file, at most `limit`; returns how long it took.
async fn wait_file(
    path: &Path,
    limit: Duration,
    pred: impl Fn(&[TargetGroup]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if read(path).is_some_and(|g| pred(&g)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "file did not reach the expected state within {limit:?}: {:?}",
            read(path).map(|g| addresses(&g))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One interval (1 s) plus room for a loaded CI machine to schedule the agent.
const ONE_INTERVAL: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn membership_changes_show_up_within_one_interval_and_empty_pools_write_empty_lists() {
    let sim = common::start(2, common::quick()).await;
    let agent = Agent::start(&sim, &["--target-port", "node=9100,app=8080"]);
    let expected = member_addresses(&sim, 9100).await;
    assert_eq!(expected.len(), 2);
    wait_file(&agent.output(), Duration::from_secs(10), |g| {
        g.len() == 4 && expected.iter().all(|a| addresses(g).contains(a))
    })
    .await;
    let groups = read(&agent.output()).unwrap();
    let apps = groups
        .iter()
        .filter(|g| g.labels["exoscale_target_name"] == "app")
        .count();
    assert_eq!(apps, 2);
    for g in &groups {
        assert_eq!(g.labels["exoscale_instance_pool_id"], sim.pool.to_string());
        assert_eq!(g.labels["exoscale_zone"], "ch-gva-2");
        assert!(g.labels.contains_key("exoscale_instance_id"));
        assert!(g.labels.contains_key("exoscale_instance_state"));
    }

    // Each change is complete in the API after the operation delay (100 ms): the members that
    // leave are `destroying` until then, and listed as such.
    for size in [5u64, 1, 0] {
        set_size(&sim, size).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let nodes = member_addresses(&sim, 9100).await;
        let apps = member_addresses(&sim, 8080).await;
        assert_eq!(nodes.len() as u64, size);
        let expected: BTreeSet<String> = nodes.union(&apps).cloned().collect();
        wait_file(&agent.output(), ONE_INTERVAL, |g| {
            g.len() as u64 == 2 * size && addresses(g) == expected
        })
        .await;
    }
    assert_eq!(std::fs::read(agent.output()).unwrap(), b"[]\n");
}

#[tokio::test]
async fn a_storm_of_5xx_keeps_the_last_good_file_and_is_logged_once() {
    let sim = common::start(2, common::quick()).await;
    let mut agent = Agent::start(&sim, &["--api-retries", "0"]);
    wait_file(&agent.output(), Duration::from_secs(10), |g| g.len() == 2).await;
    let good = std::fs::read(agent.output()).unwrap();

    // Every API call fails from now on; meanwhile the pool really changes.
    let r = reqwest::Client::new()
        .post(sim.admin("/faults"))
        .json(&serde_json::json!({"status": 503, "count": 100000}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    set_size(&sim, 4).await;
    let started = Instant::now();
    while agent
        .metric("poolpilot_discovery_refreshes_total{result=\"api_error\"}")
        .await
        .unwrap_or(0.0)
        < 3.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no failures counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read(agent.output()).unwrap(),
        good,
        "the file changed during the storm"
    );
    assert!(
        agent
            .metric("poolpilot_discovery_consecutive_failures")
            .await
            .unwrap()
            >= 3.0
    );
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", agent.metrics_port))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "one minute of failures is tolerated");
    let warnings = agent
        .log()
        .lines()
        .filter(|l| l.contains("keeping the last good file"))
        .count();
    assert_eq!(warnings, 1, "one warning per streak:\n{}", agent.log());

    // The storm ends: the file catches up, and the recovery is logged.
    reqwest::Client::new()
        .delete(sim.admin("/faults"))
        .send()
        .await
        .unwrap();
    let grown = member_addresses(&sim, 9100).await;
    wait_file(&agent.output(), ONE_INTERVAL, |g| addresses(g) == grown).await;
    // The recovery is logged just after the write that the file shows.
    let started = Instant::now();
    while !agent.log().contains("discovery recovered") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the recovery was not logged:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, _) = agent.terminate();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn sigterm_exits_0_even_while_a_refresh_waits_out_retries() {
    let sim = common::start(1, common::quick()).await;
    let mut agent = Agent::start(&sim, &[]);
    wait_file(&agent.output(), Duration::from_secs(10), |g| g.len() == 1).await;
    // 503 with Retry-After: 30 puts the next refresh to sleep inside the client's retry loop.
    reqwest::Client::new()
        .post(sim.admin("/faults"))
        .json(&serde_json::json!({"status": 503, "count": 100, "retry-after": 30}))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, took) = agent.terminate();
    assert_eq!(code, 0, "{}", agent.log());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(read(&agent.output()).unwrap().len(), 1);
}

#[tokio::test]
async fn the_course_environment_alone_is_enough() {
    let sim = common::start(2, common::quick()).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("config.json");
    let mut child = base_command()
        .args(["discovery", "--interval", "1s", "--output"])
        .arg(&output)
        .args([
            "--metrics-listen",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .env("EXOSCALE_API_ENDPOINT", sim.running.endpoint())
        .env("EXOSCALE_KEY", common::KEY)
        .env("EXOSCALE_SECRET", common::SECRET)
        .env("EXOSCALE_ZONE", "ch-gva-2")
        .env("EXOSCALE_INSTANCEPOOL_ID", sim.pool.to_string())
        .env("TARGET_PORT", "8080")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let expected = member_addresses(&sim, 8080).await;
    wait_file(&output, Duration::from_secs(10), |g| {
        addresses(g) == expected
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn metrics_pass_promtool_and_healthz_answers() {
    let sim = common::start(3, common::quick()).await;
    let agent = Agent::start(&sim, &[]);
    wait_file(&agent.output(), Duration::from_secs(10), |g| g.len() == 3).await;
    let text = agent.metrics().await;
    for name in [
        "poolpilot_discovery_targets 3",
        "poolpilot_discovery_refreshes_total{result=\"success\"}",
        "poolpilot_discovery_file_writes_total",
        "poolpilot_discovery_last_success_timestamp_seconds",
        "poolpilot_exoscale_api_request_duration_seconds_count{operation=\"list-instances\"}",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(name), "missing {name}:\n{text}");
    }
    common::promtool_accepts(&text);
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", agent.metrics_port))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn invalid_configuration_exits_64_before_binding() {
    // The metrics port is taken: a configuration error must win over the bind error.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let pool = "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
    let twice = format!("{pool},{pool}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "`pool`"),
        (vec!["--pool", "nope"], "`pool`"),
        (vec!["--pool", &twice], "listed twice"),
        (
            vec!["--pool", pool, "--target-port", "node=99999"],
            "--target-port",
        ),
        (
            vec!["--pool", pool, "--target-port", "9100,9100"],
            "target-port",
        ),
        (
            vec!["--pool", pool, "--output", "/tmp/x/targets.txt"],
            "output",
        ),
        (vec!["--pool", pool, "--interval", "10"], "--interval"),
        (vec!["--pool", pool, "--interval", "50ms"], "interval"),
        (vec!["--pool", pool, "--api-retries", "99"], "api-retries"),
    ];
    common::each_exits_64_naming_the_field(
        cases,
        |args| {
            base_command()
                .arg("discovery")
                .args(args)
                .args(["--metrics-listen", &listen])
                .env("EXOSCALE_KEY", "k")
                .env("EXOSCALE_SECRET", "s")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        },
        common::all_output,
    );
    // Without credentials, with everything else right.
    let o = base_command()
        .args(["discovery", "--pool", pool, "--metrics-listen", &listen])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("EXOSCALE_API_KEY"));
}

/// Readers polling the file during 1,000 rewrites of different sizes never see a partial or
/// unparsable file: every read is exactly one of the contents written.
#[test]
fn readers_never_see_a_partial_file_through_1000_rewrites() {
    use poolpilot::config::Zone;
    use poolpilot::discovery::{DEFAULT_TARGET, Member, render};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let pool = uuid::Uuid::from_u128(1);
    let contents: Vec<Vec<u8>> = (0..50u32)
        .map(|n| {
            let members: Vec<Member> = (0..n * 7)
                .map(|i| Member {
                    pool,
                    zone: Zone::DEFAULT,
                    instance: serde_json::from_value(serde_json::json!({
                        "id": uuid::Uuid::from_u128(i as u128),
                        "name": format!("member-{i}"),
                        "state": "running",
                        "public-ip": format!("198.51.100.{}", i % 250 + 1),
                    }))
                    .unwrap(),
                })
                .collect();
            file_sd::to_bytes(&render(&members, &[DEFAULT_TARGET]))
        })
        .collect();
    let contents = Arc::new(contents);
    file_sd::write_atomic(&path, &contents[0]).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    // One reader as the issue asks (every 10 ms), one as fast as it can.
    for pause in [Duration::from_millis(10), Duration::ZERO] {
        let (path, done, reads, contents) =
            (path.clone(), done.clone(), reads.clone(), contents.clone());
        readers.push(std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let bytes = std::fs::read(&path).expect("the file always exists");
                let parsed: Vec<TargetGroup> =
                    serde_json::from_slice(&bytes).expect("the file always parses");
                assert!(
                    contents.contains(&bytes),
                    "read {} bytes ({} groups) that were never written whole",
                    bytes.len(),
                    parsed.len()
                );
                reads.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(pause);
            }
        }));
    }
    for i in 1..=1000 {
        let w = file_sd::write_if_changed(&path, &contents[i % contents.len()]).unwrap();
        assert_eq!(w, file_sd::Written::Replaced);
        std::thread::sleep(Duration::from_millis(2));
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader saw a partial file");
    }
    assert!(reads.load(Ordering::Relaxed) >= 100, "readers barely ran");
}

/// Debian's Prometheus, with a file_sd job on the agent's directory, discovers exactly the
/// simulator's members and follows a scale from 1 to 4. The simulated addresses
/// (198.51.100.0/24) are never contacted: a relabel rule keeps each one as `instance` and sends
/// the scrape to the agent's own metrics port on 127.0.0.1.
#[tokio::test]
async fn prometheus_discovers_the_members_and_follows_a_scale_from_1_to_4() {
    let sim = common::start(1, common::quick()).await;
    let agent = Agent::start(&sim, &[]);
    wait_file(&agent.output(), Duration::from_secs(10), |g| g.len() == 1).await;

    let prom_dir = agent.dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pool
    file_sd_configs:
      - files: ['{sd}/*.json']
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__address__]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{port}
"#,
        sd = agent.output().parent().unwrap().display(),
        port = agent.metrics_port
    );
    let config_path = prom_dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config_path)
        .output()
        .expect("promtool (Debian's prometheus package) must be installed");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let port = common::free_port();
    let mut prom = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package) must be installed"),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");

    let discovered = |api: String| async move {
        let Ok(r) = reqwest::get(format!("{api}/targets?state=active")).await else {
            return None;
        };
        let v: serde_json::Value = r.json().await.ok()?;
        let set: BTreeSet<String> = v["data"]["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["labels"]["job"] == "pool")
            .map(|t| {
                assert!(
                    t["discoveredLabels"]["exoscale_instance_id"].is_string(),
                    "labels reach Prometheus: {t}"
                );
                t["labels"]["instance"].as_str().unwrap().to_owned()
            })
            .collect();
        Some(set)
    };
    let up_count = |api: String| async move {
        let mut url = url::Url::parse(&format!("{api}/query")).unwrap();
        url.query_pairs_mut()
            .append_pair("query", "count(up{job=\"pool\"} == 1)");
        let r = reqwest::get(url).await.ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
    };

    for size in [1u64, 4] {
        if size != 1 {
            set_size(&sim, size).await;
        }
        let expected = member_addresses(&sim, 9100).await;
        assert_eq!(expected.len() as u64, size);
        let started = Instant::now();
        loop {
            let found = discovered(api.clone()).await;
            let up = up_count(api.clone()).await;
            if found.as_ref() == Some(&expected) && up == Some(size) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Prometheus sees {found:?} (up: {up:?}), the pool has {expected:?}"
            );
            if let Some(st) = prom.0.try_wait().unwrap() {
                panic!("prometheus exited: {st}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
