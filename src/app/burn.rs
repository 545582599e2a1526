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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const SLICE: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub struct Burner {
    shared: Arc<(Mutex<u64>, Condvar)>,
    capacity: f64,
    threads: usize,
    /// CPU time the burner threads have used, in nanoseconds.
    used_ns: Arc<AtomicU64>,
}

impl Burner {
    /// `capacity` in cores (more than 0).
    pub fn new(capacity: f64) -> Self {
        let capacity = capacity.max(0.01);
        let threads = capacity.ceil() as usize;
        let duty = capacity / threads as f64;
        let shared = Arc::new((Mutex::new(0u64), Condvar::new()));
        let used_ns = Arc::new(AtomicU64::new(0));
        for i in 0..threads {
            let (shared, used_ns) = (shared.clone(), used_ns.clone());
            std::thread::Builder::new()
                .name(format!("load-burn-{i}"))
                .spawn(move || run(&shared, duty, &used_ns))
                .expect("spawn a burner thread");
        }
        Self {
            shared,
            capacity,
            threads,
            used_ns,
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
        self.used_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Keeps the burners busy for `duration` (at least), then resolves. Dropping the future
    /// early (the client went away) releases its hold too.
    pub async fn hold(&self, duration: Duration) {
        struct Hold<'a>(&'a (Mutex<u64>, Condvar));
        impl Drop for Hold<'_> {
            fn drop(&mut self) {
                *self.0.0.lock().expect("burner lock") -= 1;
            }
        }
        {
            let (lock, cv) = &*self.shared;
            *lock.lock().expect("burner lock") += 1;
            cv.notify_all();
        }
        let _hold = Hold(&self.shared);
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

fn run(shared: &(Mutex<u64>, Condvar), duty: f64, used_ns: &AtomicU64) {
    lower_priority();
    let mut last = thread_cpu_ns();
    let (lock, cv) = shared;
    let busy = SLICE.mul_f64(duty.clamp(0.0, 1.0));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    loop {
        {
            let mut active = lock.lock().expect("burner lock");
            while *active == 0 {
                active = cv.wait(active).expect("burner lock");
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
        used_ns.fetch_add(now.saturating_sub(last), Ordering::Relaxed);
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
        let before = b.cpu_seconds();
        let holds: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.hold(Duration::from_secs(1)).await })
            })
            .collect();
        for h in holds {
            h.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let used = b.cpu_seconds() - before;
        assert!(used > 0.05 && used < 0.8, "used {used} s of CPU");
    }
}
