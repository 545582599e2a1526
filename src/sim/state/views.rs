//! The zone as the API answers it: pools, instances, operations and load balancers in the
//! shapes of Exoscale's OpenAPI spec (checked by `tests/contract.rs`).

use std::net::Ipv4Addr;

use uuid::Uuid;

use super::{ApiError, SimInstance, State};
use crate::exoscale::models::*;

impl State {
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
