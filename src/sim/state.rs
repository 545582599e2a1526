//! The simulated zone: pools, instances, operations, load balancers, templates.
//!
//! Time moves lazily: every request first calls [`State::advance`], which settles what has come
//! due (operations succeed after `operation_delay`, instances boot after `boot_delay`, removed
//! instances disappear when their operation ends). Nothing runs in the background, so tests on
//! tokio's paused clock see exactly the transitions they step through.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use super::backend::{BackendError, InstanceBackend, LaunchSpec};
use crate::config::Zone;
use crate::exoscale::models::*;

/// How long the simulated cloud takes.
#[derive(Clone, Debug)]
pub struct Timing {
    /// From a write to its operation's success.
    pub operation_delay: Duration,
    /// From an instance's creation to `running`.
    pub boot_delay: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            operation_delay: Duration::from_secs(2),
            boot_delay: Duration::from_secs(5),
        }
    }
}

/// A failure of the simulator's API that tests can match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(404, format!("{what} {id} not found"))
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        ApiError::new(500, e.to_string())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SimPool {
    pub id: Uuid,
    pub name: String,
    pub size: u64,
    pub state: PoolState,
    pub instance_type: Uuid,
    pub template: Uuid,
    pub members: Vec<Uuid>,
    /// While set, the pool is scaling; it returns to `running` at that instant.
    pub busy_until: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(crate) struct SimInstance {
    pub id: Uuid,
    pub name: String,
    pub pool: Option<Uuid>,
    pub ip: Ipv4Addr,
    pub created_at: OffsetDateTime,
    pub created: Instant,
    pub state: InstanceState,
    pub ready_at: Instant,
    pub remove_at: Option<Instant>,
    pub instance_type: Uuid,
    pub template: Uuid,
}

#[derive(Debug, Clone)]
enum Effect {
    RegisterTemplate(Template),
}

#[derive(Debug, Clone)]
struct SimOperation {
    op: Operation,
    done_at: Instant,
    effect: Option<Effect>,
}

#[derive(Debug, Clone)]
pub(crate) struct SimService {
    pub id: Uuid,
    pub name: String,
    pub port: u16,
    pub target_port: u16,
    pub pool: Uuid,
    pub healthcheck: Healthcheck,
}

#[derive(Debug, Clone)]
pub(crate) struct SimLoadBalancer {
    pub id: Uuid,
    pub name: String,
    pub ip: Ipv4Addr,
    pub services: Vec<SimService>,
}

/// The whole simulated zone.
pub struct State {
    pub zone: Zone,
    pub timing: Timing,
    backend: Arc<dyn InstanceBackend>,
    pub(crate) pools: BTreeMap<Uuid, SimPool>,
    pub(crate) instances: BTreeMap<Uuid, SimInstance>,
    operations: BTreeMap<Uuid, SimOperation>,
    pub(crate) load_balancers: BTreeMap<Uuid, SimLoadBalancer>,
    pub(crate) templates: BTreeMap<Uuid, Template>,
    pub(crate) instance_types: Vec<InstanceType>,
    /// Health reported by whoever probes the members (the local NLB, or an admin override);
    /// members without an entry count as healthy once running.
    pub(crate) health: BTreeMap<Uuid, bool>,
    /// Monotonic counter for instance names, as Exoscale suffixes pool members.
    next_name: u64,
}

impl State {
    pub fn new(zone: Zone, timing: Timing, backend: Arc<dyn InstanceBackend>) -> Self {
        let mut s = Self {
            zone,
            timing,
            backend,
            pools: BTreeMap::new(),
            instances: BTreeMap::new(),
            operations: BTreeMap::new(),
            load_balancers: BTreeMap::new(),
            templates: BTreeMap::new(),
            instance_types: super::catalog::instance_types(zone),
            health: BTreeMap::new(),
            next_name: 0,
        };
        for t in super::catalog::public_templates(zone) {
            s.templates.insert(t.id, t);
        }
        s
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Settles everything that has come due by `now`.
    pub fn advance(&mut self, now: Instant) {
        let mut effects = Vec::new();
        for sop in self.operations.values_mut() {
            if sop.op.state == OperationState::Pending && sop.done_at <= now {
                sop.op.state = OperationState::Success;
                if let Some(e) = sop.effect.take() {
                    effects.push(e);
                }
            }
        }
        for e in effects {
            match e {
                Effect::RegisterTemplate(t) => {
                    self.templates.insert(t.id, t);
                }
            }
        }
        let gone: Vec<Uuid> = self
            .instances
            .values()
            .filter(|i| i.remove_at.is_some_and(|t| t <= now))
            .map(|i| i.id)
            .collect();
        for id in gone {
            self.remove_instance(id);
        }
        for inst in self.instances.values_mut() {
            if inst.state == InstanceState::Starting
                && inst.ready_at <= now
                && self.backend.is_ready(inst.id)
            {
                inst.state = InstanceState::Running;
            }
        }
        for pool in self.pools.values_mut() {
            if pool.busy_until.is_some_and(|t| t <= now) {
                pool.busy_until = None;
                pool.state = PoolState::Running;
            }
        }
    }

    fn remove_instance(&mut self, id: Uuid) {
        if let Some(inst) = self.instances.remove(&id) {
            self.backend.terminate(id, inst.ip);
            self.health.remove(&id);
            if let Some(pool) = inst.pool.and_then(|p| self.pools.get_mut(&p)) {
                pool.members.retain(|m| *m != id);
            }
        }
    }

    fn new_operation(
        &mut self,
        now: Instant,
        command: &str,
        reference: Option<(Uuid, String)>,
        effect: Option<Effect>,
    ) -> Operation {
        let op = Operation {
            id: Uuid::new_v4(),
            state: OperationState::Pending,
            reason: None,
            message: None,
            reference: Some(OperationRef {
                id: reference.as_ref().map(|r| r.0),
                link: reference.map(|r| r.1),
                command: Some(command.to_owned()),
            }),
        };
        self.operations.insert(
            op.id,
            SimOperation {
                op: op.clone(),
                done_at: now + self.timing.operation_delay,
                effect,
            },
        );
        op
    }

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

    /// Creates a network load balancer with one TCP service forwarding `port` to the pool's
    /// `target_port`, health-checked over HTTP at `/health`.
    pub fn create_load_balancer(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        pool: Uuid,
        port: u16,
        target_port: u16,
        healthcheck: Healthcheck,
    ) -> Uuid {
        let id = Uuid::new_v4();
        self.load_balancers.insert(
            id,
            SimLoadBalancer {
                id,
                name: name.to_owned(),
                ip,
                services: vec![SimService {
                    id: Uuid::new_v4(),
                    name: format!("{name}-{port}"),
                    port,
                    target_port,
                    pool,
                    healthcheck,
                }],
            },
        );
        id
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
                let ip = self.backend.launch(&LaunchSpec {
                    id,
                    name: name.clone(),
                    pool: Some(pool.id),
                })?;
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

    /// `POST /v2/template`.
    pub fn register_template(
        &mut self,
        now: Instant,
        req: RegisterTemplate,
    ) -> Result<Operation, ApiError> {
        if req.name.is_empty() || req.name.len() > 255 {
            return Err(ApiError::bad_request("name: must be 1 to 255 characters"));
        }
        if !(req.url.starts_with("https://") || req.url.starts_with("http://")) {
            return Err(ApiError::bad_request("url: must be an http(s) URL"));
        }
        if req.checksum.len() != 32 || !req.checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(
                "checksum: must be an MD5 digest in hex",
            ));
        }
        let boot_mode = req.boot_mode.clone().unwrap_or_else(|| "legacy".into());
        if boot_mode != "legacy" && boot_mode != "uefi" {
            return Err(ApiError::bad_request("boot-mode: must be legacy or uefi"));
        }
        let t = Template {
            id: Uuid::new_v4(),
            name: req.name,
            description: req.description,
            family: Some("other (64-bit)".into()),
            visibility: Some("private".into()),
            boot_mode: Some(boot_mode),
            checksum: Some(req.checksum.to_lowercase()),
            url: Some(req.url),
            default_user: req.default_user,
            ssh_key_enabled: Some(req.ssh_key_enabled),
            password_enabled: Some(req.password_enabled),
            size: Some(10 * 1024 * 1024 * 1024),
            created_at: Some(
                OffsetDateTime::now_utc()
                    .replace_nanosecond(0)
                    .expect("0 is valid"),
            ),
            zones: vec![self.zone.name().to_owned()],
        };
        let id = t.id;
        Ok(self.new_operation(
            now,
            "register-template",
            Some((id, format!("/v2/template/{id}"))),
            Some(Effect::RegisterTemplate(t)),
        ))
    }

    pub fn operation(&self, id: Uuid) -> Result<Operation, ApiError> {
        self.operations
            .get(&id)
            .map(|o| o.op.clone())
            .ok_or_else(|| ApiError::not_found("operation", id))
    }

    pub fn pool_view(&self, id: Uuid) -> Result<InstancePool, ApiError> {
        let p = self
            .pools
            .get(&id)
            .ok_or_else(|| ApiError::not_found("instance pool", id))?;
        Ok(InstancePool {
            id: p.id,
            name: Some(p.name.clone()),
            description: None,
            size: p.size,
            state: p.state,
            instances: p.members.iter().map(|m| Ref { id: *m }).collect(),
            instance_type: Some(Ref {
                id: p.instance_type,
            }),
            template: Some(Ref { id: p.template }),
            instance_prefix: Some("pool".into()),
        })
    }

    pub fn pools_view(&self) -> Vec<InstancePool> {
        self.pools
            .keys()
            .filter_map(|id| self.pool_view(*id).ok())
            .collect()
    }

    pub(crate) fn instance(&self, id: Uuid) -> Result<&SimInstance, ApiError> {
        self.instances
            .get(&id)
            .ok_or_else(|| ApiError::not_found("instance", id))
    }

    /// Instances, filtered as `GET /v2/instance?manager-id=` does.
    pub(crate) fn instances_managed_by(&self, manager: Option<Uuid>) -> Vec<&SimInstance> {
        self.instances
            .values()
            .filter(|i| manager.is_none() || i.pool == manager)
            .collect()
    }

    pub(crate) fn instance_type(&self, id: Uuid) -> Option<&InstanceType> {
        self.instance_types.iter().find(|t| t.id == id)
    }

    /// The pool's members in state `running` that have an address: what a load balancer probes.
    pub fn running_members(&self, pool: Uuid) -> Vec<(Uuid, Ipv4Addr)> {
        let Some(p) = self.pools.get(&pool) else {
            return Vec::new();
        };
        p.members
            .iter()
            .filter_map(|m| self.instances.get(m))
            .filter(|i| i.state == InstanceState::Running)
            .map(|i| (i.id, i.ip))
            .collect()
    }

    /// Whether the load balancer would send traffic to this member.
    pub(crate) fn is_healthy(&self, inst: &SimInstance) -> bool {
        inst.state == InstanceState::Running && self.health.get(&inst.id).copied().unwrap_or(true)
    }

    pub fn load_balancer_view(&self, id: Uuid) -> Result<LoadBalancer, ApiError> {
        let lb = self
            .load_balancers
            .get(&id)
            .ok_or_else(|| ApiError::not_found("load balancer", id))?;
        Ok(LoadBalancer {
            id: lb.id,
            name: lb.name.clone(),
            ip: Some(lb.ip),
            state: Some("running".into()),
            services: lb
                .services
                .iter()
                .map(|s| {
                    let members = self
                        .pools
                        .get(&s.pool)
                        .map(|p| p.members.clone())
                        .unwrap_or_default();
                    LoadBalancerService {
                        id: s.id,
                        name: s.name.clone(),
                        protocol: "tcp".into(),
                        port: s.port,
                        target_port: s.target_port,
                        strategy: "round-robin".into(),
                        instance_pool: Ref { id: s.pool },
                        healthcheck: s.healthcheck.clone(),
                        healthcheck_status: members
                            .iter()
                            .filter_map(|m| self.instances.get(m))
                            .map(|i| ServerStatus {
                                public_ip: i.ip,
                                status: if self.is_healthy(i) {
                                    HealthStatus::Success
                                } else {
                                    HealthStatus::Failure
                                },
                            })
                            .collect(),
                        state: Some("running".into()),
                    }
                })
                .collect(),
        })
    }

    pub fn load_balancers_view(&self) -> Vec<LoadBalancer> {
        self.load_balancers
            .keys()
            .filter_map(|id| self.load_balancer_view(*id).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
