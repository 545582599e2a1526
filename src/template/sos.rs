//! Exoscale's object storage (SOS) through its S3 API, with the `object_store` crate: SigV4
//! signing, multipart uploads, pre-signed URLs and retries are the crate's; this module adds
//! what the crate has no call for (creating a bucket, signed by the crate's own authorizer) and
//! computes the MD5 of what it uploads while reading it.

use std::path::Path as FsPath;
use std::time::Duration;

use bytes::Bytes;
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;
use tracing::{debug, warn};
use url::Url;

use crate::config::Zone;
use crate::exoscale::{Credentials, RetryPolicy};

/// Parts of a multipart upload (S3 allows 10 000 parts: 16 MiB parts reach 156 GiB).
pub const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts uploaded at once (memory held: about this many parts, 128 MiB).
const CONCURRENCY: usize = 8;
/// How much is read from the file at a time.
const READ_SIZE: usize = 1024 * 1024;

/// Why an object storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum SosError {
    /// The bucket's name is taken by another account (S3 `BucketAlreadyExists`), or the key may
    /// not use it.
    #[error(
        "bucket `{bucket}` belongs to someone else (or this key may not use it): {detail}; \
         choose another --bucket"
    )]
    BucketNotOurs { bucket: String, detail: String },
    #[error("object storage refused the key (HTTP {status}) for bucket `{bucket}`: {detail}")]
    Auth {
        bucket: String,
        status: u16,
        detail: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("object storage: {0}")]
    Http(String),
}

/// The zone's SOS endpoint, `https://sos-{zone}.exo.io`.
pub fn default_endpoint(zone: Zone) -> String {
    format!("https://sos-{}.exo.io", zone.name())
}

/// One bucket in one zone's object storage.
pub struct Sos {
    store: AmazonS3,
    endpoint: Url,
    bucket: String,
    region: String,
    credential: AwsCredential,
    http: reqwest::Client,
    retry: RetryPolicy,
}

/// What an upload sent.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub size: u64,
    /// The MD5 of the bytes sent, hex.
    pub md5: String,
}

impl Sos {
    /// Path-style requests (`{endpoint}/{bucket}/{key}`), SigV4 with the zone as region.
    pub fn new(
        endpoint: &Url,
        zone: Zone,
        bucket: &str,
        credentials: &Credentials,
        retry: &RetryPolicy,
        timeout: Duration,
    ) -> Result<Self, SosError> {
        let endpoint_str = endpoint.as_str().trim_end_matches('/').to_owned();
        let client_options = object_store::ClientOptions::new()
            .with_allow_http(endpoint.scheme() == "http")
            .with_timeout(timeout)
            .with_connect_timeout(timeout.min(Duration::from_secs(10)));
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint_str)
            .with_region(zone.name())
            .with_bucket_name(bucket)
            .with_access_key_id(&credentials.key)
            .with_secret_access_key(credentials.secret.expose())
            .with_virtual_hosted_style_request(false)
            .with_client_options(client_options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: retry.base,
                    max_backoff: retry.max,
                    base: 2.0,
                },
                max_retries: retry.max_retries as usize,
                retry_timeout: Duration::from_secs(180),
            })
            .build()?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("poolpilot/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .build()
            .map_err(|e| SosError::Http(e.to_string()))?;
        Ok(Self {
            store,
            endpoint: endpoint.clone(),
            bucket: bucket.to_owned(),
            region: zone.name().to_owned(),
            credential: AwsCredential {
                key_id: credentials.key.clone(),
                secret_key: credentials.secret.expose().to_owned(),
                token: None,
            },
            http,
            retry: retry.clone(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Creates the bucket unless this account already owns it. A name another account holds
    /// (`BucketAlreadyExists`) is an error naming the bucket. S3 has no create-bucket in
    /// `object_store`, so the request is built here and signed by the crate's `AwsAuthorizer`.
    /// Returns whether the bucket was created.
    pub async fn ensure_bucket(&self) -> Result<bool, SosError> {
        let url = format!(
            "{}/{}",
            self.endpoint.as_str().trim_end_matches('/'),
            self.bucket
        );
        let body = format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            self.region
        );
        let mut attempt = 0u32;
        loop {
            let mut req: object_store::client::HttpRequest = http::Request::builder()
                .method(http::Method::PUT)
                .uri(&url)
                .header(http::header::CONTENT_TYPE, "application/xml")
                .body(body.clone().into())
                .map_err(|e| SosError::Http(e.to_string()))?;
            AwsAuthorizer::new(&self.credential, "s3", &self.region)
                .try_authorize(&mut req, None)?;
            let mut rb = self.http.put(&url).body(body.clone());
            for (k, v) in req.headers() {
                rb = rb.header(k, v);
            }
            let outcome = rb.send().await;
            let retryable = match outcome {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    let code = xml_tag(&text, "Code").unwrap_or_default();
                    debug!(bucket = %self.bucket, status, code, "create bucket");
                    match (status, code.as_str()) {
                        (200, _) => return Ok(true),
                        (409, "BucketAlreadyOwnedByYou") => return Ok(false),
                        (409, _) => {
                            return Err(SosError::BucketNotOurs {
                                bucket: self.bucket.clone(),
                                detail: describe(status, &code, &text),
                            });
                        }
                        (403, _) => {
                            return self.usable_without_creating(status, &code, &text).await;
                        }
                        (401, _) => {
                            return Err(SosError::Auth {
                                bucket: self.bucket.clone(),
                                status,
                                detail: describe(status, &code, &text),
                            });
                        }
                        (s, _) if s == 429 || s >= 500 => describe(status, &code, &text),
                        _ => {
                            return Err(SosError::Http(format!(
                                "creating bucket `{}`: {}",
                                self.bucket,
                                describe(status, &code, &text)
                            )));
                        }
                    }
                }
                Err(e) => e.without_url().to_string(),
            };
            if attempt >= self.retry.max_retries {
                return Err(SosError::Http(format!(
                    "creating bucket `{}`: {retryable}",
                    self.bucket
                )));
            }
            let delay = self.retry.backoff(attempt);
            warn!(bucket = %self.bucket, attempt = attempt + 1, delay_ms = delay.as_millis() as u64,
                  error = %retryable, "creating the bucket failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The key may not create buckets: the bucket is usable if listing it works.
    async fn usable_without_creating(
        &self,
        status: u16,
        code: &str,
        text: &str,
    ) -> Result<bool, SosError> {
        use futures_util::StreamExt;
        let mut list = self.store.list(None);
        match list.next().await.transpose() {
            Ok(_) => Ok(false),
            Err(_) => Err(SosError::BucketNotOurs {
                bucket: self.bucket.clone(),
                detail: describe(status, code, text),
            }),
        }
    }

    /// Uploads `file` to `key` (multipart past one part), computing its MD5 from the same reads.
    pub async fn upload(&self, file: &FsPath, key: &str) -> Result<Uploaded, SosError> {
        let read_err = |source| SosError::Read {
            path: file.display().to_string(),
            source,
        };
        let mut f = tokio::fs::File::open(file).await.map_err(read_err)?;
        let len = f.metadata().await.map_err(read_err)?.len();
        let location = Path::from(key);
        let mut md5 = Md5::new();
        if len < PART_SIZE as u64 {
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf).await.map_err(read_err)?;
            md5.update(&buf);
            let size = buf.len() as u64;
            self.store
                .put(&location, PutPayload::from(Bytes::from(buf)))
                .await?;
            return Ok(Uploaded {
                size,
                md5: hex::encode(md5.finalize()),
            });
        }
        let upload = self.store.put_multipart(&location).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; READ_SIZE];
        let mut size = 0u64;
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(read_err(e));
                }
            };
            if n == 0 {
                break;
            }
            md5.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = w.wait_for_capacity(CONCURRENCY).await {
                let _ = w.abort().await;
                return Err(e.into());
            }
            w.write(&buf[..n]);
        }
        w.finish().await?;
        Ok(Uploaded {
            size,
            md5: hex::encode(md5.finalize()),
        })
    }

    /// The object's size, or `None` when there is no such object.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, SosError> {
        match self.store.head(&Path::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A GET URL for `key` valid for `expires` (it carries a signature: never log it whole).
    pub async fn presign(&self, key: &str, expires: Duration) -> Result<Url, SosError> {
        Ok(self
            .store
            .signed_url(http::Method::GET, &Path::from(key), expires)
            .await?)
    }

    /// Deletes the object; an object already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), SosError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// `https://host/bucket/key?X-Amz-...` without its query (the signature), for messages.
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?(signature redacted)"),
        None => url.to_owned(),
    }
}

fn describe(status: u16, code: &str, text: &str) -> String {
    let message = xml_tag(text, "Message").unwrap_or_default();
    match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("HTTP {status} {code}: {message}"),
        (false, true) => format!("HTTP {status} {code}"),
        _ => format!("HTTP {status}"),
    }
}

/// The text of the first `<tag>` in an S3 error document.
fn xml_tag(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{tag}>"))? + start;
    Some(text[start..end].trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_yield_code_and_message() {
        let doc = "<?xml version=\"1.0\"?><Error><Code>BucketAlreadyExists</Code>\
                   <Message>The requested bucket name is not available.</Message></Error>";
        assert_eq!(xml_tag(doc, "Code").as_deref(), Some("BucketAlreadyExists"));
        assert_eq!(
            describe(409, "BucketAlreadyExists", doc),
            "HTTP 409 BucketAlreadyExists: The requested bucket name is not available."
        );
        assert_eq!(describe(500, "", ""), "HTTP 500");
    }

    #[test]
    fn signatures_are_redacted() {
        let r = redact("https://sos-ch-gva-2.exo.io/b/k.qcow2?X-Amz-Signature=abc");
        assert!(!r.contains("abc"), "{r}");
        assert!(r.starts_with("https://sos-ch-gva-2.exo.io/b/k.qcow2"));
    }
}
