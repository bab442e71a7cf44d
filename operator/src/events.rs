//! The Kubernetes Events published on a `BpfObject`: `Ready` transitions, `Degraded` with its
//! reason, and the finalizer held or released during deletion. Which event to publish is decided
//! here, without I/O; events are only published on transitions, to keep API writes low.

use std::time::Duration;

use bpfpin_crds::BpfObjectStatus;
use kube::runtime::events::EventType;

use crate::cleanup::Decision;
use crate::conditions::{DEGRADED, READY, find};
use crate::messages;

/// An Event's `note` is at most 1 kB.
const MAX_NOTE: usize = 1024;

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Normal or Warning.
    pub type_: EventType,
    pub reason: String,
    /// What happened, and where.
    pub note: String,
    /// What the operator did.
    pub action: &'static str,
}

impl Notice {
    fn new(type_: EventType, reason: &str, note: &str, action: &'static str) -> Self {
        Self {
            type_,
            reason: reason.to_owned(),
            note: messages::truncate(note, MAX_NOTE),
            action,
        }
    }
}

/// The events for a status change from `old` to `new`.
pub fn status_events(old: Option<&BpfObjectStatus>, new: &BpfObjectStatus) -> Vec<Notice> {
    let old_conditions = old.map_or(&[][..], |s| s.conditions.as_slice());
    let old_status = |t| find(old_conditions, t).map(|c| c.status.as_str());
    // Every status event is the aggregation's.
    let notice = |type_, reason: &str, note: &str| Notice::new(type_, reason, note, "Aggregate");
    let mut out = Vec::new();

    if let Some(ready) = find(&new.conditions, READY) {
        match (old_status(READY), ready.status.as_str()) {
            (Some("True"), "True") | (Some("False") | None, "False") => {}
            (_, "True") => out.push(notice(EventType::Normal, "Ready", &ready.message)),
            (Some("True"), _) => out.push(notice(EventType::Warning, "NotReady", &ready.message)),
            _ => {}
        }
    }

    if let Some(degraded) = find(&new.conditions, DEGRADED) {
        let old = find(old_conditions, DEGRADED);
        let was = old.is_some_and(|c| c.status == "True");
        if degraded.status == "True" {
            // A new failure reason is news; more nodes failing the same way is in the status.
            if !was || old.is_some_and(|c| c.reason != degraded.reason) {
                out.push(notice(
                    EventType::Warning,
                    &degraded.reason,
                    &degraded.message,
                ));
            }
        } else if was {
            out.push(notice(EventType::Normal, "Recovered", &degraded.message));
        }
    }
    out
}

/// Deletion waits for `decision.blocking`.
pub fn finalizer_held(decision: &Decision, stale_after: Duration) -> Notice {
    let nodes = decision.blocking_nodes();
    let mut note = format!(
        "waiting for {} to unpin before removing finalizer bpfpin.io/unpin; a node stops blocking when its Node is deleted or its agent's heartbeat is older than {}",
        messages::names(&nodes),
        messages::duration(stale_after)
    );
    if !decision.ignored.is_empty() {
        note.push_str(&format!("; not waiting for {}", decision.ignored_text()));
    }
    Notice::new(EventType::Normal, "WaitingForNodes", &note, "Delete")
}

/// Deletion may proceed.
pub fn finalizer_released(decision: &Decision) -> Notice {
    let mut note = "unpinned on every live node; removing finalizer bpfpin.io/unpin".to_owned();
    if !decision.ignored.is_empty() {
        note.push_str(&format!(
            "; not waited for {}: their agents remove the pins when they come back",
            decision.ignored_text()
        ));
    }
    Notice::new(EventType::Normal, "FinalizerReleased", &note, "Delete")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::{Blocker, Ignored};
    use crate::conditions::{Desired, PROGRESSING, merge};
    use crate::node_report::fixtures::t0;

    fn status(ready: (bool, &str), degraded: (bool, &str)) -> BpfObjectStatus {
        BpfObjectStatus {
            conditions: merge(
                &[],
                vec![
                    Desired::new(READY, ready.0, ready.1, format!("ready {}", ready.1)),
                    Desired::new(PROGRESSING, false, "X", "x"),
                    Desired::new(
                        DEGRADED,
                        degraded.0,
                        degraded.1,
                        format!("degraded {}", degraded.1),
                    ),
                ],
                Some(1),
                t0(),
            ),
            ..Default::default()
        }
    }

    fn reasons(v: &[Notice]) -> Vec<&str> {
        v.iter().map(|n| n.reason.as_str()).collect()
    }

    #[test]
    fn ready_transitions() {
        let progressing = status((false, "Progressing"), (false, "NoFailures"));
        let ready = status((true, "Pinned"), (false, "NoFailures"));
        assert!(
            status_events(None, &progressing).is_empty(),
            "creation is not news"
        );
        assert!(status_events(Some(&progressing), &progressing).is_empty());
        let e = status_events(Some(&progressing), &ready);
        assert_eq!(reasons(&e), ["Ready"]);
        assert_eq!(e[0].type_, EventType::Normal);
        assert_eq!(e[0].note, "ready Pinned");
        assert_eq!(reasons(&status_events(None, &ready)), ["Ready"]);
        assert!(status_events(Some(&ready), &ready).is_empty());
        let e = status_events(Some(&ready), &progressing);
        assert_eq!(reasons(&e), ["NotReady"]);
        assert_eq!(e[0].type_, EventType::Warning);
    }

    #[test]
    fn degraded_transitions() {
        let ok = status((false, "Progressing"), (false, "NoFailures"));
        let verifier = status((false, "Failed"), (true, "VerifierRejected"));
        let digest = status((false, "Failed"), (true, "DigestMismatch"));
        let e = status_events(Some(&ok), &verifier);
        assert_eq!(reasons(&e), ["VerifierRejected"]);
        assert_eq!(e[0].type_, EventType::Warning);
        assert_eq!(e[0].note, "degraded VerifierRejected");
        assert!(status_events(Some(&verifier), &verifier).is_empty());
        assert_eq!(
            reasons(&status_events(Some(&verifier), &digest)),
            ["DigestMismatch"]
        );
        assert_eq!(reasons(&status_events(Some(&digest), &ok)), ["Recovered"]);
    }

    #[test]
    fn finalizer_notes_name_the_nodes() {
        let d = Decision {
            blocking: vec![Blocker {
                node: "n1".into(),
                stale_at: t0(),
            }],
            ignored: vec![("n9".into(), Ignored::NodeDeleted)],
        };
        let held = finalizer_held(&d, Duration::from_secs(90));
        assert_eq!(held.reason, "WaitingForNodes");
        assert!(
            held.note.starts_with("waiting for n1 to unpin"),
            "{}",
            held.note
        );
        assert!(held.note.contains("older than 1m30s"), "{}", held.note);
        assert!(
            held.note.ends_with("not waiting for n9 (Node deleted)"),
            "{}",
            held.note
        );

        let released = finalizer_released(&Decision::default());
        assert_eq!(released.reason, "FinalizerReleased");
        assert_eq!(
            released.note,
            "unpinned on every live node; removing finalizer bpfpin.io/unpin"
        );
        let released = finalizer_released(&Decision {
            blocking: vec![],
            ignored: d.ignored,
        });
        assert!(
            released.note.contains("not waited for n9 (Node deleted)"),
            "{}",
            released.note
        );
    }
}
