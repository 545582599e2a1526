//! `--pool ZONE:POOL_ID`: a backend that is an instance pool's NLB, found through the Exoscale
//! API and followed.
//!
//! - At start-up each pool's NLB is looked up (the zone's load balancers, the service whose
//!   instance pool is this one): its backend is `http://NLB_IP:SERVICE_PORT`. An API failure
//!   is retried with backoff (1 s, 2 s, 4 s, 8 s); a pool no NLB forwards to, or an API still
//!   failing after that, stops the front with exit 1 and a message naming the pool: it has no
//!   address to send that pool's share to.
//! - Then one task per zone (one API client per zone) lists the zone's load balancers every
//!   `refresh` and swaps a backend's address when its NLB's changed: the backend keeps its
//!   name, counts and ejection state; its connections to the old address are closed.
//! - An API error never drops a backend: the last known address stays, and the list is asked
//!   again after a backoff (1 s doubling, at most `refresh`). A pool whose NLB has gone keeps
//!   its last address too (and the front's ejection takes care of it if it stops answering).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};
use uuid::Uuid;

use super::Front;
use crate::config::Zone;
use crate::exoscale::{Client, LoadBalancer};
use crate::shutdown::Stopping;

/// One `--pool [NAME=]ZONE:POOL_ID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// The backend's name: NAME, else the zone's name.
    pub name: String,
    pub zone: Zone,
    pub pool: Uuid,
}

/// The pools to follow and how.
#[derive(Clone, Debug)]
pub struct Pools {
    pub pools: Vec<PoolSpec>,
    /// One client per zone that has a pool.
    pub clients: Vec<(Zone, Client)>,
    /// How often each zone's load balancers are listed.
    pub refresh: Duration,
}

/// Start-up attempts at the API before the front gives up on a pool.
const STARTUP_ATTEMPTS: u32 = 5;

/// The base URL of the NLB forwarding to `pool`: `http://IP:PORT` of the first service
/// targeting it (port 80's if several do). `None` when no NLB with an address does.
pub fn nlb_base(lbs: &[LoadBalancer], pool: Uuid) -> Option<String> {
    lbs.iter()
        .filter_map(|lb| Some((lb.ip?, lb)))
        .flat_map(|(ip, lb)| {
            lb.services
                .iter()
                .filter(move |s| s.instance_pool.id == pool)
                .map(move |s| (ip, s.port))
        })
        .min_by_key(|(_, port)| *port != 80)
        .map(|(ip, port)| format!("http://{ip}:{port}"))
}

/// The pause after the `n`-th failure in a row (from 1): 1 s doubling, at most `cap`.
fn backoff(n: u32, cap: Duration) -> Duration {
    Duration::from_secs(1)
        .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
        .min(cap)
}

/// Each pool's NLB base URL at start-up, in the order of `pools.pools`.
pub async fn resolve(pools: &Pools) -> anyhow::Result<Vec<String>> {
    let mut lists: HashMap<Zone, Vec<LoadBalancer>> = HashMap::new();
    for (zone, client) in &pools.clients {
        let mut failures = 0;
        let lbs = loop {
            match client.list_load_balancers().await {
                Ok(lbs) => break lbs,
                Err(e) => {
                    failures += 1;
                    let names: Vec<String> = pools
                        .pools
                        .iter()
                        .filter(|p| p.zone == *zone)
                        .map(|p| format!("{}:{}", p.zone.name(), p.pool))
                        .collect();
                    if failures >= STARTUP_ATTEMPTS {
                        return Err(e).with_context(|| {
                            format!(
                                "cannot find the NLB of pool {}: listing the load balancers of {} failed {failures} times",
                                names.join(", "),
                                zone.name()
                            )
                        });
                    }
                    let pause = backoff(failures, Duration::from_secs(8));
                    warn!(zone = zone.name(), error = %e, retry_in_ms = pause.as_millis() as u64, "listing the load balancers failed");
                    tokio::time::sleep(pause).await;
                }
            }
        };
        lists.insert(*zone, lbs);
    }
    pools
        .pools
        .iter()
        .map(|p| {
            nlb_base(&lists[&p.zone], p.pool).ok_or_else(|| {
                anyhow::anyhow!(
                    "pool {}:{} (backend {}): no network load balancer of {} forwards to it",
                    p.zone.name(),
                    p.pool,
                    p.name,
                    p.zone.name()
                )
            })
        })
        .collect()
}

/// Follows every zone's NLBs until `stop`; `first` is the index of the first pool's backend
/// (the pools' backends come after the `--backend` ones, in order).
pub async fn follow(front: Arc<Front>, pools: Pools, first: usize, stop: Stopping) {
    let mut tasks = tokio::task::JoinSet::new();
    for (zone, client) in pools.clients.clone() {
        let mine: Vec<(usize, PoolSpec)> = pools
            .pools
            .iter()
            .enumerate()
            .filter(|(_, p)| p.zone == zone)
            .map(|(k, p)| (first + k, p.clone()))
            .collect();
        tasks.spawn(follow_zone(
            front.clone(),
            client,
            mine,
            pools.refresh,
            stop.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn follow_zone(
    front: Arc<Front>,
    client: Client,
    pools: Vec<(usize, PoolSpec)>,
    refresh: Duration,
    mut stop: Stopping,
) {
    let mut failures = 0u32;
    let mut pause = refresh;
    loop {
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let listed = tokio::select! {
            _ = stop.wait() => return,
            r = client.list_load_balancers() => r,
        };
        let lbs = match listed {
            Ok(lbs) => lbs,
            Err(e) => {
                failures += 1;
                front.metrics.pool_lookup_errors.inc();
                pause = backoff(failures, refresh);
                warn!(zone = client.zone().name(), error = %e, failures, retry_in_ms = pause.as_millis() as u64,
                      "listing the load balancers failed; the pools' last known addresses stay");
                continue;
            }
        };
        failures = 0;
        pause = refresh;
        for (i, p) in &pools {
            let Some(base) = nlb_base(&lbs, p.pool) else {
                warn!(backend = %p.name, pool = %p.pool, zone = p.zone.name(),
                      "no network load balancer forwards to the pool now; its last known address stays");
                continue;
            };
            match front.backends.set_base(*i, &base) {
                Ok(true) => {
                    front.metrics.pool_address_changes.inc();
                    info!(backend = %p.name, pool = %p.pool, url = %base, "the pool's NLB address changed: following it");
                }
                Ok(false) => {}
                Err(e) => warn!(backend = %p.name, error = %e, "the NLB's address is not usable"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exoscale::{Healthcheck, LoadBalancerService, Ref};

    fn lb(ip: Option<&str>, services: &[(Uuid, u16)]) -> LoadBalancer {
        LoadBalancer {
            id: Uuid::new_v4(),
            name: "nlb".into(),
            ip: ip.map(|i| i.parse().unwrap()),
            state: None,
            services: services
                .iter()
                .map(|(pool, port)| LoadBalancerService {
                    id: Uuid::new_v4(),
                    name: "s".into(),
                    protocol: "tcp".into(),
                    port: *port,
                    target_port: 8080,
                    strategy: "round-robin".into(),
                    instance_pool: Ref { id: *pool },
                    healthcheck: Healthcheck {
                        mode: "http".into(),
                        port: 8080,
                        uri: None,
                        interval: 10,
                        timeout: 2,
                        retries: 1,
                    },
                    healthcheck_status: vec![],
                    state: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_nlb_is_the_one_whose_service_targets_the_pool_port_80_first() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let lbs = vec![
            lb(Some("198.51.100.1"), &[(a, 8080)]),
            lb(None, &[(b, 80)]),
            lb(Some("198.51.100.2"), &[(b, 443), (b, 80)]),
        ];
        assert_eq!(
            nlb_base(&lbs, a).as_deref(),
            Some("http://198.51.100.1:8080")
        );
        assert_eq!(nlb_base(&lbs, b).as_deref(), Some("http://198.51.100.2:80"));
        assert_eq!(nlb_base(&lbs, Uuid::new_v4()), None);
    }

    #[test]
    fn backoff_doubles_from_a_second_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        let got: Vec<u64> = (1..=8).map(|n| backoff(n, cap).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            backoff(3, Duration::from_millis(200)),
            Duration::from_millis(200)
        );
    }
}
