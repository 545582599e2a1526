//! The control loop in virtual time (tokio's paused clock) against an in-memory pool: one step
//! per tick at most, bounds, the busy gate, dry run, and a property test over random sequences
//! of webhooks and out-of-band changes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolpilot::autoscaler::source::webhook::{Direction, Firing, Format};
use poolpilot::autoscaler::{
    Actuation, Bounds, Controller, ControllerConfig, Inbox, Metrics, Observation, Outcome, Shared,
    Target, TargetError, WebhookSource, WebhookStep,
};
use proptest::prelude::*;

/// An in-memory pool: the size, whether it is busy, whether reads fail, and every change asked.
#[derive(Clone, Default)]
struct MemoryPool {
    inner: Arc<Mutex<PoolState>>,
}

#[derive(Default)]
struct PoolState {
    size: u64,
    busy: bool,
    fail_reads: bool,
    set_calls: Vec<u64>,
}

impl MemoryPool {
    fn new(size: u64) -> Self {
        let p = Self::default();
        p.inner.lock().unwrap().size = size;
        p
    }
    fn size(&self) -> u64 {
        self.inner.lock().unwrap().size
    }
    fn set_out_of_band(&self, size: u64) {
        self.inner.lock().unwrap().size = size;
    }
    fn calls(&self) -> Vec<u64> {
        self.inner.lock().unwrap().set_calls.clone()
    }
}

impl Target for MemoryPool {
    fn describe(&self) -> String {
        "memory pool".into()
    }
    async fn observe(&self) -> Result<Observation, TargetError> {
        let s = self.inner.lock().unwrap();
        if s.fail_reads {
            return Err(TargetError {
                kind: "server",
                message: "503 from the API".into(),
            });
        }
        Ok(Observation {
            size: s.size,
            state: "running".into(),
            members: s.size,
            running: if s.busy { 0 } else { s.size },
            busy: s.busy.then(|| "members starting".to_owned()),
            member_list: vec![],
        })
    }
    async fn set_size(&self, size: u64) -> Result<Actuation, TargetError> {
        let mut s = self.inner.lock().unwrap();
        s.set_calls.push(size);
        s.size = size;
        Ok(Actuation {
            operation: None,
            pending: None,
        })
    }
    async fn wait(&self, _: &Actuation) -> Result<(), TargetError> {
        Ok(())
    }
}

struct Rig {
    pool: MemoryPool,
    inbox: Arc<Inbox>,
    shared: Arc<Shared>,
    controller: Controller<WebhookSource, WebhookStep, MemoryPool>,
}

fn rig(size: u64, min: u64, max: u64, dry_run: bool) -> Rig {
    let pool = MemoryPool::new(size);
    let inbox = Arc::new(Inbox::default());
    let bounds = Bounds { min, max };
    let shared = Arc::new(Shared::new(bounds, dry_run));
    let controller = Controller::new(
        ControllerConfig {
            bounds,
            interval: Duration::from_secs(60),
            dry_run,
            settle_timeout: Duration::from_secs(300),
        },
        WebhookSource::new(inbox.clone()),
        WebhookStep,
        pool.clone(),
        shared.clone(),
        Metrics::default(),
    );
    Rig {
        pool,
        inbox,
        shared,
        controller,
    }
}

fn send(inbox: &Inbox, direction: Direction, n: usize) {
    let f = Firing {
        direction,
        name: "test".into(),
        pool: None,
    };
    for _ in 0..n {
        inbox.record(Format::Plain, std::slice::from_ref(&f));
    }
}

#[tokio::test(start_paused = true)]
async fn at_most_one_step_per_interval_and_only_at_the_tick() {
    let r = rig(1, 1, 10, false);
    let (pool, inbox, shared) = (r.pool.clone(), r.inbox.clone(), r.shared.clone());
    let loop_task = tokio::spawn(r.controller.run(poolpilot::shutdown::Stopping::never()));
    // The first tick runs at once and finds nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pool.size(), 1);
    // A flood of up-intents between two ticks is one step.
    send(&inbox, Direction::Up, 500);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(pool.size(), 1, "nothing happens before the tick");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(pool.size(), 2);
    // Intents live one tick: nothing new arrived, nothing changes.
    tokio::time::sleep(Duration::from_secs(180)).await;
    assert_eq!(pool.size(), 2);
    // Up and down in the same interval: up.
    send(&inbox, Direction::Down, 3);
    send(&inbox, Direction::Up, 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(pool.size(), 3);
    assert_eq!(pool.calls(), vec![2, 3]);
    let d = shared.decisions();
    assert_eq!(d.len(), 2, "quiet ticks leave no record: {d:#?}");
    assert_eq!(d[1].reason, "1 up and 3 down intent(s): up wins");
    loop_task.abort();
}

#[tokio::test]
async fn bounds_hold_and_answer_at_bound() {
    let mut r = rig(3, 1, 3, false);
    send(&r.inbox, Direction::Up, 1);
    let d = r.controller.tick().await.unwrap();
    assert_eq!(
        (d.outcome, d.desired, d.clipped_by.as_deref()),
        (Outcome::AtBound, Some(3), Some("max 3"))
    );
    let mut r = rig(1, 1, 3, false);
    send(&r.inbox, Direction::Down, 1);
    let d = r.controller.tick().await.unwrap();
    assert_eq!((d.outcome, d.desired), (Outcome::AtBound, Some(1)));
    assert!(r.pool.calls().is_empty());
}

#[tokio::test]
async fn a_size_outside_the_bounds_is_walked_back_one_step_per_tick() {
    let mut r = rig(2, 1, 4, false);
    r.controller.tick().await;
    r.pool.set_out_of_band(7);
    send(&r.inbox, Direction::Up, 1);
    let d = r.controller.tick().await.unwrap();
    assert_eq!(
        d.note.as_deref(),
        Some("size changed out of band from 2 to 7")
    );
    assert_eq!((d.action, d.desired), ("down", Some(6)));
    for _ in 0..5 {
        r.controller.tick().await;
    }
    assert_eq!(r.pool.size(), 4);
    assert_eq!(r.pool.calls(), vec![6, 5, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_busy_pool_holds_changes_back_until_the_settle_timeout() {
    let mut r = rig(2, 1, 5, false);
    r.pool.inner.lock().unwrap().busy = true;
    send(&r.inbox, Direction::Up, 1);
    let d = r.controller.tick().await.unwrap();
    assert_eq!(d.outcome, Outcome::Busy);
    assert_eq!(d.gate.as_deref(), Some("target busy: members starting"));
    tokio::time::advance(Duration::from_secs(299)).await;
    send(&r.inbox, Direction::Up, 1);
    assert_eq!(r.controller.tick().await.unwrap().outcome, Outcome::Busy);
    tokio::time::advance(Duration::from_secs(2)).await;
    send(&r.inbox, Direction::Up, 1);
    assert_eq!(r.controller.tick().await.unwrap().outcome, Outcome::Scaled);
    assert_eq!(r.pool.size(), 3);
}

#[tokio::test]
async fn a_failed_read_changes_nothing_and_drops_the_intents() {
    let mut r = rig(2, 1, 5, false);
    r.pool.inner.lock().unwrap().fail_reads = true;
    send(&r.inbox, Direction::Up, 1);
    let d = r.controller.tick().await.unwrap();
    assert_eq!(d.outcome, Outcome::Error);
    assert_eq!(d.current, None);
    assert!(d.error.unwrap().contains("503"));
    r.pool.inner.lock().unwrap().fail_reads = false;
    assert!(
        r.controller.tick().await.is_none(),
        "the old intent is gone"
    );
    assert!(r.pool.calls().is_empty());
    assert!(r.shared.ready());
}

#[tokio::test]
async fn dry_run_decides_through_the_same_path_without_changing_anything() {
    let mut r = rig(2, 1, 5, true);
    send(&r.inbox, Direction::Up, 1);
    let d = r.controller.tick().await.unwrap();
    assert_eq!(
        (d.outcome, d.action, d.desired),
        (Outcome::DryRun, "up", Some(3))
    );
    assert!(r.pool.calls().is_empty());
    assert_eq!(r.pool.size(), 2);
}

/// What happens between two ticks.
#[derive(Clone, Debug)]
struct Between {
    ups: usize,
    downs: usize,
    /// A size set by someone else (within the bounds), before the tick.
    out_of_band: Option<u64>,
}

fn between(min: u64, max: u64) -> impl Strategy<Value = Between> {
    (
        prop_oneof![3 => Just(0usize), 1 => 1usize..4],
        prop_oneof![3 => Just(0usize), 1 => 1usize..4],
        prop_oneof![6 => Just(None), 1 => (min..=max).prop_map(Some)],
    )
        .prop_map(|(ups, downs, out_of_band)| Between {
            ups,
            downs,
            out_of_band,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn the_size_stays_in_bounds_moves_one_step_and_only_on_intent(
        (min, max, start, steps) in (0u64..4, 1u64..8)
            .prop_filter("min <= max", |(min, max)| min <= max)
            .prop_flat_map(|(min, max)| (
                Just(min),
                Just(max),
                min..=max,
                proptest::collection::vec(between(min, max), 1..40),
            ))
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let mut r = rig(start, min, max, false);
            for b in steps {
                if let Some(n) = b.out_of_band {
                    r.pool.set_out_of_band(n);
                }
                let before = r.pool.size();
                send(&r.inbox, Direction::Up, b.ups);
                send(&r.inbox, Direction::Down, b.downs);
                r.controller.tick().await;
                let after = r.pool.size();
                prop_assert!(min <= after && after <= max, "{after} outside [{min}, {max}]");
                prop_assert!(after.abs_diff(before) <= 1, "{before} -> {after}");
                if b.ups == 0 && b.downs == 0 {
                    prop_assert_eq!(after, before, "moved without an intent");
                }
                if b.ups > 0 {
                    prop_assert_eq!(after, (before + 1).min(max), "up wins");
                } else if b.downs > 0 {
                    prop_assert_eq!(after, before.saturating_sub(1).max(min));
                }
            }
            Ok(())
        })?;
    }
}

/// A source that reports every member of the memory pool at a fixed utilisation.
struct FixedSamples {
    inbox: Arc<Inbox>,
    value: f64,
    members: usize,
}

impl poolpilot::autoscaler::MetricSource for FixedSamples {
    fn name(&self) -> &'static str {
        "fixed"
    }
    async fn collect(
        &mut self,
    ) -> Result<poolpilot::autoscaler::Signals, poolpilot::autoscaler::source::SourceError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        Ok(poolpilot::autoscaler::Signals {
            intents: self.inbox.take(),
            samples: (0..self.members)
                .map(|i| poolpilot::autoscaler::source::Sample {
                    instance: format!("192.0.2.{}:9100", i + 1),
                    value: self.value,
                    at: now,
                })
                .collect(),
            in_flight: Vec::new(),
            sample_error: None,
        })
    }
}

/// A pool whose members have addresses 192.0.2.1.. and are old enough to count.
#[derive(Clone, Default)]
struct AddressedPool(MemoryPool);

impl Target for AddressedPool {
    fn describe(&self) -> String {
        "addressed memory pool".into()
    }
    async fn observe(&self) -> Result<Observation, TargetError> {
        let mut o = self.0.observe().await?;
        o.member_list = (0..o.size)
            .map(|i| poolpilot::autoscaler::target::MemberInfo {
                ip: Some(std::net::Ipv4Addr::new(192, 0, 2, i as u8 + 1)),
                age: Some(Duration::from_secs(600)),
                running: true,
            })
            .collect();
        Ok(o)
    }
    async fn set_size(&self, size: u64) -> Result<Actuation, TargetError> {
        self.0.set_size(size).await
    }
    async fn wait(&self, a: &Actuation) -> Result<(), TargetError> {
        self.0.wait(a).await
    }
}

/// A policy deciding for `pool` (bounds 1..=10), every member reading `value`.
fn policy_controller(
    policy: poolpilot::policy::file::PolicyFile,
    pool: &AddressedPool,
    value: f64,
    members: usize,
    interval: Duration,
) -> Controller<FixedSamples, poolpilot::policy::strategy::PolicyStrategy, AddressedPool> {
    let bounds = Bounds { min: 1, max: 10 };
    Controller::new(
        ControllerConfig {
            bounds,
            interval,
            dry_run: false,
            settle_timeout: Duration::from_secs(300),
        },
        FixedSamples {
            inbox: Arc::new(Inbox::default()),
            value,
            members,
        },
        poolpilot::policy::strategy::PolicyStrategy::new(policy),
        pool.clone(),
        Arc::new(Shared::new(bounds, false)),
        Metrics::default(),
    )
}

#[tokio::test]
async fn target_tracking_reaches_the_needed_size_in_one_decision_where_the_course_rule_needs_four()
{
    let policy = poolpilot::policy::file::PolicyFile::parse(
        r#"
        [policy]
        name = "tt"
        min = 1
        max = 10
        [[check]]
        strategy = "target-tracking"
        target = 0.5
        "#,
    )
    .unwrap();
    // One member at 250 % of its request (the HPA documentation's walkthrough): 5 are needed.
    let pool = AddressedPool(MemoryPool::new(1));
    let mut c = policy_controller(policy, &pool, 2.5, 1, Duration::from_secs(60));
    let d = c.tick().await.unwrap();
    assert_eq!(
        (d.current, d.desired, d.outcome),
        (Some(1), Some(5), Outcome::Scaled),
        "{}",
        d.reason
    );
    assert_eq!(pool.0.calls(), vec![5]);

    // The course's rule, alerted every tick while the load lasts: one step per tick.
    let mut r = rig(1, 1, 10, false);
    let mut ticks = 0;
    while r.pool.size() < 5 {
        send(&r.inbox, Direction::Up, 1);
        r.controller.tick().await;
        ticks += 1;
    }
    assert_eq!(ticks, 4);
}

#[tokio::test]
async fn a_policy_never_scales_in_on_stale_or_missing_metrics() {
    let policy = poolpilot::policy::file::PolicyFile::parse(
        r#"
        [policy]
        name = "tt"
        min = 1
        max = 10
        [[check]]
        strategy = "target-tracking"
        target = 0.5
        [behaviour]
        scale-down-window = "0s"
        "#,
    )
    .unwrap();
    let pool = AddressedPool(MemoryPool::new(4));
    // No member has a sample (as when Prometheus is down): hold.
    let mut c = policy_controller(policy, &pool, 0.0, 0, Duration::from_secs(60));
    assert!(c.tick().await.is_none(), "no change, nothing to record");
    assert!(pool.0.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_change_held_by_the_busy_gate_spends_no_rate_budget() {
    // At most 2 instances a minute. The pool is busy for two ticks while the policy wants
    // 2 -> 4: those wanted changes are held, not made, so when the pool is free the whole
    // budget is there and the change happens at once (the engine used to count them).
    let policy = poolpilot::policy::file::PolicyFile::parse(
        r#"
        [policy]
        name = "tt"
        min = 1
        max = 10
        [[check]]
        strategy = "target-tracking"
        target = 0.5
        tolerance = 0.0
        warm-up = "0s"
        [behaviour]
        scale-up-limits = [{ instances = 2, period = "60s" }]
        "#,
    )
    .unwrap();
    let pool = AddressedPool(MemoryPool::new(2));
    pool.0.inner.lock().unwrap().busy = true;
    let mut c = policy_controller(policy, &pool, 1.0, 2, Duration::from_secs(15));
    for _ in 0..2 {
        let d = c.tick().await.unwrap();
        assert_eq!((d.desired, d.outcome), (Some(4), Outcome::Busy), "{d:?}");
        tokio::time::advance(Duration::from_secs(15)).await;
    }
    pool.0.inner.lock().unwrap().busy = false;
    let d = c.tick().await.unwrap();
    assert_eq!(
        (d.current, d.desired, d.outcome),
        (Some(2), Some(4), Outcome::Scaled),
        "{d:?}"
    );
    assert_eq!(pool.0.calls(), vec![4]);
    // And the budget is spent now: a further want within the minute is clipped to nothing.
    tokio::time::advance(Duration::from_secs(15)).await;
    let more = c.tick().await;
    assert!(
        more.as_ref().is_none_or(|d| d.outcome != Outcome::Scaled),
        "{more:?}"
    );
}

/// A pool whose reads never return (a hung API call with no timeout).
#[derive(Clone)]
struct HangingPool;

impl Target for HangingPool {
    fn describe(&self) -> String {
        "hanging pool".into()
    }
    async fn observe(&self) -> Result<Observation, TargetError> {
        std::future::pending().await
    }
    async fn set_size(&self, _: u64) -> Result<Actuation, TargetError> {
        std::future::pending().await
    }
    async fn wait(&self, _: &Actuation) -> Result<(), TargetError> {
        Ok(())
    }
}

/// Runs a loop over `target` with a watchdog counting its pings; returns the counts at 25 s and
/// at 35 s, 120 s and 200 s of virtual time (stall limit 30 s, pings every 5 s, ticks every 10 s).
async fn pings_over_time<T: Target + 'static>(target: T) -> Vec<u64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let bounds = Bounds { min: 1, max: 5 };
    let heartbeat = poolpilot::telemetry::Heartbeat::default();
    let c = Controller::new(
        ControllerConfig {
            bounds,
            interval: Duration::from_secs(10),
            dry_run: false,
            settle_timeout: Duration::from_secs(300),
        },
        WebhookSource::new(Arc::new(Inbox::default())),
        WebhookStep,
        target,
        Arc::new(Shared::new(bounds, false)),
        Metrics::default(),
    )
    .with_heartbeat(heartbeat.clone());
    let run = tokio::spawn(c.run(poolpilot::shutdown::Stopping::never()));
    let pings = Arc::new(AtomicU64::new(0));
    let p = pings.clone();
    let dog = tokio::spawn(poolpilot::telemetry::watchdog_loop(
        Duration::from_secs(5),
        Some(poolpilot::telemetry::Liveness {
            heartbeat,
            stall: Duration::from_secs(30),
        }),
        move || {
            p.fetch_add(1, Ordering::Relaxed);
        },
    ));
    let mut out = Vec::new();
    let mut now = 0;
    for at in [25, 35, 120, 200] {
        tokio::time::sleep(Duration::from_secs(at - now)).await;
        now = at;
        out.push(pings.load(Ordering::Relaxed));
    }
    run.abort();
    dog.abort();
    out
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_stops_pinging_when_the_loop_stops_making_progress() {
    // A healthy loop: pings all along.
    let healthy = pings_over_time(MemoryPool::new(2)).await;
    assert!(
        healthy.windows(2).all(|w| w[1] > w[0]),
        "a healthy loop is pinged for: {healthy:?}"
    );
    // A loop stuck in its first read: pinged until the stall limit, then never again.
    let stuck = pings_over_time(HangingPool).await;
    assert!(
        stuck[0] >= 4,
        "pinged while within the stall limit: {stuck:?}"
    );
    assert_eq!(
        stuck[1], stuck[3],
        "pinged after the stall limit: {stuck:?}"
    );
}
