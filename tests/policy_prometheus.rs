//! The Prometheus source against Debian's Prometheus scraping a node_exporter stand-in on
//! 127.0.0.1: per-member CPU with sample timestamps, range queries, and errors.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use poolpilot::autoscaler::source::prometheus::{MEMBER_CPU, Prometheus, QueryError, newest_age};

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Prometheus on a free port of 127.0.0.1 with this configuration (its data in `dir`),
/// stopped when the guard is dropped.
fn prometheus(dir: &std::path::Path, cfg: &std::path::Path, extra: &[String]) -> (KillOnDrop, u16) {
    let port = common::free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra)
        .arg("--log.level=error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's prometheus package) must be installed");
    (KillOnDrop(child), port)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_cpu_comes_with_fresh_timestamps_and_errors_are_told() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            poolpilot::local::node::router(poolpilot::app::burn::Burner::new(1.0)),
        )
        .await
    });

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{node}']\n"
        ),
    )
    .unwrap();
    let (_prom, port) = prometheus(dir.path(), &cfg, &[]);
    let p = Prometheus::new(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    );
    let started = Instant::now();
    let samples = loop {
        if let Ok(s) = p.instant(MEMBER_CPU).await
            && !s.is_empty()
        {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no sample from Prometheus"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].instance, node.to_string());
    assert!((0.0..=1.0).contains(&samples[0].value), "{samples:?}");
    let age = newest_age(&samples, now()).unwrap();
    assert!(age < Duration::from_secs(10), "the sample is {age:?} old");

    let t = now();
    let series = p
        .range(MEMBER_CPU, t - 5.0, t, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(series.len(), 1);
    assert!(
        series[0].windows(2).all(|w| w[0].at < w[1].at),
        "in time order"
    );

    match p.instant("sum(").await {
        Err(QueryError::Api { status, message }) => {
            assert_eq!(status, 400);
            assert!(message.contains("parse error"), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let gone = Prometheus::new(
        format!("http://127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap(),
        Duration::from_secs(1),
    );
    assert!(matches!(
        gone.instant("up").await,
        Err(QueryError::Transport { .. })
    ));
}

/// The monitor's Prometheus asks for a password (the web config Terraform writes: user
/// `prometheus`, a bcrypt hash): the source says so when it has none or the wrong one, and
/// queries with the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_behind_basic_auth_is_queried_with_the_password() {
    // bcrypt("poolpilot-test-prometheus", 6), as Terraform's bcrypt() computed it.
    const HASH: &str = "$2a$06$v4UDIllSIubsAfkFfa7VauV9XZYQ.3PxPKlIMTEPuvVCbKfBrCZDO";
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 15s\n").unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: '{HASH}'\n")).unwrap();
    let (_prom, port) = prometheus(
        dir.path(),
        &cfg,
        &[format!("--web.config.file={}", web.display())],
    );
    let base: url::Url = format!("http://127.0.0.1:{port}").parse().unwrap();
    let with = |password: Option<&str>| {
        let p = Prometheus::new(base.clone(), Duration::from_secs(2));
        match password {
            None => p,
            Some(pw) => p.with_basic_auth("prometheus".into(), poolpilot::config::Secret::new(pw)),
        }
    };
    // Wait for the listener (a refused connection is a transport error; anything else means up).
    let started = Instant::now();
    let first = loop {
        match with(None).instant("1").await {
            Err(QueryError::Transport { .. }) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "Prometheus did not start"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };
    match first {
        Err(QueryError::Api {
            status: 401,
            message,
        }) => {
            assert!(
                message.contains("POOLPILOT_PROMETHEUS_PASSWORD"),
                "{message}"
            )
        }
        other => panic!("expected a 401 without the password, got {other:?}"),
    }
    match with(Some("not-the-password")).instant("1").await {
        Err(QueryError::Api {
            status: 401,
            message,
        }) => {
            assert!(message.contains("refused"), "{message}")
        }
        other => panic!("expected a 401 with the wrong password, got {other:?}"),
    }
    let ok = with(Some("poolpilot-test-prometheus"))
        .instant("vector(1)")
        .await
        .expect("the right password is accepted");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].value, 1.0);
}
