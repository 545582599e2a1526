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
    let port = common::free_port();
    let _prom = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package) must be installed"),
    );
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
