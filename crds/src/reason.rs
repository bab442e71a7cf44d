//! Why an object could not be pinned on a node, as a CamelCase word: the agent writes it into
//! `BpfNodeState` (`objects[].reason`) and the operator copies it into the `BpfObject`'s
//! conditions and events, so both binaries read the same list.

use std::fmt;

/// Declares [`Reason`] from one list: the enum, [`Reason::as_str`] (each name as written) and
/// [`Reason::ALL`], so the three cannot disagree.
macro_rules! reasons {
    ($($(#[doc = $doc:expr])* $name:ident,)*) => {
        /// The reason an object failed, as written in conditions and status (`reason` fields).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];

            /// The reason as written in status.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
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

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn a_reason_is_written_as_its_name() {
        for &reason in Reason::ALL {
            assert_eq!(reason.as_str(), format!("{reason:?}"));
            assert_eq!(reason.to_string(), reason.as_str());
        }
    }
}
