//! Series of entries stamped with the time they were seen, oldest first, in a `VecDeque`: the
//! engine's recommendation and change histories and the forecast's readings and residuals each
//! keep one, forget what is older than their longest window, and read one window of it.

use std::collections::VecDeque;
use std::time::Duration;

/// Drops the entries older than `keep` at `now` (`at` reads an entry's time).
pub fn forget_older<T>(
    series: &mut VecDeque<T>,
    now: Duration,
    keep: Duration,
    at: impl Fn(&T) -> Duration,
) {
    while series
        .front()
        .is_some_and(|e| now.saturating_sub(at(e)) > keep)
    {
        series.pop_front();
    }
}

/// The entries at most `window` old at `now`.
pub fn within<T>(
    series: &VecDeque<(Duration, T)>,
    now: Duration,
    window: Duration,
) -> impl Iterator<Item = &(Duration, T)> {
    series
        .iter()
        .filter(move |(t, _)| now.saturating_sub(*t) <= window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_entries_go_and_windows_count_back_from_now() {
        let s = Duration::from_secs;
        let mut q: VecDeque<(Duration, u32)> = (0..=10).map(|t| (s(t), t as u32)).collect();
        forget_older(&mut q, s(10), s(4), |e| e.0);
        // Ages 0..=4 stay (an entry exactly `keep` old stays).
        assert_eq!(q.iter().map(|e| e.1).collect::<Vec<_>>(), [6, 7, 8, 9, 10]);
        let w: Vec<u32> = within(&q, s(10), s(2)).map(|e| e.1).collect();
        assert_eq!(w, [8, 9, 10]);
        assert_eq!(within(&q, s(10), Duration::ZERO).count(), 1);
    }
}
