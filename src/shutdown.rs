//! Graceful stop: SIGTERM or SIGINT resolves [`signal`]; servers then drain within
//! [`GRACE`] and the process exits 0.

use std::time::Duration;

use tracing::info;

/// How long a server may take to finish in-flight work after a stop signal. systemd's and the
/// course checker's patience is longer; 5 s is our promise.
pub const GRACE: Duration = Duration::from_secs(4);

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = name, "stopping");
    crate::telemetry::notify_stopping();
}
