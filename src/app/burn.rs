//! CPU burners for `/load`, shaped like a machine of a given capacity.
//!
//! One [`Burner`] per app: `ceil(capacity)` OS threads at the lowest priority (nice 19), parked
//! until some `/load` is in flight, then spinning. A fractional capacity (the local mode gives
//! each simulated instance e.g. 0.5 of a core) is kept by a duty cycle: in every 10 ms slice each
//! thread spins for `capacity / threads` of it and sleeps the rest. However many `/load` requests
//! overlap, the app burns its capacity and no more, as a VM with that many cores would: busy is
//! busy. The async runtime that serves `/health` keeps its share of the CPU. Nice time still
//! counts as busy in `node_cpu_seconds_total{mode="nice"}`, so the course's `mode!="idle"` CPU
//! expression sees it.
//!
//! On a busy machine nice-19 threads get little CPU. The burner counts what it wanted (its
//! capacity over the wall time some `/load` was in flight) beside what its threads got; the
//! difference is what a VM on a busy host reports as `steal`, and the local mode's node_exporter
//! stand-in reports it so: an instance under `/load` is busy whatever else the machine runs.
#![allow(
    unsafe_code,
    reason = "libc: the thread CPU clock and nice 19 for the burner threads"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const SLICE: Duration = Duration::from_millis(10);

/// Cheap to clone: clones share the threads and the counters.
#[derive(Clone, Debug)]
pub struct Burner {
    shared: Arc<Shared>,
    capacity: f64,
    threads: usize,
}

#[derive(Debug, Default)]
struct Shared {
    active: Mutex<Active>,
    wake: Condvar,
    /// CPU time the burner threads have used, in nanoseconds.
    used_ns: AtomicU64,
    /// The highest `wanted - used` seen, in nanoseconds: a counter never goes down.
    stolen_ns: AtomicU64,
}

#[derive(Debug, Default)]
struct Active {
    /// `/load` requests holding the burners now.
    holds: u64,
    /// Since when some request holds them (while `holds > 0`).
    since: Option<Instant>,
    /// CPU time wanted in the finished busy periods: capacity x their wall time, nanoseconds.
    wanted_ns: f64,
}

impl Burner {
    /// `capacity` in cores (more than 0).
    pub fn new(capacity: f64) -> Self {
        let capacity = capacity.max(0.01);
        let threads = capacity.ceil() as usize;
        let duty = capacity / threads as f64;
        let shared = Arc::new(Shared::default());
        for i in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("load-burn-{i}"))
                .spawn(move || run(&shared, duty))
                .expect("spawn a burner thread");
        }
        Self {
            shared,
            capacity,
            threads,
        }
    }

    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// CPU seconds the burner threads have used so far (their own clocks, whatever else the
    /// process does).
    pub fn cpu_seconds(&self) -> f64 {
        self.shared.used_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// CPU seconds the burners wanted (their capacity while some `/load` was in flight) and the
    /// machine did not give them: a VM's `steal`. Never goes down.
    pub fn stolen_seconds(&self) -> f64 {
        let wanted = {
            let a = self.shared.active.lock().expect("burner lock");
            let current = a
                .since
                .map_or(0.0, |t| t.elapsed().as_nanos() as f64 * self.capacity);
            a.wanted_ns + current
        };
        let used = self.shared.used_ns.load(Ordering::Relaxed) as f64;
        let gap = (wanted - used).max(0.0) as u64;
        let stolen = self
            .shared
            .stolen_ns
            .fetch_max(gap, Ordering::Relaxed)
            .max(gap);
        stolen as f64 / 1e9
    }

    /// Keeps the burners busy for `duration` (at least), then resolves. Dropping the future
    /// early (the client went away) releases its hold too.
    pub async fn hold(&self, duration: Duration) {
        struct Hold<'a>(&'a Shared, f64);
        impl Drop for Hold<'_> {
            fn drop(&mut self) {
                let mut a = self.0.active.lock().expect("burner lock");
                a.holds -= 1;
                if a.holds == 0
                    && let Some(t) = a.since.take()
                {
                    a.wanted_ns += t.elapsed().as_nanos() as f64 * self.1;
                }
            }
        }
        {
            let mut a = self.shared.active.lock().expect("burner lock");
            if a.holds == 0 {
                a.since = Some(Instant::now());
            }
            a.holds += 1;
            self.shared.wake.notify_all();
        }
        let _hold = Hold(&self.shared, self.capacity);
        tokio::time::sleep(duration).await;
    }
}

/// This thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn run(shared: &Shared, duty: f64) {
    lower_priority();
    let mut last = thread_cpu_ns();
    let busy = SLICE.mul_f64(duty.clamp(0.0, 1.0));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    loop {
        {
            let mut active = shared.active.lock().expect("burner lock");
            while active.holds == 0 {
                active = shared.wake.wait(active).expect("burner lock");
            }
        }
        let slice_start = Instant::now();
        while slice_start.elapsed() < busy {
            for _ in 0..2_000 {
                // xorshift: cheap work the optimiser cannot remove.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            std::hint::black_box(x);
        }
        let now = thread_cpu_ns();
        shared
            .used_ns
            .fetch_add(now.saturating_sub(last), Ordering::Relaxed);
        last = now;
        let rest = SLICE.saturating_sub(slice_start.elapsed());
        if !rest.is_zero() && duty < 1.0 {
            std::thread::sleep(rest);
        }
    }
}

/// Nice 19 for the calling thread only (Linux applies nice per thread).
fn lower_priority() {
    // SAFETY: gettid and setpriority have no memory-safety preconditions.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hold_lasts_its_duration() {
        let b = Burner::new(1.0);
        let started = Instant::now();
        b.hold(Duration::from_millis(150)).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_holds_burn_the_capacity_and_no_more() {
        // Half a core, held by three overlapping requests for 1 s: about 0.5 s of CPU.
        let b = Arc::new(Burner::new(0.5));
        let started = Instant::now();
        let holds: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.hold(Duration::from_secs(1)).await })
            })
            .collect();
        for h in holds {
            h.await.unwrap();
        }
        let wall = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (used, stolen) = (b.cpu_seconds(), b.stolen_seconds());
        // Never more than the capacity over the time it was held (one slice of slack)...
        let most = 0.5 * wall + 0.02;
        assert!(used <= most, "used {used} s in {wall} s");
        // ... and, with what a busy machine took from it (a starved nice-19 thread gets little,
        // and that is steal), exactly the capacity over the hold, however busy the machine.
        let busy = used + stolen;
        assert!(
            (0.5 - 1e-3..=most).contains(&busy),
            "used {used} s, stolen {stolen} s in {wall} s"
        );
    }

    #[test]
    fn a_parked_burner_wants_nothing() {
        let b = Burner::new(1.0);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!((b.cpu_seconds(), b.stolen_seconds()), (0.0, 0.0));
    }
}
