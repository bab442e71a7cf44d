//! What a mode (local manifests, or the cluster) wants pinned: objects with their bytecode
//! already fetched. The core needs nothing of Kubernetes beyond the spec type.

use bpfpin_crds::BpfObjectSpec;
use sha2::{Digest, Sha256};

use crate::error::ObjectError;

/// One object the node should have pinned.
#[derive(Debug, Clone)]
pub struct DesiredObject {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid` (cluster mode).
    pub uid: Option<String>,
    /// `metadata.generation` (0 in local mode when absent).
    pub generation: i64,
    /// The object's spec, as the mode read it.
    pub spec: BpfObjectSpec,
    /// The ELF bytes, or why they could not be had.
    pub bytecode: Result<Vec<u8>, ObjectError>,
}

/// The lowercase hex SHA-256 of `bytes`: the digest `spec.sha256` and image digests are compared with.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Bumped when the pin layout of a version changes, so old versions are rebuilt.
const LAYOUT_REVISION: &str = "1";

/// The key of what a version holds: the bytecode's digest and every spec field that changes what
/// is pinned or attached (not the node selector, not where the bytes came from). Two specs with
/// the same key produce the same pins, so a restarted agent adopts instead of reloading.
pub fn version_key(spec: &BpfObjectSpec, digest: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(LAYOUT_REVISION.as_bytes());
    hasher.update(digest.as_bytes());
    let material = serde_json::json!({
        "globalData": spec.global_data,
        "maps": spec.maps,
        "programs": spec.programs,
        "tailCalls": spec.tail_calls,
    });
    hasher.update(material.to_string().as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BpfObjectSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    #[test]
    fn key_ignores_source_and_selector_but_not_programs() {
        let a = spec("bytecode: {path: a.o}\nprograms: [{name: p}]");
        let b = spec(
            "bytecode: {path: /elsewhere/b.o}\nnodeSelector: {matchLabels: {x: y}}\nprograms: [{name: p}]",
        );
        let c = spec("bytecode: {path: a.o}\nprograms: [{name: q}]");
        assert_eq!(version_key(&a, "d1"), version_key(&b, "d1"));
        assert_ne!(version_key(&a, "d1"), version_key(&a, "d2"));
        assert_ne!(version_key(&a, "d1"), version_key(&c, "d1"));
        assert_eq!(version_key(&a, "d1").len(), 16);
    }
}
