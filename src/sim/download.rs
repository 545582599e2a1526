//! The image download behind `register-template`: like Exoscale, the simulator fetches the URL
//! it was given (a real HTTP GET, bounded in size and time) and computes the MD5 of what it
//! received. Only loopback addresses are fetched: the simulator is a local tool, and its tests
//! must never reach past this machine.

use std::net::IpAddr;
use std::time::Duration;

use md5::{Digest, Md5};
use url::Url;

/// What a download may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: u64,
    /// For the whole download.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024 * 1024,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// An image downloaded: its size and MD5 (hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub size: u64,
    pub md5: String,
}

/// Whether `url` points at this machine (127.0.0.0/8, ::1 or `localhost`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a).is_loopback(),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The host and path of `url`, without its query (a pre-signed URL's signature), for messages.
fn shown(url: &Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    )
}

/// Downloads `raw` and returns its size and MD5, or why not (a message for the operation).
pub async fn fetch(raw: &str, limits: Limits) -> Result<Fetched, String> {
    let url = Url::parse(raw).map_err(|e| format!("the url is not a URL: {e}"))?;
    if !is_loopback(&url) {
        return Err(format!(
            "the simulator downloads templates only from loopback addresses, not {}",
            shown(&url)
        ));
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let download = async {
        let mut resp = http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("downloading {}: {}", shown(&url), e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!(
                "downloading {}: HTTP {}",
                shown(&url),
                resp.status().as_u16()
            ));
        }
        let mut md5 = Md5::new();
        let mut size = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("downloading {}: {}", shown(&url), e.without_url()))?
        {
            size += chunk.len() as u64;
            if size > limits.max_bytes {
                return Err(format!(
                    "the image at {} is larger than {} bytes",
                    shown(&url),
                    limits.max_bytes
                ));
            }
            md5.update(&chunk);
        }
        if size == 0 {
            return Err(format!("the image at {} is empty", shown(&url)));
        }
        Ok(Fetched {
            size,
            md5: hex::encode(md5.finalize()),
        })
    };
    tokio::time::timeout(limits.timeout, download)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "downloading {} took longer than {:?}",
                shown(&url),
                limits.timeout
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_fetched() {
        for ok in [
            "http://127.0.0.1:9000/b/k",
            "http://127.1.2.3/x",
            "http://[::1]:80/x",
            "http://localhost:1/x",
        ] {
            assert!(is_loopback(&Url::parse(ok).unwrap()), "{ok}");
        }
        for no in [
            "https://sos-ch-gva-2.exo.io/b/k",
            "http://198.51.100.7/x",
            "http://10.0.0.1/x",
        ] {
            assert!(!is_loopback(&Url::parse(no).unwrap()), "{no}");
        }
    }

    #[tokio::test]
    async fn a_url_elsewhere_is_refused_without_its_query() {
        let e = fetch(
            "https://sos-ch-gva-2.exo.io/b/k.qcow2?X-Amz-Signature=secret",
            Limits::default(),
        )
        .await
        .unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
