//! Forwarding one client request: pick a backend, forward with a per-try timeout, and on a
//! non-200 answer, a timeout or a refused connection try another backend, within the attempt
//! limit and the retry budget. The accepted response's body is streamed to the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::uri::PathAndQuery;
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Either};
use hyper::body::Body;
use tracing::{debug, info, warn};

use super::Front;
use super::backend::{Backend, Change, Outcome};
use super::pool::{self, PooledBody, ProxyBody, UpBody, UpstreamError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Methods a retry cannot do harm with (RFC 9110 9.2.2, idempotent).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Removes the hop-by-hop headers (RFC 9110 7.6.1): the fixed list and whatever `Connection`
/// names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names instead of a lookup each.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("proxy-connection"),
    ] {
        h.remove(n);
    }
}

/// The fixed hop-by-hop list, and `Connection` (which may name more).
fn is_hop_by_hop(n: &HeaderName) -> bool {
    *n == header::CONNECTION
        || *n == header::PROXY_AUTHENTICATE
        || *n == header::PROXY_AUTHORIZATION
        || *n == header::TE
        || *n == header::TRAILER
        || *n == header::TRANSFER_ENCODING
        || *n == header::UPGRADE
        || n.as_str() == "keep-alive"
        || n.as_str() == "proxy-connection"
}

fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(pool::own(text))
        .expect("a plain response")
}

/// The request body, kept for retries when it is small enough; else streamed to one backend.
enum Payload {
    Kept(Bytes),
    Stream(Option<axum::body::Body>),
}

impl Payload {
    fn take(&mut self) -> UpBody {
        match self {
            Payload::Kept(b) => pool::kept(b.clone()),
            Payload::Stream(b) => Either::Right(b.take().unwrap_or_else(axum::body::Body::empty)),
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Payload::Kept(_))
    }
}

/// The client a connection comes from.
#[derive(Clone, Debug)]
pub struct Client {
    /// Its address, as `X-Forwarded-For` gives it.
    ip: HeaderValue,
}

impl Client {
    pub fn new(peer: SocketAddr) -> Self {
        Self {
            ip: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an address is a header value"),
        }
    }
}

/// The front's one handler as an axum handler (for [`Front::router`]).
pub async fn forward(
    State(front): State<Arc<Front>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<axum::body::Body>,
) -> Response<axum::body::Body> {
    handle(front, Client::new(peer), req)
        .await
        .map(axum::body::Body::new)
}

/// One attempt on one backend: a connection from its pool, the request, the response head.
async fn attempt(
    backend: &Backend,
    method: &Method,
    path: &PathAndQuery,
    headers: HeaderMap,
    body: UpBody,
) -> Result<Response<PooledBody>, UpstreamError> {
    let conn = backend.upstream.checkout().await?;
    let uri = if conn.target.prefix.is_empty() {
        Uri::from(path.clone())
    } else {
        format!("{}{}", conn.target.prefix, path)
            .parse()
            .map_err(|_| UpstreamError::Target(conn.target.base.clone()))?
    };
    let mut up = Request::new(body);
    *up.method_mut() = method.clone();
    *up.uri_mut() = uri;
    *up.headers_mut() = headers;
    up.headers_mut()
        .entry(header::HOST)
        .or_insert_with(|| conn.target.host.clone());
    backend.upstream.send(conn, up).await
}

/// Forwards one client request (every path, every method): the backend's answer, or the
/// front's own 503 (or 400/413 for a request it cannot forward).
pub async fn handle<B>(front: Arc<Front>, client: Client, req: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let _under_way = front.budget.request();
    let mut retrying = Vec::new();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // X-Forwarded-For: the client's chain, then this hop's peer.
    let xff = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => HeaderValue::from_maybe_shared(Bytes::from(format!(
            "{prev}, {}",
            client.ip.to_str().unwrap_or_default()
        )))
        .ok(),
        None => Some(client.ip.clone()),
    };
    if let Some(v) = xff {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));

    let may_retry = front.cfg.retry_non_idempotent || idempotent(&parts.method);
    let mut payload = if may_retry && body.is_end_stream() {
        // No body (most GETs): nothing to read or keep.
        Payload::Kept(Bytes::new())
    } else if may_retry {
        match http_body_util::Limited::new(body, front.cfg.retry_body_limit)
            .collect()
            .await
        {
            Ok(c) => Payload::Kept(c.to_bytes()),
            Err(e) => {
                let too_big = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let status = if too_big {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                front.metrics.client_response(status);
                return plain(
                    status,
                    if too_big {
                        format!(
                            "a retryable request's body is kept for retries and may be at most {} bytes\n",
                            front.cfg.retry_body_limit
                        )
                    } else {
                        format!("could not read the request body: {e}\n")
                    },
                );
            }
        }
    } else {
        Payload::Stream(Some(axum::body::Body::new(body)))
    };

    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut tried: Vec<usize> = Vec::new();
    let mut last_failure = String::new();
    loop {
        if !tried.is_empty() && (!payload.retryable() || tried.len() > front.cfg.retries as usize) {
            break;
        }
        let Some(i) = front.backends.pick(&tried) else {
            break;
        };
        if !tried.is_empty() {
            match front.budget.try_retry() {
                Some(r) => retrying.push(r),
                None => {
                    front.metrics.retries_denied.inc();
                    warn!(backend = %front.backends.get(i).name, "retry budget exhausted; not retrying");
                    break;
                }
            }
            front.metrics.retries.inc();
        }
        tried.push(i);
        let backend = front.backends.get(i);
        // The last attempt this request may make takes the headers; the others a copy.
        let headers = if !payload.retryable() || tried.len() > front.cfg.retries as usize {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        let result = tokio::time::timeout(
            front.cfg.try_timeout,
            attempt(backend, &parts.method, &path, headers, payload.take()),
        )
        .await;
        if let Ok(Err(UpstreamError::Target(t))) = &result {
            front.metrics.client_response(StatusCode::BAD_REQUEST);
            return plain(
                StatusCode::BAD_REQUEST,
                format!("bad request target for {t}\n"),
            );
        }
        let outcome = match &result {
            Ok(Ok(r)) if r.status() == StatusCode::OK => Outcome::Ok,
            Ok(Ok(_)) => Outcome::Non200,
            Ok(Err(_)) => Outcome::Error,
            Err(_) => Outcome::Timeout,
        };
        front.metrics.attempt(i, outcome);
        match front.backends.record(i, outcome, Instant::now()) {
            Change::None => {}
            Change::Ejected(cooldown) => {
                front.metrics.ejections(&backend.name);
                front.metrics.refresh(&front.backends);
                warn!(backend = %backend.name, cooldown_ms = cooldown.as_millis() as u64, "backend ejected");
            }
            Change::KeptAsLast => {
                front.metrics.refresh(&front.backends);
                warn!(backend = %backend.name, "backend past its failure limit but the last in rotation: it keeps the traffic");
            }
        }
        match result {
            Ok(Ok(resp)) if outcome == Outcome::Ok => {
                let (mut rp, body) = resp.into_parts();
                strip_hop_by_hop(&mut rp.headers);
                front.metrics.client_response(rp.status);
                front
                    .metrics
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                return Response::from_parts(rp, Either::Left(body));
            }
            Ok(Ok(resp)) => {
                last_failure = format!("{} answered {}", backend.name, resp.status());
            }
            Ok(Err(e)) => last_failure = format!("{}: {e}", backend.name),
            Err(_) => {
                last_failure = format!(
                    "{}: no answer within {:?}",
                    backend.name, front.cfg.try_timeout
                )
            }
        }
        debug!(attempt = tried.len(), failure = %last_failure, "attempt failed");
    }
    front
        .metrics
        .client_response(StatusCode::SERVICE_UNAVAILABLE);
    front
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if tried.is_empty() {
        last_failure = "no backend in rotation".into();
    }
    info!(attempts = tried.len(), failure = %last_failure, "no backend answered 200");
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "no backend answered after {} attempt(s): {last_failure}\n",
            tried.len()
        ),
    );
    r.headers_mut().insert(
        "x-poolpilot-attempts",
        HeaderValue::from_str(&tried.len().to_string()).expect("digits"),
    );
    r
}
