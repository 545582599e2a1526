//! Alert webhook bodies: which format, which alerts fire, which way they ask to scale.
//!
//! Three senders are understood, detected from the body itself:
//!
//! | format | recognised by | fires when |
//! |---|---|---|
//! | Alertmanager | `version: "4"` with `alerts[]` | the alert's `status` is `firing` |
//! | Grafana unified (8+) | `alerts[]` with any other `version` (Grafana sends `"1"`) | the alert's `status` is `firing` |
//! | Grafana legacy (<= 10) | `state` without `alerts[]` (`ruleName`, `evalMatches`) | `state` is `alerting` |
//!
//! Grafana's `DatasourceNoData` and `DatasourceError` alerts never count: missing data is not
//! load. Resolved alerts never count either (Alertmanager sends them by default).
//!
//! On `/up` and `/down` the route gives the direction; on `/webhook` each firing alert's `scale`
//! label does (`up` or `down`; for the legacy format, the rule's `scale` tag).

use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::{MetricSource, Signals, SourceError};

/// Which way to change the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "up" => Some(Direction::Up),
            "down" => Some(Direction::Down),
            _ => None,
        }
    }
}

/// The body's sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// GET (or an empty POST) on `/up` or `/down`: the course checker's trigger.
    Plain,
    GrafanaUnified,
    GrafanaLegacy,
    Alertmanager,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::GrafanaUnified => "grafana-unified",
            Format::GrafanaLegacy => "grafana-legacy",
            Format::Alertmanager => "alertmanager",
        }
    }
}

/// One alert that asks to scale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Firing {
    pub direction: Direction,
    /// The alert's name (`alertname`, or the legacy `ruleName`).
    pub name: String,
    /// Which pool the alert is about, from its labels (legacy: tags): `pool` (a pool's name) or
    /// `exoscale_instance_pool_id` (its id). With several pools, plain `/webhook` routes by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolLabel>,
}

/// The label that tells an alert's pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolLabel {
    Name(String),
    Id(String),
}

impl PoolLabel {
    fn read<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let clean = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        get("pool")
            .and_then(clean)
            .map(PoolLabel::Name)
            .or_else(|| {
                get("exoscale_instance_pool_id")
                    .and_then(clean)
                    .map(PoolLabel::Id)
            })
    }
}

/// An alert that was read but does not scale, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ignored {
    pub name: String,
    pub reason: String,
}

/// What a body says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Parsed {
    pub format: Format,
    pub firing: Vec<Firing>,
    pub ignored: Vec<Ignored>,
}

/// Where the body arrived: `/up` and `/down` fix the direction, `/webhook` reads labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Fixed(Direction),
    Labelled,
}

/// The Grafana alerts that report a broken query, not load.
const DATASOURCE_ALERTS: [&str; 2] = ["DatasourceNoData", "DatasourceError"];

/// At most this many ignored alerts are reported back (a body may hold thousands).
const MAX_IGNORED: usize = 20;

/// Reads a JSON body. `Err` holds the reason for a 400.
pub fn parse(body: &[u8], route: Route) -> Result<Parsed, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("the body must be a JSON object (a Grafana or Alertmanager webhook)")?;
    let mut out = Parsed {
        format: Format::GrafanaUnified,
        firing: Vec::new(),
        ignored: Vec::new(),
    };
    let ignore = |out: &mut Parsed, name: &str, reason: String| {
        if out.ignored.len() < MAX_IGNORED {
            out.ignored.push(Ignored {
                name: name.to_owned(),
                reason,
            });
        }
    };
    if let Some(alerts) = obj.get("alerts") {
        let alerts = alerts
            .as_array()
            .ok_or("`alerts` must be an array of alerts")?;
        out.format = match obj.get("version").and_then(Value::as_str) {
            Some("4") => Format::Alertmanager,
            _ => Format::GrafanaUnified,
        };
        for (i, alert) in alerts.iter().enumerate() {
            let a = alert
                .as_object()
                .ok_or_else(|| format!("`alerts[{i}]` must be an object"))?;
            let status = a
                .get("status")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`alerts[{i}].status` is missing"))?;
            let labels = match a.get("labels") {
                None | Some(Value::Null) => None,
                Some(Value::Object(l)) => Some(l),
                Some(_) => return Err(format!("`alerts[{i}].labels` must be an object")),
            };
            let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            let name = label("alertname").unwrap_or("(unnamed)");
            if status != "firing" {
                ignore(&mut out, name, format!("status is {status}"));
                continue;
            }
            if DATASOURCE_ALERTS.contains(&name) {
                ignore(
                    &mut out,
                    name,
                    "no data or a query error is not load".into(),
                );
                continue;
            }
            match direction(route, label("scale")) {
                Ok(direction) => out.firing.push(Firing {
                    direction,
                    name: name.to_owned(),
                    pool: PoolLabel::read(label),
                }),
                Err(reason) => ignore(&mut out, name, reason),
            }
        }
        return Ok(out);
    }
    if let Some(state) = obj.get("state") {
        out.format = Format::GrafanaLegacy;
        let state = state.as_str().ok_or("`state` must be a string")?;
        let name = obj
            .get("ruleName")
            .and_then(Value::as_str)
            .unwrap_or("(unnamed)");
        if state != "alerting" {
            ignore(&mut out, name, format!("state is {state}"));
            return Ok(out);
        }
        let tag = obj
            .get("tags")
            .and_then(Value::as_object)
            .and_then(|t| t.get("scale"))
            .and_then(Value::as_str);
        let tags = obj.get("tags").and_then(Value::as_object);
        let tag_of = |k: &str| tags.and_then(|t| t.get(k)).and_then(Value::as_str);
        match direction(route, tag) {
            Ok(direction) => out.firing.push(Firing {
                direction,
                name: name.to_owned(),
                pool: PoolLabel::read(tag_of),
            }),
            Err(reason) => ignore(&mut out, name, reason),
        }
        return Ok(out);
    }
    Err(
        "unrecognised webhook body: expected Grafana (unified or legacy) or Alertmanager, \
         with `alerts` or `state`"
            .into(),
    )
}

fn direction(route: Route, label: Option<&str>) -> Result<Direction, String> {
    match route {
        Route::Fixed(d) => Ok(d),
        Route::Labelled => match label {
            Some(l) => Direction::parse(l)
                .ok_or_else(|| format!("scale label is `{l}`, expected `up` or `down`")),
            None => Err("no `scale` label (`up` or `down`)".into()),
        },
    }
}

/// One firing alert (or plain trigger) as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Intent {
    pub direction: Direction,
    /// Who asked: the format and the alert's name, e.g. `grafana-unified: pool CPU high`.
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The intents of one tick: how many each way, and the most recent few for the record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Intents {
    pub up: u64,
    pub down: u64,
    pub recent: Vec<Intent>,
}

impl Intents {
    pub fn is_empty(&self) -> bool {
        self.up == 0 && self.down == 0
    }
}

/// Keeps at most this many intents for the decision record; the counts are always exact.
const RECENT: usize = 16;

/// Where the webhook handlers record intents; memory stays bounded whatever the flood.
#[derive(Debug, Default)]
pub struct Inbox {
    inner: Mutex<Intents>,
}

impl Inbox {
    pub fn record(&self, format: Format, firing: &[Firing]) {
        let now = OffsetDateTime::now_utc();
        let mut i = self.inner.lock().expect("inbox lock");
        for f in firing {
            match f.direction {
                Direction::Up => i.up += 1,
                Direction::Down => i.down += 1,
            }
            if i.recent.len() == RECENT {
                i.recent.remove(0);
            }
            let source = if format == Format::Plain {
                format!("plain: {}", f.name)
            } else {
                format!("{}: {}", format.as_str(), f.name)
            };
            i.recent.push(Intent {
                direction: f.direction,
                source,
                at: now,
            });
        }
    }

    /// Everything recorded since the last take, leaving the inbox empty.
    pub fn take(&self) -> Intents {
        std::mem::take(&mut *self.inner.lock().expect("inbox lock"))
    }

    /// Counts waiting for the next tick (for replies and tests).
    pub fn pending(&self) -> (u64, u64) {
        let i = self.inner.lock().expect("inbox lock");
        (i.up, i.down)
    }
}

/// The webhook inbox as a source.
pub struct WebhookSource {
    inbox: std::sync::Arc<Inbox>,
}

impl WebhookSource {
    pub fn new(inbox: std::sync::Arc<Inbox>) -> Self {
        Self { inbox }
    }
}

impl MetricSource for WebhookSource {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn collect(&mut self) -> Result<Signals, SourceError> {
        Ok(Signals {
            intents: self.inbox.take(),
            ..Signals::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> Vec<u8> {
        let path = format!("{}/reference/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn with_labels(mut body: Value, f: impl Fn(&mut Value)) -> Vec<u8> {
        for a in body["alerts"].as_array_mut().unwrap() {
            f(a);
        }
        serde_json::to_vec(&body).unwrap()
    }

    #[test]
    fn an_alert_names_its_pool_by_name_or_id() {
        let am: Value = serde_json::from_slice(&reference("alertmanager-webhook.json")).unwrap();
        let route = Route::Fixed(Direction::Up);
        let p = parse(&serde_json::to_vec(&am).unwrap(), route).unwrap();
        assert!(p.firing.iter().all(|f| f.pool.is_none()), "{p:?}");
        let by_id = with_labels(am.clone(), |a| {
            a["labels"]["exoscale_instance_pool_id"] = "abc".into()
        });
        let p = parse(&by_id, route).unwrap();
        assert_eq!(p.firing[0].pool, Some(PoolLabel::Id("abc".into())));
        // `pool` (the name) wins over the id.
        let both = with_labels(am, |a| {
            a["labels"]["exoscale_instance_pool_id"] = "abc".into();
            a["labels"]["pool"] = "gva".into();
        });
        let p = parse(&both, route).unwrap();
        assert_eq!(p.firing[0].pool, Some(PoolLabel::Name("gva".into())));
    }

    #[test]
    fn the_reference_bodies_are_detected_and_fire() {
        let up = Route::Fixed(Direction::Up);
        let p = parse(&reference("grafana-unified-webhook.json"), up).unwrap();
        assert_eq!(p.format, Format::GrafanaUnified);
        assert_eq!(p.firing.len(), 2);
        assert_eq!(p.firing[1].name, "High CPU usage");
        let p = parse(&reference("grafana-legacy-webhook.json"), up).unwrap();
        assert_eq!(p.format, Format::GrafanaLegacy);
        assert_eq!(p.firing.len(), 1);
        let p = parse(
            &reference("alertmanager-webhook.json"),
            Route::Fixed(Direction::Down),
        )
        .unwrap();
        assert_eq!(p.format, Format::Alertmanager);
        assert_eq!(p.firing[0].direction, Direction::Down);
    }

    #[test]
    fn resolved_ok_no_data_and_datasource_alerts_never_fire() {
        let up = Route::Fixed(Direction::Up);
        let unified: Value =
            serde_json::from_slice(&reference("grafana-unified-webhook.json")).unwrap();
        let resolved = with_labels(unified.clone(), |a| a["status"] = "resolved".into());
        let p = parse(&resolved, up).unwrap();
        assert!(p.firing.is_empty());
        assert_eq!(p.ignored[0].reason, "status is resolved");
        for name in DATASOURCE_ALERTS {
            let body = with_labels(unified.clone(), |a| a["labels"]["alertname"] = name.into());
            assert!(parse(&body, up).unwrap().firing.is_empty(), "{name}");
        }
        let legacy: Value =
            serde_json::from_slice(&reference("grafana-legacy-webhook.json")).unwrap();
        for state in ["ok", "no_data", "pending", "paused"] {
            let mut b = legacy.clone();
            b["state"] = state.into();
            let p = parse(&serde_json::to_vec(&b).unwrap(), up).unwrap();
            assert!(p.firing.is_empty(), "{state}");
        }
    }

    #[test]
    fn the_webhook_route_reads_the_scale_label() {
        let am: Value = serde_json::from_slice(&reference("alertmanager-webhook.json")).unwrap();
        let down = with_labels(am.clone(), |a| a["labels"]["scale"] = "down".into());
        let p = parse(&down, Route::Labelled).unwrap();
        assert_eq!(p.firing[0].direction, Direction::Down);
        let p = parse(&serde_json::to_vec(&am).unwrap(), Route::Labelled).unwrap();
        assert!(p.firing.is_empty());
        assert!(p.ignored[0].reason.contains("no `scale` label"));
        let odd = with_labels(am, |a| a["labels"]["scale"] = "sideways".into());
        assert!(parse(&odd, Route::Labelled).unwrap().firing.is_empty());
    }

    #[test]
    fn malformed_bodies_get_a_reason() {
        let up = Route::Fixed(Direction::Up);
        for (body, says) in [
            (&b"{"[..], "not valid JSON"),
            (b"[1,2]", "JSON object"),
            (b"{\"hello\": 1}", "unrecognised"),
            (b"{\"alerts\": 3}", "must be an array"),
            (b"{\"alerts\": [1]}", "alerts[0]"),
            (b"{\"alerts\": [{}]}", "status"),
            (b"{\"state\": 5}", "state"),
        ] {
            let e = parse(body, up).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn no_input_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse(&body, Route::Labelled);
        }

        #[test]
        fn no_json_shaped_input_panics(s in r#"\{("(alerts|state|version|status|labels|scale|ruleName|tags)":(\[|\{|"firing"|"4"|"up"|null|1|"alerting")[,\]\}]{0,3}){0,8}"#) {
            let _ = parse(s.as_bytes(), Route::Labelled);
            let _ = parse(s.as_bytes(), Route::Fixed(Direction::Up));
        }
    }
}

#[cfg(test)]
mod inbox_tests {
    use super::*;

    #[test]
    fn the_inbox_counts_exactly_keeps_few_and_empties_on_take() {
        let inbox = Inbox::default();
        let up = Firing {
            direction: Direction::Up,
            name: "cpu high".into(),
            pool: None,
        };
        for _ in 0..1000 {
            inbox.record(Format::GrafanaUnified, std::slice::from_ref(&up));
        }
        inbox.record(
            Format::Plain,
            &[Firing {
                direction: Direction::Down,
                name: "GET /down".into(),
                pool: None,
            }],
        );
        assert_eq!(inbox.pending(), (1000, 1));
        let i = inbox.take();
        assert_eq!((i.up, i.down), (1000, 1));
        assert_eq!(i.recent.len(), RECENT);
        assert_eq!(i.recent.last().unwrap().source, "plain: GET /down");
        assert!(inbox.take().is_empty());
    }
}
