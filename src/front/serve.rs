//! The client-facing listener: hyper's HTTP/1.1 server calling [`proxy::handle`] directly (no
//! router: every path goes to a backend), with the limits the other daemons have
//! (`shutdown::serve_with`): a header timeout (slow clients), a connection limit, `TCP_NODELAY`,
//! and a graceful stop that lets requests under way finish within [`shutdown::GRACE`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use super::{Front, proxy};
use crate::shutdown::{self, Limits};

/// Serves `front` on `listener` until `stop` resolves.
pub async fn serve(
    front: Arc<Front>,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "too many connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        // The peer's part of X-Forwarded-For, written once per connection.
        let client = proxy::Client::new(peer);
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let (front, client) = (front.clone(), client.clone());
            async move { Ok::<_, Infallible>(proxy::handle(front, client, req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(shutdown::GRACE) => {
            tracing::warn!(grace_ms = shutdown::GRACE.as_millis() as u64, "in-flight requests cut short at shutdown");
        }
    }
    Ok(())
}
