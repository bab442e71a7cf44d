//! Reconcile requests caused by node reports, throttled per object: the first request after a
//! quiet interval passes at once (one object on a few nodes is Ready as soon as they reported),
//! and requests within the interval after it fold into one at the interval's end (a rollout's
//! stream of node reports costs at most one reconcile per object per interval). A trailing
//! debounce would delay the first one and, under a steady stream of reports, every one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use tokio::time::Instant;

/// What the throttle decides for one request.
#[derive(Debug)]
pub struct Throttle<K> {
    every: Duration,
    /// When each key was last let through (kept for one interval).
    sent: HashMap<K, Instant>,
    /// Keys waiting for their interval to end, by when they are due.
    due: BTreeMap<(Instant, u64), K>,
    waiting: HashSet<K>,
    seq: u64,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// At most one request per key per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            sent: HashMap::new(),
            due: BTreeMap::new(),
            waiting: HashSet::new(),
            seq: 0,
        }
    }

    /// A request at `now`: `true` if it passes now; otherwise it is due later (once).
    pub fn request(&mut self, key: K, now: Instant) -> bool {
        match self.sent.get(&key) {
            Some(last) if now.duration_since(*last) < self.every => {
                if self.waiting.insert(key.clone()) {
                    self.seq += 1;
                    self.due.insert((*last + self.every, self.seq), key);
                }
                false
            }
            _ => {
                self.sent.insert(key, now);
                true
            }
        }
    }

    /// When the next waiting key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.keys().next().map(|(t, _)| *t)
    }

    /// The keys due at `now`, marked as sent; forgets keys quiet for a whole interval.
    pub fn pop_due(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.waiting.remove(&key);
            self.sent.insert(key.clone(), now);
            out.push(key);
        }
        let every = self.every;
        self.sent
            .retain(|_, last| now.duration_since(*last) < every * 2);
        out
    }
}

/// Forwards `rx` to the returned receiver through a [`Throttle`] of `every`, until `rx` ends.
pub fn spawn<K>(mut rx: UnboundedReceiver<K>, every: Duration) -> UnboundedReceiver<K>
where
    K: Hash + Eq + Clone + Send + 'static,
{
    let (tx, out): (UnboundedSender<K>, _) = unbounded();
    tokio::spawn(async move {
        let mut throttle = Throttle::new(every);
        loop {
            let due = throttle.next_due();
            tokio::select! {
                request = rx.next() => match request {
                    Some(key) => {
                        if throttle.request(key.clone(), Instant::now())
                            && tx.unbounded_send(key).is_err()
                        {
                            return;
                        }
                    }
                    None => return,
                },
                () = async {
                    match due {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    for key in throttle.pop_due(Instant::now()) {
                        if tx.unbounded_send(key).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_passes_later_ones_fold_into_one_at_the_interval_end() {
        let every = Duration::from_millis(100);
        let mut t = Throttle::new(every);
        let t0 = Instant::now();
        assert!(t.request("a", t0), "the first request passes at once");
        assert!(t.request("b", t0), "another key is independent");
        assert!(!t.request("a", t0 + Duration::from_millis(10)));
        assert!(!t.request("a", t0 + Duration::from_millis(20)));
        assert_eq!(t.next_due(), Some(t0 + every));
        assert!(t.pop_due(t0 + Duration::from_millis(50)).is_empty());
        assert_eq!(t.pop_due(t0 + every), ["a"], "folded into one");
        assert_eq!(t.next_due(), None);
        // Right after the folded one, the interval starts again.
        assert!(!t.request("a", t0 + Duration::from_millis(150)));
        assert_eq!(t.next_due(), Some(t0 + every * 2));
        // Quiet for an interval: passes at once again.
        assert!(t.request("b", t0 + Duration::from_millis(150)));
        assert_eq!(t.pop_due(t0 + every * 2), ["a"]);
        assert!(t.request("a", t0 + Duration::from_millis(500)));
    }

    #[tokio::test]
    async fn the_task_forwards_at_once_and_then_at_the_interval_end() {
        let every = Duration::from_millis(500);
        let (tx, rx) = unbounded();
        let mut out = spawn(rx, every);
        let t0 = Instant::now();
        tx.unbounded_send("a").expect("send");
        assert_eq!(out.next().await, Some("a"));
        assert!(t0.elapsed() < every, "the first one does not wait");
        tx.unbounded_send("a").expect("send");
        tx.unbounded_send("a").expect("send");
        assert_eq!(out.next().await, Some("a"));
        assert!(
            t0.elapsed() >= every,
            "the folded one waits for the interval"
        );
        drop(tx);
        assert_eq!(out.next().await, None, "one request for the two");
    }
}
