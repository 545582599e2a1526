//! The simulator's starting state, from flags or a TOML seed file.
//!
//! ```toml
//! zone = "ch-gva-2"
//! api-key = "EXO..."          # default: generated at start
//! api-secret = "..."
//! operation-delay = "2s"
//! boot-delay = "5s"
//!
//! [[pool]]
//! name = "web"
//! size = 1
//! instance-type = "standard.micro"
//! load-balancer = true        # an NLB forwarding port 80 to the members' 8080
//! ```

use std::net::Ipv4Addr;

use serde::Deserialize;
use uuid::Uuid;

use super::state::{ApiError, State};
use crate::config::{Dur, Secret, Zone};
use crate::exoscale::models::Healthcheck;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Seed {
    pub zone: Option<Zone>,
    pub api_key: Option<String>,
    pub api_secret: Option<Secret>,
    pub operation_delay: Option<Dur>,
    pub boot_delay: Option<Dur>,
    #[serde(default, rename = "pool")]
    pub pools: Vec<SeedPool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SeedPool {
    pub id: Option<Uuid>,
    pub name: String,
    #[serde(default = "one")]
    pub size: u64,
    #[serde(default = "micro")]
    pub instance_type: String,
    #[serde(default = "yes")]
    pub load_balancer: bool,
    #[serde(default = "port_80")]
    pub nlb_port: u16,
    #[serde(default = "port_8080")]
    pub target_port: u16,
}

fn one() -> u64 {
    1
}
fn micro() -> String {
    "standard.micro".into()
}
fn yes() -> bool {
    true
}
fn port_80() -> u16 {
    80
}
fn port_8080() -> u16 {
    8080
}

impl SeedPool {
    /// The pool `poolpilot sim --pool-size N` creates.
    pub fn default_with_size(size: u64) -> Self {
        Self {
            id: None,
            name: "poolpilot".into(),
            size,
            instance_type: micro(),
            load_balancer: true,
            nlb_port: 80,
            target_port: 8080,
        }
    }
}

/// The health check the course's NLB uses: HTTP `/health` on the target port every 10 s,
/// 2 s timeout, 1 retry (Exoscale's defaults for interval and timeout).
pub fn default_healthcheck(port: u16) -> Healthcheck {
    Healthcheck {
        mode: "http".into(),
        port,
        uri: Some("/health".into()),
        interval: 10,
        timeout: 2,
        retries: 1,
    }
}

/// What seeding created.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub pool: Uuid,
    pub load_balancer: Option<Uuid>,
}

/// Creates the seed's pools (members already running) and their load balancers.
pub fn apply(state: &mut State, pools: &[SeedPool]) -> Result<Vec<Seeded>, ApiError> {
    let now = tokio::time::Instant::now();
    let mut out = Vec::new();
    for (i, p) in pools.iter().enumerate() {
        let pool = state.create_pool(now, p.id, &p.name, p.size, &p.instance_type, true)?;
        let load_balancer = p.load_balancer.then(|| {
            // The NLBs' addresses count down from 198.51.100.254, above the members' range.
            let ip = Ipv4Addr::new(198, 51, 100, 254 - (i as u8 % 4));
            state.create_load_balancer(
                &format!("{}-nlb", p.name),
                ip,
                pool,
                p.nlb_port,
                p.target_port,
                default_healthcheck(p.target_port),
            )
        });
        out.push(Seeded {
            pool,
            load_balancer,
        });
    }
    Ok(out)
}
