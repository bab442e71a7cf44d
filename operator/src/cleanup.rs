//! The deletion decision: may the `bpfpin.io/unpin` finalizer be removed from a `BpfObject`?
//!
//! It may once no live node still lists the object. A node is live when its `Node` exists and its
//! agent's heartbeat is newer than `--stale-after`; deleted or stale nodes do not block, because
//! their agent sweeps unwanted pins when it comes back.

use std::time::Duration;

use bpfpin_crds::BpfNodeState;
use k8s_openapi::jiff::Timestamp;

use crate::node_report::{self, Liveness};

/// Extra wait after a blocking node's stale time, so the re-check lands after it.
const REQUEUE_SLACK: Duration = Duration::from_secs(1);

/// A node that still lists the object and is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub node: String,
    /// When the node stops blocking unless its agent reports again.
    pub stale_at: Timestamp,
}

/// Why a node that lists the object does not block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ignored {
    /// Its `Node` object is gone.
    NodeDeleted,
    /// Its agent's heartbeat is older than `--stale-after`.
    Stale,
    /// Its agent never wrote a heartbeat.
    NoHeartbeat,
}

/// The decision for one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Live nodes that still list the object, by name.
    pub blocking: Vec<Blocker>,
    /// Nodes that list the object but do not block, by name.
    pub ignored: Vec<(String, Ignored)>,
}

/// Decides for object `name` / `uid` from every node state; `node_exists` says whether a Node of
/// that name exists, `heartbeat_of` when its agent last renewed its Lease.
pub fn decide<'a>(
    name: &str,
    uid: Option<&str>,
    states: impl IntoIterator<Item = &'a BpfNodeState>,
    node_exists: impl Fn(&str) -> bool,
    heartbeat_of: impl Fn(&str) -> Option<Timestamp>,
    now: Timestamp,
    stale_after: Duration,
) -> Decision {
    let mut out = Decision::default();
    for state in states {
        let Some(node) = state.metadata.name.as_deref() else {
            continue;
        };
        if node_report::entry_for(state, name, uid).is_none() {
            continue;
        }
        if !node_exists(node) {
            out.ignored.push((node.to_owned(), Ignored::NodeDeleted));
            continue;
        }
        match node_report::liveness(heartbeat_of(node), now, stale_after) {
            Liveness::Live { stale_at } => out.blocking.push(Blocker {
                node: node.to_owned(),
                stale_at,
            }),
            Liveness::Stale { .. } => out.ignored.push((node.to_owned(), Ignored::Stale)),
            Liveness::NoHeartbeat => out.ignored.push((node.to_owned(), Ignored::NoHeartbeat)),
        }
    }
    out.blocking.sort_by(|a, b| a.node.cmp(&b.node));
    out.ignored.sort();
    out
}

impl Ignored {
    /// Why, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NodeDeleted => "Node deleted",
            Self::Stale => "agent heartbeat stale",
            Self::NoHeartbeat => "agent never reported",
        }
    }
}

impl Decision {
    /// Whether the finalizer may be removed.
    pub fn released(&self) -> bool {
        self.blocking.is_empty()
    }

    /// The blocking nodes' names.
    pub fn blocking_nodes(&self) -> Vec<String> {
        self.blocking.iter().map(|b| b.node.clone()).collect()
    }

    /// When to look again without any watch event: when the first blocking node turns stale.
    pub fn requeue_after(&self, now: Timestamp) -> Option<Duration> {
        self.blocking
            .iter()
            .map(|b| b.stale_at)
            .min()
            .map(|t| node_report::until(now, t) + REQUEUE_SLACK)
    }

    /// `n3 (agent heartbeat stale), n4 (Node deleted)`, or empty.
    pub fn ignored_text(&self) -> String {
        let parts: Vec<String> = self
            .ignored
            .iter()
            .map(|(n, why)| format!("{n} ({})", why.describe()))
            .collect();
        crate::messages::names(&parts)
    }
}

#[cfg(test)]
mod tests {
    use bpfpin_crds::ObjectPhase::{Failed, Pinned};

    use super::*;
    use crate::node_report::fixtures::{at, entry, heartbeat, state, t0};

    const STALE: Duration = Duration::from_secs(90);

    fn decide_with(states: &[BpfNodeState], existing: &[&str]) -> Decision {
        decide(
            "counter",
            Some("uid-counter"),
            states,
            |n| existing.contains(&n),
            |n| {
                states
                    .iter()
                    .find(|s| s.metadata.name.as_deref() == Some(n))
                    .and_then(heartbeat)
            },
            t0(),
            STALE,
        )
    }

    #[test]
    fn live_nodes_listing_the_object_block() {
        let states = [
            state("n2", Some(at(-10)), vec![entry("counter", 3, Failed)]),
            state("n1", Some(at(-30)), vec![entry("counter", 3, Pinned)]),
            state("n3", Some(at(-5)), vec![entry("other", 1, Pinned)]),
        ];
        let d = decide_with(&states, &["n1", "n2", "n3"]);
        assert!(!d.released());
        assert_eq!(d.blocking_nodes(), ["n1", "n2"]);
        assert_eq!(d.blocking[0].stale_at, at(60));
        assert!(d.ignored.is_empty());
        // n1 turns stale first, at t0+60s.
        assert_eq!(d.requeue_after(t0()), Some(Duration::from_secs(61)));
    }

    #[test]
    fn deleted_stale_and_silent_nodes_do_not_block() {
        let states = [
            state("gone", Some(at(-1)), vec![entry("counter", 1, Pinned)]),
            state("stale", Some(at(-90)), vec![entry("counter", 1, Pinned)]),
            state("silent", None, vec![entry("counter", 1, Pinned)]),
        ];
        let d = decide_with(&states, &["stale", "silent"]);
        assert!(d.released());
        assert_eq!(d.requeue_after(t0()), None);
        assert_eq!(
            d.ignored,
            [
                ("gone".to_owned(), Ignored::NodeDeleted),
                ("silent".to_owned(), Ignored::NoHeartbeat),
                ("stale".to_owned(), Ignored::Stale),
            ]
        );
        assert_eq!(
            d.ignored_text(),
            "gone (Node deleted), silent (agent never reported), stale (agent heartbeat stale)"
        );
    }

    #[test]
    fn entries_of_a_recreated_object_do_not_block() {
        let mut old = entry("counter", 1, Pinned);
        old.uid = Some("uid-previous-counter".into());
        let states = [state("n1", Some(at(-1)), vec![old])];
        assert!(decide_with(&states, &["n1"]).released());
    }

    #[test]
    fn nothing_listed_releases_at_once() {
        let states = [state("n1", Some(at(-1)), vec![])];
        let d = decide_with(&states, &["n1"]);
        assert!(d.released());
        assert_eq!(d, Decision::default());
    }
}
