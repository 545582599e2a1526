//! Which members a scale-in removes. Orders are applied in sequence as a sort key, the first
//! order deciding first (`["unhealthy-first", "least-busy", "oldest"]`: failing members, then
//! among the rest the least busy, ties broken by age); the member id breaks the last ties so that
//! the choice is deterministic. A fact a member lacks (no health status, no load reading) sorts
//! it after the members that have it: unknown is never taken as "unhealthy" or "idle".

use std::cmp::Ordering;
use std::net::Ipv4Addr;

use time::OffsetDateTime;
use uuid::Uuid;

/// One order of the scale-in victims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VictimOrder {
    /// The longest-running first (the default: it spreads wear and picks up new images).
    Oldest,
    /// The most recent first (it has the least warm state).
    Newest,
    /// The fewest requests in flight first (the app's `poolpilot_app_load_in_flight`).
    LeastBusy,
    /// Members the NLB reports failing its health check first.
    UnhealthyFirst,
}

impl VictimOrder {
    pub const NAMES: [&'static str; 4] = ["oldest", "newest", "least-busy", "unhealthy-first"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "oldest" => Some(Self::Oldest),
            "newest" => Some(Self::Newest),
            "least-busy" => Some(Self::LeastBusy),
            "unhealthy-first" => Some(Self::UnhealthyFirst),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oldest => "oldest",
            Self::Newest => "newest",
            Self::LeastBusy => "least-busy",
            Self::UnhealthyFirst => "unhealthy-first",
        }
    }
}

/// The default order: failing members first, then the oldest.
pub fn default_orders() -> Vec<VictimOrder> {
    vec![VictimOrder::UnhealthyFirst, VictimOrder::Oldest]
}

/// A running member that may be removed, with what is known of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub id: Uuid,
    pub ip: Ipv4Addr,
    pub created_at: Option<OffsetDateTime>,
    /// The NLB's health check: `Some(false)` failing, `None` not known.
    pub healthy: Option<bool>,
    /// Requests in flight, `None` when it could not be read.
    pub busy: Option<f64>,
}

fn known_first<T>(a: Option<T>, b: Option<T>, cmp: impl Fn(T, T) -> Ordering) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => cmp(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn compare(orders: &[VictimOrder], a: &Candidate, b: &Candidate) -> Ordering {
    for o in orders {
        let c = match o {
            VictimOrder::Oldest => known_first(a.created_at, b.created_at, |x, y| x.cmp(&y)),
            VictimOrder::Newest => known_first(a.created_at, b.created_at, |x, y| y.cmp(&x)),
            VictimOrder::LeastBusy => known_first(a.busy, b.busy, |x, y| x.total_cmp(&y)),
            // Failing (false) before passing (true); unknown last.
            VictimOrder::UnhealthyFirst => known_first(a.healthy, b.healthy, |x, y| x.cmp(&y)),
        };
        if c != Ordering::Equal {
            return c;
        }
    }
    a.id.cmp(&b.id)
}

/// The `count` members to remove, in order; fewer when there are not enough candidates.
pub fn choose(
    mut candidates: Vec<Candidate>,
    orders: &[VictimOrder],
    count: usize,
) -> Vec<Candidate> {
    candidates.sort_by(|a, b| compare(orders, a, b));
    candidates.truncate(count);
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(n: u8, age_s: i64, healthy: Option<bool>, busy: Option<f64>) -> Candidate {
        Candidate {
            id: Uuid::from_u128(n as u128),
            ip: Ipv4Addr::new(198, 51, 100, n),
            created_at: Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(10_000 - age_s)),
            healthy,
            busy,
        }
    }

    fn ids(v: &[Candidate]) -> Vec<u8> {
        v.iter().map(|c| c.ip.octets()[3]).collect()
    }

    #[test]
    fn orders_apply_in_sequence() {
        let pool = vec![
            cand(1, 900, Some(true), Some(3.0)),
            cand(2, 600, Some(false), Some(5.0)),
            cand(3, 300, Some(true), Some(0.0)),
            cand(4, 100, None, Some(0.0)),
        ];
        use VictimOrder::*;
        assert_eq!(ids(&choose(pool.clone(), &[Oldest], 2)), [1, 2]);
        assert_eq!(ids(&choose(pool.clone(), &[Newest], 2)), [4, 3]);
        // The failing member first, then the least busy of the rest, ties by age.
        assert_eq!(
            ids(&choose(
                pool.clone(),
                &[UnhealthyFirst, LeastBusy, Oldest],
                3
            )),
            [2, 3, 1],
            "unknown health sorts after known"
        );
        assert_eq!(
            ids(&choose(pool.clone(), &[LeastBusy, Oldest], 4)),
            [3, 4, 1, 2]
        );
        assert_eq!(choose(pool, &[Oldest], 9).len(), 4);
    }

    #[test]
    fn unknown_load_is_not_idle() {
        use VictimOrder::*;
        let pool = vec![cand(1, 900, None, None), cand(2, 100, None, Some(7.0))];
        assert_eq!(ids(&choose(pool, &[LeastBusy], 1)), [2]);
    }

    proptest! {
        #[test]
        fn victims_are_distinct_members_and_failing_ones_go_first(
            members in proptest::collection::vec((0i64..5000, proptest::option::of(any::<bool>()), proptest::option::of(0.0f64..50.0)), 1..20),
            count in 0usize..25,
        ) {
            let pool: Vec<Candidate> = members.iter().enumerate()
                .map(|(i, (age, h, b))| cand(i as u8, *age, *h, *b)).collect();
            let chosen = choose(pool.clone(), &[VictimOrder::UnhealthyFirst, VictimOrder::Oldest], count);
            prop_assert_eq!(chosen.len(), count.min(pool.len()));
            let mut seen = std::collections::HashSet::new();
            for c in &chosen {
                prop_assert!(seen.insert(c.id));
                prop_assert!(pool.contains(c));
            }
            // No passing member is chosen while a failing one is left.
            let failing_left = pool.iter().any(|p| p.healthy == Some(false) && !chosen.contains(p));
            if failing_left {
                prop_assert!(chosen.iter().all(|c| c.healthy == Some(false)));
            }
        }
    }
}
