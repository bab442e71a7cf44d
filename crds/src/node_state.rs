//! `BpfNodeState`: one object per node, written by that node's agent, that says what is pinned
//! there. One per node (not one per object per node) keeps the object count O(nodes).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Identity of the node an agent serves. The agent creates this object named after its node, with
/// an owner reference on the `Node`, so it goes away with the node.
#[expect(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) names its own type_"
)]
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "bpfpin.io",
    version = "v1alpha1",
    kind = "BpfNodeState",
    plural = "bpfnodestates",
    shortname = "bpfns",
    status = "BpfNodeStateStatus",
    derive = "PartialEq",
    doc = "What the bpfpin agent of one node has pinned there. Named after the node, written only by that node's agent, and only when something changed; the agent's heartbeat is the Lease bpfpin-agent-<node> (label bpfpin.io/agent-heartbeat) in the agents' namespace.",
    printcolumn(name = "Pinned", type_ = "integer", json_path = ".status.pinned"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Kernel",
        type_ = "string",
        json_path = ".status.capabilities.kernel",
        priority = 1
    ),
    printcolumn(
        name = "BTF",
        type_ = "boolean",
        json_path = ".status.capabilities.btf",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BpfNodeStateSpec {
    /// The node this state belongs to (equal to `metadata.name`).
    pub node_name: String,
}

/// What is pinned on the node, as last reconciled by its agent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BpfNodeStateStatus {
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The managed root on the node, e.g. `/sys/fs/bpf/bpfpin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Objects in phase `Pinned`.
    #[serde(default)]
    pub pinned: i32,
    /// Objects in phase `Failed`.
    #[serde(default)]
    pub failed: i32,
    /// One entry per `BpfObject` selected for this node, and per object still pinned here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<NodeObjectState>,

    /// What this node's kernel can run, probed once when the agent started; objects whose
    /// `spec.requires` it does not meet are listed with phase `Unsupported` and not pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::capabilities::NodeCapabilities>,
}

/// The state of one `BpfObject` on one node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeObjectState {
    /// The `BpfObject`'s name.
    pub name: String,
    /// The `BpfObject`'s uid, so a deleted and re-created object is not confused with the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The `metadata.generation` this entry describes.
    pub generation: i64,
    /// `Pinned`, `Failed`, `Pending` (not reconciled yet, e.g. waiting for its bytecode), or
    /// `Unsupported` (the kernel does not meet `spec.requires`).
    pub phase: ObjectPhase,
    /// A CamelCase reason when `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What went wrong when `Failed`; when an update failed, the previous version stays pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The object's directory, e.g. `/sys/fs/bpf/bpfpin/counter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Pinned programs with their kernel program ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<PinnedProgram>,
    /// Pinned map paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maps: Vec<String>,
    /// Pinned link paths (one per attachment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,

    /// Provenance: the lowercase hex SHA-256 of the ELF bytecode this node runs for the object
    /// (for a failed update, the previous version's, which stays pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytecode_sha256: Option<String>,
    /// Provenance: the manifest digest (`sha256:<hex>`) of the `bytecode.image` the bytecode was
    /// pulled from, as resolved on this node (a tag resolves to the digest of its last pull).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Provenance: who signed the image, as this node verified it: the fingerprint of the
    /// public key (`sha256:<hex>` of its DER form), or for a keyless signature the certificate's
    /// `subject (issuer)`. Absent when no signature was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    /// Pod-scoped attachments (`networkNamespaces`): how many pods of this node match, how many
    /// are attached, and which failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodAttachments>,
}

// --- Pod-aware attachment (issue 14) ---

/// The most entries in `pods.failures`.
pub const MAX_POD_FAILURES: usize = 10;

/// The pod-scoped attachments of one object on one node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodAttachments {
    /// Pods on this node that some program's `networkNamespaces` selects (with a network
    /// namespace of their own and an IP) or some cgroup hook's `pods` selects.
    pub matched: i32,
    /// Of those, pods with every selected program attached on every listed interface (and to
    /// their cgroup).
    pub attached: i32,
    /// Pods that match but have no IP yet (their sandbox is being created), or no cgroup yet.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waiting: i32,
    /// The first failures (at most 10): the pod, the interface and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<PodFailure>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// One pod-scoped attachment that failed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodFailure {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// The program.
    pub program: String,
    /// The interface inside the pod (empty for a pod's cgroup, `pods` of the cgroup hooks).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// The container (`containers` of `uprobe`; empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// A CamelCase reason, e.g. `AttachFailed`.
    pub reason: String,
    /// What went wrong, in a sentence.
    pub message: String,
}

// --- end of pod-aware attachment ---

/// A pinned program.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PinnedProgram {
    /// Program name.
    pub name: String,
    /// Kernel program id (`bpftool prog show id <id>`).
    pub id: u32,
}

/// Phase of one object on one node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ObjectPhase {
    /// Not reconciled yet.
    #[default]
    Pending,
    /// Pinned (and attached) at `generation`.
    Pinned,
    /// Could not be pinned at `generation`; see `reason` and `message`.
    Failed,
    /// Not pinned: this node's kernel does not meet the object's `spec.requires`; `message`
    /// names the requirement. The node counts as not selected, not as failed.
    Unsupported,
}
