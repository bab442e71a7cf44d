//! Why an object could not be pinned. Each failure carries the object it concerns and a CamelCase
//! reason that ends up in `BpfNodeState` and in the `BpfObject`'s conditions.

use std::fmt;

/// The reason an object failed, as written in conditions and status (`reason` fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The spec breaks a rule the CRD schema also enforces (names, pin paths, sources).
    InvalidSpec,
    /// The bytecode could not be read or fetched.
    BytecodeUnavailable,
    /// `bytecode.path` resolves outside the directories the agent may read.
    BytecodePathNotAllowed,
    /// The bytecode's SHA-256 differs from `spec.sha256`.
    DigestMismatch,
    /// The bytecode is not a valid eBPF ELF object.
    InvalidElf,
    /// A program named in the spec is not in the ELF object.
    ProgramNotFound,
    /// A map named in the spec is not in the ELF object.
    MapNotFound,
    /// The kernel verifier refused a program.
    VerifierRejected,
    /// A program could not be loaded for another reason.
    LoadFailed,
    /// A shared map already pinned has another definition than this object's map.
    MapConflict,
    /// `spec.globalData` names an unknown variable or has the wrong size or encoding.
    InvalidGlobalData,
    /// A program could not be attached (unknown interface or tracepoint, wrong program type).
    AttachFailed,
    /// Pinning to bpffs failed.
    PinFailed,
    /// The program type or attach kind is not supported yet.
    Unsupported,
    /// The bytecode source kind is not supported in this mode.
    UnsupportedSource,
    /// `--require-digest` is set and the source pins no digest (`spec.sha256`, or `@sha256:` for
    /// an image).
    DigestRequired,
    /// A url, registry, token service or redirect resolves to an address `--source-allow` does
    /// not allow.
    SourceNotAllowed,
    /// The object's new maps would not fit the headroom of the agent's memory cgroup (map memory
    /// is charged to it and stays charged while the maps are pinned).
    InsufficientMemory,
    /// `--image-verification-policy enforce`: the image has no cosign signature that verifies
    /// with a configured public key for its manifest digest (unsigned, wrong key, a signature of
    /// another image, a malformed signature or key).
    SignatureInvalid,
}

impl Reason {
    /// The reason as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::BytecodeUnavailable => "BytecodeUnavailable",
            Reason::BytecodePathNotAllowed => "BytecodePathNotAllowed",
            Reason::DigestMismatch => "DigestMismatch",
            Reason::InvalidElf => "InvalidElf",
            Reason::ProgramNotFound => "ProgramNotFound",
            Reason::MapNotFound => "MapNotFound",
            Reason::VerifierRejected => "VerifierRejected",
            Reason::LoadFailed => "LoadFailed",
            Reason::MapConflict => "MapConflict",
            Reason::InvalidGlobalData => "InvalidGlobalData",
            Reason::AttachFailed => "AttachFailed",
            Reason::PinFailed => "PinFailed",
            Reason::Unsupported => "Unsupported",
            Reason::UnsupportedSource => "UnsupportedSource",
            Reason::DigestRequired => "DigestRequired",
            Reason::SourceNotAllowed => "SourceNotAllowed",
            Reason::InsufficientMemory => "InsufficientMemory",
            Reason::SignatureInvalid => "SignatureInvalid",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object's failure: `object counter: VerifierRejected: program unchecked: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for ObjectError {}

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
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The bpffs mount point is missing, not a bpffs, or could not be mounted.
    #[error("bpffs at {path}: {message}")]
    Bpffs {
        /// The mount point.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A filesystem operation on the managed root failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the agent was doing.
        action: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// The error.
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

// Image signature verification (agent/src/signature/): what a failed check reports.
impl From<crate::signature::SignatureError> for ObjectError {
    fn from(e: crate::signature::SignatureError) -> Self {
        use crate::signature::SignatureError;
        let reason = match &e {
            // The registry could not be asked: its own reason (unreachable, denied, too large).
            SignatureError::Fetch { source, .. } => source.reason,
            _ => Reason::SignatureInvalid,
        };
        ObjectError::new(reason, e.to_string())
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
