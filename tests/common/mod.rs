//! Helpers shared by the integration tests: an in-process simulator and a client for it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use poolpilot::config::Zone;
use poolpilot::exoscale::{Client, ClientConfig, Credentials, PollPolicy, RetryPolicy};
use poolpilot::sim::seed::{self, SeedPool};
use poolpilot::sim::{RecordBackend, RunningSim, Sim, State, Timing};
use uuid::Uuid;

pub const KEY: &str = "EXOtest0000000000000000000";
pub const SECRET: &str = "test-secret-0123456789";

pub struct TestSim {
    pub running: RunningSim,
    pub pool: Uuid,
    pub load_balancer: Uuid,
}

impl TestSim {
    pub fn sim(&self) -> &Arc<Sim> {
        &self.running.sim
    }

    pub fn client(&self) -> Client {
        client_for(&self.running.endpoint(), Credentials::new(KEY, SECRET))
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}/admin{path}", self.running.addr)
    }

    pub fn requests_to(&self, method: &str, path: &str) -> usize {
        self.sim()
            .requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

/// A client with the SDK's retry count but millisecond backoff and polling, for fast tests.
pub fn client_for(endpoint: &str, creds: Credentials) -> Client {
    let mut cfg = ClientConfig::new(Zone::DEFAULT, endpoint, creds).unwrap();
    cfg.retry = RetryPolicy {
        max_retries: 4,
        base: Duration::from_millis(10),
        max: Duration::from_millis(100),
    };
    cfg.poll = PollPolicy::quick();
    cfg.request_timeout = Duration::from_secs(5);
    Client::new(cfg).unwrap()
}

pub async fn start(size: u64, timing: Timing) -> TestSim {
    let mut state = State::new(Zone::DEFAULT, timing, Arc::new(RecordBackend::new()));
    let seeded = seed::apply(&mut state, &[SeedPool::default_with_size(size)]).unwrap();
    let sim = Sim::new(state, vec![Credentials::new(KEY, SECRET)]);
    let running = sim.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    TestSim {
        running,
        pool: seeded[0].pool,
        load_balancer: seeded[0].load_balancer.unwrap(),
    }
}

pub fn quick() -> Timing {
    Timing {
        operation_delay: Duration::from_millis(100),
        boot_delay: Duration::from_millis(200),
    }
}
