//! Logs and the service manager: `tracing` as text on a terminal, JSON for scripts, the journal
//! under systemd; sd-notify readiness, stopping and watchdog pings.

use std::time::Duration;

use clap::ValueEnum;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::env;

/// How logs are written (to stderr; stdout carries command output only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// The journal when systemd started us (JOURNAL_STREAM is set), text otherwise.
    #[default]
    Auto,
    Text,
    Json,
    Journald,
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env(env::LOG).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let format = match format {
        LogFormat::Auto if std::env::var_os(env::JOURNAL_STREAM).is_some() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    };
    let registry = tracing_subscriber::registry().with(filter());
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(layer) => registry.with(layer).init(),
            Err(e) => {
                registry
                    .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                    .init();
                warn!(error = %e, "the journal is not reachable; logging text to stderr instead");
            }
        },
        // Colours only on a terminal: a log written to a file (the demo's members, CI) stays
        // plain text that grep and a reader see alike.
        LogFormat::Text | LogFormat::Auto => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

/// Tells the service manager we are serving (no-op outside systemd).
pub fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells the service manager we are stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// A one-line status for `systemctl status`.
pub fn notify_status(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
}

/// Pings the watchdog at half its interval when systemd set `WATCHDOG_USEC` for us.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    spawn_watchdog_while(None)
}

/// As [`spawn_watchdog`], but only while `alive` says the work makes progress: a control loop
/// stuck in a call that never returns then stops the pings, and systemd restarts the service,
/// instead of a runtime that still runs making it look healthy.
pub fn spawn_watchdog_while(alive: Option<Liveness>) -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let every = (interval / 2).max(Duration::from_millis(100));
    info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(watchdog_loop(every, alive, || {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    })))
}

/// Calls `ping` every `every` while `alive` holds (always, without one); says once when it
/// stops.
pub async fn watchdog_loop(every: Duration, alive: Option<Liveness>, mut ping: impl FnMut()) {
    let mut tick = tokio::time::interval(every);
    let mut stalled = false;
    loop {
        tick.tick().await;
        match &alive {
            Some(l) if !l.alive() => {
                if !stalled {
                    tracing::error!(
                        no_progress_s = l.heartbeat.age().as_secs(),
                        stall_s = l.stall.as_secs(),
                        "the control loop has made no progress; watchdog pings stop (systemd restarts the service)"
                    );
                }
                stalled = true;
            }
            _ => {
                stalled = false;
                ping();
            }
        }
    }
}

/// When the last piece of progress was made (a control loop stamps it at each step); on tokio's
/// clock, so paused-time tests are exact.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    origin: tokio::time::Instant,
    last_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            last_ms: Default::default(),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Time since the last beat (since creation before the first).
    pub fn age(&self) -> Duration {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.origin
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

/// A heartbeat and how long it may go without a beat before the work counts as stuck.
#[derive(Clone, Debug)]
pub struct Liveness {
    pub heartbeat: Heartbeat,
    pub stall: Duration,
}

impl Liveness {
    pub fn alive(&self) -> bool {
        self.heartbeat.age() <= self.stall
    }
}

pub mod metrics;
