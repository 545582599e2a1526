//! Forwarding one client request: pick a backend, forward with a per-try timeout, and on a
//! non-200 answer, a timeout or a refused connection try another backend, within the attempt
//! limit and the retry budget. The accepted response's body is streamed to the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::{debug, info, warn};

use super::Front;
use super::backend::{Change, Outcome};

pub type Upstream = Client<HttpConnector, Body>;

/// A keep-alive connection pool per backend (hyper's pool is keyed by host and port).
pub fn client(connect_timeout: Duration) -> Upstream {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(http)
}

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

fn plain(status: StatusCode, text: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .expect("a plain response")
}

/// The request body, kept for retries when it is small enough; else streamed to one backend.
enum Payload {
    Kept(Bytes),
    Stream(Option<Body>),
}

impl Payload {
    fn take(&mut self) -> Body {
        match self {
            Payload::Kept(b) => Body::from(b.clone()),
            Payload::Stream(b) => b.take().unwrap_or_else(Body::empty),
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Payload::Kept(_))
    }
}

/// The front's one handler: every path, every method.
pub async fn forward(
    State(front): State<Arc<Front>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
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
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));

    let may_retry = front.cfg.retry_non_idempotent || idempotent(&parts.method);
    use axum::body::HttpBody as _;
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
        Payload::Stream(Some(body))
    };

    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
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
        let uri = match format!("{}{}", backend.base, path).parse::<axum::http::Uri>() {
            Ok(u) => u,
            Err(e) => {
                front.metrics.client_response(StatusCode::BAD_REQUEST);
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("bad request target: {e}\n"),
                );
            }
        };
        let mut up = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(payload.take())
            .expect("an upstream request");
        *up.headers_mut() = parts.headers.clone();
        let attempt = tokio::time::timeout(front.cfg.try_timeout, front.client.request(up)).await;
        let outcome = match &attempt {
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
        match attempt {
            Ok(Ok(resp)) if outcome == Outcome::Ok => {
                let (mut rp, body) = resp.into_parts();
                strip_hop_by_hop(&mut rp.headers);
                front.metrics.client_response(rp.status);
                front
                    .metrics
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                return Response::from_parts(rp, Body::new(body));
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
