//! Pools by name and zone (`--pool [NAME=][ZONE:]POOL_ID`), and the API endpoint per zone.

use super::{ConfigError, Zone, env, parse_pool_id};

/// The name a pool gets when `--pool` gives only its id (no `NAME=`, no `ZONE:`): today's
/// single pool, on the metrics' and decisions' `pool` label and at `/webhook/default`.
pub const DEFAULT_POOL_NAME: &str = "default";

/// One pool as `--pool [NAME=][ZONE:]POOL_ID` names it, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRef {
    /// `[a-z0-9][a-z0-9-]{0,31}`: the zone when `ZONE:` is given, else [`DEFAULT_POOL_NAME`].
    pub name: String,
    /// Whether the name was written (`NAME=`) rather than defaulted.
    pub named: bool,
    pub zone: Zone,
    pub id: uuid::Uuid,
}

/// Whether `name` is a pool name: `[a-z0-9][a-z0-9-]{0,31}`.
pub fn valid_pool_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

impl PoolRef {
    /// Parses one `[NAME=][ZONE:]POOL_ID`; a pool without `ZONE:` is in `default_zone`.
    pub fn parse(field: &str, raw: &str, default_zone: Zone) -> Result<Self, ConfigError> {
        let t = raw.trim();
        let bad = |why: String| {
            ConfigError::invalid(field, format!("`{t}` {why} (write [NAME=][ZONE:]POOL_ID)"))
        };
        let (name, rest) = match t.split_once('=') {
            Some((n, r)) => (Some(n.trim()), r.trim()),
            None => (None, t),
        };
        let (zone, id) = match rest.split_once(':') {
            Some((z, i)) => (Some(z.trim().parse::<Zone>().map_err(bad)?), i.trim()),
            None => (None, rest),
        };
        let id: uuid::Uuid = id
            .parse()
            .map_err(|_| bad(format!("has no pool UUID (got `{id}`)")))?;
        if let Some(n) = name
            && !valid_pool_name(n)
        {
            return Err(bad(format!(
                "has the name `{n}`: a name is 1 to 32 of a-z, 0-9 and `-`, starting with a letter or digit"
            )));
        }
        Ok(Self {
            name: name
                .map(str::to_owned)
                .or(zone.map(|z| z.name().to_owned()))
                .unwrap_or_else(|| DEFAULT_POOL_NAME.to_owned()),
            named: name.is_some(),
            zone: zone.unwrap_or(default_zone),
            id,
        })
    }

    /// Parses every entry of `raws` (each may hold several, comma-separated: the environment
    /// variable's form). At least one pool; no id twice; with `unique_names`, no name twice
    /// (the autoscaler's routes and labels need them), else only written names must differ.
    pub fn parse_all(
        field: &str,
        raws: &[String],
        default_zone: Zone,
        unique_names: bool,
    ) -> Result<Vec<Self>, ConfigError> {
        let mut pools: Vec<Self> = Vec::new();
        for raw in raws.iter().flat_map(|r| r.split(',')) {
            if raw.trim().is_empty() {
                continue;
            }
            let p = Self::parse(field, raw, default_zone)?;
            if pools.iter().any(|q| q.id == p.id) {
                return Err(ConfigError::invalid(
                    field,
                    format!("{} is listed twice", p.id),
                ));
            }
            let clash = pools
                .iter()
                .any(|q| q.name == p.name && (unique_names || (q.named && p.named)));
            if clash {
                return Err(ConfigError::invalid(
                    field,
                    format!(
                        "the name `{}` is used twice: give each pool its own (NAME={}:{})",
                        p.name, p.zone, p.id
                    ),
                ));
            }
            pools.push(p);
        }
        if pools.is_empty() {
            return Err(parse_pool_id(field, None).expect_err("no id is an error"));
        }
        Ok(pools)
    }
}

/// The API endpoint for `zone` from `EXOSCALE_API_ENDPOINT`'s value `raw`: a plain URL serves
/// every zone (as always); a comma-separated list of `ZONE=URL` gives each zone its own (two
/// simulators, one per zone), and a zone it leaves out is an error. `None`: no override.
pub fn endpoint_override(raw: Option<&str>, zone: Zone) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let first = raw.split(',').next().unwrap_or("");
    let is_list = first
        .split_once('=')
        .is_some_and(|(z, _)| z.trim().parse::<Zone>().is_ok());
    if !is_list {
        return Ok(Some(raw.to_owned()));
    }
    for entry in raw.split(',').filter(|e| !e.trim().is_empty()) {
        let (z, url) = entry.split_once('=').ok_or_else(|| {
            ConfigError::invalid(
                env::API_ENDPOINT,
                format!("`{entry}` is not ZONE=URL (a list gives every entry a zone)"),
            )
        })?;
        let z: Zone = z
            .trim()
            .parse()
            .map_err(|e| ConfigError::invalid(env::API_ENDPOINT, e))?;
        if z == zone {
            return Ok(Some(url.trim().to_owned()));
        }
    }
    Err(ConfigError::invalid(
        env::API_ENDPOINT,
        format!("lists endpoints per zone but none for {zone}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
    const ID2: &str = "5c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";

    #[test]
    fn pool_refs_take_a_name_and_a_zone_or_default_them() {
        let p = PoolRef::parse("pool", ID, Zone::DeFra1).unwrap();
        assert_eq!(
            (p.name.as_str(), p.named, p.zone, p.id.to_string()),
            ("default", false, Zone::DeFra1, ID.to_owned())
        );
        let p = PoolRef::parse("pool", &format!("at-vie-1:{ID}"), Zone::DeFra1).unwrap();
        assert_eq!((p.name.as_str(), p.zone), ("at-vie-1", Zone::AtVie1));
        let p = PoolRef::parse("pool", &format!("web-2=ch-dk-2:{ID}"), Zone::DeFra1).unwrap();
        assert_eq!(
            (p.name.as_str(), p.named, p.zone),
            ("web-2", true, Zone::ChDk2)
        );
        let p = PoolRef::parse("pool", &format!(" web={ID} "), Zone::DeFra1).unwrap();
        assert_eq!((p.name.as_str(), p.zone), ("web", Zone::DeFra1));
        let long = "a".repeat(33);
        for bad in [
            "nope".to_owned(),
            format!("Web={ID}"),
            format!("-web={ID}"),
            format!("w_b={ID}"),
            format!("{long}={ID}"),
            format!("={ID}"),
            format!("mars-1:{ID}"),
            "web=ch-gva-2:".to_owned(),
            format!("web=ch-gva-2:{ID}:x"),
        ] {
            let e = PoolRef::parse("pool", &bad, Zone::DEFAULT)
                .unwrap_err()
                .to_string();
            assert!(e.contains("`pool`"), "{bad}: {e}");
        }
        assert!(valid_pool_name(&"a".repeat(32)));
    }

    #[test]
    fn pool_lists_split_on_commas_and_refuse_duplicates() {
        let all = |raws: &[&str], unique| {
            let raws: Vec<String> = raws.iter().map(|s| s.to_string()).collect();
            PoolRef::parse_all("pool", &raws, Zone::DEFAULT, unique)
        };
        let two = all(&[&format!("ch-gva-2:{ID},de-fra-1:{ID2}")], true).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(
            (two[0].name.as_str(), two[1].name.as_str()),
            ("ch-gva-2", "de-fra-1")
        );
        // The same id twice, the same name twice, nothing at all.
        for (raws, unique, what) in [
            (vec![ID.to_owned(), format!("x={ID}")], true, "twice"),
            (vec![format!("a={ID}"), format!("a={ID2}")], false, "`a`"),
            (
                vec![format!("ch-gva-2:{ID}"), format!("ch-gva-2:{ID2}")],
                true,
                "`ch-gva-2`",
            ),
            (vec![ID.to_owned(), ID2.to_owned()], true, "`default`"),
            (vec![" , ".to_owned()], true, "required"),
        ] {
            let raws: Vec<&str> = raws.iter().map(String::as_str).collect();
            let e = all(&raws, unique).unwrap_err().to_string();
            assert!(e.contains("`pool`") && e.contains(what), "{raws:?}: {e}");
        }
        // Discovery's plain list of ids (names unused there) keeps working.
        assert_eq!(all(&[&format!("{ID},{ID2}")], false).unwrap().len(), 2);
    }

    #[test]
    fn the_endpoint_override_is_one_url_or_one_per_zone() {
        assert_eq!(endpoint_override(None, Zone::DEFAULT).unwrap(), None);
        assert_eq!(endpoint_override(Some(" "), Zone::DEFAULT).unwrap(), None);
        let one = Some("http://127.0.0.1:8079/v2");
        assert_eq!(
            endpoint_override(one, Zone::DeFra1).unwrap().as_deref(),
            Some("http://127.0.0.1:8079/v2")
        );
        let list = Some("ch-gva-2=http://127.0.0.1:1/v2, de-fra-1=http://127.0.0.1:2/v2");
        assert_eq!(
            endpoint_override(list, Zone::DeFra1).unwrap().as_deref(),
            Some("http://127.0.0.1:2/v2")
        );
        let e = endpoint_override(list, Zone::AtVie1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("EXOSCALE_API_ENDPOINT") && e.contains("at-vie-1"),
            "{e}"
        );
        let e = endpoint_override(Some("ch-gva-2=http://a/v2,http://b/v2"), Zone::AtVie1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ZONE=URL"), "{e}");
    }
}
