//! The local Network Load Balancer: the fewest requests in flight, round-robin among equals,
//! over the healthy members of a pool, with health
//! checks like Exoscale's (HTTP GET on the check's URI, every `interval`, `timeout` per probe,
//! out of rotation after `retries` failed probes in a row, back after one good probe), and the
//! result reported to the simulator so `healthcheck-status` in the API tells the truth.
//!
//! One difference, on purpose: Exoscale's NLB balances TCP connections; this one balances HTTP
//! requests, so that a load generator with keep-alive connections still spreads over new
//! members (the demo would otherwise pin each client to one member for its whole run). And it
//! sends each request to a member with the fewest in flight (HAProxy's `leastconn`, Envoy's
//! least-request), so two `/load` clients on two members keep both busy, whenever they ask:
//! plain round-robin, shared with the light probe traffic, put both on one member about half
//! the time, and the pool's CPU then hovered around the 80 % threshold. Sequential requests
//! (none in flight) still go round-robin.
//!
//! In TCP mode ([`Nlb::serve_tcp`], the Redis replicas' balancer) it balances connections, as
//! Exoscale's does, with the health check on its own port (the replica's sidecar).
//!
//! Only members the API reports `running` are probed: a VM's app is not up while it boots.
//! A new member enters the rotation after its first good probe.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use uuid::Uuid;

use crate::sim::Sim;

#[derive(Clone, Debug)]
pub struct NlbConfig {
    pub pool: Uuid,
    pub target_port: u16,
    /// The health check's port (Exoscale's `healthcheck.port`): the target port for the app,
    /// the sidecar's for a Redis replica served in TCP mode.
    pub check_port: u16,
    pub uri: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberHealth {
    pub id: Uuid,
    pub addr: Ipv4Addr,
    pub healthy: bool,
    failures: u32,
}

/// Counters of what the NLB answered.
#[derive(Debug, Default)]
pub struct NlbStats {
    pub forwarded: AtomicU64,
    /// 502/503 the NLB itself had to answer: no healthy member, or a member that failed.
    pub failed: AtomicU64,
    /// Why, for the first [`MAX_NOTES`] of them: a demo that fails on one rare 502 says which
    /// member it was and what the connection did.
    notes: Mutex<Vec<String>>,
}

/// How many failures [`NlbStats::notes`] keeps.
pub const MAX_NOTES: usize = 10;

impl NlbStats {
    /// Counts one answer the NLB had to give itself, and keeps why.
    fn fail(&self, why: impl FnOnce() -> String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut notes = self.notes.lock().expect("notes lock");
        if notes.len() < MAX_NOTES {
            notes.push(why());
        }
    }

    /// Why the first failures happened ("<when>: <member>: <error and its causes>").
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("notes lock").clone()
    }
}

/// An error with its chain of causes, which for hyper's client is where the reason lives
/// ("client error (SendRequest)" / "connection closed before message completed").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Now, as the logs of every process write it (RFC 3339, UTC), to match a note with them.
fn now() -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

struct Inner {
    cfg: NlbConfig,
    sim: Arc<Sim>,
    members: Mutex<Vec<MemberHealth>>,
    /// Requests forwarded to each member and not yet answered.
    in_flight: Mutex<HashMap<Ipv4Addr, usize>>,
    next: AtomicUsize,
    client: Client<HttpConnector, Body>,
    stats: NlbStats,
    /// A zone outage: every request is answered 503.
    down: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
pub struct Nlb {
    inner: Arc<Inner>,
}

impl Nlb {
    pub fn new(sim: Arc<Sim>, cfg: NlbConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.timeout));
        // An idle connection is given up well before a member closes it (our servers close an
        // idle keep-alive connection at their header timeout, 30 s): a proxy whose idle timeout
        // equals the upstream's can send a request on a connection as the member closes it.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(crate::shutdown::Limits::default().header_timeout / 2)
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                cfg,
                sim,
                members: Mutex::new(Vec::new()),
                in_flight: Mutex::new(HashMap::new()),
                next: AtomicUsize::new(0),
                client,
                stats: NlbStats::default(),
                down: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn members(&self) -> Vec<MemberHealth> {
        self.inner.members.lock().expect("members lock").clone()
    }

    pub fn stats(&self) -> &NlbStats {
        &self.inner.stats
    }

    /// Takes the load balancer down (every request answered 503, as a zone outage looks from
    /// outside) or back up.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// Probes every `interval`, forever.
    pub async fn run_health_checks(self) {
        let mut every = tokio::time::interval(self.inner.cfg.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.check_once().await;
        }
    }

    /// One round of probes over the pool's running members.
    pub async fn check_once(&self) {
        let cfg = &self.inner.cfg;
        let running = self.inner.sim.with_state(|s| s.running_members(cfg.pool));
        let probes = running.into_iter().map(|(id, addr)| {
            let url = format!("http://{addr}:{}{}", cfg.check_port, cfg.uri);
            let timeout = cfg.timeout;
            let client = self.inner.client.clone();
            async move {
                let req = hyper::Request::get(url.as_str())
                    .body(Body::empty())
                    .expect("a valid probe request");
                let ok = matches!(
                    tokio::time::timeout(timeout, client.request(req)).await,
                    Ok(Ok(r)) if r.status().is_success()
                );
                (id, addr, ok)
            }
        });
        let results = futures_join_all(probes).await;
        let mut changes = Vec::new();
        let mut members = Vec::new();
        {
            let old: HashMap<Uuid, MemberHealth> = self
                .inner
                .members
                .lock()
                .expect("members lock")
                .iter()
                .map(|m| (m.id, m.clone()))
                .collect();
            for (id, addr, ok) in results {
                let mut m = old.get(&id).cloned().unwrap_or(MemberHealth {
                    id,
                    addr,
                    healthy: false,
                    failures: 0,
                });
                let was = m.healthy;
                if ok {
                    m.failures = 0;
                    m.healthy = true;
                } else {
                    m.failures += 1;
                    if m.failures >= cfg.retries.max(1) {
                        m.healthy = false;
                    }
                }
                if was != m.healthy || !old.contains_key(&id) {
                    changes.push((id, addr, m.healthy));
                }
                members.push(m);
            }
            members.sort_by_key(|m| m.addr);
        }
        // The API learns first, then the rotation changes: whoever sees a member leave the
        // rotation also reads its failure in `healthcheck-status`.
        for (id, addr, healthy) in changes {
            tracing::debug!(%addr, healthy, "nlb health");
            let _ = self.inner.sim.with_state(|s| s.set_health(id, healthy));
        }
        *self.inner.members.lock().expect("members lock") = members;
    }

    /// A healthy member with the fewest requests in flight (round-robin among those), counted
    /// as one more in flight until the returned guard is dropped.
    fn pick(&self) -> Option<InFlight> {
        let members = self.inner.members.lock().expect("members lock");
        let mut in_flight = self.inner.in_flight.lock().expect("in-flight lock");
        let load = |a: &Ipv4Addr| in_flight.get(a).copied().unwrap_or(0);
        let fewest = members
            .iter()
            .filter(|m| m.healthy)
            .map(|m| load(&m.addr))
            .min()?;
        let least: Vec<Ipv4Addr> = members
            .iter()
            .filter(|m| m.healthy && load(&m.addr) == fewest)
            .map(|m| m.addr)
            .collect();
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let addr = least[i % least.len()];
        *in_flight.entry(addr).or_default() += 1;
        Some(InFlight {
            nlb: self.inner.clone(),
            addr,
        })
    }

    pub fn router(&self) -> Router {
        Router::new().fallback(forward).with_state(self.clone())
    }

    /// Serves in TCP mode, as Exoscale's NLB does: each connection goes whole to a healthy
    /// member with the fewest connections open (round-robin among equals); with none, or while
    /// the NLB is down, a connection is closed at once. Runs until the listener fails.
    pub async fn serve_tcp(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        loop {
            let (mut client, peer) = listener.accept().await?;
            let nlb = self.clone();
            tokio::spawn(async move {
                if nlb.inner.down.load(Ordering::SeqCst) {
                    nlb.inner.stats.fail(|| format!("{}: {peer}: down", now()));
                    return;
                }
                let Some(slot) = nlb.pick() else {
                    nlb.inner
                        .stats
                        .fail(|| format!("{}: {peer}: no healthy member", now()));
                    return;
                };
                let target = SocketAddr::from((slot.addr, nlb.inner.cfg.target_port));
                let connect = tokio::net::TcpStream::connect(target);
                let mut member = match tokio::time::timeout(nlb.inner.cfg.timeout, connect).await {
                    Ok(Ok(m)) => m,
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no connection within {:?}", nlb.inner.cfg.timeout),
                        };
                        tracing::warn!(member = %target, %peer, error = %why, "nlb: member refused a connection");
                        nlb.inner
                            .stats
                            .fail(|| format!("{}: {target}: {why}", now()));
                        return;
                    }
                };
                let _ = member.set_nodelay(true);
                let _ = client.set_nodelay(true);
                nlb.inner.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut member).await;
                drop(slot);
            });
        }
    }
}

/// One request in flight to a member; dropping it (answered, failed, or the client went away)
/// takes it off the member's count.
struct InFlight {
    nlb: Arc<Inner>,
    addr: Ipv4Addr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self.nlb.in_flight.lock().expect("in-flight lock");
        if let Some(n) = in_flight.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.addr);
            }
        }
    }
}

async fn forward(State(nlb): State<Nlb>, mut req: Request) -> Response {
    if nlb.inner.down.load(Ordering::SeqCst) {
        nlb.inner.stats.fail(|| format!("{}: zone down", now()));
        return (StatusCode::SERVICE_UNAVAILABLE, "zone down\n").into_response();
    }
    let Some(slot) = nlb.pick() else {
        nlb.inner
            .stats
            .fail(|| format!("{}: no healthy member", now()));
        return (StatusCode::SERVICE_UNAVAILABLE, "no healthy member\n").into_response();
    };
    let target = SocketAddr::from((slot.addr, nlb.inner.cfg.target_port));
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("http://{target}{path}").parse() {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad request target\n").into_response(),
    };
    *req.uri_mut() = uri;
    req.headers_mut().remove(axum::http::header::HOST);
    let answer = nlb.inner.client.request(req).await;
    drop(slot);
    match answer {
        Ok(resp) => {
            nlb.inner.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            resp.map(Body::new)
        }
        Err(e) => {
            let why = chain(&e);
            tracing::warn!(member = %target, error = %why, "nlb: member failed");
            nlb.inner
                .stats
                .fail(|| format!("{}: {target}: {why}", now()));
            (StatusCode::BAD_GATEWAY, "member failed\n").into_response()
        }
    }
}

/// Awaits every future (a tiny join_all, to avoid a dependency for one call).
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Zone;
    use crate::sim::{RecordBackend, State, Timing};

    fn nlb(addrs: &[[u8; 4]]) -> Nlb {
        let state = State::new(
            Zone::DEFAULT,
            Timing {
                operation_delay: Duration::ZERO,
                boot_delay: Duration::ZERO,
            },
            Arc::new(RecordBackend::new()),
        );
        let n = Nlb::new(
            Sim::new(state, Vec::new()),
            NlbConfig {
                pool: Uuid::nil(),
                target_port: 8080,
                check_port: 8080,
                uri: "/health".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                retries: 1,
            },
        );
        *n.inner.members.lock().unwrap() = addrs
            .iter()
            .map(|a| MemberHealth {
                id: Uuid::new_v4(),
                addr: Ipv4Addr::from(*a),
                healthy: true,
                failures: 0,
            })
            .collect();
        n
    }

    #[test]
    fn sequential_requests_go_round_robin() {
        let n = nlb(&[[127, 0, 1, 1], [127, 0, 1, 2], [127, 0, 1, 3]]);
        let picked: Vec<u8> = (0..6).map(|_| n.pick().unwrap().addr.octets()[3]).collect();
        assert_eq!(picked, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn a_request_goes_to_a_member_with_the_fewest_in_flight() {
        let n = nlb(&[[127, 0, 1, 1], [127, 0, 1, 2]]);
        // Two long requests in flight land on both members, whatever the round-robin position,
        // and light requests meanwhile spread over both too.
        for _ in 0..5 {
            let a = n.pick().unwrap();
            let b = n.pick().unwrap();
            assert_ne!(a.addr, b.addr);
            let light = n.pick().unwrap();
            drop(light);
        }
        // A member whose request was answered is the one with the fewest again.
        let a = n.pick().unwrap();
        let b = n.pick().unwrap();
        let busy = a.addr;
        drop(b);
        assert_ne!(n.pick().unwrap().addr, busy);
        assert!(n.inner.in_flight.lock().unwrap().get(&busy) == Some(&1));
        drop(a);
        assert!(n.inner.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn no_healthy_member_no_pick() {
        let n = nlb(&[[127, 0, 1, 1]]);
        n.inner.members.lock().unwrap()[0].healthy = false;
        assert!(n.pick().is_none());
    }

    /// A member that answers each connection with its own address, then holds it open.
    async fn member(addr: Ipv4Addr, port: u16) -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind((addr, port)).await.unwrap()
    }

    fn serve_names(l: tokio::net::TcpListener) {
        tokio::spawn(async move {
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                let me = c.local_addr().unwrap().ip().to_string();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    c.write_all(me.as_bytes()).await.unwrap();
                    let mut sink = [0u8; 16];
                    while c.read(&mut sink).await.unwrap_or(0) > 0 {}
                });
            }
        });
    }

    async fn first_words(addr: SocketAddr) -> (tokio::net::TcpStream, String) {
        use tokio::io::AsyncReadExt;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("an answer or a close within 10 s")
            .unwrap();
        (c, String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test]
    async fn tcp_mode_spreads_connections_by_fewest_open_and_closes_when_it_cannot_serve() {
        let (a, b) = (Ipv4Addr::new(127, 0, 1, 201), Ipv4Addr::new(127, 0, 1, 202));
        let la = member(a, 0).await;
        let port = la.local_addr().unwrap().port();
        let lb = member(b, port).await;
        serve_names(la);
        serve_names(lb);
        let mut n = nlb(&[a.octets(), b.octets()]);
        Arc::get_mut(&mut n.inner).unwrap().cfg.target_port = port;
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = front.local_addr().unwrap();
        tokio::spawn(n.clone().serve_tcp(front));

        // Held connections spread over both members; one closed makes its member the least.
        let (c1, m1) = first_words(at).await;
        let (_c2, m2) = first_words(at).await;
        assert_ne!(m1, m2);
        drop(c1);
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while n
            .inner
            .in_flight
            .lock()
            .unwrap()
            .get(&m1.parse().unwrap())
            .is_some()
        {
            assert!(
                std::time::Instant::now() < end,
                "the closed connection was not counted off"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_c3, m3) = first_words(at).await;
        assert_eq!(m3, m1);
        assert_eq!(n.stats().forwarded.load(Ordering::Relaxed), 3);

        // Down, or no healthy member: the connection is closed without a word.
        n.set_down(true);
        assert_eq!(first_words(at).await.1, "");
        n.set_down(false);
        for m in n.inner.members.lock().unwrap().iter_mut() {
            m.healthy = false;
        }
        assert_eq!(first_words(at).await.1, "");
        assert_eq!(n.stats().failed.load(Ordering::Relaxed), 2);
        let notes = n.stats().notes();
        assert!(
            notes[0].ends_with(": down") && notes[1].ends_with(": no healthy member"),
            "{notes:?}"
        );
    }

    #[tokio::test]
    async fn a_member_that_drops_the_request_is_a_502_noted_with_its_cause() {
        let m = Ipv4Addr::new(127, 0, 1, 203);
        let l = member(m, 0).await;
        let port = l.local_addr().unwrap().port();
        // Reads the request, then closes without a word.
        tokio::spawn(async move {
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 1024];
                    let _ = c.read(&mut buf).await;
                });
            }
        });
        let mut n = nlb(&[m.octets()]);
        Arc::get_mut(&mut n.inner).unwrap().cfg.target_port = port;
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = front.local_addr().unwrap();
        tokio::spawn(axum::serve(front, n.router()).into_future());

        let resp = reqwest::get(format!("http://{at}/kv?id=a")).await.unwrap();
        assert_eq!(resp.status(), 502);
        assert_eq!(n.stats().failed.load(Ordering::Relaxed), 1);
        let notes = n.stats().notes();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains(&format!("{m}:{port}: ")) && notes[0].contains("closed"),
            "the note names the member and the cause: {notes:?}"
        );
    }
}
