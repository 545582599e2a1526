//! `poolpilot pool status` and `poolpilot pool scale`: the first user commands, the same against
//! Exoscale and against the simulator.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use time::OffsetDateTime;

use super::{CliError, FileConfig, TargetArgs};
use crate::exoscale::{self, HealthStatus, Instance, InstancePool, LoadBalancer};

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Show the pool's state and size, its members, and the NLB's view of their health.
    Status(StatusArgs),
    /// Set the pool's size.
    Scale(ScaleArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The new size (number of members).
    #[arg(long, value_name = "N")]
    pub size: u64,
    /// Wait until the operation has finished and every member is running.
    #[arg(long)]
    pub wait: bool,
}

pub async fn run(cmd: PoolCommand, file: FileConfig) -> Result<(), CliError> {
    match cmd {
        PoolCommand::Status(a) => {
            let t = a.target.resolve(&file)?;
            let report = status(&t.client, t.pool).await?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializable")
                );
            } else {
                print!("{}", report.render(OffsetDateTime::now_utc()));
            }
            Ok(())
        }
        PoolCommand::Scale(a) => {
            let t = a.target.resolve(&file)?;
            scale(&t.client, t.pool, a.size, a.wait).await?;
            Ok(())
        }
    }
}

/// What `pool status` reports (`--json` prints it with the API's kebab-case keys).
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StatusReport {
    pub zone: String,
    pub pool: InstancePool,
    pub members: Vec<Instance>,
    pub load_balancers: Vec<LoadBalancer>,
    /// The parts that could not be read (a key without the rights for them, an API error after
    /// the retries): the pool itself was read, so the report is still worth showing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<Unread>,
}

/// A part of the report that could not be read, and why.
#[derive(Debug, Serialize)]
pub struct Unread {
    pub part: &'static str,
    pub error: String,
}

impl StatusReport {
    fn health(&self) -> HashMap<Ipv4Addr, HealthStatus> {
        self.load_balancers
            .iter()
            .flat_map(|lb| &lb.services)
            .filter(|s| s.instance_pool.id == self.pool.id)
            .flat_map(|s| &s.healthcheck_status)
            .map(|h| (h.public_ip, h.status))
            .collect()
    }

    /// A human table; `now` makes the ages testable.
    pub fn render(&self, now: OffsetDateTime) -> String {
        let p = &self.pool;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pool {} ({}) in {}: {}, size {}",
            p.id,
            p.name.as_deref().unwrap_or("-"),
            self.zone,
            p.state,
            p.size
        );
        let health = self.health();
        let _ = writeln!(
            out,
            "{:<36}  {:<18}  {:<10}  {:<15}  {:>8}  NLB",
            "MEMBER", "NAME", "STATE", "ADDRESS", "AGE"
        );
        for m in &self.members {
            let age = m
                .created_at
                .map(|c| format_age((now - c).whole_seconds().max(0) as u64))
                .unwrap_or_else(|| "-".into());
            let nlb = match m.public_ip.and_then(|ip| health.get(&ip)) {
                Some(HealthStatus::Success) => "healthy",
                Some(HealthStatus::Failure) => "unhealthy",
                Some(HealthStatus::Other) => "unknown",
                None if self.load_balancers.is_empty() => "-",
                None => "not checked",
            };
            let _ = writeln!(
                out,
                "{:<36}  {:<18}  {:<10}  {:<15}  {:>8}  {}",
                m.id,
                m.name.as_deref().unwrap_or("-"),
                m.state,
                m.public_ip
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                age,
                nlb
            );
        }
        for lb in &self.load_balancers {
            for s in lb.services.iter().filter(|s| s.instance_pool.id == p.id) {
                let ok = s
                    .healthcheck_status
                    .iter()
                    .filter(|h| h.status == HealthStatus::Success)
                    .count();
                let _ = writeln!(
                    out,
                    "nlb {} ({}) {}:{} -> :{}  {} {} {}s x{}: {}/{} healthy",
                    lb.id,
                    lb.name,
                    lb.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                    s.port,
                    s.target_port,
                    s.healthcheck.mode,
                    s.healthcheck.uri.as_deref().unwrap_or(""),
                    s.healthcheck.interval,
                    s.healthcheck.retries,
                    ok,
                    s.healthcheck_status.len()
                );
            }
        }
        for u in &self.unread {
            let _ = writeln!(out, "could not read the {}: {}", u.part, u.error);
        }
        out
    }
}

fn format_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Reads the pool, its members and the load balancers that serve it. Fails only when the pool
/// itself cannot be read; a part that cannot be read is named in `unread`.
pub async fn status(client: &exoscale::Client, pool: uuid::Uuid) -> anyhow::Result<StatusReport> {
    let p = client
        .get_instance_pool(pool)
        .await
        .context("reading the instance pool")?;
    let mut unread = Vec::new();
    let mut members = client.list_pool_members(pool).await.unwrap_or_else(|e| {
        unread.push(Unread {
            part: "pool's members",
            error: e.to_string(),
        });
        Vec::new()
    });
    members.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let load_balancers = match client.list_load_balancers().await {
        Ok(lbs) => lbs
            .into_iter()
            .filter(|lb| lb.services.iter().any(|s| s.instance_pool.id == pool))
            .collect(),
        Err(e) => {
            unread.push(Unread {
                part: "load balancers",
                error: e.to_string(),
            });
            Vec::new()
        }
    };
    Ok(StatusReport {
        zone: client.zone().to_string(),
        pool: p,
        members,
        load_balancers,
        unread,
    })
}

/// Sets the size; with `wait`, follows the operation and then the members until all run.
pub async fn scale(
    client: &exoscale::Client,
    pool: uuid::Uuid,
    size: u64,
    wait: bool,
) -> anyhow::Result<()> {
    let op = client
        .scale_instance_pool(pool, size)
        .await
        .context("scaling the instance pool")?;
    println!("scaling pool {pool} to {size}: operation {}", op.id);
    if !wait {
        return Ok(());
    }
    client
        .wait_operation(&op)
        .await
        .context("waiting for the scale operation")?;
    let deadline = tokio::time::Instant::now() + client.config().poll.timeout;
    loop {
        let members = client
            .list_pool_members(pool)
            .await
            .context("listing the pool's members")?;
        let running = members
            .iter()
            .filter(|m| m.state == exoscale::InstanceState::Running)
            .count() as u64;
        if running == size && members.len() as u64 == size {
            println!("pool {pool}: {size} members running");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "pool {pool}: {running} of {size} members running after the wait timeout"
            );
        }
        tokio::time::sleep(client.config().poll.initial).await;
    }
}
