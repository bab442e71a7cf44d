//! Why an object could not be pinned. Each failure carries the object it concerns and a CamelCase
//! reason that ends up in `BpfNodeState` and in the `BpfObject`'s conditions.

/// The reasons are part of the agent↔operator contract, so they live in the API crate.
pub use bpfpin_crds::reason::Reason;

/// One object's failure: `object counter: VerifierRejected: program unchecked: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ObjectError {
    /// The reason, for status and metrics.
    pub reason: Reason,
    /// What went wrong, in a sentence that names the program, map or path concerned.
    pub message: String,
}

impl ObjectError {
    /// A failure with a reason and a message.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// An error of the kernel core that is reported in status: its `Display` is the status message,
/// and `reason` the reason. Each module's error enum implements it next to its variants, so the
/// mapping to `(Reason, message)` is written once per error type.
pub trait StatusError: std::error::Error {
    /// The reason written in status for this error.
    fn reason(&self) -> Reason;
}

impl<E: StatusError> From<E> for ObjectError {
    fn from(e: E) -> Self {
        ObjectError::new(e.reason(), e.to_string())
    }
}

/// An error and every cause below it, joined with `: `.
pub fn sources(err: &(dyn std::error::Error + 'static)) -> String {
    join(err, false)
}

/// Like [`sources`], leaving out a cause whose text the message already holds (aya's messages
/// often repeat their cause).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    join(err, true)
}

fn join(err: &(dyn std::error::Error + 'static), skip_repeated: bool) -> String {
    let mut out = err.to_string();
    for s in std::iter::successors(err.source(), |s| s.source()) {
        let text = s.to_string();
        if !(skip_repeated && out.contains(&text)) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// The last lines of a verifier log: the part that says why (the whole log can be megabytes).
/// The statistics the verifier prints after its verdict are left out, so the verdict ends it.
pub fn verifier_log_tail(log: &str, lines: usize) -> String {
    const STATS: [&str; 3] = ["verification time", "stack depth", "processed "];
    let all: Vec<&str> = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !STATS.iter().any(|s| l.starts_with(s)))
        .collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// An error of the agent as a whole (not of one object): the managed root, bpffs, the API.
#[expect(
    missing_docs,
    reason = "a variant's fields are the names, paths and causes its message shows"
)]
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The bpffs mount point is missing, not a bpffs, or could not be mounted.
    #[error("bpffs at {path}: {message}")]
    Bpffs {
        path: std::path::PathBuf,
        message: String,
    },
    /// A filesystem operation on the managed root failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl AgentError {
    /// An I/O error with the action and path it concerns.
    pub fn io(
        action: &'static str,
        path: impl Into<std::path::PathBuf>,
        source: std::io::Error,
    ) -> Self {
        AgentError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_ends_the_tail() {
        let log = "0: (b7) r0 = 0\n1: (79) r1 = *(u64 *)(r0 +0)\nR0 invalid mem access 'scalar'\nverification time 9 usec\nstack depth 0\nprocessed 2 insns (limit 1000000)\n";
        assert_eq!(
            verifier_log_tail(log, 2),
            "1: (79) r1 = *(u64 *)(r0 +0)\nR0 invalid mem access 'scalar'"
        );
    }
}
