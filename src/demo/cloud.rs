//! The simulated cloud of one zone: the API simulator with `poolpilot app` instances as
//! processes, and its NLB. The one-zone demo runs one; `--zones` runs one per zone.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::task::JoinHandle;

use super::{DemoConfig, Paths, Secrets, Timings};
use crate::config::{Zone, env};
use crate::exoscale::Credentials;
use crate::local::backend::{APP_PORT, LocalBackend, LocalConfig, MemberKind, QuotaMode};
use crate::local::nlb::{Nlb, NlbConfig};
use crate::sim::{RunningSim, Sim, State, Timing};

/// The NLB service's health check, as Terraform sets it: HTTP `/health` on the members' 8080,
/// at the run's timings.
pub(super) fn healthcheck(t: &Timings) -> crate::exoscale::Healthcheck {
    crate::exoscale::Healthcheck {
        mode: "http".into(),
        port: APP_PORT,
        uri: Some("/health".into()),
        interval: t.nlb_interval.as_secs().max(1),
        timeout: t.nlb_timeout.as_secs().max(1),
        retries: u64::from(t.nlb_retries),
    }
}

/// The simulated cloud: the API simulator with `poolpilot app` instances, and its NLB.
pub(super) struct Cloud {
    pub(super) zone: Zone,
    /// Where its NLB listens.
    pub(super) nlb_addr: SocketAddr,
    pub(super) backend: Arc<LocalBackend>,
    pub(super) sim: Arc<Sim>,
    pub(super) running: RunningSim,
    pub(super) pool: uuid::Uuid,
    pub(super) nlb: Nlb,
    pub(super) checks: JoinHandle<()>,
    pub(super) server: JoinHandle<std::io::Result<()>>,
}

impl Cloud {
    /// A zone with a one-member pool behind a load balancer, served on a free port; the NLB
    /// health-checks the members and serves on `nlb_listener`.
    pub(super) async fn start(
        cfg: &DemoConfig,
        t: &Timings,
        paths: &Paths,
        secrets: &Secrets,
        nlb_listener: tokio::net::TcpListener,
        (zone, subnet): (Zone, u8),
    ) -> anyhow::Result<Self> {
        let quota = QuotaMode::detect();
        println!(
            "{}: instances are `poolpilot app` processes on 127.0.{subnet}.x, {} core(s) each, capacity enforced by {}",
            zone.name(),
            cfg.capacity,
            quota.describe()
        );
        let backend = Arc::new(LocalBackend::new(LocalConfig {
            binary: cfg.binary.clone(),
            capacity: cfg.capacity,
            load_duration: t.load_seconds,
            drain_token: secrets.drain.clone().into(),
            log_dir: paths.logs.clone(),
            quota,
            subnet,
            kind: MemberKind::App,
        }));
        let mut state = State::new(
            zone,
            Timing {
                operation_delay: t.operation,
                boot_delay: t.boot,
            },
            backend.clone(),
        );
        let now = tokio::time::Instant::now();
        let pool = state
            .create_pool(now, None, "demo", 1, "standard.micro", false)
            .map_err(|e| anyhow::anyhow!("creating the pool: {}", e.message))?;
        let hc = healthcheck(t);
        let nlb_addr = nlb_listener.local_addr()?;
        let nlb_port = nlb_addr.port();
        let nlb_ip = match cfg.nlb_listen.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => std::net::Ipv4Addr::LOCALHOST,
        };
        state.create_load_balancer("demo-nlb", nlb_ip, pool, nlb_port, APP_PORT, hc);
        let sim = Sim::new(state, vec![Credentials::new(&secrets.key, &secrets.secret)]);
        let running = sim.clone().start("127.0.0.1:0".parse()?).await?;
        let nlb = Nlb::new(
            sim.clone(),
            NlbConfig {
                pool,
                target_port: APP_PORT,
                check_port: APP_PORT,
                uri: "/health".into(),
                interval: t.nlb_interval,
                timeout: t.nlb_timeout,
                retries: t.nlb_retries,
            },
        );
        let checks = tokio::spawn(nlb.clone().run_health_checks());
        let router = nlb.router();
        let server = tokio::spawn(async move { axum::serve(nlb_listener, router).await });
        Ok(Self {
            zone,
            nlb_addr,
            backend,
            sim,
            running,
            pool,
            nlb,
            checks,
            server,
        })
    }

    /// What the discovery agent and the autoscaler are told about the API, as on Exoscale.
    pub(super) fn api_env(&self, secrets: &Secrets) -> Vec<(String, String)> {
        vec![
            (env::API_ENDPOINT.to_owned(), self.running.endpoint()),
            (env::API_KEY.to_owned(), secrets.key.clone()),
            (env::API_SECRET.to_owned(), secrets.secret.clone()),
            (env::ZONE.to_owned(), self.zone.name().to_owned()),
            (env::POOL.to_owned(), self.pool.to_string()),
            (env::LOG_FORMAT.to_owned(), "text".to_owned()),
        ]
    }

    /// Waits until the first member has booted and passes its health check.
    pub(super) async fn first_member_healthy(
        &self,
        t: &Timings,
        logs: &Path,
    ) -> anyhow::Result<()> {
        let booted = Instant::now();
        while !self.nlb.members().iter().any(|m| m.healthy) {
            if booted.elapsed() > t.boot + Duration::from_secs(60) {
                bail!(
                    "the first instance never became healthy at the NLB (see {})",
                    logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Stops the NLB, every instance and the simulator.
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        self.checks.abort();
        self.server.abort();
        let b = self.backend.clone();
        tokio::task::spawn_blocking(move || b.shutdown()).await?;
        self.running.stop().await;
        Ok(())
    }
}
