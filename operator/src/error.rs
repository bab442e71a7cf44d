//! The operator's one error type.

use std::time::Duration;

use kube::runtime::finalizer;

/// Why a reconcile did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing `status` failed.
    #[error("writing the status of BpfObject {object}: {source}")]
    PatchStatus {
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// A deleted object is still pinned on live nodes: the finalizer stays. Not a failure; it is
    /// an error only because `finalizer()` keeps the finalizer on `Err`.
    #[error(
        "BpfObject {object} is still pinned on live nodes {nodes}; checking again in {retry_in:?}"
    )]
    StillPinned {
        object: String,
        /// The blocking nodes, as a list for people.
        nodes: String,
        /// When the first blocking node would turn stale.
        retry_in: Duration,
    },

    /// Adding or removing the finalizer, or the reconcile under it, failed.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A label for `bpfpin_operator_reconcile_errors_total{reason}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::PatchStatus { .. } => "patch_status",
            Self::StillPinned { .. } => "still_pinned",
            Self::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.metric_label()
                }
                finalizer::Error::AddFinalizer(_) => "add_finalizer",
                finalizer::Error::RemoveFinalizer(_) => "remove_finalizer",
                finalizer::Error::UnnamedObject => "unnamed_object",
                finalizer::Error::InvalidFinalizer => "invalid_finalizer",
            },
        }
    }

    /// For a deletion that waits for nodes: when to look again. `None` for real failures.
    pub fn still_pinned_retry(&self) -> Option<Duration> {
        match self {
            Self::StillPinned { retry_in, .. } => Some(*retry_in),
            Self::Finalizer(e) => match e.as_ref() {
                finalizer::Error::CleanupFailed(e) => e.still_pinned_retry(),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_waiting() {
        let waiting = Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(
            Error::StillPinned {
                object: "counter".into(),
                nodes: "n1".into(),
                retry_in: Duration::from_secs(61),
            },
        )));
        assert_eq!(waiting.metric_label(), "still_pinned");
        assert_eq!(waiting.still_pinned_retry(), Some(Duration::from_secs(61)));
        assert!(
            waiting
                .to_string()
                .contains("still pinned on live nodes n1")
        );

        let failed = Error::Finalizer(Box::new(finalizer::Error::<Error>::UnnamedObject));
        assert_eq!(failed.metric_label(), "unnamed_object");
        assert_eq!(failed.still_pinned_retry(), None);
    }
}
