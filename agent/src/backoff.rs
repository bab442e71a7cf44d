//! Retries of objects whose failure may go away by itself, with exponential backoff: the bytecode
//! file, ConfigMap key or URL becomes available, or an attach point appears (an interface created
//! later, a pod's cgroup, a binary installed later). Other failures (a verifier rejection, a bad
//! spec) wait for a change of the object, the node or the ConfigMap (cluster mode), or of the
//! manifests (local watch mode).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::Reason;
use crate::pin::reconcile::PassReport;

/// Whether a failure with this reason is retried on a timer.
pub fn is_retryable(reason: Reason) -> bool {
    matches!(reason, Reason::BytecodeUnavailable | Reason::AttachFailed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    generation: i64,
    attempts: u32,
    due: Instant,
}

/// When each retryably failing object is tried again.
#[derive(Debug, Clone)]
pub struct Retries {
    base: Duration,
    max: Duration,
    entries: BTreeMap<String, Retry>,
}

impl Retries {
    /// Backoff from `base`, doubling, up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            entries: BTreeMap::new(),
        }
    }

    /// The wait after the `attempts`-th failure in a row (1-based).
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }

    /// Records a pass: `failing` are the objects (name, generation) that failed retryably; every
    /// other object is forgotten. A failure before its retry was due (the pass ran for another
    /// reason) keeps the schedule; one at or after it backs off further.
    pub fn record<'a>(&mut self, now: Instant, failing: impl IntoIterator<Item = (&'a str, i64)>) {
        let mut next = BTreeMap::new();
        for (name, generation) in failing {
            let retry = match self.entries.get(name) {
                Some(r) if r.generation == generation && now < r.due => *r,
                Some(r) if r.generation == generation => Retry {
                    generation,
                    attempts: r.attempts + 1,
                    due: now + self.delay(r.attempts + 1),
                },
                _ => Retry {
                    generation,
                    attempts: 1,
                    due: now + self.delay(1),
                },
            };
            next.insert(name.to_owned(), retry);
        }
        self.entries = next;
    }

    /// Records a pass by its report: the objects that failed for a retryable reason.
    pub fn record_pass(&mut self, now: Instant, report: &PassReport) {
        self.record(
            now,
            report
                .objects
                .iter()
                .filter(|o| o.error.as_ref().is_some_and(|e| is_retryable(e.reason)))
                .map(|o| (o.name.as_str(), o.generation)),
        );
    }

    /// The earliest retry, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|r| r.due).min()
    }
}

/// Sleeps until `deadline`; without one, forever (a `select!` branch that never fires).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries() -> Retries {
        Retries::new(Duration::from_secs(5), Duration::from_secs(300))
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let r = retries();
        let secs: Vec<u64> = (1..=9).map(|a| r.delay(a).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(r.delay(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn schedule() {
        let mut r = retries();
        let t0 = Instant::now();
        r.record(t0, [("a", 1)]);
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(5)));
        // An unrelated pass before the retry is due keeps the schedule.
        r.record(t0 + Duration::from_secs(1), [("a", 1)]);
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(5)));
        // The retry fails again: wait longer.
        let t1 = t0 + Duration::from_secs(5);
        r.record(t1, [("a", 1)]);
        assert_eq!(r.next_due(), Some(t1 + Duration::from_secs(10)));
        // A new generation starts over.
        r.record(t1, [("a", 2)]);
        assert_eq!(r.next_due(), Some(t1 + Duration::from_secs(5)));
        // Success (or deletion) forgets it.
        r.record(t1, []);
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn only_failures_that_may_go_away_are_retried() {
        assert!(is_retryable(Reason::BytecodeUnavailable));
        assert!(is_retryable(Reason::AttachFailed));
        assert!(!is_retryable(Reason::DigestMismatch));
        assert!(!is_retryable(Reason::VerifierRejected));
        assert!(!is_retryable(Reason::InvalidSpec));
    }
}
