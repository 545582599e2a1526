//! Keep-alive connections to one backend: idle HTTP/1.1 connections (hyper's `client::conn`)
//! kept in a stack, the most recently used on top. A request takes one (or opens one), and the
//! response body gives it back once it has been read to its end; a body dropped before its end
//! closes the connection (HTTP/1.1 cannot abandon a response and reuse the connection).
//!
//! One lock per checkout and one per give-back, never held across an await; nothing spawned per
//! request (a task per connection drives it, as hyper requires). The backend's address can be
//! swapped ([`Upstream::set_target`]): connections to the old address are closed, not reused.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Request, Response};
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// A request body on its way to a backend: kept whole (retryable) or streamed from the client.
pub type UpBody = Either<Full<Bytes>, axum::body::Body>;

/// Idle connections are closed after this long unused: shorter than the backends' own
/// keep-alive (30 s for `poolpilot app` and hyper servers), so the backend rarely closes one
/// just as it is reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// At most this many idle connections are kept per backend.
const MAX_IDLE: usize = 1024;

/// Where a backend is: `http://HOST:PORT[/PREFIX]`, split once for the hot path.
#[derive(Debug)]
pub struct Target {
    /// The base URL, as the status page shows it.
    pub base: String,
    /// Where to connect (a name is resolved at each new connection).
    connect: (String, u16),
    /// The `Host` header for a request that came without one.
    pub host: HeaderValue,
    /// Put before every request's path ("" for none).
    pub prefix: String,
    /// Bumped by every address change; a connection to an older one is not reused.
    generation: u64,
}

impl Target {
    /// `base` is `http://HOST:PORT` with an optional path prefix and no trailing slash (as
    /// `cli::front` normalises it).
    pub fn parse(base: &str) -> Result<Self, String> {
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{base}`: only http:// backends"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("`{base}` has no host"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p))
                if !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && (h.starts_with('[') == h.ends_with(']'))
                    && (h.starts_with('[') || !h.contains(':')) =>
            {
                (h, p.parse().map_err(|_| format!("`{base}`: bad port"))?)
            }
            _ => (authority, 80),
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            host: HeaderValue::from_str(authority)
                .map_err(|_| format!("`{base}`: not a valid host"))?,
            connect: (
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
            ),
            prefix: prefix.trim_end_matches('/').to_owned(),
            generation: 0,
        })
    }
}

struct Idle {
    sender: SendRequest<UpBody>,
    since: Instant,
}

struct Inner {
    target: Arc<Target>,
    idle: Vec<Idle>,
}

/// One backend's connections.
pub struct Upstream {
    inner: Mutex<Inner>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock().expect("pool lock");
        f.debug_struct("Upstream")
            .field("target", &g.target.base)
            .field("idle", &g.idle.len())
            .finish()
    }
}

/// Why no response came from a backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("no connection to {0} within {1:?}")]
    ConnectTimeout(String, Duration),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The request's path does not make a valid target under the backend's prefix.
    #[error("bad request target for {0}")]
    Target(String),
}

/// A connection taken from the pool (or just opened) for one request.
pub struct Conn {
    sender: SendRequest<UpBody>,
    pub target: Arc<Target>,
    reused: bool,
}

impl Upstream {
    pub fn new(target: Target, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                target: Arc::new(target),
                idle: Vec::new(),
            }),
            connect_timeout,
        })
    }

    pub fn target(&self) -> Arc<Target> {
        self.inner.lock().expect("pool lock").target.clone()
    }

    /// Points the backend at a new address; idle connections to the old one are closed, and
    /// the ones in use are closed when their response ends. False when it was already there.
    pub fn set_target(&self, mut target: Target) -> bool {
        let mut g = self.inner.lock().expect("pool lock");
        if g.target.base == target.base {
            return false;
        }
        target.generation = g.target.generation + 1;
        g.target = Arc::new(target);
        g.idle.clear();
        true
    }

    /// Closes the idle connections unused for longer than [`IDLE_TIMEOUT`] at `now` and the
    /// ones the backend has closed.
    pub fn reap(&self, now: Instant) {
        let mut g = self.inner.lock().expect("pool lock");
        g.idle
            .retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < IDLE_TIMEOUT);
    }

    /// How many idle connections are kept now.
    pub fn idle(&self) -> usize {
        self.inner.lock().expect("pool lock").idle.len()
    }

    /// An idle connection that is ready for a request, else a new one.
    pub async fn checkout(&self) -> Result<Conn, UpstreamError> {
        loop {
            let (popped, target) = {
                let mut g = self.inner.lock().expect("pool lock");
                let now = Instant::now();
                let popped = match g.idle.pop() {
                    Some(i) if now.duration_since(i.since) < IDLE_TIMEOUT => Some(i.sender),
                    // The top is the most recent: everything under a stale one is staler.
                    Some(_) => {
                        g.idle.clear();
                        None
                    }
                    None => None,
                };
                (popped, g.target.clone())
            };
            let Some(mut sender) = popped else {
                return self.connect(target).await;
            };
            // Usually ready at once; an error means the backend closed it: take the next.
            if sender.ready().await.is_ok() {
                return Ok(Conn {
                    sender,
                    target,
                    reused: true,
                });
            }
        }
    }

    async fn connect(&self, target: Arc<Target>) -> Result<Conn, UpstreamError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((target.connect.0.as_str(), target.connect.1)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(target.base.clone(), e)),
            Err(_) => {
                return Err(UpstreamError::ConnectTimeout(
                    target.base.clone(),
                    self.connect_timeout,
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            target,
            reused: false,
        })
    }

    /// Sends `req` on a pooled connection; a reused connection that turns out closed before
    /// the request went out is replaced by a new one (the request was not sent: no harm).
    /// The response's body gives the connection back when it has been read to its end.
    pub async fn send(
        self: &Arc<Self>,
        mut conn: Conn,
        req: Request<UpBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let resp = match conn.sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                Some(req) if conn.reused => {
                    conn = self.connect(conn.target.clone()).await?;
                    conn.sender.send_request(req).await?
                }
                _ => return Err(e.into_error().into()),
            },
        };
        let (parts, body) = resp.into_parts();
        let mut body = PooledBody {
            body,
            back: Some(GiveBack {
                upstream: self.clone(),
                sender: conn.sender,
                generation: conn.target.generation,
            }),
        };
        if body.body.is_end_stream() {
            body.give_back();
        }
        Ok(Response::from_parts(parts, body))
    }

    fn give_back(&self, sender: SendRequest<UpBody>, generation: u64) {
        if sender.is_closed() {
            return;
        }
        let mut g = self.inner.lock().expect("pool lock");
        if g.target.generation == generation && g.idle.len() < MAX_IDLE {
            g.idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

struct GiveBack {
    upstream: Arc<Upstream>,
    sender: SendRequest<UpBody>,
    generation: u64,
}

/// A backend's response body, streamed; its connection goes back to the pool at the end.
pub struct PooledBody {
    body: Incoming,
    back: Option<GiveBack>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some(b) = self.back.take() {
            b.upstream.give_back(b.sender, b.generation);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.give_back(),
            Some(Ok(_)) if this.body.is_end_stream() => this.give_back(),
            Some(Ok(_)) => {}
            // A broken body: its connection is not reused.
            Some(Err(_)) => this.back = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What the front answers a client with: a backend's body, or its own short text.
pub type ProxyBody = Either<PooledBody, Full<Bytes>>;

/// The front's own answer body.
pub fn own(text: impl Into<Bytes>) -> ProxyBody {
    Either::Right(Full::new(text.into()))
}

/// A request body kept whole.
pub fn kept(b: Bytes) -> UpBody {
    Either::Left(Full::new(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_address_host_and_prefix() {
        let t = Target::parse("http://127.0.0.1:8081/app").unwrap();
        assert_eq!(t.connect, ("127.0.0.1".into(), 8081));
        assert_eq!(t.host, "127.0.0.1:8081");
        assert_eq!(t.prefix, "/app");
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!(t.connect, ("::1".into(), 9000));
        assert_eq!(t.host, "[::1]:9000");
        assert_eq!(t.prefix, "");
        let t = Target::parse("http://nlb.example").unwrap();
        assert_eq!(t.connect, ("nlb.example".into(), 80));
        assert!(Target::parse("https://x").is_err());
        assert!(Target::parse("http:///x").is_err());
    }
}
