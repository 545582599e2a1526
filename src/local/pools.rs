//! [`PerPool`]: one zone's machines when its pools run different images (the Redis profile: a
//! replica pool and an API pool), each pool's instances started by its own [`LocalBackend`].

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::backend::LocalBackend;
use crate::sim::backend::{BackendError, InstanceBackend, LaunchSpec};

/// Routes each instance to its pool's backend. Pool ids are fixed before the pools are created
/// (`State::create_pool` takes the id), so a pool's first members already find their backend.
pub struct PerPool {
    pools: HashMap<Uuid, Arc<LocalBackend>>,
    /// Which pool each instance belongs to, from [`InstanceBackend::allocate`] on.
    owner: Mutex<HashMap<Uuid, Uuid>>,
}

impl PerPool {
    pub fn new(pools: impl IntoIterator<Item = (Uuid, Arc<LocalBackend>)>) -> Self {
        Self {
            pools: pools.into_iter().collect(),
            owner: Mutex::new(HashMap::new()),
        }
    }

    fn of(&self, instance: Uuid) -> Option<&Arc<LocalBackend>> {
        let pool = *self.owner.lock().expect("owner lock").get(&instance)?;
        self.pools.get(&pool)
    }

    /// Stops every pool's instances.
    pub fn shutdown(&self) {
        for b in self.pools.values() {
            b.shutdown();
        }
    }
}

impl InstanceBackend for PerPool {
    fn name(&self) -> &'static str {
        "local processes, per pool"
    }

    fn allocate(&self, spec: &LaunchSpec) -> Result<Ipv4Addr, BackendError> {
        let pool = spec
            .pool
            .ok_or_else(|| BackendError::Start(format!("{} belongs to no pool", spec.name)))?;
        let backend = self.pools.get(&pool).ok_or_else(|| {
            BackendError::Start(format!("no local backend for instance pool {pool}"))
        })?;
        let addr = backend.allocate(spec)?;
        self.owner.lock().expect("owner lock").insert(spec.id, pool);
        Ok(addr)
    }

    fn start(&self, spec: &LaunchSpec, addr: Ipv4Addr) -> Result<(), BackendError> {
        match self.of(spec.id) {
            Some(b) => b.start(spec, addr),
            None => Ok(()), // terminated before it started
        }
    }

    fn probes_readiness(&self) -> bool {
        true
    }

    fn is_ready(&self, id: Uuid) -> bool {
        self.of(id).is_some_and(|b| b.is_ready(id))
    }

    fn terminate(&self, id: Uuid, addr: Ipv4Addr) {
        let pool = self.owner.lock().expect("owner lock").remove(&id);
        if let Some(b) = pool.and_then(|p| self.pools.get(&p)) {
            b.terminate(id, addr);
        }
    }
}
