//! Status conditions that keep `lastTransitionTime` while their status does not change, so that
//! recomputing an unchanged status yields an identical object and no API write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// `Ready`: pinned at the current generation on every selected node.
pub const READY: &str = "Ready";
/// `Progressing`: some selected nodes have not reported the current generation yet.
pub const PROGRESSING: &str = "Progressing";
/// `Degraded`: some selected nodes failed, or the object cannot be evaluated.
pub const DEGRADED: &str = "Degraded";

/// A condition as computed, before its transition time is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    pub reason: String,
    /// What is going on, and where.
    pub message: String,
}

impl Desired {
    /// A condition of `type_`.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The conditions to write: `desired` in order, each with the previous `lastTransitionTime` when
/// a condition of the same type had the same status, else `now`.
pub fn merge(
    previous: &[Condition],
    desired: Vec<Desired>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|d| {
            let status = status_str(d.status);
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map_or(Time(now), |p| p.last_transition_time.clone());
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason,
                message: d.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and `True`.
#[cfg(test)]
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_report::fixtures::{at, t0};

    #[test]
    fn new_conditions_transition_now() {
        let c = merge(
            &[],
            vec![Desired::new(READY, false, "Progressing", "0/1")],
            Some(3),
            t0(),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].last_transition_time, Time(t0()));
        assert_eq!(c[0].observed_generation, Some(3));
    }

    #[test]
    fn unchanged_status_keeps_transition_time_even_if_message_changes() {
        let before = merge(
            &[],
            vec![Desired::new(READY, false, "Progressing", "0/2 nodes")],
            Some(1),
            t0(),
        );
        let after = merge(
            &before,
            vec![Desired::new(
                READY,
                false,
                "Failed",
                "1/2 nodes, failed on n2",
            )],
            Some(2),
            at(60),
        );
        assert_eq!(after[0].last_transition_time, Time(t0()));
        assert_eq!(after[0].reason, "Failed");
        assert_eq!(after[0].observed_generation, Some(2));

        let flipped = merge(
            &after,
            vec![Desired::new(READY, true, "Pinned", "2/2")],
            Some(2),
            at(120),
        );
        assert_eq!(flipped[0].last_transition_time, Time(at(120)));
        assert!(is_true(&flipped, READY));
    }

    #[test]
    fn recomputing_the_same_conditions_is_idempotent() {
        let desired = || {
            vec![
                Desired::new(READY, true, "Pinned", "1/1"),
                Desired::new(PROGRESSING, false, "AllNodesReported", "done"),
                Desired::new(DEGRADED, false, "NoFailures", "none"),
            ]
        };
        let first = merge(&[], desired(), Some(1), t0());
        let second = merge(&first, desired(), Some(1), at(300));
        assert_eq!(first, second);
        assert_eq!(
            find(&second, DEGRADED).map(|c| c.status.as_str()),
            Some("False")
        );
    }
}
