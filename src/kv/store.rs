//! The Redis side of `poolpilot kv`: one connection to the primary, one to each replica address,
//! and every call bounded by the configured timeout.
//!
//! Writes (`SET`, `DEL`) are methods that only ever see the primary's connection; reads (`GET`,
//! `SCAN`) only the replicas'. Each connection is a `redis` `ConnectionManager`: one multiplexed
//! connection (many requests in flight on one socket, so no pool to size), made lazily on first use
//! and remade after an I/O error, so a Redis that is down at start-up or restarts later is picked
//! up without restarting the API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, FromRedisValue, RedisError, ServerErrorKind};

use crate::config::Secret;

/// Which side of the store a call went to (a metric label and part of every error).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum Side {
    primary,
    replica,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::primary => "primary",
            Side::replica => "replica",
        }
    }
}

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not reachable, timed out, or not ready (loading, no primary): the API answers 503.
    #[error("redis {} unavailable: {detail}", side.name())]
    Unavailable {
        side: Side,
        detail: String,
        /// The address (without credentials), for logs; not shown to clients.
        addr: String,
    },
    /// Redis answered with an error (e.g. `WRONGTYPE`, or `READONLY` when the primary URL points
    /// at a replica): the API answers 502.
    #[error("redis {} refused: {detail}", side.name())]
    Refused {
        side: Side,
        detail: String,
        addr: String,
    },
}

impl StoreError {
    pub fn side(&self) -> Side {
        match self {
            StoreError::Unavailable { side, .. } | StoreError::Refused { side, .. } => *side,
        }
    }

    /// The Redis address the call went to.
    pub fn addr(&self) -> &str {
        match self {
            StoreError::Unavailable { addr, .. } | StoreError::Refused { addr, .. } => addr,
        }
    }

    fn from_redis(side: Side, addr: &str, e: &RedisError) -> Self {
        let addr = addr.to_owned();
        let detail = e.to_string();
        match e.kind() {
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::TryAgain,
            ) => StoreError::Unavailable { side, detail, addr },
            ErrorKind::Server(_) | ErrorKind::UnexpectedReturnType => {
                StoreError::Refused { side, detail, addr }
            }
            _ => StoreError::Unavailable { side, detail, addr },
        }
    }
}

/// A validated Redis address: the URL (a secret: it may hold a password) and how it is shown.
#[derive(Clone, Debug)]
pub struct RedisUrl {
    url: Secret,
    shown: String,
}

impl RedisUrl {
    /// Parses `redis://[user[:password]@]host[:port][/db]`. The error says what is wrong without
    /// repeating the URL (it may hold a password).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let u = url::Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
        match u.scheme() {
            "redis" => {}
            "rediss" => return Err("uses TLS (rediss://), which this build does not speak".into()),
            s => return Err(format!("must be a redis:// URL, not {s}://")),
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("has no host")?;
        redis::Client::open(raw).map_err(|e| format!("is not a Redis URL ({e})"))?;
        let shown = format!("redis://{host}:{}{}", u.port().unwrap_or(6379), u.path());
        Ok(Self {
            url: Secret::new(raw),
            shown: shown.trim_end_matches('/').to_owned(),
        })
    }

    /// A comma-separated list of URLs (at least one).
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, String> {
        let parts: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err("is empty".into());
        }
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Self::parse(p).map_err(|e| {
                    if parts.len() > 1 {
                        format!("entry {}: {e}", i + 1)
                    } else {
                        e
                    }
                })
            })
            .collect()
    }

    /// The address without any credentials, for logs.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// One connection to one address, as a call uses it.
#[derive(Clone)]
struct Node {
    conn: ConnectionManager,
    shown: String,
}

/// A multiplexed connection that reconnects after an I/O error, made on first use.
fn manager(url: &RedisUrl, timeout: Duration) -> Result<ConnectionManager, String> {
    let client =
        redis::Client::open(url.url.expose()).map_err(|e| format!("{}: {e}", url.shown))?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // One quick retry of a failed connect; the caller's timeout bounds the whole call.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(100));
    ConnectionManager::new_lazy_with_config(client, cfg).map_err(|e| format!("{}: {e}", url.shown))
}

impl Node {
    fn new(url: &RedisUrl, timeout: Duration) -> Result<Self, String> {
        Ok(Self {
            conn: manager(url, timeout)?,
            shown: url.shown.clone(),
        })
    }
}

/// How reads use a replica address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaConns {
    /// Connections per address, used in turn.
    pub per_address: usize,
    /// Each is replaced after this long.
    pub max_age: Duration,
}

impl Default for ReplicaConns {
    fn default() -> Self {
        Self {
            per_address: 4,
            max_age: Duration::from_secs(30),
        }
    }
}

/// A replica address: several connections used in turn, each replaced when it gets old or
/// has failed. Behind a TCP load balancer (one address for a pool of replicas) a connection
/// stays with the replica it reached, so without replacement a new replica would get no reads
/// and a drained one would keep them until it is gone.
struct Replica {
    url: RedisUrl,
    timeout: Duration,
    max_age: Duration,
    slots: Vec<std::sync::Mutex<(Node, Instant)>>,
    next: AtomicUsize,
}

impl Replica {
    fn new(url: &RedisUrl, timeout: Duration, conns: ReplicaConns) -> Result<Self, String> {
        let slots = (0..conns.per_address.max(1))
            .map(|_| Node::new(url, timeout).map(|n| std::sync::Mutex::new((n, Instant::now()))))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            url: url.clone(),
            timeout,
            max_age: conns.max_age,
            slots,
            next: AtomicUsize::new(0),
        })
    }

    /// The next connection in turn; a new one when `fresh` or when it is past its age.
    fn pick(&self, fresh: bool) -> Node {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().expect("replica slot lock");
        if (fresh || slot.1.elapsed() >= self.max_age)
            && let Ok(n) = Node::new(&self.url, self.timeout)
        {
            *slot = (n, Instant::now());
        }
        slot.0.clone()
    }
}

/// The primary and the replica addresses.
pub struct Store {
    primary: Node,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    timeout: Duration,
}

/// At most this many keys in one `GET /items` answer.
pub const MAX_LISTED_KEYS: usize = 10_000;
/// `SCAN`'s `COUNT` hint per call.
const SCAN_COUNT: usize = 1000;

impl Store {
    /// No connection is made here: each is made on first use.
    pub fn new(
        primary: &RedisUrl,
        replicas: &[RedisUrl],
        timeout: Duration,
        conns: ReplicaConns,
    ) -> Result<Self, String> {
        Ok(Self {
            primary: Node::new(primary, timeout)?,
            replicas: replicas
                .iter()
                .map(|r| Replica::new(r, timeout, conns))
                .collect::<Result<_, _>>()?,
            next: AtomicUsize::new(0),
            timeout,
        })
    }

    /// The addresses, for logs: the primary, then the replicas.
    pub fn describe(&self) -> (String, Vec<String>) {
        (
            self.primary.shown.clone(),
            self.replicas.iter().map(|r| r.url.shown.clone()).collect(),
        )
    }

    async fn call<T: FromRedisValue>(
        &self,
        node: &Node,
        side: Side,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = node.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::from_redis(side, &node.shown, &e)),
            Err(_) => Err(StoreError::Unavailable {
                side,
                detail: format!("no answer within {} ms", self.timeout.as_millis()),
                addr: node.shown.clone(),
            }),
        }
    }

    /// Runs `op` on a replica: the next one in turn, then each other one while they are
    /// unavailable, then each once more on a new connection (reads are safe to repeat; behind a
    /// load balancer a new connection reaches a replica in rotation, when the old one's replica
    /// was drained and evicted). A refusal is returned at once.
    async fn on_replica<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(Node) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let n = self.replicas.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for fresh in [false, true] {
            for i in 0..n {
                match op(self.replicas[(first + i) % n].pick(fresh)).await {
                    Err(e @ StoreError::Unavailable { .. }) => last = Some(e),
                    other => return other,
                }
            }
        }
        Err(last.unwrap_or(StoreError::Unavailable {
            side: Side::replica,
            detail: "no replica configured".into(),
            addr: String::new(),
        }))
    }

    /// `SET id val` on the primary.
    pub async fn set(&self, id: &str, val: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(id).arg(val);
        self.call::<()>(&self.primary, Side::primary, &cmd).await
    }

    /// `DEL id` on the primary: whether the key existed.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(id);
        let n: u64 = self.call(&self.primary, Side::primary, &cmd).await?;
        Ok(n > 0)
    }

    /// `GET id` on a replica.
    pub async fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(id);
        let cmd = &cmd;
        self.on_replica(|node| async move { self.call(&node, Side::replica, cmd).await })
            .await
    }

    /// Every key of one replica by `SCAN` (never `KEYS`, which blocks Redis), sorted, at most
    /// [`MAX_LISTED_KEYS`]; `true` when there were more.
    pub async fn keys(&self) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        self.on_replica(|node| async move { self.scan(&node).await })
            .await
    }

    async fn scan(&self, node: &Node) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        let mut keys = std::collections::BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("COUNT").arg(SCAN_COUNT);
            let (next, batch): (u64, Vec<Vec<u8>>) = self.call(node, Side::replica, &cmd).await?;
            // SCAN may return a key twice; the set keeps one.
            keys.extend(batch);
            if keys.len() > MAX_LISTED_KEYS {
                return Ok((keys.into_iter().take(MAX_LISTED_KEYS).collect(), true));
            }
            if next == 0 {
                return Ok((keys.into_iter().collect(), false));
            }
            cursor = next;
        }
    }

    /// `PING` on the primary and on each replica address, all at once (so within one timeout):
    /// whether each answered.
    pub async fn ping(&self) -> (bool, Vec<bool>) {
        let cmd = redis::cmd("PING");
        let primary = self.call::<String>(&self.primary, Side::primary, &cmd);
        let replicas = futures_util::future::join_all(self.replicas.iter().map(|r| async {
            self.call::<String>(&r.pick(false), Side::replica, &cmd)
                .await
        }));
        let (primary, replicas) = tokio::join!(primary, replicas);
        (
            primary.is_ok(),
            replicas.iter().map(Result::is_ok).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_credentials() {
        let u = RedisUrl::parse("redis://:hunter2@10.0.0.5:6380/2").unwrap();
        assert_eq!(u.shown(), "redis://10.0.0.5:6380/2");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert_eq!(
            RedisUrl::parse("redis://cache").unwrap().shown(),
            "redis://cache:6379"
        );
        for (bad, why) in [
            ("localhost:6379", "redis://"),
            ("http://x:6379", "redis://"),
            ("rediss://x:6379", "TLS"),
            ("redis://", "host"),
            ("not a url", "not a URL"),
        ] {
            let e = RedisUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = RedisUrl::parse("redis://:secret@h:1/x").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn a_list_has_one_url_or_more() {
        let l = RedisUrl::parse_list("redis://a:1, redis://b:2").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].shown(), "redis://b:2");
        assert!(RedisUrl::parse_list(" , ").unwrap_err().contains("empty"));
        assert!(
            RedisUrl::parse_list("redis://a:1,http://b")
                .unwrap_err()
                .contains("entry 2")
        );
    }
}
