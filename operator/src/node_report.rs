//! Reading what one node reports: is its agent alive (its heartbeat Lease), and what does its
//! `BpfNodeState` say about an object.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bpfpin_crds::{BpfNodeState, NodeObjectState};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Whether a node's agent is reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The heartbeat is newer than `stale_after`; the node turns stale at `stale_at`.
    Live {
        /// When the heartbeat will be older than `stale_after`, unless the agent reports again.
        stale_at: Timestamp,
    },
    /// The last heartbeat is older than `stale_after`.
    Stale {
        /// The last heartbeat.
        last: Timestamp,
    },
    /// The agent created its state but never wrote a heartbeat.
    NoHeartbeat,
}

impl Liveness {
    /// Whether the agent is reporting.
    #[cfg(test)]
    pub fn is_live(self) -> bool {
        matches!(self, Self::Live { .. })
    }
}

/// The liveness of an agent whose heartbeat Lease was last renewed at `heartbeat` (None: it never
/// renewed one), at `now`. A heartbeat in the future (clock skew) counts as fresh.
pub fn liveness(heartbeat: Option<Timestamp>, now: Timestamp, stale_after: Duration) -> Liveness {
    let Some(heartbeat) = heartbeat else {
        return Liveness::NoHeartbeat;
    };
    let stale_at = add(heartbeat, stale_after);
    if now < stale_at {
        Liveness::Live { stale_at }
    } else {
        Liveness::Stale { last: heartbeat }
    }
}

/// The agents' heartbeats by node name: the `renewTime` of each `bpfpin-agent-<node>` Lease.
/// Written by the Lease watch, read by the reconciler.
#[derive(Debug, Clone, Default)]
pub struct Heartbeats(Arc<RwLock<HashMap<String, Timestamp>>>);

impl Heartbeats {
    /// The last renewal of `node`'s Lease.
    pub fn get(&self, node: &str) -> Option<Timestamp> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .copied()
    }

    /// The nodes with a heartbeat on record.
    pub fn nodes(&self) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Records (or, with None, forgets) `node`'s last renewal.
    pub fn set(&self, node: &str, renewed: Option<Timestamp>) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match renewed {
            Some(t) => map.insert(node.to_owned(), t),
            None => map.remove(node),
        };
    }
}

/// `ts + d`, saturating at the end of time.
pub fn add(ts: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| ts.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// `later - earlier` as a `Duration`, zero when `later` is not later.
pub fn until(earlier: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

/// The current time, truncated to seconds: `metav1.Time` is serialized with second precision, so
/// a condition's `lastTransitionTime` read back from the API server compares equal to the one
/// written.
pub fn now_seconds() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// Whether an entry describes the object `name` with uid `uid`. An entry without a uid (an agent
/// that did not record it) matches by name; an entry whose uid differs belongs to an earlier
/// object of the same name.
pub fn describes(entry: &NodeObjectState, name: &str, uid: Option<&str>) -> bool {
    entry.name == name
        && match (entry.uid.as_deref(), uid) {
            (Some(entry_uid), Some(uid)) => entry_uid == uid,
            _ => true,
        }
}

/// The node's entry for the object, if it lists one.
pub fn entry_for<'a>(
    state: &'a BpfNodeState,
    name: &str,
    uid: Option<&str>,
) -> Option<&'a NodeObjectState> {
    state
        .status
        .as_ref()?
        .objects
        .iter()
        .find(|e| describes(e, name, uid))
}

#[cfg(test)]
pub mod fixtures {
    //! Builders shared by the unit tests of the modules that read node states.

    use bpfpin_crds::{BpfNodeStateSpec, BpfNodeStateStatus, ObjectPhase};
    use kube::ResourceExt;

    use super::*;

    /// A fixed "now" for tests: 2025-01-01T00:00:00Z.
    pub fn t0() -> Timestamp {
        Timestamp::from_second(1_735_689_600).expect("valid timestamp")
    }

    /// `t0() + secs` (negative: before).
    pub fn at(secs: i64) -> Timestamp {
        t0().checked_add(SignedDuration::from_secs(secs))
            .expect("valid timestamp")
    }

    /// An entry for object `name` (uid `uid-<name>`).
    pub fn entry(name: &str, generation: i64, phase: ObjectPhase) -> NodeObjectState {
        NodeObjectState {
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            generation,
            phase,
            ..Default::default()
        }
    }

    /// A failed entry with reason and message.
    pub fn failed(name: &str, generation: i64, reason: &str, message: &str) -> NodeObjectState {
        NodeObjectState {
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..entry(name, generation, ObjectPhase::Failed)
        }
    }

    /// Where [`state`] keeps the heartbeat, so that a test lists a node's report in one place
    /// (in the cluster it is the node's Lease, see [`Heartbeats`]).
    const HEARTBEAT: &str = "test.bpfpin.io/heartbeat";

    /// The heartbeat [`state`] was given.
    pub fn heartbeat(state: &BpfNodeState) -> Option<Timestamp> {
        state.annotations().get(HEARTBEAT)?.parse().ok()
    }

    /// The state of `node`, whose agent's heartbeat is at `heartbeat` (None: never reported).
    pub fn state(
        node: &str,
        heartbeat: Option<Timestamp>,
        objects: Vec<NodeObjectState>,
    ) -> BpfNodeState {
        let mut s = BpfNodeState::new(
            node,
            BpfNodeStateSpec {
                node_name: node.into(),
            },
        );
        if let Some(t) = heartbeat {
            s.annotations_mut().insert(HEARTBEAT.into(), t.to_string());
        }
        s.status = Some(BpfNodeStateStatus {
            objects,
            ..Default::default()
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use bpfpin_crds::ObjectPhase;

    use super::fixtures::*;
    use super::*;

    const STALE: Duration = Duration::from_secs(90);

    #[test]
    fn liveness_by_heartbeat_age() {
        assert_eq!(
            liveness(Some(at(-30)), t0(), STALE),
            Liveness::Live { stale_at: at(60) }
        );
        assert_eq!(
            liveness(Some(at(-90)), t0(), STALE),
            Liveness::Stale { last: at(-90) }
        );
        assert!(liveness(Some(at(30)), t0(), STALE).is_live());
        assert_eq!(liveness(None, t0(), STALE), Liveness::NoHeartbeat);
    }

    #[test]
    fn heartbeats_by_node() {
        let h = Heartbeats::default();
        h.set("n1", Some(t0()));
        assert_eq!(h.clone().get("n1"), Some(t0()));
        h.set("n1", None);
        assert_eq!(h.get("n1"), None);
        let s = state("n2", Some(at(-5)), vec![]);
        assert_eq!(heartbeat(&s), Some(at(-5)));
        assert_eq!(heartbeat(&state("n2", None, vec![])), None);
    }

    #[test]
    fn entries_match_by_name_and_uid() {
        let s = state("n1", Some(t0()), vec![entry("a", 1, ObjectPhase::Pinned)]);
        assert!(entry_for(&s, "a", Some("uid-a")).is_some());
        assert!(entry_for(&s, "a", None).is_some());
        assert!(entry_for(&s, "a", Some("uid-other")).is_none());
        assert!(entry_for(&s, "b", Some("uid-a")).is_none());
        let mut no_uid = entry("a", 1, ObjectPhase::Pinned);
        no_uid.uid = None;
        assert!(describes(&no_uid, "a", Some("anything")));
    }

    #[test]
    fn time_helpers() {
        assert_eq!(add(t0(), Duration::from_secs(5)), at(5));
        assert_eq!(until(t0(), at(5)), Duration::from_secs(5));
        assert_eq!(until(at(5), t0()), Duration::ZERO);
        assert_eq!(now_seconds().subsec_nanosecond(), 0);
    }
}
