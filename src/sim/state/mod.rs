//! The simulated zone: pools, instances, operations, load balancers, templates.
//!
//! Time moves lazily: every request first calls [`State::advance`], which settles what has come
//! due (operations succeed after `operation_delay`, instances boot after `boot_delay`, removed
//! instances disappear when their operation ends). Nothing runs in the background, so tests on
//! tokio's paused clock see exactly the transitions they step through; the one exception is the
//! image download of a template registration, whose operation stays pending until the download
//! ends ([`State::finish_download`]).
//!
//! [`pools`] holds the pool lifecycle (create, reconcile, scale, evict, kill); [`views`] the
//! answers in the shapes of Exoscale's spec, which `tests/contract.rs` checks.

mod pools;
mod views;

use std::collections::{BTreeMap, BTreeSet};
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
    RegisterTemplate(Box<Template>),
    DeleteTemplate(Uuid),
}

#[derive(Debug, Clone)]
struct SimOperation {
    op: Operation,
    done_at: Instant,
    effect: Option<Effect>,
    /// Waiting for the image download of a registration: not due until it ends.
    downloading: bool,
}

/// A registration whose image the simulator must download and check before it can succeed.
#[derive(Clone, Debug)]
pub struct PendingDownload {
    pub operation: Uuid,
    pub url: String,
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
    /// Machines allocated under the lock, for the simulator to start once it is released.
    starts: Vec<(LaunchSpec, Ipv4Addr)>,
    /// Booting instances the backend has said are ready (when it probes readiness).
    ready: BTreeSet<Uuid>,
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
            starts: Vec::new(),
            ready: BTreeSet::new(),
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
            if sop.op.state == OperationState::Pending && !sop.downloading && sop.done_at <= now {
                sop.op.state = OperationState::Success;
                if let Some(e) = sop.effect.take() {
                    effects.push(e);
                }
            }
        }
        for e in effects {
            match e {
                Effect::RegisterTemplate(t) => {
                    self.templates.insert(t.id, *t);
                }
                Effect::DeleteTemplate(id) => {
                    self.templates.remove(&id);
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
        let probes = self.backend.probes_readiness();
        for inst in self.instances.values_mut() {
            if inst.state == InstanceState::Starting
                && inst.ready_at <= now
                && (!probes || self.ready.contains(&inst.id))
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
            self.ready.remove(&id);
            if let Some(pool) = inst.pool.and_then(|p| self.pools.get_mut(&p)) {
                pool.members.retain(|m| *m != id);
            }
        }
    }

    /// The backend, for the simulator's calls made with the zone unlocked.
    pub(crate) fn backend(&self) -> Arc<dyn InstanceBackend> {
        self.backend.clone()
    }

    /// The machines allocated since the last call, to start with the zone unlocked.
    pub(crate) fn take_starts(&mut self) -> Vec<(LaunchSpec, Ipv4Addr)> {
        std::mem::take(&mut self.starts)
    }

    /// A machine that failed to start: its instance is gone, as if it had died.
    pub(crate) fn start_failed(&mut self, id: Uuid) {
        self.remove_instance(id);
    }

    /// Booting instances past their boot delay whose readiness the backend must be asked.
    pub(crate) fn due_probes(&self, now: Instant) -> Vec<Uuid> {
        if !self.backend.probes_readiness() {
            return Vec::new();
        }
        self.instances
            .values()
            .filter(|i| i.state == InstanceState::Starting && i.ready_at <= now)
            .filter(|i| !self.ready.contains(&i.id))
            .map(|i| i.id)
            .collect()
    }

    /// Records the backend's word that a booting instance is ready; [`State::advance`] makes it
    /// running.
    pub(crate) fn mark_ready(&mut self, id: Uuid) {
        if self.instances.contains_key(&id) {
            self.ready.insert(id);
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
                downloading: false,
            },
        );
        op
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

    /// `POST /v2/template`: the operation stays pending until the image is downloaded and its
    /// MD5 checked ([`State::finish_download`]); the template exists only once it succeeds.
    pub fn register_template(
        &mut self,
        now: Instant,
        req: RegisterTemplate,
    ) -> Result<(Operation, PendingDownload), ApiError> {
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
        let req_url = req.url.clone();
        let t = Template {
            id: Uuid::new_v4(),
            name: req.name,
            description: req.description,
            family: Some("other (64-bit)".into()),
            visibility: Some("private".into()),
            boot_mode: Some(boot_mode),
            checksum: Some(req.checksum.to_lowercase()),
            url: Some(req.url.clone()),
            default_user: req.default_user,
            ssh_key_enabled: Some(req.ssh_key_enabled),
            password_enabled: Some(req.password_enabled),
            // The size of the image downloaded, once it is.
            size: None,
            created_at: Some(
                OffsetDateTime::now_utc()
                    .replace_nanosecond(0)
                    .expect("0 is valid"),
            ),
            zones: vec![self.zone.name().to_owned()],
        };
        let id = t.id;
        let url = req_url;
        let op = self.new_operation(
            now,
            "register-template",
            Some((id, format!("/v2/template/{id}"))),
            Some(Effect::RegisterTemplate(Box::new(t))),
        );
        if let Some(sop) = self.operations.get_mut(&op.id) {
            sop.downloading = true;
        }
        let pending = PendingDownload {
            operation: op.id,
            url,
        };
        Ok((op, pending))
    }

    /// The download of a registration ended: with the image's size and MD5, the operation
    /// succeeds after the usual delay when the MD5 is the one registered; otherwise (a checksum
    /// mismatch, a failed download) it fails and no template remains.
    pub fn finish_download(
        &mut self,
        now: Instant,
        operation: Uuid,
        fetched: Result<super::download::Fetched, String>,
    ) {
        let delay = self.timing.operation_delay;
        let Some(sop) = self.operations.get_mut(&operation) else {
            return;
        };
        sop.downloading = false;
        let Some(Effect::RegisterTemplate(t)) = &mut sop.effect else {
            return;
        };
        let expected = t.checksum.clone().unwrap_or_default();
        let failure = match fetched {
            Ok(f) if f.md5.eq_ignore_ascii_case(&expected) => {
                t.size = Some(f.size);
                sop.done_at = now + delay;
                return;
            }
            Ok(f) => format!(
                "checksum mismatch: the image downloaded has MD5 {}, the registration said {expected}",
                f.md5
            ),
            Err(e) => e,
        };
        sop.effect = None;
        sop.op.state = OperationState::Failure;
        sop.op.reason = Some("incorrect".into());
        sop.op.message = Some(failure);
    }

    /// `DELETE /v2/template/{id}`: private templates only; gone when the operation succeeds.
    pub fn delete_template(&mut self, now: Instant, id: Uuid) -> Result<Operation, ApiError> {
        let t = self
            .templates
            .get(&id)
            .ok_or_else(|| ApiError::not_found("template", id))?;
        if t.visibility.as_deref() != Some("private") {
            return Err(ApiError::new(
                403,
                format!("template {id} is public: it cannot be deleted"),
            ));
        }
        Ok(self.new_operation(
            now,
            "delete-template",
            Some((id, format!("/v2/template/{id}"))),
            Some(Effect::DeleteTemplate(id)),
        ))
    }
}
