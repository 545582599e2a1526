//! `poolpilot discovery`: the pools' members as a Prometheus file_sd file.
//!
//! Every `interval` the agent reads each watched pool (each in its zone, one API client per
//! zone: `--pool [NAME=][ZONE:]ID`) and its members from the API, renders one
//! target group per (member, target port) and writes the file only when its content changed,
//! atomically ([`file_sd`]). Prometheus picks the change up through its directory watch.
//!
//! - Every member that has an address is listed, whatever its state (the course's checker
//!   expects starting members too); the state is a label, so a relabel rule can drop them.
//! - An API error (after the client's retries) keeps the last good file: a half-known pool is
//!   never written, and an outage never empties Prometheus' targets. The first failure of a
//!   streak is logged as a warning, the rest at debug, the recovery at info; all are counted.
//! - A pool that is really empty writes an empty list: that is information, not an error.
//!
//! Labels per target (plain names, so they survive into the scraped series unless relabelled):
//! `exoscale_instance_id`, `exoscale_instance_name`, `exoscale_instance_pool_id`, `exoscale_zone`,
//! `exoscale_instance_state`, `exoscale_target_port`, `exoscale_target_name`.

pub mod file_sd;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::{PoolRef, Zone};
use crate::exoscale::{self, Client, Instance};
pub use file_sd::{TargetGroup, Written};

/// The course's output path.
pub const DEFAULT_OUTPUT: &str = "/srv/service-discovery/config.json";
/// node_exporter's port, the course's default target.
pub const DEFAULT_TARGET: TargetPort = TargetPort {
    name: Name::Static("node"),
    port: 9100,
};

/// A port to list every member on, with the name its target group carries
/// (`exoscale_target_name`). Written `NAME=PORT` or `PORT` (then the name is the number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetPort {
    pub name: Name,
    pub port: u16,
}

/// A target name; `Static` only so the default can be a constant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    Static(&'static str),
    Owned(String),
}

impl Name {
    pub fn as_str(&self) -> &str {
        match self {
            Name::Static(s) => s,
            Name::Owned(s) => s,
        }
    }
}

impl FromStr for TargetPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (name, port) = match s.split_once('=') {
            Some((n, p)) => (n.trim(), p.trim()),
            None => (s, s),
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{s}`: the port must be a number from 1 to 65535"))?;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "`{s}`: the name may only hold letters, digits, `_` and `-`"
            ));
        }
        Ok(TargetPort {
            name: Name::Owned(name.to_owned()),
            port,
        })
    }
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name.as_str(), self.port)
    }
}

impl<'de> serde::Deserialize<'de> for TargetPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Port(u16),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Port(p) => p.to_string().parse(),
            Raw::Text(t) => t.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// A validated agent configuration.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// Each pool with its zone; all of them go to the one file.
    pub pools: Vec<PoolRef>,
    pub ports: Vec<TargetPort>,
    pub output: PathBuf,
    pub interval: Duration,
}

/// A pool member as read from the API, with the pool it belongs to and that pool's zone.
#[derive(Clone, Debug)]
pub struct Member {
    pub pool: Uuid,
    pub zone: Zone,
    pub instance: Instance,
}

/// The target groups for `members`: one per (member with an address, port), sorted by port (in
/// the configured order), then address, then instance id, so that equal input gives equal bytes.
pub fn render(members: &[Member], ports: &[TargetPort]) -> Vec<TargetGroup> {
    let mut with_ip: Vec<(&Member, std::net::Ipv4Addr)> = members
        .iter()
        .filter_map(|m| m.instance.public_ip.map(|ip| (m, ip)))
        .collect();
    with_ip.sort_by_key(|(m, ip)| (*ip, m.instance.id));
    let mut groups = Vec::with_capacity(with_ip.len() * ports.len());
    for port in ports {
        let port_text = port.port.to_string();
        for (m, ip) in &with_ip {
            let i = &m.instance;
            let mut labels = BTreeMap::new();
            labels.insert("exoscale_instance_id".into(), i.id.to_string());
            if let Some(name) = &i.name {
                labels.insert("exoscale_instance_name".into(), name.clone());
            }
            labels.insert("exoscale_instance_pool_id".into(), m.pool.to_string());
            labels.insert("exoscale_zone".into(), m.zone.name().to_owned());
            labels.insert(
                "exoscale_instance_state".into(),
                i.state.as_str().to_owned(),
            );
            labels.insert("exoscale_target_port".into(), port_text.clone());
            labels.insert("exoscale_target_name".into(), port.name.as_str().to_owned());
            groups.push(TargetGroup {
                targets: vec![format!("{ip}:{}", port.port)],
                labels,
            });
        }
    }
    groups
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The agent's own metrics.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    targets: Gauge,
    refreshes: Family<ResultLabel, Counter>,
    writes: Counter,
    last_success: Gauge<f64, AtomicU64>,
    consecutive_failures: Gauge,
}

impl Metrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "poolpilot_discovery_targets",
            "Targets in the file_sd file as last written",
            m.targets.clone(),
        );
        r.register(
            "poolpilot_discovery_refreshes",
            "Refresh cycles by result: success, api_error, write_error",
            m.refreshes.clone(),
        );
        r.register(
            "poolpilot_discovery_file_writes",
            "Times the file_sd file was replaced because its content changed",
            m.writes.clone(),
        );
        r.register_with_unit(
            "poolpilot_discovery_last_success_timestamp",
            "Unix time of the last refresh that read every pool and wrote (or kept) the file",
            Unit::Seconds,
            m.last_success.clone(),
        );
        r.register(
            "poolpilot_discovery_consecutive_failures",
            "Failed refreshes since the last success",
            m.consecutive_failures.clone(),
        );
        m
    }
}

/// Why a refresh failed; the file was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("reading pool {pool}: {source}")]
    Api {
        pool: Uuid,
        #[source]
        source: exoscale::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RefreshError {
    fn result_label(&self) -> &'static str {
        match self {
            RefreshError::Api { .. } => "api_error",
            RefreshError::Write { .. } => "write_error",
        }
    }
}

/// What a successful refresh did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refreshed {
    pub targets: usize,
    pub written: Written,
}

/// Health as `/healthz` reports it.
#[derive(Debug, Default)]
pub struct Health {
    /// Unix milliseconds of the last success; 0 before the first.
    last_success_ms: AtomicU64,
    consecutive_failures: AtomicU64,
}

impl Health {
    /// `Ok` with a summary when the last success is recent enough, else `Err` saying why.
    pub fn check(&self, max_age: Duration) -> Result<String, String> {
        let last = self.last_success_ms.load(Ordering::Relaxed);
        let failures = self.consecutive_failures.load(Ordering::Relaxed);
        if last == 0 {
            return Err(format!(
                "no successful refresh yet ({failures} failed so far)"
            ));
        }
        let age = Duration::from_millis(unix_ms().saturating_sub(last));
        if age > max_age {
            return Err(format!(
                "last successful refresh {}s ago ({failures} failed since)",
                age.as_secs()
            ));
        }
        Ok(format!(
            "ok: last successful refresh {}s ago",
            age.as_secs()
        ))
    }
}

fn unix_ms() -> u64 {
    crate::config::unix_now().as_millis() as u64
}

/// The discovery agent.
pub struct Agent {
    /// One client per zone the pools are in.
    clients: Vec<Client>,
    cfg: DiscoveryConfig,
    metrics: Metrics,
    health: Arc<Health>,
    failing_since: Option<u64>,
}

impl Agent {
    /// `clients`: one for each zone of `cfg.pools` (a pool whose zone has none fails its read).
    pub fn new(clients: Vec<Client>, cfg: DiscoveryConfig, metrics: Metrics) -> Self {
        Self {
            clients,
            cfg,
            metrics,
            health: Arc::new(Health::default()),
            failing_since: None,
        }
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Reads every pool; any failure fails the whole read (a partial view is never written).
    pub async fn read_members(&self) -> Result<Vec<Member>, RefreshError> {
        let mut members = Vec::new();
        for p in &self.cfg.pools {
            let (pool, zone) = (p.id, p.zone);
            let api = |source| RefreshError::Api { pool, source };
            let client = self
                .clients
                .iter()
                .find(|c| c.zone() == zone)
                .ok_or_else(|| api(exoscale::Error::Config(format!("no API client for {zone}"))))?;
            // Reading the pool first turns a wrong id into an error instead of an empty list.
            client.get_instance_pool(pool).await.map_err(api)?;
            let instances = client.list_pool_members(pool).await.map_err(api)?;
            members.extend(instances.into_iter().map(|instance| Member {
                pool,
                zone,
                instance,
            }));
        }
        Ok(members)
    }

    /// One cycle: read, render, write when changed. Records metrics and health either way.
    pub async fn refresh(&mut self) -> Result<Refreshed, RefreshError> {
        let outcome = self.try_refresh().await;
        match &outcome {
            Ok(r) => {
                self.metrics
                    .refreshes
                    .get_or_create(&ResultLabel { result: "success" })
                    .inc();
                self.metrics.targets.set(r.targets as i64);
                if r.written == Written::Replaced {
                    self.metrics.writes.inc();
                }
                let now = unix_ms();
                self.metrics.last_success.set(now as f64 / 1000.0);
                self.metrics.consecutive_failures.set(0);
                self.health.last_success_ms.store(now, Ordering::Relaxed);
                self.health.consecutive_failures.store(0, Ordering::Relaxed);
                if let Some(failures) = self.failing_since.take() {
                    info!(failures, targets = r.targets, "discovery recovered");
                }
                if r.written == Written::Replaced {
                    info!(targets = r.targets, output = %self.cfg.output.display(), "targets written");
                } else {
                    debug!(targets = r.targets, "targets unchanged");
                }
            }
            Err(e) => {
                self.metrics
                    .refreshes
                    .get_or_create(&ResultLabel {
                        result: e.result_label(),
                    })
                    .inc();
                let failures = self.failing_since.map_or(1, |n| n + 1);
                self.failing_since = Some(failures);
                self.metrics.consecutive_failures.set(failures as i64);
                self.health
                    .consecutive_failures
                    .store(failures, Ordering::Relaxed);
                if failures == 1 {
                    warn!(error = %e, "discovery failed; keeping the last good file");
                } else {
                    debug!(error = %e, failures, "discovery still failing");
                }
            }
        }
        outcome
    }

    async fn try_refresh(&self) -> Result<Refreshed, RefreshError> {
        let members = self.read_members().await?;
        let groups = render(&members, &self.cfg.ports);
        let bytes = file_sd::to_bytes(&groups);
        let output = self.cfg.output.clone();
        let written =
            tokio::task::spawn_blocking(move || file_sd::write_if_changed(&output, &bytes))
                .await
                .expect("the writer does not panic")
                .map_err(|source| RefreshError::Write {
                    path: self.cfg.output.clone(),
                    source,
                })?;
        Ok(Refreshed {
            targets: groups.len(),
            written,
        })
    }

    /// Refreshes now and then every interval, forever (the caller stops it by dropping it).
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = self.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exoscale::InstanceState;

    fn member(pool: Uuid, n: u8, ip: Option<[u8; 4]>, state: InstanceState) -> Member {
        Member {
            pool,
            zone: Zone::DEFAULT,
            instance: serde_json::from_value(serde_json::json!({
                "id": Uuid::from_u128(n as u128),
                "name": format!("pool-{n}"),
                "state": state,
                "public-ip": ip.map(|a| std::net::Ipv4Addr::from(a).to_string()),
            }))
            .unwrap(),
        }
    }

    #[test]
    fn target_ports_parse_with_and_without_names() {
        let p: TargetPort = "node=9100".parse().unwrap();
        assert_eq!((p.name.as_str(), p.port), ("node", 9100));
        let p: TargetPort = "8080".parse().unwrap();
        assert_eq!((p.name.as_str(), p.port), ("8080", 8080));
        for bad in ["", "0", "70000", "x=", "=80", "a b=80", "node=port"] {
            assert!(bad.parse::<TargetPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn render_lists_members_with_addresses_sorted_one_group_per_port() {
        let pool = Uuid::from_u128(7);
        let members = vec![
            member(pool, 3, Some([198, 51, 100, 20]), InstanceState::Running),
            member(pool, 1, None, InstanceState::Starting),
            member(pool, 2, Some([198, 51, 100, 3]), InstanceState::Starting),
        ];
        let ports = vec![DEFAULT_TARGET, "app=8080".parse().unwrap()];
        let groups = render(&members, &ports);
        let targets: Vec<_> = groups.iter().map(|g| g.targets[0].as_str()).collect();
        assert_eq!(
            targets,
            [
                "198.51.100.3:9100",
                "198.51.100.20:9100",
                "198.51.100.3:8080",
                "198.51.100.20:8080"
            ]
        );
        let l = &groups[0].labels;
        assert_eq!(l["exoscale_instance_state"], "starting");
        assert_eq!(l["exoscale_instance_name"], "pool-2");
        assert_eq!(l["exoscale_instance_pool_id"], pool.to_string());
        assert_eq!(l["exoscale_zone"], "ch-gva-2");
        assert_eq!(l["exoscale_target_name"], "node");
        assert_eq!(groups[3].labels["exoscale_target_port"], "8080");
        assert!(
            groups
                .iter()
                .all(|g| g.labels.keys().all(|k| !k.starts_with("__")))
        );
        // Same input, same bytes, whatever the order the API listed members in.
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(
            file_sd::to_bytes(&groups),
            file_sd::to_bytes(&render(&reversed, &ports))
        );
        assert_eq!(file_sd::to_bytes(&render(&[], &ports)), b"[]\n");
    }

    #[test]
    fn each_member_carries_its_own_zone() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut m = vec![
            member(a, 1, Some([198, 51, 100, 1]), InstanceState::Running),
            member(b, 2, Some([198, 51, 100, 2]), InstanceState::Running),
        ];
        m[1].zone = Zone::DeFra1;
        let groups = render(&m, &[DEFAULT_TARGET]);
        let zones: Vec<(&str, &str)> = groups
            .iter()
            .map(|g| {
                (
                    g.labels["exoscale_instance_pool_id"].as_str(),
                    g.labels["exoscale_zone"].as_str(),
                )
            })
            .collect();
        let (sa, sb) = (a.to_string(), b.to_string());
        assert_eq!(
            zones,
            [(sa.as_str(), "ch-gva-2"), (sb.as_str(), "de-fra-1")]
        );
    }
}
