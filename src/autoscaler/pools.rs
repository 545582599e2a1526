//! Several pools from one process (`--pool NAME=ZONE:ID`, repeated): what the HTTP side routes
//! webhooks to, and every pool's control loop run side by side.
//!
//! - Each pool has its own [`Inbox`] and [`Shared`] (decisions, readiness, bounds) and its own
//!   controller; the HTTP listener is one for the process.
//! - The loops run concurrently ([`run_all`]): each awaits its own API calls, so a pool whose
//!   zone is slow or failing delays no other pool's decisions.
//! - The watchdog sees one heartbeat: [`run_all`] beats it only while every pool's own heartbeat
//!   is within that pool's stall limit, so one stuck loop is noticed even while others tick.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::decision::Shared;
use super::source::webhook::{Inbox, PoolLabel};
use crate::config::Zone;
use crate::telemetry::{Heartbeat, Liveness};

/// One pool as the HTTP side sees it.
#[derive(Clone, Debug)]
pub struct PoolHandle {
    /// `--pool NAME=...` (`default` for a single plain id).
    pub name: String,
    pub id: Option<Uuid>,
    pub zone: Option<Zone>,
    pub inbox: Arc<Inbox>,
    pub shared: Arc<Shared>,
}

impl PoolHandle {
    /// Today's single pool: named `default`, no id to route by.
    pub fn single(inbox: Arc<Inbox>, shared: Arc<Shared>) -> Self {
        Self {
            name: crate::config::DEFAULT_POOL_NAME.to_owned(),
            id: None,
            zone: None,
            inbox,
            shared,
        }
    }
}

/// The pools of the process, in `--pool` order.
#[derive(Clone, Debug)]
pub struct Pools(Arc<Vec<PoolHandle>>);

impl Pools {
    pub fn new(pools: Vec<PoolHandle>) -> Self {
        assert!(!pools.is_empty(), "at least one pool");
        Self(Arc::new(pools))
    }

    pub fn all(&self) -> &[PoolHandle] {
        &self.0
    }

    /// The pool when there is exactly one (plain `/webhook` needs no label then).
    pub fn only(&self) -> Option<&PoolHandle> {
        match self.0.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&PoolHandle> {
        self.0.iter().find(|p| p.name == name)
    }

    /// The pool an alert's label names: `pool` by name, `exoscale_instance_pool_id` by id.
    pub fn by_label(&self, label: &PoolLabel) -> Option<&PoolHandle> {
        match label {
            PoolLabel::Name(n) => self.by_name(n),
            PoolLabel::Id(id) => {
                let id: Uuid = id.parse().ok()?;
                self.0.iter().find(|p| p.id == Some(id))
            }
        }
    }

    /// The names, for messages.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|p| p.name.as_str()).collect();
        names.join(", ")
    }
}

/// One pool's loop, its heartbeat and how long that may go without a beat.
pub struct Loop<F> {
    pub run: F,
    pub liveness: Liveness,
}

/// How often [`run_all`] looks at the pools' heartbeats.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The liveness of [`run_all`]'s combined heartbeat.
pub fn combined_liveness(heartbeat: Heartbeat) -> Liveness {
    Liveness {
        heartbeat,
        stall: WATCH_EVERY * 5,
    }
}

/// Runs every loop until all have returned; beats `combined` while every loop is alive.
pub async fn run_all<F: Future<Output = ()>>(loops: Vec<Loop<F>>, combined: Heartbeat) {
    let lives: Vec<Liveness> = loops.iter().map(|l| l.liveness.clone()).collect();
    let all = futures_util::future::join_all(loops.into_iter().map(|l| l.run));
    let watch = async {
        let mut every = tokio::time::interval(WATCH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if lives.iter().all(Liveness::alive) {
                combined.beat();
            }
        }
    };
    tokio::select! {
        _ = all => {}
        _ = watch => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaler::Bounds;

    fn handle(name: &str, id: u128) -> PoolHandle {
        PoolHandle {
            name: name.into(),
            id: Some(Uuid::from_u128(id)),
            zone: Some(Zone::DEFAULT),
            inbox: Arc::default(),
            shared: Arc::new(Shared::new(Bounds { min: 1, max: 2 }, false)),
        }
    }

    #[test]
    fn pools_are_found_by_name_or_by_id() {
        let pools = Pools::new(vec![handle("gva", 1), handle("fra", 2)]);
        assert!(pools.only().is_none());
        assert_eq!(pools.by_name("fra").unwrap().name, "fra");
        let id = Uuid::from_u128(1).to_string();
        assert_eq!(pools.by_label(&PoolLabel::Id(id)).unwrap().name, "gva");
        assert!(pools.by_label(&PoolLabel::Id("nope".into())).is_none());
        assert!(pools.by_label(&PoolLabel::Name("vie".into())).is_none());
        assert_eq!(pools.names(), "gva, fra");
        let one = Pools::new(vec![handle("default", 3)]);
        assert_eq!(one.only().unwrap().name, "default");
    }

    #[tokio::test(start_paused = true)]
    async fn the_combined_heartbeat_stops_while_one_loop_is_stuck() {
        let (a, b) = (Heartbeat::default(), Heartbeat::default());
        let stall = Duration::from_secs(10);
        let beating = {
            let a = a.clone();
            async move {
                loop {
                    a.beat();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let combined = Heartbeat::default();
        let loops: Vec<Loop<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>> = vec![
            Loop {
                run: Box::pin(beating),
                liveness: Liveness {
                    heartbeat: a,
                    stall,
                },
            },
            Loop {
                run: Box::pin(std::future::pending()),
                liveness: Liveness {
                    heartbeat: b,
                    stall,
                },
            },
        ];
        let live = combined_liveness(combined.clone());
        let task = tokio::spawn(run_all(loops, combined));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(live.alive(), "both loops within their limit");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!live.alive(), "the second loop never beat");
        task.abort();
    }
}
