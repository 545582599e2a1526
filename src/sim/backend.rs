//! What stands behind a simulated instance. The simulator's API state never knows whether an
//! instance is a mere record or a real process: it asks its [`InstanceBackend`].

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use uuid::Uuid;

/// What the backend is told about a new instance.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    pub id: Uuid,
    pub name: String,
    pub pool: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("no address left for a new instance ({0})")]
    Exhausted(String),
    #[error("cannot start the instance: {0}")]
    Start(String),
}

/// Starts and stops whatever plays the part of a machine.
///
/// The simulator calls [`allocate`](Self::allocate) and [`terminate`](Self::terminate) with its
/// zone locked, so they only keep books; [`start`](Self::start) and
/// [`is_ready`](Self::is_ready), which may block (spawning a process, probing a port), are called
/// with the zone unlocked, so a slow machine never holds up another API request.
pub trait InstanceBackend: Send + Sync + 'static {
    /// A short name for logs (`records`, `processes`, ...).
    fn name(&self) -> &'static str;
    /// Reserves the public address of a new instance. Called with the zone locked: no waiting.
    fn allocate(&self, spec: &LaunchSpec) -> Result<Ipv4Addr, BackendError>;
    /// Brings up the machine behind an allocated address. Called with the zone unlocked, before
    /// the request that created the instance is answered; an error removes the instance.
    fn start(&self, _spec: &LaunchSpec, _addr: Ipv4Addr) -> Result<(), BackendError> {
        Ok(())
    }
    /// Whether an instance must pass [`is_ready`](Self::is_ready) before it counts as running;
    /// when false, it is running as soon as its boot delay has passed.
    fn probes_readiness(&self) -> bool {
        false
    }
    /// Whether the machine has finished booting; asked once the boot delay has passed, with the
    /// zone unlocked.
    fn is_ready(&self, _id: Uuid) -> bool {
        true
    }
    /// Tears the machine down and frees its address. Called with the zone locked: it must not
    /// wait for the machine to stop.
    fn terminate(&self, id: Uuid, addr: Ipv4Addr);
}

/// Instances that are only records, with addresses from the documentation range 198.51.100.0/24
/// (RFC 5737), so nothing ever sends traffic to them by mistake.
#[derive(Debug)]
pub struct RecordBackend {
    free: Mutex<BTreeSet<u8>>,
}

impl RecordBackend {
    /// The load balancer's own address in this range; never handed to an instance.
    pub const NLB_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);

    pub fn new() -> Self {
        Self {
            free: Mutex::new((1..=250).collect()),
        }
    }
}

impl Default for RecordBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl InstanceBackend for RecordBackend {
    fn name(&self) -> &'static str {
        "records"
    }

    fn allocate(&self, _spec: &LaunchSpec) -> Result<Ipv4Addr, BackendError> {
        let mut free = self.free.lock().expect("address set lock");
        let host = free
            .pop_first()
            .ok_or_else(|| BackendError::Exhausted("198.51.100.1-250 are all in use".into()))?;
        Ok(Ipv4Addr::new(198, 51, 100, host))
    }

    fn terminate(&self, _id: Uuid, addr: Ipv4Addr) {
        let [a, b, c, host] = addr.octets();
        if [a, b, c] == [198, 51, 100] && (1..=250).contains(&host) {
            self.free.lock().expect("address set lock").insert(host);
        }
    }
}

/// Instances that are machines which already exist (the VMs of a NixOS test, say): each new
/// instance gets the next free address of a fixed list, in order.
#[derive(Debug)]
pub struct AddressBackend {
    all: Vec<Ipv4Addr>,
    used: Mutex<BTreeSet<Ipv4Addr>>,
}

impl AddressBackend {
    pub fn new(all: Vec<Ipv4Addr>) -> Self {
        Self {
            all,
            used: Mutex::new(BTreeSet::new()),
        }
    }
}

impl InstanceBackend for AddressBackend {
    fn name(&self) -> &'static str {
        "given addresses"
    }

    fn allocate(&self, _spec: &LaunchSpec) -> Result<Ipv4Addr, BackendError> {
        let mut used = self.used.lock().expect("address set lock");
        let ip = self
            .all
            .iter()
            .find(|a| !used.contains(*a))
            .copied()
            .ok_or_else(|| {
                BackendError::Exhausted(format!(
                    "all {} given addresses are in use",
                    self.all.len()
                ))
            })?;
        used.insert(ip);
        Ok(ip)
    }

    fn terminate(&self, _id: Uuid, addr: Ipv4Addr) {
        self.used.lock().expect("address set lock").remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_addresses_come_from_the_documentation_range_and_are_reused() {
        let b = RecordBackend::new();
        let spec = LaunchSpec {
            id: Uuid::nil(),
            name: "x".into(),
            pool: None,
        };
        let a1 = b.allocate(&spec).unwrap();
        let a2 = b.allocate(&spec).unwrap();
        assert_eq!(a1, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(a2, Ipv4Addr::new(198, 51, 100, 2));
        b.terminate(Uuid::nil(), a1);
        assert_eq!(b.allocate(&spec).unwrap(), a1);
        for _ in 0..248 {
            b.allocate(&spec).unwrap();
        }
        assert!(b.allocate(&spec).is_err());
    }

    #[test]
    fn given_addresses_are_handed_out_in_order_and_reused() {
        let a: Vec<Ipv4Addr> = vec!["192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap()];
        let b = AddressBackend::new(a.clone());
        let spec = LaunchSpec {
            id: Uuid::nil(),
            name: "x".into(),
            pool: None,
        };
        assert_eq!(b.allocate(&spec).unwrap(), a[0]);
        assert_eq!(b.allocate(&spec).unwrap(), a[1]);
        assert!(b.allocate(&spec).is_err());
        b.terminate(Uuid::nil(), a[0]);
        assert_eq!(b.allocate(&spec).unwrap(), a[0]);
    }
}
