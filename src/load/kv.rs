//! The `kv` request profile: a mixed read/write load against `poolpilot kv`, recording every
//! acknowledged write, and the check that reads each of them back.
//!
//! Every write creates a key of its own (`<run>:<n>`, the run named by its start time), so the
//! value each key must hold at the end is exactly the one whose `POST` answered `ok`, however
//! the writes interleave. Reads pick one of the run's first `keys` ids at random; a key written
//! moments ago may not have reached the replica yet, so a read's 404 is a miss (counted apart),
//! not a failure.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;
use serde::{Deserialize, Serialize};
use url::Url;

use super::conn::Outcome;

/// What the `kv` profile sends.
#[derive(Clone, Debug)]
pub struct KvLoad {
    /// The API's base URL (`http://host:port`).
    pub base: Url,
    /// The share of requests that are writes, 0 to 1.
    pub write_ratio: f64,
    /// Reads go to the run's first `keys` ids.
    pub keys: u64,
    /// Where acknowledged writes are recorded (JSON lines `{"id":..,"val":..}`).
    pub acked: Option<std::path::PathBuf>,
}

/// One acknowledged write, as recorded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Acked {
    pub id: String,
    pub val: String,
}

/// The `kv` profile's own counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KvCounts {
    pub writes_acknowledged: u64,
    pub reads_hit: u64,
    /// Reads answered 404 (the key not written yet, or not replicated yet).
    pub reads_missed: u64,
}

/// The state the workers share.
pub struct KvWorkload {
    cfg: KvLoad,
    item: Url,
    run: String,
    seq: AtomicU64,
    file: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    acked: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl KvWorkload {
    /// Creates (truncates) the record file.
    pub fn new(cfg: KvLoad) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let item = cfg.base.join("item").context("the item URL")?;
        let file = match &cfg.acked {
            Some(p) => Some(Mutex::new(std::io::BufWriter::new(
                std::fs::File::create(p)
                    .with_context(|| format!("cannot create {}", p.display()))?,
            ))),
            None => None,
        };
        Ok(Self {
            run: format!("load-{}", crate::config::unix_now().as_millis()),
            cfg,
            item,
            seq: AtomicU64::new(0),
            file,
            acked: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn id(&self, n: u64) -> String {
        format!("{}:{n}", self.run)
    }

    /// Sends one request: a write with probability `write_ratio` (always until a first write
    /// was sent), else a read.
    pub async fn request(&self, client: &reqwest::Client) -> Outcome {
        let (write, token, pick) = {
            let mut rng = rand::rng();
            (
                rng.random_bool(self.cfg.write_ratio),
                rng.random::<u64>(),
                rng.random::<u64>(),
            )
        };
        let sent = self.seq.load(Ordering::Relaxed);
        if write || sent == 0 {
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let rec = Acked {
                id: self.id(n),
                val: format!("{token:016x}"),
            };
            let resp = client.post(self.item.clone()).json(&rec).send().await;
            let outcome = finish(resp, false).await.map(|_| ());
            if outcome.is_ok() {
                self.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(f) = &self.file {
                    let line = serde_json::to_string(&rec).expect("serializable");
                    let mut f = f.lock().expect("acked file lock");
                    if writeln!(f, "{line}").is_err() {
                        return Err("record".into());
                    }
                }
            }
            outcome
        } else {
            let n = pick % sent.min(self.cfg.keys).max(1);
            let mut url = self.item.clone();
            url.query_pairs_mut().append_pair("id", &self.id(n));
            match finish(client.get(url).send().await, true).await {
                Ok(true) => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(false) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    }

    /// Flushes the record file and returns the counts.
    pub fn finish(&self) -> anyhow::Result<KvCounts> {
        if let Some(f) = &self.file {
            f.lock().expect("acked file lock").flush()?;
        }
        Ok(KvCounts {
            writes_acknowledged: self.acked.load(Ordering::Relaxed),
            reads_hit: self.hits.load(Ordering::Relaxed),
            reads_missed: self.misses.load(Ordering::Relaxed),
        })
    }
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "other".into()
    }
}

/// Reads the answer: `Ok(missed)`, where a 404 counts as a miss when `miss_ok`.
async fn finish(resp: reqwest::Result<reqwest::Response>, miss_ok: bool) -> Result<bool, String> {
    let resp = resp.map_err(|e| classify(&e))?;
    let status = resp.status();
    resp.bytes().await.map_err(|e| classify(&e))?;
    if status.is_success() {
        Ok(false)
    } else if miss_ok && status == reqwest::StatusCode::NOT_FOUND {
        Ok(true)
    } else {
        Err(format!("http_{}", status.as_u16()))
    }
}

/// What reading every acknowledged write back found.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Verified {
    /// Lines in the record.
    pub acknowledged: u64,
    /// Read back with the acknowledged value.
    pub ok: u64,
    /// Still 404 when the wait ran out: an acknowledged write lost.
    pub lost: u64,
    /// Another value than the acknowledged one.
    pub wrong: u64,
    /// Still failing (5xx, timeouts) when the wait ran out: unknown.
    pub errors: u64,
    pub seconds: f64,
}

impl Verified {
    pub fn render(&self) -> String {
        format!(
            "verified {} acknowledged writes in {:.1}s: ok {}  lost {}  wrong {}  errors {}\n",
            self.acknowledged, self.seconds, self.ok, self.lost, self.wrong, self.errors
        )
    }

    pub fn all_ok(&self) -> bool {
        self.ok == self.acknowledged
    }
}

/// Reads the record file.
pub fn read_record(path: &Path) -> anyhow::Result<Vec<Acked>> {
    use anyhow::Context as _;
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a record", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

#[derive(Debug, PartialEq)]
enum Check {
    Ok,
    Missing,
    Wrong,
    Error,
}

async fn check_one(client: &reqwest::Client, item: &Url, rec: &Acked) -> Check {
    let mut url = item.clone();
    url.query_pairs_mut().append_pair("id", &rec.id);
    let Ok(resp) = client.get(url).send().await else {
        return Check::Error;
    };
    match resp.status().as_u16() {
        200 => match resp.json::<Acked>().await {
            Ok(got) if got.val == rec.val => Check::Ok,
            Ok(_) => Check::Wrong,
            Err(_) => Check::Error,
        },
        404 => Check::Missing,
        _ => Check::Error,
    }
}

/// Reads every record back through the API (so from the replicas), `parallel` at a time; what
/// is missing or failing is tried again until `wait` has passed (replication is asynchronous).
pub async fn verify(
    base: &Url,
    records: Vec<Acked>,
    timeout: Duration,
    wait: Duration,
    parallel: usize,
) -> anyhow::Result<Verified> {
    use futures_util::StreamExt as _;
    let started = Instant::now();
    let client = super::conn::pooled_client(timeout, parallel)?;
    let item = base.join("item")?;
    let mut result = Verified {
        acknowledged: records.len() as u64,
        ..Verified::default()
    };
    let mut pending = records;
    loop {
        let checked: Vec<(Acked, Check)> = futures_util::stream::iter(pending)
            .map(|rec| {
                let (client, item) = (&client, &item);
                async move {
                    let c = check_one(client, item, &rec).await;
                    (rec, c)
                }
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
        let (mut missing, mut wrong, mut errors) = (0, 0, 0);
        pending = Vec::new();
        for (rec, c) in checked {
            match c {
                Check::Ok => result.ok += 1,
                Check::Wrong => {
                    wrong += 1;
                    pending.push(rec);
                }
                Check::Missing => {
                    missing += 1;
                    pending.push(rec);
                }
                Check::Error => {
                    errors += 1;
                    pending.push(rec);
                }
            }
        }
        if pending.is_empty() || started.elapsed() >= wait {
            (result.lost, result.wrong, result.errors) = (missing, wrong, errors);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}
