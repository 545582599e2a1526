//! The client's typed error: what went wrong, with the HTTP status when the API answered.

use std::time::Duration;

use uuid::Uuid;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A coarse class of failure, used as a metric label and to decide on retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 401/403: the key, secret or signature was refused.
    Auth,
    NotFound,
    /// 429.
    RateLimited,
    /// Any other 4xx: the request itself is wrong.
    Client,
    /// 5xx.
    Server,
    Timeout,
    Connect,
    /// The body could not be decoded into the expected model.
    Decode,
    /// An operation ended in failure or timeout, or waiting for it gave up.
    Operation,
    /// The client could not be built (bad endpoint, missing credentials).
    Config,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::NotFound => "not_found",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Client => "client",
            ErrorKind::Server => "server",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Decode => "decode",
            ErrorKind::Operation => "operation",
            ErrorKind::Config => "config",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{request}: the API refused the credentials (HTTP {status}): {message}")]
    Auth {
        request: String,
        status: u16,
        message: String,
    },
    #[error("{request}: HTTP {status}: {message}")]
    Api {
        request: String,
        status: u16,
        message: String,
    },
    #[error("{request}: no answer within {timeout:?}")]
    Timeout { request: String, timeout: Duration },
    #[error("{request}: cannot reach the API: {source}")]
    Transport {
        request: String,
        connect: bool,
        #[source]
        source: reqwest::Error,
    },
    #[error("{request}: unexpected response body: {source}")]
    Decode {
        request: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("operation {id} ended in state {state}: {message}")]
    OperationFailed {
        id: Uuid,
        state: String,
        message: String,
    },
    #[error("operation {id} still pending after {waited:?}")]
    OperationTimeout { id: Uuid, waited: Duration },
    #[error("API client configuration: {0}")]
    Config(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Auth { .. } => ErrorKind::Auth,
            Error::Api { status: 404, .. } => ErrorKind::NotFound,
            Error::Api { status: 429, .. } => ErrorKind::RateLimited,
            Error::Api { status, .. } if *status >= 500 => ErrorKind::Server,
            Error::Api { .. } => ErrorKind::Client,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Transport { connect: true, .. } => ErrorKind::Connect,
            Error::Transport { .. } => ErrorKind::Connect,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::OperationFailed { .. } | Error::OperationTimeout { .. } => ErrorKind::Operation,
            Error::Config(_) => ErrorKind::Config,
        }
    }

    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Auth { status, .. } | Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Reads the human message out of an error body, whatever shape the API used: `{"message"}`,
/// `{"error"}` (a string or an object with a message), RFC 9457 problem details
/// (`title`/`detail`), or plain text.
pub fn error_message(body: &[u8]) -> String {
    const MAX: usize = 500;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
        let s = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        if let Some(m) = s("message") {
            return m;
        }
        match map.get("error") {
            Some(serde_json::Value::String(e)) => return e.clone(),
            Some(serde_json::Value::Object(o)) => {
                if let Some(m) = o.get("message").and_then(|v| v.as_str()) {
                    return m.to_owned();
                }
            }
            _ => {}
        }
        match (s("title"), s("detail")) {
            (Some(t), Some(d)) => return format!("{t}: {d}"),
            (Some(t), None) => return t,
            (None, Some(d)) => return d,
            _ => {}
        }
    }
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut end = text.len().min(MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_body_shape_yields_its_message() {
        assert_eq!(
            error_message(br#"{"message":"Invalid size"}"#),
            "Invalid size"
        );
        assert_eq!(
            error_message(br#"{"error":"quota exceeded"}"#),
            "quota exceeded"
        );
        assert_eq!(
            error_message(br#"{"error":{"message":"nested"}}"#),
            "nested"
        );
        assert_eq!(
            error_message(
                br#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"size must be >= 0"}"#
            ),
            "Bad Request: size must be >= 0"
        );
        assert_eq!(
            error_message(b"upstream connect error\n"),
            "upstream connect error"
        );
        assert_eq!(error_message(b""), "(empty body)");
        assert_eq!(error_message(&[b'x'; 2000]).len(), 500);
    }

    #[test]
    fn kinds_follow_the_status() {
        let api = |status| Error::Api {
            request: "GET /v2/zone".into(),
            status,
            message: String::new(),
        };
        assert_eq!(api(404).kind(), ErrorKind::NotFound);
        assert_eq!(api(429).kind(), ErrorKind::RateLimited);
        assert_eq!(api(503).kind(), ErrorKind::Server);
        assert_eq!(api(400).kind(), ErrorKind::Client);
        assert_eq!(api(503).status(), Some(503));
    }
}
