//! How requests reach the target.
//!
//! A closed-loop client owns one HTTP/1.1 keep-alive connection and sends its requests back to
//! back on it, as wrk's connections do: no pool lookup, no shared state, the request head built
//! once. The connection is reopened after any failure. `https` URLs and the open loop (where
//! each request in flight needs a connection of its own) go through a pooled `reqwest` client.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use url::Url;

/// What one request ended as: `Ok` for a 2xx with its body read, else the error kind.
pub type Outcome = Result<(), String>;

const AGENT: &str = concat!("poolpilot-load/", env!("CARGO_PKG_VERSION"));

/// A pooled client for `https` URLs and the open loop.
pub fn pooled_client(timeout: Duration, max_idle: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .pool_max_idle_per_host(max_idle)
        .user_agent(AGENT)
        .build()?)
}

pub async fn pooled_request(client: &reqwest::Client, url: &Url) -> Outcome {
    fn classify(e: &reqwest::Error) -> String {
        if e.is_timeout() {
            "timeout".into()
        } else if e.is_connect() {
            "connect".into()
        } else {
            "other".into()
        }
    }
    match client.get(url.clone()).send().await {
        Ok(resp) => {
            let status = resp.status();
            match resp.bytes().await {
                Ok(_) if status.is_success() => Ok(()),
                Ok(_) => Err(format!("http_{}", status.as_u16())),
                Err(e) => Err(classify(&e)),
            }
        }
        Err(e) => Err(classify(&e)),
    }
}

/// One closed-loop client's keep-alive connection to a plain `http` URL.
pub struct Connection {
    host: String,
    port: u16,
    uri: Uri,
    host_header: HeaderValue,
    timeout: Duration,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    /// `None` when the URL is not plain `http` (use [`pooled_client`] then).
    pub fn for_url(url: &Url, timeout: Duration) -> Option<Self> {
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?.trim_matches(['[', ']']).to_owned();
        let port = url.port_or_known_default()?;
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let uri: Uri = path.parse().ok()?;
        let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
        let host_header = HeaderValue::from_str(authority).ok()?;
        Some(Self {
            host,
            port,
            uri,
            host_header,
            timeout,
            sender: None,
        })
    }

    /// Sends one GET and reads its body; the whole exchange (connecting included) is bounded by
    /// the timeout. After a failure the connection is dropped and the next request reconnects.
    pub async fn request(&mut self) -> Outcome {
        match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(outcome) => {
                if outcome.is_err() {
                    self.sender = None;
                }
                outcome
            }
            Err(_) => {
                self.sender = None;
                Err("timeout".into())
            }
        }
    }

    async fn exchange(&mut self) -> Outcome {
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        headers.insert(HOST, self.host_header.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        let sender = self.ready_sender().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|_| "other".to_string())?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|_| "other".to_string())?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("http_{}", status.as_u16()))
        }
    }

    /// The open connection when it can take a request, else a new one. A keep-alive connection
    /// the server closed while idle is replaced here rather than counted as a failure.
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Empty<Bytes>>, String> {
        if let Some(s) = &mut self.sender
            && s.ready().await.is_err()
        {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|_| "connect".to_string())?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| "connect".to_string())?;
            tokio::spawn(async move {
                // Ends when the server closes or the sender is dropped; errors surface there.
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("set above"))
    }
}
