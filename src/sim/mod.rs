//! A local Exoscale API v2 simulator, held to the official OpenAPI spec by the contract tests.
//!
//! It serves the subset poolpilot uses under `/v2`, verifies EXO2-HMAC-SHA256 signatures as the
//! real API does (a bad signature, unknown key or expired request gets 403 and changes nothing),
//! and keeps a zone's state in [`state::State`]. Outside `/v2`, an unsigned `/admin` API makes
//! out-of-band changes and injects faults, and records every request so tests can assert the
//! calls they expect, in order.
//!
//! ```text
//! request ─> record ─> faults (latency, 429/5xx) ─> signature check ─> handler ─> State::advance + act
//! ```

pub mod backend;
pub mod catalog;
pub mod download;
pub mod seed;
pub mod state;

mod admin;
mod api;

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{OriginalUri, Request, State as Ax};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::exoscale::{Credentials, sign};
pub use backend::{AddressBackend, InstanceBackend, RecordBackend};
pub use state::{ApiError, State, Timing};

/// The largest request body the simulator reads.
const MAX_BODY: usize = 1024 * 1024;

/// One request as the simulator saw it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The answer's status; 0 while unanswered (or when the client gave up first).
    pub status: u16,
}

/// Faults queued by the admin API, consumed one request at a time.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub errors: VecDeque<ErrorFault>,
    pub latency: Option<(Duration, u32)>,
}

#[derive(Clone, Debug)]
pub(crate) struct ErrorFault {
    pub status: u16,
    pub retry_after: Option<u64>,
    /// Only requests to this path (`/v2/load-balancer`); any request when `None`.
    pub path: Option<String>,
}

/// The API requests seen, in order. Entries are numbered from the simulator's start, so a
/// request still in flight when the log is cleared (by the admin API or the size bound) cannot
/// write its status into a newer request's entry.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: Vec<RequestRecord>,
    /// The number of the first entry in `entries`.
    first: u64,
}

impl RequestLog {
    /// Logs a request; returns its number.
    fn push(&mut self, r: RequestRecord) -> u64 {
        self.entries.push(r);
        self.first + self.entries.len() as u64 - 1
    }

    /// The entry numbered `n`, unless it was cleared since.
    fn get_mut(&mut self, n: u64) -> Option<&mut RequestRecord> {
        let i = usize::try_from(n.checked_sub(self.first)?).ok()?;
        self.entries.get_mut(i)
    }

    pub(crate) fn clear(&mut self) {
        self.first += self.entries.len() as u64;
        self.entries.clear();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The simulator: its zone state, the credentials it accepts, faults and the request log.
pub struct Sim {
    /// The zone. Held only for bookkeeping: the backend's blocking calls (starting a machine,
    /// probing it) are made with it released.
    state: Mutex<State>,
    backend: Arc<dyn InstanceBackend>,
    /// Instances whose readiness a request is probing now (one probe each at a time).
    probing: Mutex<BTreeSet<uuid::Uuid>>,
    credentials: Vec<Credentials>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) requests: Mutex<RequestLog>,
    /// While true, template downloads wait before they start (the admin API's test hook, to
    /// change an image between its registration and its download).
    pub(crate) downloads_held: tokio::sync::watch::Sender<bool>,
    pub(crate) download_limits: download::Limits,
}

impl Sim {
    /// The simulator of `state`; machines allocated while seeding it are started here.
    pub fn new(mut state: State, credentials: Vec<Credentials>) -> Arc<Self> {
        let seeded = state.take_starts();
        let sim = Arc::new(Self {
            backend: state.backend(),
            state: Mutex::new(state),
            probing: Mutex::new(BTreeSet::new()),
            credentials,
            faults: Mutex::new(Faults::default()),
            requests: Mutex::new(RequestLog::default()),
            downloads_held: tokio::sync::watch::Sender::new(false),
            download_limits: download::Limits::default(),
        });
        sim.start_machines(seeded);
        sim
    }

    /// Runs `f` on the zone state after settling what has come due.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.at(tokio::time::Instant::now(), |s, _| f(s))
    }

    /// Runs `f` on the zone state at `now`: probes the booting instances that are due (zone
    /// unlocked), settles what has come due and runs `f` (zone locked), then starts the machines
    /// `f` allocated (zone unlocked). With a backend that neither probes nor starts anything,
    /// this is one locked `advance` + `f`, so paused-clock tests see exact transitions.
    pub(crate) fn at<R>(
        &self,
        now: tokio::time::Instant,
        f: impl FnOnce(&mut State, tokio::time::Instant) -> R,
    ) -> R {
        self.probe(now);
        let (r, starts) = {
            let mut s = self.state.lock().expect("simulator state lock");
            s.advance(now);
            let r = f(&mut s, now);
            (r, s.take_starts())
        };
        self.start_machines(starts);
        r
    }

    /// Asks the backend whether the due booting instances are ready, with the zone unlocked; an
    /// instance another request is already probing is left to it.
    fn probe(&self, now: tokio::time::Instant) {
        let due = self
            .state
            .lock()
            .expect("simulator state lock")
            .due_probes(now);
        if due.is_empty() {
            return;
        }
        let mine: Vec<uuid::Uuid> = {
            let mut probing = self.probing.lock().expect("probing lock");
            due.into_iter().filter(|id| probing.insert(*id)).collect()
        };
        let ready: Vec<uuid::Uuid> = mine
            .iter()
            .copied()
            .filter(|id| self.backend.is_ready(*id))
            .collect();
        {
            let mut probing = self.probing.lock().expect("probing lock");
            for id in &mine {
                probing.remove(id);
            }
        }
        if !ready.is_empty() {
            let mut s = self.state.lock().expect("simulator state lock");
            for id in ready {
                s.mark_ready(id);
            }
        }
    }

    /// Starts allocated machines with the zone unlocked; one that fails is removed.
    fn start_machines(&self, starts: Vec<(backend::LaunchSpec, std::net::Ipv4Addr)>) {
        for (spec, addr) in starts {
            if let Err(e) = self.backend.start(&spec, addr) {
                tracing::error!(instance = %spec.name, error = %e, "the machine did not start; the instance is removed");
                self.state
                    .lock()
                    .expect("simulator state lock")
                    .start_failed(spec.id);
            }
        }
    }

    /// The requests seen under `/v2` so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests
            .lock()
            .expect("request log lock")
            .entries
            .clone()
    }

    fn secret_for(&self, key: &str) -> Option<&str> {
        self.credentials
            .iter()
            .find(|c| c.key == key)
            .map(|c| c.secret.expose())
    }

    /// Binds `addr` and serves until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, router(self))
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Starts the simulator on `addr` (use port 0 in tests) in the background.
    pub async fn start(self: Arc<Self>, addr: SocketAddr) -> std::io::Result<RunningSim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let sim = self.clone();
        let task = tokio::spawn(async move {
            let _ = sim
                .serve(listener, async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(RunningSim {
            addr,
            sim: self,
            stop: Some(tx),
            task,
        })
    }
}

/// A simulator serving in the background; dropping it stops the server.
pub struct RunningSim {
    pub addr: SocketAddr,
    pub sim: Arc<Sim>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSim {
    /// The value for `EXOSCALE_API_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v2", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The simulator's whole HTTP surface.
pub fn router(sim: Arc<Sim>) -> Router {
    let v2 = api::routes()
        .layer(middleware::from_fn_with_state(sim.clone(), authenticate))
        .layer(middleware::from_fn_with_state(sim.clone(), inject_faults))
        .layer(middleware::from_fn_with_state(sim.clone(), record));
    Router::new()
        .nest("/v2", v2)
        .nest("/admin", admin::routes())
        .fallback(|| async { api_error(404, "no such route") })
        .with_state(sim)
}

/// An error answer in the API's `{"message": ...}` shape.
pub(crate) fn api_error(status: u16, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Body {
        message: String,
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        axum::Json(Body {
            message: message.into(),
        }),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        api_error(self.status, self.message)
    }
}

fn original_uri(req: &Request) -> axum::http::Uri {
    req.extensions()
        .get::<OriginalUri>()
        .map(|u| u.0.clone())
        .unwrap_or_else(|| req.uri().clone())
}

async fn record(Ax(sim): Ax<Arc<Sim>>, req: Request, next: Next) -> Response {
    let uri = original_uri(&req);
    let entry = RequestRecord {
        method: req.method().to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        status: 0,
    };
    // Logged on arrival, so a request whose client gave up (status 0) is still seen.
    let index = {
        let mut log = sim.requests.lock().expect("request log lock");
        // Bounded: a long-running simulator must not grow without limit.
        if log.len() >= 100_000 {
            log.clear();
        }
        log.push(entry)
    };
    let resp = next.run(req).await;
    if let Some(e) = sim
        .requests
        .lock()
        .expect("request log lock")
        .get_mut(index)
    {
        e.status = resp.status().as_u16();
    }
    resp
}

async fn inject_faults(Ax(sim): Ax<Arc<Sim>>, req: Request, next: Next) -> Response {
    let (latency, error) = {
        let mut f = sim.faults.lock().expect("faults lock");
        let latency = match &mut f.latency {
            Some((d, n)) if *n > 0 => {
                *n -= 1;
                Some(*d)
            }
            _ => None,
        };
        let uri = original_uri(&req);
        let path = uri.path();
        let error = f
            .errors
            .iter()
            .position(|e| e.path.as_deref().is_none_or(|p| p == path))
            .and_then(|i| f.errors.remove(i));
        (latency, error)
    };
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    if let Some(fault) = error {
        let mut resp = api_error(fault.status, "injected fault");
        if let Some(secs) = fault.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }
    next.run(req).await
}

/// Checks the EXO2-HMAC-SHA256 signature over method, path, body, signed query values and
/// expiry, as the real API does.
async fn authenticate(Ax(sim): Ax<Arc<Sim>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return api_error(413, "request body too large");
    };
    let Some(header) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        return api_error(403, "missing Authorization header");
    };
    let auth = match sign::parse_authorization(header) {
        Ok(a) => a,
        Err(e) => return api_error(403, format!("invalid Authorization header: {e}")),
    };
    let Some(secret) = sim.secret_for(&auth.credential) else {
        return api_error(403, "invalid API key");
    };
    let now = crate::config::unix_now().as_secs();
    if auth.expires < now {
        return api_error(403, "request expired");
    }
    let pairs: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let mut signed = Vec::with_capacity(auth.signed_query_args.len());
    for name in &auth.signed_query_args {
        let mut values = pairs.iter().filter(|(k, _)| k == name);
        match (values.next(), values.next()) {
            (Some((k, v)), None) => signed.push((k.clone(), v.clone())),
            _ => {
                return api_error(
                    403,
                    format!("signed query argument `{name}` is missing or repeated"),
                );
            }
        }
    }
    // Inside the /v2 nest the URI is relative; the client signed the full, escaped path.
    let full_path = parts
        .extensions
        .get::<OriginalUri>()
        .map(|u| u.0.path().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    let message = sign::string_to_sign(
        parts.method.as_str(),
        &full_path,
        &bytes,
        &signed,
        auth.expires,
    );
    if !sign::verify(secret.as_bytes(), &message, &auth.signature) {
        return api_error(403, "invalid request signature");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::mpsc;

    use super::backend::{BackendError, LaunchSpec};
    use super::*;
    use crate::config::Zone;

    /// A backend whose machine starts and probes block until the test lets them go, and say
    /// when they begin.
    struct Slow {
        begun: Mutex<mpsc::Sender<&'static str>>,
        release: Mutex<mpsc::Receiver<()>>,
        probed: std::sync::atomic::AtomicBool,
    }

    impl Slow {
        fn block(&self, what: &'static str) {
            let _ = self.begun.lock().unwrap().send(what);
            let _ = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }
    }

    impl InstanceBackend for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn allocate(&self, _spec: &LaunchSpec) -> Result<Ipv4Addr, BackendError> {
            Ok(Ipv4Addr::new(198, 51, 100, 1))
        }
        fn start(&self, spec: &LaunchSpec, _addr: Ipv4Addr) -> Result<(), BackendError> {
            if spec.name.ends_with("00002") {
                self.block("start");
            }
            Ok(())
        }
        fn probes_readiness(&self) -> bool {
            true
        }
        fn is_ready(&self, _id: uuid::Uuid) -> bool {
            if !self.probed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                self.block("probe");
            }
            true
        }
        fn terminate(&self, _id: uuid::Uuid, _addr: Ipv4Addr) {}
    }

    /// Runs `slow` on a thread of its own and, while the backend is blocked in it, checks that
    /// the zone lock is free (nothing else in this test takes it), then lets the backend go.
    fn another_request_while(
        sim: &Arc<Sim>,
        rx: &mpsc::Receiver<&'static str>,
        release: &mpsc::Sender<()>,
        slow: impl FnOnce(&Sim) + Send + 'static,
    ) {
        let s = sim.clone();
        let t = std::thread::spawn(move || slow(&s));
        let what = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let free = sim.state.try_lock().is_ok();
        release.send(()).unwrap();
        t.join().unwrap();
        assert!(
            free,
            "the zone lock was held while the backend's {what} blocked"
        );
    }

    #[test]
    fn the_backends_blocking_calls_do_not_hold_the_zone_lock() {
        let (tx, rx) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let timing = Timing {
            operation_delay: Duration::ZERO,
            boot_delay: Duration::ZERO,
        };
        let backend = Arc::new(Slow {
            begun: Mutex::new(tx),
            release: Mutex::new(released),
            probed: Default::default(),
        });
        let mut state = State::new(Zone::DEFAULT, timing, backend);
        let pool = state
            .create_pool(
                tokio::time::Instant::now(),
                None,
                "web",
                1,
                "standard.micro",
                false,
            )
            .unwrap();
        let sim = Sim::new(state, Vec::new());
        // The first member is due: the next request probes it.
        another_request_while(&sim, &rx, &release, |s| {
            s.with_state(|_| ());
        });
        // A scale starts a second member.
        another_request_while(&sim, &rx, &release, move |s| {
            s.with_state(|st| st.scale(tokio::time::Instant::now(), pool, 2).unwrap());
        });
    }
}
