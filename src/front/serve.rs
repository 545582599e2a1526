//! The client-facing listener: hyper's HTTP/1.1 server calling [`proxy::handle`] directly (no
//! router: every path goes to a backend), in the accept loop of the other daemons
//! ([`shutdown::serve_connections`]): a header timeout (slow clients), a connection limit,
//! `TCP_NODELAY`, and a graceful stop that lets requests under way finish within
//! [`shutdown::GRACE`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;

use super::{Front, proxy};
use crate::shutdown::{self, Limits};

/// Serves `front` on `listener` until `stop` resolves.
pub async fn serve(
    front: Arc<Front>,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> std::io::Result<()> {
    shutdown::serve_connections(listener, stop, limits, move |peer| {
        let front = front.clone();
        // The peer's part of X-Forwarded-For, written once per connection.
        let client = proxy::Client::new(peer);
        service_fn(move |req: hyper::Request<Incoming>| {
            let (front, client) = (front.clone(), client.clone());
            async move { Ok::<_, Infallible>(proxy::handle(front, client, req).await) }
        })
    })
    .await
}
