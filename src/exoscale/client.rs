//! The API v2 client: signs every request, retries what is safe to retry, and polls operations.
//!
//! Retries follow Exoscale's SDKs: connection errors, 429 (honouring `Retry-After`) and 5xx except
//! 501, with exponential backoff from 1 s to 30 s and at most 4 retries; every attempt is signed
//! anew, so a retry never carries an expired signature. Timeouts are retried only for requests
//! that are safe to repeat (reads, and `:scale`, which sets an absolute size).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};
use url::Url;
use uuid::Uuid;

use super::credentials::Credentials;
use super::error::{Error, Result, error_message};
use super::models::*;
use super::retry::{PollPolicy, RetryPolicy, retry_after};
use super::sign;
use crate::config::{ConfigError, Zone, env, unix_now};

/// Everything a [`Client`] needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The API base URL, ending in `/v2`.
    pub endpoint: Url,
    pub zone: Zone,
    pub credentials: Credentials,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub poll: PollPolicy,
}

impl ClientConfig {
    pub fn new(zone: Zone, endpoint: &str, credentials: Credentials) -> Result<Self, ConfigError> {
        let endpoint = parse_endpoint(endpoint)?;
        Ok(Self {
            endpoint,
            zone,
            credentials,
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            poll: PollPolicy::default(),
        })
    }

    /// The zone's endpoint, or `EXOSCALE_API_ENDPOINT` (one URL, or `ZONE=URL,...` per zone:
    /// [`crate::config::endpoint_override`]), with credentials from the environment.
    pub fn from_env(zone: Zone) -> Result<Self, ConfigError> {
        let raw = std::env::var(env::API_ENDPOINT).ok();
        let endpoint = crate::config::endpoint_override(raw.as_deref(), zone)?
            .unwrap_or_else(|| zone.endpoint());
        Self::new(zone, &endpoint, Credentials::from_env()?)
    }
}

fn parse_endpoint(raw: &str) -> Result<Url, ConfigError> {
    let raw = raw.trim().trim_end_matches('/');
    let url = Url::parse(raw).map_err(|e| {
        ConfigError::invalid(
            env::API_ENDPOINT,
            format!("must be a URL, got `{raw}` ({e})"),
        )
    })?;
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(ConfigError::invalid(
            env::API_ENDPOINT,
            format!("must be a base URL such as http://127.0.0.1:8079/v2, got `{raw}`"),
        ));
    }
    Ok(url)
}

/// Whether a request may be sent again after it may already have reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    Safe,
    Unsafe,
}

/// A raw answer, for callers that want the bytes (the contract tests, debugging).
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The Exoscale API v2 client for one zone.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    cfg: ClientConfig,
    metrics: Option<super::ApiMetrics>,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("poolpilot/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            http,
            cfg,
            metrics: None,
        })
    }

    /// Records request durations and errors into `metrics`.
    pub fn with_metrics(mut self, metrics: super::ApiMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub fn zone(&self) -> Zone {
        self.cfg.zone
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.cfg.endpoint.clone();
        {
            let base = url.path().trim_end_matches('/').to_owned();
            url.set_path(&format!("{base}{path}"));
        }
        if query.is_empty() {
            url.set_query(None);
        } else {
            let mut q = url.query_pairs_mut();
            q.clear();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Sends one request with retries and returns the status and body of the final answer;
    /// error statuses become errors.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        idempotency: Idempotency,
    ) -> Result<RawResponse> {
        let url = self.url(path, query);
        let request = format!("{method} {}", url.path());
        let operation = super::metrics::operation_id(method.as_str(), url.path());
        let result = self
            .send_with_retries(&method, &url, body, idempotency, &request, operation)
            .await;
        if let (Err(e), Some(m)) = (&result, &self.metrics) {
            m.error(operation, e.kind().as_str());
        }
        result
    }

    async fn send_with_retries(
        &self,
        method: &Method,
        url: &Url,
        body: Option<Vec<u8>>,
        idempotency: Idempotency,
        request: &str,
        operation: &'static str,
    ) -> Result<RawResponse> {
        let policy = &self.cfg.retry;
        let mut attempt = 0u32;
        loop {
            let started = std::time::Instant::now();
            let outcome = self.attempt(method, url, body.as_deref(), request).await;
            if let Some(m) = &self.metrics {
                m.observe(operation, started.elapsed().as_secs_f64());
            }
            let (err, retry_after) = match outcome {
                Ok(raw) => return Ok(raw),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retryable(e, after)) => (e, after),
                Err(Attempt::RetryableIfSafe(e)) if idempotency == Idempotency::Safe => (e, None),
                Err(Attempt::RetryableIfSafe(e)) => return Err(e),
            };
            if attempt >= policy.max_retries {
                return Err(err);
            }
            let delay = retry_after.unwrap_or_else(|| policy.backoff(attempt));
            warn!(
                request = %request,
                attempt = attempt + 1,
                delay_ms = delay.as_millis() as u64,
                error = %err,
                "API request failed; retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        request: &str,
    ) -> Result<RawResponse, Attempt> {
        let expires = unix_now().as_secs() + sign::VALIDITY_SECS;
        let auth = sign::authorization(
            &self.cfg.credentials.key,
            self.cfg.credentials.secret.expose(),
            method.as_str(),
            url,
            body.unwrap_or_default(),
            expires,
        );
        let mut rb = self
            .http
            .request(method.clone(), url.clone())
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        let started = std::time::Instant::now();
        let resp = rb.send().await.map_err(|e| self.transport(e, request))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| self.transport(e, request))?;
        debug!(
            request = %request,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "API request"
        );
        if status.is_success() {
            return Ok(RawResponse {
                status: status.as_u16(),
                body: bytes.to_vec(),
            });
        }
        let message = error_message(&bytes);
        let code = status.as_u16();
        let request = request.to_owned();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Attempt::Final(Error::Auth {
                request,
                status: code,
                message,
            }),
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retryable(
                Error::Api {
                    request,
                    status: code,
                    message,
                },
                retry_after,
            ),
            StatusCode::NOT_IMPLEMENTED => Attempt::Final(Error::Api {
                request,
                status: code,
                message,
            }),
            s if s.is_server_error() => Attempt::Retryable(
                Error::Api {
                    request,
                    status: code,
                    message,
                },
                retry_after,
            ),
            _ => Attempt::Final(Error::Api {
                request,
                status: code,
                message,
            }),
        })
    }

    fn transport(&self, e: reqwest::Error, request: &str) -> Attempt {
        let request = request.to_owned();
        if e.is_timeout() {
            Attempt::RetryableIfSafe(Error::Timeout {
                request,
                timeout: self.cfg.request_timeout,
            })
        } else if e.is_connect() {
            // The request never reached the server: always safe to send again.
            Attempt::Retryable(
                Error::Transport {
                    request,
                    connect: true,
                    source: e.without_url(),
                },
                None,
            )
        } else {
            Attempt::RetryableIfSafe(Error::Transport {
                request,
                connect: false,
                source: e.without_url(),
            })
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&impl Serialize>,
        idempotency: Idempotency,
    ) -> Result<T> {
        let body = body.map(|b| serde_json::to_vec(b).expect("models serialize"));
        let raw = self
            .send(method.clone(), path, query, body, idempotency)
            .await?;
        serde_json::from_slice(&raw.body).map_err(|source| Error::Decode {
            request: format!("{method} {path}"),
            source,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        self.call(Method::GET, path, query, None::<&()>, Idempotency::Safe)
            .await
    }

    pub async fn list_instance_pools(&self) -> Result<Vec<InstancePool>> {
        Ok(self
            .get::<InstancePoolList>("/instance-pool", &[])
            .await?
            .instance_pools)
    }

    pub async fn get_instance_pool(&self, id: Uuid) -> Result<InstancePool> {
        self.get(&format!("/instance-pool/{id}"), &[]).await
    }

    /// Sets the pool's size (absolute, so a retry cannot scale twice). Shrinking lets Exoscale
    /// choose the victims.
    pub async fn scale_instance_pool(&self, id: Uuid, size: u64) -> Result<Operation> {
        #[derive(Serialize)]
        struct Body {
            size: u64,
        }
        self.call(
            Method::PUT,
            &format!("/instance-pool/{id}:scale"),
            &[],
            Some(&Body { size }),
            Idempotency::Safe,
        )
        .await
    }

    /// Removes the named members and lowers the size by their count.
    pub async fn evict_instance_pool_members(
        &self,
        id: Uuid,
        instances: &[Uuid],
    ) -> Result<Operation> {
        #[derive(Serialize)]
        struct Body<'a> {
            instances: &'a [Uuid],
        }
        self.call(
            Method::PUT,
            &format!("/instance-pool/{id}:evict"),
            &[],
            Some(&Body { instances }),
            Idempotency::Unsafe,
        )
        .await
    }

    /// The pool's members with their addresses, in one call.
    pub async fn list_pool_members(&self, pool: Uuid) -> Result<Vec<Instance>> {
        let id = pool.to_string();
        Ok(self
            .get::<InstanceList>(
                "/instance",
                &[("manager-id", &id), ("manager-type", "instance-pool")],
            )
            .await?
            .instances)
    }

    pub async fn get_instance(&self, id: Uuid) -> Result<Instance> {
        self.get(&format!("/instance/{id}"), &[]).await
    }

    pub async fn get_operation(&self, id: Uuid) -> Result<Operation> {
        self.get(&format!("/operation/{id}"), &[]).await
    }

    /// Polls the operation until it ends, on the SDKs' schedule; a failed or timed-out operation
    /// is an error, and so are `max_errors` failed polls in a row or the overall timeout.
    pub async fn wait_operation(&self, op: &Operation) -> Result<Operation> {
        let poll = &self.cfg.poll;
        let started = tokio::time::Instant::now();
        let mut current = op.clone();
        let mut errors = 0u32;
        loop {
            match current.state {
                OperationState::Success => return Ok(current),
                OperationState::Pending => {}
                other => {
                    return Err(Error::OperationFailed {
                        id: current.id,
                        state: format!("{other:?}").to_lowercase(),
                        message: current
                            .message
                            .clone()
                            .or(current.reason.clone())
                            .unwrap_or_default(),
                    });
                }
            }
            let waited = started.elapsed();
            if waited >= poll.timeout {
                return Err(Error::OperationTimeout { id: op.id, waited });
            }
            tokio::time::sleep(poll.interval(waited)).await;
            match self.get_operation(op.id).await {
                Ok(next) => {
                    errors = 0;
                    current = next;
                }
                Err(e) => {
                    errors += 1;
                    warn!(operation = %op.id, errors, error = %e, "polling the operation failed");
                    if errors >= poll.max_errors {
                        return Err(e);
                    }
                }
            }
        }
    }

    pub async fn list_load_balancers(&self) -> Result<Vec<LoadBalancer>> {
        Ok(self
            .get::<LoadBalancerList>("/load-balancer", &[])
            .await?
            .load_balancers)
    }

    pub async fn get_load_balancer(&self, id: Uuid) -> Result<LoadBalancer> {
        self.get(&format!("/load-balancer/{id}"), &[]).await
    }

    pub async fn list_instance_types(&self) -> Result<Vec<InstanceType>> {
        Ok(self
            .get::<InstanceTypeList>("/instance-type", &[])
            .await?
            .instance_types)
    }

    /// Templates of one visibility (`private` for your own, `public` for Exoscale's).
    pub async fn list_templates(&self, visibility: &str) -> Result<Vec<Template>> {
        Ok(self
            .get::<TemplateList>("/template", &[("visibility", visibility)])
            .await?
            .templates)
    }

    pub async fn get_template(&self, id: Uuid) -> Result<Template> {
        self.get(&format!("/template/{id}"), &[]).await
    }

    /// Registers a QCOW2 image from a URL; the finished operation's reference is the template.
    pub async fn register_template(&self, req: &RegisterTemplate) -> Result<Operation> {
        self.call(
            Method::POST,
            "/template",
            &[],
            Some(req),
            Idempotency::Unsafe,
        )
        .await
    }

    /// Deletes a template (the instances made from it keep their disks). A retry after a lost
    /// answer may find it gone: callers treat 404 as deleted.
    pub async fn delete_template(&self, id: Uuid) -> Result<Operation> {
        self.call(
            Method::DELETE,
            &format!("/template/{id}"),
            &[],
            None::<&()>,
            Idempotency::Safe,
        )
        .await
    }

    pub async fn list_zones(&self) -> Result<Vec<ZoneInfo>> {
        Ok(self.get::<ZoneList>("/zone", &[]).await?.zones)
    }
}

enum Attempt {
    Final(Error),
    Retryable(Error, Option<Duration>),
    RetryableIfSafe(Error),
}

impl From<Attempt> for Error {
    fn from(a: Attempt) -> Self {
        match a {
            Attempt::Final(e) | Attempt::Retryable(e, _) | Attempt::RetryableIfSafe(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_base_urls() {
        assert!(parse_endpoint("http://127.0.0.1:8079/v2/").is_ok());
        assert!(parse_endpoint("not a url").is_err());
        assert!(parse_endpoint("mailto:x@y").is_err());
    }

    #[test]
    fn urls_join_the_endpoint_path() {
        let cfg = ClientConfig::new(
            Zone::DEFAULT,
            "http://127.0.0.1:1/v2",
            Credentials::new("k", "s"),
        )
        .unwrap();
        let c = Client::new(cfg).unwrap();
        let u = c.url(
            "/instance",
            &[("manager-id", "x"), ("manager-type", "instance-pool")],
        );
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:1/v2/instance?manager-id=x&manager-type=instance-pool"
        );
        assert_eq!(
            c.url("/instance-pool/a:scale", &[]).path(),
            "/v2/instance-pool/a:scale"
        );
    }
}
