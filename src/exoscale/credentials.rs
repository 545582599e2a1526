//! API credentials: a key and its secret, read from Exoscale's variable names or the course's.

use crate::config::{ConfigError, Secret, env};

/// An API key and its secret.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub key: String,
    pub secret: Secret,
}

impl Credentials {
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            secret: Secret::new(secret),
        }
    }

    /// From `EXOSCALE_API_KEY`/`EXOSCALE_API_SECRET`, else the course's
    /// `EXOSCALE_KEY`/`EXOSCALE_SECRET`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Credentials::from_env`], reading variables through `get` (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |n: &str| get(n).filter(|v| !v.trim().is_empty());
        let key = get(env::API_KEY).or_else(|| get(env::COURSE_KEY));
        let secret = get(env::API_SECRET).or_else(|| get(env::COURSE_SECRET));
        match (key, secret) {
            (Some(k), Some(s)) => Ok(Self::new(k.trim(), s.trim())),
            (None, _) => Err(ConfigError::invalid(
                env::API_KEY,
                format!("is required (or the course's {})", env::COURSE_KEY),
            )),
            (_, None) => Err(ConfigError::invalid(
                env::API_SECRET,
                format!("is required (or the course's {})", env::COURSE_SECRET),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let c = Credentials::new("EXOkey", "topsecret");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("topsecret"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn credentials_fall_back_to_the_course_names() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Credentials::from_lookup(env(&[("EXOSCALE_KEY", "k"), ("EXOSCALE_SECRET", "s")]))
            .unwrap();
        assert_eq!((c.key.as_str(), c.secret.expose()), ("k", "s"));
        let c = Credentials::from_lookup(env(&[
            ("EXOSCALE_API_KEY", "a"),
            ("EXOSCALE_API_SECRET", "b"),
            ("EXOSCALE_KEY", "k"),
            ("EXOSCALE_SECRET", "s"),
        ]))
        .unwrap();
        assert_eq!((c.key.as_str(), c.secret.expose()), ("a", "b"));
        let e = Credentials::from_lookup(env(&[("EXOSCALE_KEY", "k")])).unwrap_err();
        assert!(e.to_string().contains("EXOSCALE_API_SECRET"), "{e}");
    }
}
