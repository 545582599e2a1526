//! The retry budget, Envoy's `retry_budget`: retries under way may be at most `ratio` of the
//! requests under way, and never fewer than `min_concurrent`. A lone client's request may
//! always try the next backend; under load, when every attempt fails, retries add at most
//! `ratio` to the load instead of multiplying it by the attempt count. (Ejection does the rest:
//! a backend out of rotation gets no attempts at all.)

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_concurrent: u64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Counts one request (or retry) as under way until dropped.
#[derive(Debug)]
pub struct UnderWay<'a>(&'a AtomicU64);

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RetryBudget {
    pub fn new(ratio: f64, min_concurrent: u64) -> Self {
        Self {
            ratio,
            min_concurrent,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// A client request arrived; it is under way until the guard is dropped.
    pub fn request(&self) -> UnderWay<'_> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        UnderWay(&self.requests)
    }

    /// A retry, if one more fits; it is under way until the guard is dropped.
    pub fn try_retry(&self) -> Option<UnderWay<'_>> {
        let requests = self.requests.load(Ordering::SeqCst);
        let allowed = self
            .min_concurrent
            .max((self.ratio * requests as f64).floor() as u64);
        let mut current = self.retries.load(Ordering::SeqCst);
        loop {
            if current >= allowed {
                return None;
            }
            match self.retries.compare_exchange(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(UnderWay(&self.retries)),
                Err(now) => current = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_request_may_always_retry() {
        let b = RetryBudget::new(0.2, 3);
        for _ in 0..100 {
            let _r = b.request();
            let first = b.try_retry().expect("a retry");
            let second = b.try_retry().expect("another");
            drop((first, second));
        }
    }

    #[test]
    fn under_load_retries_are_a_fraction_of_the_requests_under_way() {
        let b = RetryBudget::new(0.2, 3);
        let held: Vec<_> = (0..100).map(|_| b.request()).collect();
        let granted: Vec<_> = (0..1000).filter_map(|_| b.try_retry()).collect();
        assert_eq!(granted.len(), 20);
        drop(granted);
        assert!(b.try_retry().is_some(), "a finished retry frees its place");
        drop(held);
        let few: Vec<_> = (0..10).filter_map(|_| b.try_retry()).collect();
        assert_eq!(few.len(), 3, "the floor, with nothing under way");
    }
}
