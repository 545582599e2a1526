//! An Exoscale instance pool as the autoscaler's target: observe, set the size, wait for the
//! operation; scale-in drains the chosen members through the app's drain switch first.

use uuid::Uuid;

use super::victims::{self, Candidate, VictimOrder};
use super::{Actuation, MemberInfo, Observation, Target, TargetError};
use crate::autoscaler::source::scrape::read_capped;
use crate::exoscale::{Client, HealthStatus, InstanceState, PoolState};

/// Graceful scale-in: drain the member through the app's drain switch, give the load balancer
/// time to take it out (and wait until it says so) and its requests time to finish, then evict
/// exactly that member.
#[derive(Clone, Debug)]
pub struct Drain {
    pub token: crate::exoscale::Secret,
    /// The app's port on each member.
    pub port: u16,
    /// How long to wait after draining: the NLB's check interval x retries, plus the longest
    /// request (then, for at most as long again, until the NLB reports the member out).
    pub wait: std::time::Duration,
    /// Which members go first (see [`super::victims`]).
    pub victims: Vec<VictimOrder>,
}

/// An Exoscale instance pool.
pub struct ExoscalePool {
    client: Client,
    pool: Uuid,
    drain: Option<Drain>,
    http: reqwest::Client,
    /// Set when the process is stopping: a drain wait in progress is cut short and undone.
    stop: crate::shutdown::Stopping,
    /// Whether members left drained by an earlier run were looked for (once, at the start).
    repaired: std::sync::atomic::AtomicBool,
}

impl ExoscalePool {
    pub fn new(client: Client, pool: Uuid) -> Self {
        Self {
            client,
            pool,
            drain: None,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            stop: crate::shutdown::Stopping::never(),
            repaired: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A drain wait in progress when `stop` is set is cut short, and the drained members are
    /// undrained instead of evicted: never left drained (no traffic) and still paid for.
    pub fn with_stop(mut self, stop: crate::shutdown::Stopping) -> Self {
        self.stop = stop;
        self
    }

    /// Undrains running members found drained: only a scale-in in progress drains, and at
    /// start none is, so a drained member is what a crash (or a kill past the grace period) of an
    /// earlier run left behind. Done once; true when the members could be listed.
    async fn repair_drained(&self, d: &Drain) -> bool {
        let members = match self.client.list_pool_members(self.pool).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list members to look for drained ones; will retry");
                return false;
            }
        };
        for m in &members {
            let (InstanceState::Running, Some(ip)) = (m.state, m.public_ip) else {
                continue;
            };
            let url = format!("http://{ip}:{}/admin/drain", d.port);
            let drained = match self
                .http
                .get(&url)
                .bearer_auth(d.token.expose())
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["draining"].as_bool())
                    .unwrap_or(false),
                _ => false,
            };
            if drained {
                match self.drain_switch(d, ip, false).await {
                    Ok(()) => {
                        tracing::warn!(member = %m.id, %ip, "undrained a member an earlier run left drained")
                    }
                    Err(e) => {
                        tracing::warn!(member = %m.id, error = %e, "a member is left drained and could not be undrained")
                    }
                }
            }
        }
        true
    }

    /// Scale-in drains and evicts one member instead of shrinking the pool blindly.
    pub fn with_drain(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }

    async fn drain_switch(
        &self,
        d: &Drain,
        ip: std::net::Ipv4Addr,
        on: bool,
    ) -> Result<(), String> {
        let url = format!("http://{ip}:{}/admin/drain", d.port);
        let req = if on {
            self.http.post(&url)
        } else {
            self.http.delete(&url)
        };
        match req.bearer_auth(d.token.expose()).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{url}: {}", r.status())),
            Err(e) => Err(format!("{url}: {e}")),
        }
    }

    /// The NLB's health status of each member address, from every NLB service that sends
    /// traffic to this pool; empty (all unknown) when it cannot be read.
    async fn health_by_ip(&self) -> std::collections::HashMap<std::net::Ipv4Addr, bool> {
        let mut out = std::collections::HashMap::new();
        let lbs = match self.client.list_load_balancers().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list load balancers; member health unknown");
                return out;
            }
        };
        for lb in lbs {
            // The list may leave out the services' status: read each NLB that fronts this pool.
            if !lb.services.is_empty()
                && !lb.services.iter().any(|s| s.instance_pool.id == self.pool)
            {
                continue;
            }
            match self.client.get_load_balancer(lb.id).await {
                Ok(full) => {
                    for s in full
                        .services
                        .iter()
                        .filter(|s| s.instance_pool.id == self.pool)
                    {
                        for st in &s.healthcheck_status {
                            let ok = st.status == HealthStatus::Success;
                            // Failing for any service counts as failing.
                            out.entry(st.public_ip)
                                .and_modify(|h: &mut bool| *h &= ok)
                                .or_insert(ok);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(nlb = %lb.id, error = %e, "cannot read the NLB; member health unknown")
                }
            }
        }
        out
    }

    /// Requests in flight on the member's app (`poolpilot_app_load_in_flight`), if readable.
    async fn in_flight(&self, ip: std::net::Ipv4Addr, port: u16) -> Option<f64> {
        let url = format!("http://{ip}:{port}/metrics");
        let text = read_capped(self.http.get(&url).send().await.ok()?).await?;
        crate::autoscaler::source::scrape::gauge(&text, "poolpilot_app_load_in_flight")
    }

    /// The drain wait: `d.wait`, then until no load balancer in front of the pool reports a
    /// victim healthy, for at most another `d.wait`. The wait is what the NLB's checks need on
    /// paper; a busy NLB (or API) can run its checks late, and a member evicted while still in
    /// rotation fails the requests sent to it. Past the bound the victims are evicted anyway (a
    /// TCP health check never sees a drain) with a warning; health that cannot be read is not
    /// waited for (the fixed wait is then all there is). False when the process is stopping.
    async fn until_out_of_rotation(&self, d: &Drain, victims: &[Candidate]) -> bool {
        use tokio::time::{Instant, sleep, sleep_until};
        let mut stop = self.stop.clone();
        let bound = Instant::now() + 2 * d.wait;
        tokio::select! {
            _ = sleep(d.wait) => {}
            _ = stop.wait() => return false,
        }
        let step = (d.wait / 4).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(1),
        );
        let mut told = false;
        loop {
            let health = self.health_by_ip().await;
            let still: Vec<std::net::Ipv4Addr> = victims
                .iter()
                .filter(|v| health.get(&v.ip) == Some(&true))
                .map(|v| v.ip)
                .collect();
            if still.is_empty() {
                return true;
            }
            if Instant::now() >= bound {
                tracing::warn!(members = ?still, waited_s = (2 * d.wait).as_secs_f64(), "the load balancer still reports drained member(s) healthy; evicting anyway");
                return true;
            }
            if !told {
                tracing::info!(members = ?still, "waiting for the load balancer to take the drained member(s) out");
                told = true;
            }
            tokio::select! {
                _ = sleep_until((Instant::now() + step).min(bound)) => {}
                _ = stop.wait() => return false,
            }
        }
    }

    /// Chooses `count` running members in the drain's victim order, drains them, waits until the
    /// load balancer has taken them out, and evicts exactly those.
    async fn drain_and_evict(&self, d: &Drain, count: usize) -> Result<Actuation, TargetError> {
        let members = self.client.list_pool_members(self.pool).await?;
        let health = if d.victims.contains(&VictimOrder::UnhealthyFirst) {
            self.health_by_ip().await
        } else {
            Default::default()
        };
        let mut candidates = Vec::new();
        for m in &members {
            let (InstanceState::Running, Some(ip)) = (m.state, m.public_ip) else {
                continue;
            };
            let busy = if d.victims.contains(&VictimOrder::LeastBusy) {
                self.in_flight(ip, d.port).await
            } else {
                None
            };
            candidates.push(Candidate {
                id: m.id,
                ip,
                created_at: m.created_at,
                healthy: health.get(&ip).copied(),
                busy,
            });
        }
        if candidates.len() < count {
            return Err(TargetError {
                kind: "no_victim",
                message: format!(
                    "{count} member(s) to drain, but only {} running with an address",
                    candidates.len()
                ),
            });
        }
        let victims = victims::choose(candidates, &d.victims, count);
        let order: Vec<&str> = d.victims.iter().map(|o| o.as_str()).collect();
        for v in &victims {
            tracing::info!(member = %v.id, ip = %v.ip, healthy = ?v.healthy, in_flight = ?v.busy, order = ?order, "chosen for scale-in");
        }
        for v in &victims {
            let ip = v.ip;
            match self.drain_switch(d, ip, true).await {
                Ok(()) => {
                    tracing::info!(member = %v.id, %ip, wait_s = d.wait.as_secs_f64(), "draining before eviction")
                }
                // An unreachable member takes no traffic anyway: evicting it is right.
                Err(e) => {
                    tracing::warn!(member = %v.id, error = %e, "could not drain; evicting anyway")
                }
            }
        }
        if !self.until_out_of_rotation(d, &victims).await {
            for v in &victims {
                match self.drain_switch(d, v.ip, false).await {
                    Ok(()) => {
                        tracing::info!(member = %v.id, ip = %v.ip, "stopping: undrained instead of evicted")
                    }
                    Err(e) => {
                        tracing::warn!(member = %v.id, error = %e, "stopping: could not undo the drain")
                    }
                }
            }
            return Err(TargetError {
                kind: "interrupted",
                message: "stopping during the drain wait: the members were undrained, not evicted"
                    .into(),
            });
        }
        let ids: Vec<Uuid> = victims.iter().map(|v| v.id).collect();
        match self
            .client
            .evict_instance_pool_members(self.pool, &ids)
            .await
        {
            Ok(op) => Ok(Actuation {
                operation: Some(op.id),
                pending: Some(op),
            }),
            Err(e) => {
                for v in &victims {
                    if let Err(u) = self.drain_switch(d, v.ip, false).await {
                        tracing::warn!(member = %v.id, error = %u, "could not undo the drain");
                    }
                }
                Err(e.into())
            }
        }
    }
}

impl Target for ExoscalePool {
    fn describe(&self) -> String {
        format!("instance pool {} in {}", self.pool, self.client.zone())
    }

    async fn observe(&self) -> Result<Observation, TargetError> {
        if let Some(d) = &self.drain
            && !self.repaired.load(std::sync::atomic::Ordering::Relaxed)
            && self.repair_drained(d).await
        {
            self.repaired
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let pool = self.client.get_instance_pool(self.pool).await?;
        let members = self.client.list_pool_members(self.pool).await?;
        let running = members
            .iter()
            .filter(|m| m.state == InstanceState::Running)
            .count() as u64;
        let busy = match pool.state {
            PoolState::Running if members.len() as u64 == pool.size && running == pool.size => None,
            PoolState::Running => Some(format!(
                "{running} of {} member(s) running, size {}",
                members.len(),
                pool.size
            )),
            other => Some(format!("pool is {}", other.as_str())),
        };
        let now = time::OffsetDateTime::now_utc();
        let member_list = members
            .iter()
            .map(|m| MemberInfo {
                ip: m.public_ip,
                age: m
                    .created_at
                    .map(|c| std::time::Duration::try_from(now - c).unwrap_or_default()),
                running: m.state == InstanceState::Running,
            })
            .collect();
        Ok(Observation {
            size: pool.size,
            state: pool.state.as_str().to_owned(),
            members: members.len() as u64,
            running,
            busy,
            member_list,
        })
    }

    async fn set_size(&self, size: u64) -> Result<Actuation, TargetError> {
        if let Some(d) = &self.drain {
            let current = self.client.get_instance_pool(self.pool).await?.size;
            if size < current {
                return self.drain_and_evict(d, (current - size) as usize).await;
            }
        }
        let op = self.client.scale_instance_pool(self.pool, size).await?;
        Ok(Actuation {
            operation: Some(op.id),
            pending: Some(op),
        })
    }

    async fn wait(&self, actuation: &Actuation) -> Result<(), TargetError> {
        if let Some(op) = &actuation.pending {
            self.client.wait_operation(op).await?;
        }
        Ok(())
    }
}
