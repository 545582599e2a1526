//! CPU burners for `/load`: dedicated OS threads at the lowest priority (nice 19), so the async
//! runtime that serves `/health` keeps its share of the CPU however many `/load` requests run.
//! Nice time still counts as busy in `node_cpu_seconds_total{mode="nice"}`, so the course's
//! `mode!="idle"` CPU expression sees it.

use std::time::{Duration, Instant};

/// Keeps `threads` threads busy for `duration`, then resolves.
pub async fn burn(threads: usize, duration: Duration) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let deadline = Instant::now() + duration;
    std::thread::Builder::new()
        .name("load-burn".into())
        .spawn(move || {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| std::thread::spawn(move || spin_until(deadline)))
                .collect();
            for w in workers {
                let _ = w.join();
            }
            let _ = tx.send(());
        })
        .expect("spawn a burner thread");
    let _ = rx.await;
}

fn spin_until(deadline: Instant) {
    lower_priority();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while Instant::now() < deadline {
        for _ in 0..20_000 {
            // xorshift: cheap work the optimiser cannot remove.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
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
    async fn a_burn_lasts_its_duration() {
        let started = Instant::now();
        burn(1, Duration::from_millis(150)).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}
