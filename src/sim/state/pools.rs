//! A pool's lifecycle in the simulated zone: creation, reconciling members to the size, scale,
//! evict, out-of-band size changes, killed members, health as the load balancer reports it.

use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use super::{ApiError, SimInstance, SimPool, State};
use crate::exoscale::models::*;
use crate::sim::backend::LaunchSpec;

impl State {
    /// Creates a pool (seeding, tests). Its first members are already running when `ready`.
    pub fn create_pool(
        &mut self,
        now: Instant,
        id: Option<Uuid>,
        name: &str,
        size: u64,
        instance_type: &str,
        ready: bool,
    ) -> Result<Uuid, ApiError> {
        let itype = self
            .instance_types
            .iter()
            .find(|t| t.name() == instance_type)
            .map(|t| t.id)
            .ok_or_else(|| {
                ApiError::bad_request(format!("unknown instance type {instance_type}"))
            })?;
        let template = *self
            .templates
            .keys()
            .next()
            .expect("the catalog has public templates");
        let id = id.unwrap_or_else(Uuid::new_v4);
        self.pools.insert(
            id,
            SimPool {
                id,
                name: name.to_owned(),
                size,
                state: PoolState::Running,
                instance_type: itype,
                template,
                members: Vec::new(),
                busy_until: None,
            },
        );
        self.reconcile(id, now, None)?;
        if ready {
            let members = self.pools[&id].members.clone();
            for m in members {
                let inst = self.instances.get_mut(&m).expect("member exists");
                inst.state = InstanceState::Running;
                inst.ready_at = now;
            }
            let pool = self.pools.get_mut(&id).expect("just created");
            pool.state = PoolState::Running;
            pool.busy_until = None;
        }
        Ok(id)
    }

    /// Brings the pool's live membership to its size: new members start booting, surplus
    /// members (the oldest first, as Exoscale does) are marked for removal at `remove_at`.
    fn reconcile(
        &mut self,
        pool_id: Uuid,
        now: Instant,
        remove_at: Option<Instant>,
    ) -> Result<(), ApiError> {
        let pool = self
            .pools
            .get(&pool_id)
            .expect("caller checked the pool")
            .clone();
        let mut live: Vec<&SimInstance> = pool
            .members
            .iter()
            .filter_map(|m| self.instances.get(m))
            .filter(|i| i.remove_at.is_none())
            .collect();
        let live_count = live.len() as u64;
        if live_count < pool.size {
            for _ in live_count..pool.size {
                self.next_name += 1;
                let id = Uuid::new_v4();
                let name = format!(
                    "pool-{}-{:05}",
                    &pool.id.simple().to_string()[..5],
                    self.next_name
                );
                let spec = LaunchSpec {
                    id,
                    name: name.clone(),
                    pool: Some(pool.id),
                };
                let ip = self.backend.allocate(&spec)?;
                // Started by the simulator once the zone is unlocked.
                self.starts.push((spec, ip));
                self.instances.insert(
                    id,
                    SimInstance {
                        id,
                        name,
                        pool: Some(pool.id),
                        ip,
                        created_at: OffsetDateTime::now_utc(),
                        created: now,
                        state: InstanceState::Starting,
                        ready_at: now + self.timing.boot_delay,
                        remove_at: None,
                        instance_type: pool.instance_type,
                        template: pool.template,
                    },
                );
                self.pools
                    .get_mut(&pool.id)
                    .expect("exists")
                    .members
                    .push(id);
            }
        } else if live_count > pool.size {
            live.sort_by_key(|i| (i.created, i.id));
            let victims: Vec<Uuid> = live
                .iter()
                .take((live_count - pool.size) as usize)
                .map(|i| i.id)
                .collect();
            for v in victims {
                self.retire(v, remove_at.unwrap_or(now));
            }
        }
        Ok(())
    }

    fn retire(&mut self, id: Uuid, at: Instant) {
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.state = InstanceState::Destroying;
            inst.remove_at = Some(at);
        }
    }

    fn mark_scaling(&mut self, pool_id: Uuid, from: u64, to: u64, until: Instant) {
        let pool = self
            .pools
            .get_mut(&pool_id)
            .expect("caller checked the pool");
        pool.state = if to >= from {
            PoolState::ScalingUp
        } else {
            PoolState::ScalingDown
        };
        pool.busy_until = Some(until);
    }

    fn pool_mut(&mut self, id: Uuid) -> Result<&mut SimPool, ApiError> {
        self.pools
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found("instance pool", id))
    }

    /// `PUT /v2/instance-pool/{id}:scale`.
    pub fn scale(&mut self, now: Instant, id: Uuid, size: u64) -> Result<Operation, ApiError> {
        let pool = self.pool_mut(id)?;
        let from = pool.size;
        pool.size = size;
        let done = now + self.timing.operation_delay;
        self.reconcile(id, now, Some(done))?;
        self.mark_scaling(id, from, size, done);
        Ok(self.new_operation(
            now,
            "scale-instance-pool",
            Some((id, format!("/v2/instance-pool/{id}"))),
            None,
        ))
    }

    /// `PUT /v2/instance-pool/{id}:evict`: removes exactly these members, lowering the size.
    pub fn evict(
        &mut self,
        now: Instant,
        id: Uuid,
        victims: &[Uuid],
    ) -> Result<Operation, ApiError> {
        let pool = self.pool_mut(id)?.clone();
        if victims.is_empty() {
            return Err(ApiError::bad_request(
                "instances: at least one instance is required",
            ));
        }
        for v in victims {
            let live = pool.members.contains(v)
                && self.instances.get(v).is_some_and(|i| i.remove_at.is_none());
            if !live {
                return Err(ApiError::bad_request(format!(
                    "instance {v} is not a member of instance pool {id}"
                )));
            }
        }
        let mut unique = victims.to_vec();
        unique.sort();
        unique.dedup();
        let done = now + self.timing.operation_delay;
        for v in &unique {
            self.retire(*v, done);
        }
        let from = pool.size;
        let to = from.saturating_sub(unique.len() as u64);
        self.pools.get_mut(&id).expect("exists").size = to;
        self.mark_scaling(id, from, to, done);
        Ok(self.new_operation(
            now,
            "evict-instance-pool-members",
            Some((id, format!("/v2/instance-pool/{id}"))),
            None,
        ))
    }

    /// An out-of-band size change, as from the web console: takes effect at once, no operation.
    pub fn set_size(&mut self, now: Instant, id: Uuid, size: u64) -> Result<(), ApiError> {
        let pool = self.pool_mut(id)?;
        let from = pool.size;
        pool.size = size;
        let done = now + self.timing.operation_delay;
        self.reconcile(id, now, Some(done))?;
        self.mark_scaling(id, from, size, done);
        Ok(())
    }

    /// An instance dies: it is gone at once and its pool starts a replacement.
    pub fn kill(&mut self, now: Instant, id: Uuid) -> Result<(), ApiError> {
        let pool = self
            .instances
            .get(&id)
            .ok_or_else(|| ApiError::not_found("instance", id))?
            .pool;
        self.remove_instance(id);
        if let Some(p) = pool {
            self.reconcile(p, now, None)?;
        }
        Ok(())
    }

    /// Records a member's health as its load balancer sees it.
    pub fn set_health(&mut self, id: Uuid, healthy: bool) -> Result<(), ApiError> {
        if !self.instances.contains_key(&id) {
            return Err(ApiError::not_found("instance", id));
        }
        self.health.insert(id, healthy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::Timing;
    use super::*;
    use crate::config::Zone;
    use crate::sim::backend::RecordBackend;

    fn state() -> State {
        State::new(
            Zone::DEFAULT,
            Timing {
                operation_delay: Duration::from_secs(2),
                boot_delay: Duration::from_secs(5),
            },
            Arc::new(RecordBackend::new()),
        )
    }

    fn live(s: &State, pool: Uuid) -> Vec<InstanceState> {
        s.pools[&pool]
            .members
            .iter()
            .map(|m| s.instances[m].state)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn scale_up_boots_new_members_and_the_operation_settles() {
        let mut s = state();
        let t0 = Instant::now();
        let pool = s
            .create_pool(t0, None, "web", 1, "standard.micro", true)
            .unwrap();
        let op = s.scale(t0, pool, 3).unwrap();
        assert_eq!(op.state, OperationState::Pending);
        assert_eq!(s.pool_view(pool).unwrap().state, PoolState::ScalingUp);
        use InstanceState::*;
        assert_eq!(live(&s, pool), vec![Running, Starting, Starting]);
        s.advance(t0 + Duration::from_secs(2));
        assert_eq!(s.operation(op.id).unwrap().state, OperationState::Success);
        assert_eq!(s.pool_view(pool).unwrap().state, PoolState::Running);
        s.advance(t0 + Duration::from_secs(5));
        assert_eq!(live(&s, pool), vec![Running, Running, Running]);
    }

    #[tokio::test(start_paused = true)]
    async fn shrinking_removes_the_oldest_members() {
        let mut s = state();
        let t0 = Instant::now();
        let pool = s
            .create_pool(t0, None, "web", 1, "standard.micro", true)
            .unwrap();
        let oldest = s.pools[&pool].members[0];
        s.scale(t0 + Duration::from_secs(1), pool, 2).unwrap();
        s.advance(t0 + Duration::from_secs(10));
        s.scale(t0 + Duration::from_secs(10), pool, 1).unwrap();
        assert_eq!(s.instances[&oldest].state, InstanceState::Destroying);
        s.advance(t0 + Duration::from_secs(12));
        assert!(!s.instances.contains_key(&oldest));
        assert_eq!(s.pools[&pool].members.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn evict_removes_exactly_the_named_members() {
        let mut s = state();
        let t0 = Instant::now();
        let pool = s
            .create_pool(t0, None, "web", 3, "standard.micro", true)
            .unwrap();
        let victim = s.pools[&pool].members[1];
        s.evict(t0, pool, &[victim]).unwrap();
        assert_eq!(s.pools[&pool].size, 2);
        s.advance(t0 + Duration::from_secs(3));
        assert!(!s.pools[&pool].members.contains(&victim));
        assert_eq!(s.pools[&pool].members.len(), 2);
        let stranger = Uuid::new_v4();
        assert_eq!(s.evict(t0, pool, &[stranger]).unwrap_err().status, 400);
    }

    #[tokio::test(start_paused = true)]
    async fn a_killed_member_is_replaced() {
        let mut s = state();
        let t0 = Instant::now();
        let pool = s
            .create_pool(t0, None, "web", 2, "standard.micro", true)
            .unwrap();
        let victim = s.pools[&pool].members[0];
        s.kill(t0, victim).unwrap();
        assert_eq!(s.pools[&pool].members.len(), 2);
        assert!(!s.pools[&pool].members.contains(&victim));
    }
}
