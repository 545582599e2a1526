//! The local Network Load Balancer: round-robin over the healthy members of a pool, with health
//! checks like Exoscale's (HTTP GET on the check's URI, every `interval`, `timeout` per probe,
//! out of rotation after `retries` failed probes in a row, back after one good probe), and the
//! result reported to the simulator so `healthcheck-status` in the API tells the truth.
//!
//! One difference, on purpose: Exoscale's NLB balances TCP connections; this one balances HTTP
//! requests, so that a load generator with keep-alive connections still spreads over new
//! members (the demo would otherwise pin each client to one member for its whole run).
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
}

struct Inner {
    cfg: NlbConfig,
    sim: Arc<Sim>,
    members: Mutex<Vec<MemberHealth>>,
    next: AtomicUsize,
    client: Client<HttpConnector, Body>,
    stats: NlbStats,
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
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                cfg,
                sim,
                members: Mutex::new(Vec::new()),
                next: AtomicUsize::new(0),
                client,
                stats: NlbStats::default(),
            }),
        }
    }

    pub fn members(&self) -> Vec<MemberHealth> {
        self.inner.members.lock().expect("members lock").clone()
    }

    pub fn stats(&self) -> &NlbStats {
        &self.inner.stats
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
            let url = format!("http://{addr}:{}{}", cfg.target_port, cfg.uri);
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
        {
            let mut members = self.inner.members.lock().expect("members lock");
            let old: HashMap<Uuid, MemberHealth> = members.drain(..).map(|m| (m.id, m)).collect();
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
        for (id, addr, healthy) in changes {
            tracing::debug!(%addr, healthy, "nlb health");
            let _ = self.inner.sim.with_state(|s| s.set_health(id, healthy));
        }
    }

    /// The next healthy member, round-robin.
    fn pick(&self) -> Option<Ipv4Addr> {
        let members = self.inner.members.lock().expect("members lock");
        let healthy: Vec<Ipv4Addr> = members
            .iter()
            .filter(|m| m.healthy)
            .map(|m| m.addr)
            .collect();
        if healthy.is_empty() {
            return None;
        }
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        Some(healthy[i % healthy.len()])
    }

    pub fn router(&self) -> Router {
        Router::new().fallback(forward).with_state(self.clone())
    }
}

async fn forward(State(nlb): State<Nlb>, mut req: Request) -> Response {
    let Some(addr) = nlb.pick() else {
        nlb.inner.stats.failed.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "no healthy member\n").into_response();
    };
    let target = SocketAddr::from((addr, nlb.inner.cfg.target_port));
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
    match nlb.inner.client.request(req).await {
        Ok(resp) => {
            nlb.inner.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            resp.map(Body::new)
        }
        Err(e) => {
            nlb.inner.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(member = %target, error = %e, "nlb: member failed");
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
