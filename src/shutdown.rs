//! Graceful stop: SIGTERM or SIGINT resolves [`signal`]; servers then drain within
//! [`GRACE`] and the process exits 0.

use std::future::IntoFuture;
use std::time::Duration;

use tracing::info;

/// How long a server may take to finish in-flight work after a stop signal. systemd's and the
/// course checker's patience is longer; 5 s is our promise.
pub const GRACE: Duration = Duration::from_secs(4);

use std::sync::Mutex;
use tokio::signal::unix::{Signal, SignalKind};

/// Handlers installed at start-up, before anything can tell the world we exist (an env file, a
/// READY=1, a listening port): a SIGTERM that arrives early is then caught, not fatal.
static EARLY: Mutex<Option<(Signal, Signal)>> = Mutex::new(None);

fn handlers() -> (Signal, Signal) {
    use tokio::signal::unix::signal;
    (
        signal(SignalKind::terminate()).expect("install the SIGTERM handler"),
        signal(SignalKind::interrupt()).expect("install the SIGINT handler"),
    )
}

/// Installs the SIGTERM and SIGINT handlers now. Call once, early, inside the runtime.
pub fn install() {
    *EARLY.lock().expect("signal handlers lock") = Some(handlers());
}

/// Resolves on the first SIGTERM or SIGINT (since [`install`], when it was called).
pub async fn signal() {
    let early = EARLY.lock().expect("signal handlers lock").take();
    let (mut term, mut int) = early.unwrap_or_else(handlers);
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = name, "stopping");
    crate::telemetry::notify_stopping();
}

/// Serves `router` on `listener` until SIGTERM/SIGINT, then lets in-flight requests finish for
/// at most [`GRACE`] (a `/load` request may take longer; it is cut short).
pub async fn serve(listener: tokio::net::TcpListener, router: axum::Router) -> std::io::Result<()> {
    serve_until(listener, router, signal()).await
}

/// As [`serve`], stopping when `stop` resolves.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            stop.await;
            let _ = tx.send(());
        })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        _ = async {
            let _ = rx.await;
            tokio::time::sleep(GRACE).await;
        } => {
            tracing::warn!(grace_ms = GRACE.as_millis() as u64, "in-flight requests cut short at shutdown");
            Ok(())
        }
    }
}

/// Tells long-running work that the process is stopping (see [`serve_while_stopping`]).
#[derive(Clone, Debug)]
pub struct Stopping(tokio::sync::watch::Receiver<bool>);

/// Sets [`Stopping`].
#[derive(Debug)]
pub struct Stop(tokio::sync::watch::Sender<bool>);

/// A stop switch and the receivers it sets.
pub fn stop_switch() -> (Stop, Stopping) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (Stop(tx), Stopping(rx))
}

impl Stop {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Stopping {
    /// A receiver nothing will ever set (for work run outside a server, e.g. in tests).
    pub fn never() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        // The sender lives as long as the process: `wait` then never resolves.
        std::mem::forget(tx);
        Self(rx)
    }

    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the stop is set.
    pub async fn wait(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// As [`serve_while`], for work that must not be dropped at any await: on SIGTERM/SIGINT it is
/// told through `stop` and given [`GRACE`] to finish what it started (a control loop undoes a
/// drain it began), while the server drains in the same grace; then it is dropped.
pub async fn serve_while_stopping(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    work: impl std::future::Future<Output = ()>,
    stop: Stop,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(listener, router, async move {
        let _ = stop_rx.await;
    }));
    crate::telemetry::notify_ready();
    let _watchdog = crate::telemetry::spawn_watchdog();
    tokio::pin!(work);
    let finished = tokio::select! {
        _ = signal() => false,
        _ = &mut work => true,
    };
    stop.stop();
    let _ = stop_tx.send(());
    if !finished && tokio::time::timeout(GRACE, work).await.is_err() {
        tracing::warn!(
            grace_ms = GRACE.as_millis() as u64,
            "the control loop did not finish within the grace period; cut short"
        );
    }
    server.await.map_err(std::io::Error::other)?
}

/// Serves `router` while `work` (a control loop) runs: announces readiness and pings the
/// watchdog; on SIGTERM/SIGINT the work is dropped at its next await point and the server drains
/// within [`GRACE`].
pub async fn serve_while(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    work: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(listener, router, async move {
        let _ = stop_rx.await;
    }));
    crate::telemetry::notify_ready();
    let _watchdog = crate::telemetry::spawn_watchdog();
    tokio::select! {
        _ = signal() => {}
        _ = work => {}
    }
    let _ = stop_tx.send(());
    server.await.map_err(std::io::Error::other)?
}
