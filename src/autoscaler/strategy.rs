//! Strategies: from the pool's size and a tick's signals to a desired size, with the reason.
//! Bounds, the one-step limit and the busy gate are applied afterwards by the controller, the
//! same for every strategy; a strategy only says what it would like.

use serde::Serialize;

use super::source::Signals;
use super::target::Observation;

/// What a strategy would like, and why (the decision record carries the reason).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Recommendation {
    pub desired: u64,
    pub reason: String,
    /// A policy's stages and inputs, for the decision record.
    pub detail: Option<Detail>,
}

/// How a policy got to its size: each check's input with its timestamp, the raw (safest-wins)
/// and stabilized sizes, and the rule that had the last word.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Detail {
    pub inputs: Vec<InputRecord>,
    pub raw: u64,
    pub stabilized: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipped_by: Option<String>,
}

/// One check's view of one tick.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InputRecord {
    pub check: usize,
    pub strategy: &'static str,
    /// `cpu`, `load-in-flight` or `webhooks`.
    pub metric: &'static str,
    /// The pool-average value the check saw (`None` when missing).
    pub value: Option<f64>,
    /// How many members had a value.
    pub members_with_value: usize,
    /// The newest sample's time (for webhooks: the last intent's).
    #[serde(with = "time::serde::rfc3339::option")]
    pub sample_at: Option<time::OffsetDateTime>,
    pub recommended: u64,
    /// A forecast check whose error is not known yet (its warm-up headroom applies, it never
    /// scales in); absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warming_up: bool,
}

pub trait Strategy: Send {
    fn name(&self) -> &'static str;
    fn recommend(&mut self, obs: &Observation, signals: &Signals) -> Recommendation;
    /// Whether the controller limits changes to one step per tick (the course's rule); a
    /// policy with rate limits of its own says no.
    fn one_step(&self) -> bool {
        true
    }
    /// The controller changed the size from `from` to `to` (the change was accepted). A
    /// recommendation held by the busy gate, a dry run or a failed call is not a change: rate
    /// limits count only these, as Kubernetes' HPA records a scale event only after it scaled.
    fn applied(&mut self, from: u64, to: u64) {
        let _ = (from, to);
    }
}

/// A strategy chosen at start-up (the course's rule or a policy).
impl Strategy for Box<dyn Strategy> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn recommend(&mut self, obs: &Observation, signals: &Signals) -> Recommendation {
        (**self).recommend(obs, signals)
    }
    fn one_step(&self) -> bool {
        (**self).one_step()
    }
    fn applied(&mut self, from: u64, to: u64) {
        (**self).applied(from, to)
    }
}

/// The course's rule: any firing up-intent since the last tick -> one more; else any down-intent
/// -> one fewer; both -> up (scaling in while something asks for more is the costly mistake).
#[derive(Clone, Debug, Default)]
pub struct WebhookStep;

impl Strategy for WebhookStep {
    fn name(&self) -> &'static str {
        "webhook-step"
    }

    fn recommend(&mut self, obs: &Observation, signals: &Signals) -> Recommendation {
        let current = obs.size;
        let i = &signals.intents;
        match (i.up, i.down) {
            (0, 0) => Recommendation {
                desired: current,
                reason: "no intent since the last tick".into(),
                detail: None,
            },
            (up, 0) => Recommendation {
                desired: current + 1,
                reason: format!("{up} up intent(s)"),
                detail: None,
            },
            (0, down) => Recommendation {
                desired: current.saturating_sub(1),
                reason: format!("{down} down intent(s)"),
                detail: None,
            },
            (up, down) => Recommendation {
                desired: current + 1,
                reason: format!("{up} up and {down} down intent(s): up wins"),
                detail: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaler::source::Intents;

    fn signals(up: u64, down: u64) -> Signals {
        Signals {
            intents: Intents {
                up,
                down,
                recent: vec![],
            },
            ..Signals::default()
        }
    }

    fn obs(size: u64) -> Observation {
        Observation {
            size,
            state: "running".into(),
            members: size,
            running: size,
            busy: None,
            member_list: vec![],
        }
    }

    #[test]
    fn one_step_up_wins_over_down() {
        let mut s = WebhookStep;
        assert_eq!(s.recommend(&obs(3), &signals(0, 0)).desired, 3);
        assert_eq!(s.recommend(&obs(3), &signals(5, 0)).desired, 4);
        assert_eq!(s.recommend(&obs(3), &signals(0, 2)).desired, 2);
        assert_eq!(s.recommend(&obs(3), &signals(1, 9)).desired, 4);
        assert_eq!(s.recommend(&obs(0), &signals(0, 1)).desired, 0);
    }
}
