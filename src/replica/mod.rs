//! `poolpilot replica`: the sidecar of a Redis read-replica pool member.
//!
//! A replica pool member runs `redis-server` as a replica of the primary and this sidecar beside
//! it, on the port the app uses (8080): the load balancer's health check and the autoscaler's
//! drain need no change for this kind of member.
//!
//! | route | answer |
//! |---|---|
//! | `/health` | `OK` when the local Redis is a replica in sync with its primary, else 503 and why |
//! | `/admin/drain` | the drain switch ([`crate::app::drain`]): drained, `/health` answers 503 |
//! | `/metrics` | the replication state and the replica's load (commands per second), read from `INFO` at each scrape |
//!
//! **In sync** means `INFO replication` says `role:slave`, `master_link_status:up`,
//! `master_sync_in_progress:0`, and `master_last_io_seconds_ago` at most `max-last-io`. A new
//! replica is out of the load balancer's rotation until its first full sync has finished and its
//! link is up; one that loses its primary leaves the rotation at the next health check.
//!
//! **How stale a read can be.** Replication is asynchronous: a replica in rotation answers with
//! the primary's data as of its replication lag (milliseconds on a LAN). The members' Redis runs
//! with `replica-serve-stale-data no`, so a replica whose link is down answers reads with an
//! error instead of old data, whatever the load balancer thinks; the link is declared down after
//! `repl-timeout`. So a read is never older than `repl-timeout` (the local mode sets 5 s), and
//! during an initial sync a replica serves nothing at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::app::drain::{DRAINING_BODY, Drain};
use crate::exoscale::Secret;
use crate::telemetry::metrics;

/// What the sidecar needs.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub listen: SocketAddr,
    /// The local replica (`redis://127.0.0.1:6379` on a member).
    pub redis: String,
    /// The longest silence from the primary a replica in sync may show.
    pub max_last_io: Duration,
    /// How long one `INFO` may take.
    pub timeout: Duration,
    pub drain_token: Option<Secret>,
}

/// What `INFO replication` says, the parts the health check reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replication {
    pub role: String,
    pub link_up: bool,
    pub sync_in_progress: bool,
    pub last_io_seconds: Option<i64>,
    pub offset: Option<i64>,
    /// `instantaneous_ops_per_sec` (INFO stats): Redis' own rate of commands, over its last
    /// seconds: the replica's load, what the autoscaler tracks per member.
    pub ops_per_second: Option<i64>,
}

impl Replication {
    /// Parses the text of `INFO replication stats` (`key:value` lines, `#` sections).
    pub fn parse(info: &str) -> Self {
        let mut r = Replication::default();
        for line in info.lines() {
            let Some((k, v)) = line.trim().split_once(':') else {
                continue;
            };
            match k {
                "role" => r.role = v.to_owned(),
                "master_link_status" => r.link_up = v == "up",
                "master_sync_in_progress" => r.sync_in_progress = v == "1",
                "master_last_io_seconds_ago" => r.last_io_seconds = v.parse().ok(),
                "slave_repl_offset" => r.offset = v.parse().ok(),
                "instantaneous_ops_per_sec" => r.ops_per_second = v.parse().ok(),
                _ => {}
            }
        }
        r
    }

    /// `None` when in sync, else why not.
    pub fn not_in_sync(&self, max_last_io: Duration) -> Option<String> {
        if self.role != "slave" {
            return Some(format!("not a replica (role {:?})", self.role));
        }
        if self.sync_in_progress {
            return Some("initial sync in progress".into());
        }
        if !self.link_up {
            return Some("link to the primary is down".into());
        }
        match self.last_io_seconds {
            Some(s) if s >= 0 && s as u64 <= max_last_io.as_secs() => None,
            Some(s) => Some(format!("no word from the primary for {s} s")),
            None => Some("no master_last_io_seconds_ago in INFO".into()),
        }
    }
}

struct Metrics {
    in_sync: Gauge,
    link_up: Gauge,
    sync_in_progress: Gauge,
    last_io: Gauge,
    offset: Gauge,
    ops: Gauge,
}

struct ReplicaState {
    cfg: ReplicaConfig,
    redis: redis::Client,
    drain: Arc<Drain>,
    metrics: Metrics,
    registry: Arc<Registry>,
}

/// The sidecar's router. `Err` when the Redis URL does not parse.
pub fn router(cfg: ReplicaConfig) -> Result<Router, redis::RedisError> {
    let redis = redis::Client::open(cfg.redis.as_str())?;
    let mut registry = metrics::registry("replica");
    let m = Metrics {
        in_sync: Gauge::default(),
        link_up: Gauge::default(),
        sync_in_progress: Gauge::default(),
        last_io: Gauge::default(),
        offset: Gauge::default(),
        ops: Gauge::default(),
    };
    let drain = Drain::new(cfg.drain_token.clone());
    for (name, help, g) in [
        (
            "poolpilot_replica_in_sync",
            "1 when the last health check found the replica in sync",
            &m.in_sync,
        ),
        (
            "poolpilot_replica_link_up",
            "1 when the replica's link to its primary is up",
            &m.link_up,
        ),
        (
            "poolpilot_replica_sync_in_progress",
            "1 during a full sync from the primary",
            &m.sync_in_progress,
        ),
        (
            "poolpilot_replica_last_io_seconds",
            "Seconds since the replica last heard from its primary (-1: unknown)",
            &m.last_io,
        ),
        (
            "poolpilot_replica_offset_bytes",
            "The replication offset the replica has reached",
            &m.offset,
        ),
        (
            "poolpilot_replica_redis_ops_per_second",
            "Commands per second the replica's Redis serves (its instantaneous_ops_per_sec)",
            &m.ops,
        ),
    ] {
        registry.register(name, help, g.clone());
    }
    registry.register(
        "poolpilot_replica_draining",
        "1 while drained: /health fails so the load balancer sends nothing new",
        drain.gauge(),
    );
    let state = Arc::new(ReplicaState {
        cfg,
        redis,
        drain: drain.clone(),
        metrics: m,
        registry: Arc::new(registry),
    });
    Ok(Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .merge(drain.routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .with_state(state))
}

/// Reads `INFO replication stats` from the local Redis, within the timeout.
async fn read(s: &ReplicaState) -> Result<Replication, String> {
    let t = s.cfg.timeout;
    let info = tokio::time::timeout(t, async {
        let mut c = s.redis.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("replication")
            .arg("stats")
            .query_async::<String>(&mut c)
            .await
    })
    .await
    .map_err(|_| format!("redis did not answer within {t:?}"))?
    .map_err(|e| format!("redis: {e}"))?;
    Ok(Replication::parse(&info))
}

async fn refresh(s: &ReplicaState) -> Result<Replication, String> {
    let r = read(s).await;
    let m = &s.metrics;
    match &r {
        Ok(rep) => {
            metrics::flag(&m.link_up, rep.link_up);
            metrics::flag(&m.sync_in_progress, rep.sync_in_progress);
            m.last_io.set(rep.last_io_seconds.unwrap_or(-1));
            m.offset.set(rep.offset.unwrap_or(0));
            m.ops.set(rep.ops_per_second.unwrap_or(0));
            metrics::flag(&m.in_sync, rep.not_in_sync(s.cfg.max_last_io).is_none());
        }
        Err(_) => {
            metrics::flag(&m.link_up, false);
            metrics::flag(&m.in_sync, false);
            m.last_io.set(-1);
            m.ops.set(0);
        }
    }
    r
}

async fn health(State(s): State<Arc<ReplicaState>>) -> Response {
    let r = refresh(&s).await;
    if s.drain.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, DRAINING_BODY).into_response();
    }
    match r.map(|r| r.not_in_sync(s.cfg.max_last_io)) {
        Ok(None) => crate::app::HEALTH_BODY.into_response(),
        Ok(Some(why)) | Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics_text(State(s): State<Arc<ReplicaState>>) -> Response {
    let _ = refresh(&s).await;
    metrics::handler(State(s.registry.clone())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN_SYNC: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:1\r\nmaster_sync_in_progress:0\r\nslave_read_repl_offset:1234\r\nslave_repl_offset:1234\r\n# Stats\r\ninstantaneous_ops_per_sec:4321\r\n";

    #[test]
    fn a_replica_with_its_link_up_and_recent_word_is_in_sync() {
        let r = Replication::parse(IN_SYNC);
        assert_eq!(r.role, "slave");
        assert!(r.link_up);
        assert_eq!(r.offset, Some(1234));
        assert_eq!(r.ops_per_second, Some(4321));
        assert_eq!(r.not_in_sync(Duration::from_secs(2)), None);
    }

    #[test]
    fn every_way_out_of_sync_is_named() {
        let s = Duration::from_secs(2);
        let syncing = IN_SYNC.replace("master_sync_in_progress:0", "master_sync_in_progress:1");
        assert_eq!(
            Replication::parse(&syncing).not_in_sync(s).as_deref(),
            Some("initial sync in progress")
        );
        let down = IN_SYNC.replace("link_status:up", "link_status:down");
        assert_eq!(
            Replication::parse(&down).not_in_sync(s).as_deref(),
            Some("link to the primary is down")
        );
        let quiet = IN_SYNC.replace("ago:1", "ago:3");
        assert_eq!(
            Replication::parse(&quiet).not_in_sync(s).as_deref(),
            Some("no word from the primary for 3 s")
        );
        let primary = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n";
        assert!(
            Replication::parse(primary)
                .not_in_sync(s)
                .unwrap()
                .contains("not a replica")
        );
    }
}
