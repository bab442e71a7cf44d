//! The agents' heartbeat: one `coordination.k8s.io` Lease per node, which the agent renews and
//! the operator watches to know which agents live. Both sides name, label and read it here.
//!
//! The Lease is named [`lease_name`]`(node)` (in the namespace both binaries get as
//! `--lease-namespace`), carries the label [`LEASE_LABEL`]`=true`, and its `spec.holderIdentity`
//! is the node's name.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

/// The label every agent heartbeat Lease carries (with the value `true`).
pub const LEASE_LABEL: &str = "bpfpin.io/agent-heartbeat";

/// The label selector of the heartbeat Leases, for the operator's watch.
pub fn lease_selector() -> String {
    format!("{LEASE_LABEL}=true")
}

/// The Lease name for `node`: `bpfpin-agent-<node>`, or a digest of the node name when that
/// would exceed the 253 characters of a name.
pub fn lease_name(node: &str) -> String {
    let name = format!("bpfpin-agent-{node}");
    if name.len() <= 253 {
        return name;
    }
    let digest = hex::encode(Sha256::digest(node.as_bytes()));
    format!("bpfpin-agent-{}", &digest[..32])
}

/// The node whose agent holds `lease` (its `holderIdentity`), and when it last renewed it.
pub fn holder(lease: &Lease) -> Option<(String, Option<Timestamp>)> {
    let spec = lease.spec.as_ref()?;
    let node = spec.holder_identity.clone()?;
    Some((node, spec.renew_time.as_ref().map(|t| t.0)))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    #[test]
    fn lease_names_fit() {
        assert_eq!(lease_name("n1"), "bpfpin-agent-n1");
        let long = "n".repeat(253);
        let name = lease_name(&long);
        assert!(
            name.len() <= 253 && name.starts_with("bpfpin-agent-"),
            "{name}"
        );
        assert_ne!(lease_name(&long), lease_name(&"m".repeat(253)));
    }

    #[test]
    fn the_holder_is_the_node() {
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("n1".into()),
                renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            holder(&lease),
            Some(("n1".into(), Some(Timestamp::UNIX_EPOCH)))
        );
        assert_eq!(holder(&Lease::default()), None);
        assert_eq!(lease_selector(), "bpfpin.io/agent-heartbeat=true");
    }
}
