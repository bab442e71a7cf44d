//! The pods a cgroup attach kind selects (`pods`), and the namespace and selector checks that
//! every pod-scoped field shares. A leaf of the crate: `bpf_object` and the attach kinds' modules
//! use it, it uses neither.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

/// The pods whose cgroups a cgroup program attaches to (`pods` of `cgroupSkb`, `sockOps`,
/// `cgroupSockAddr`, `cgroupSock`, `cgroupSysctl`, `cgroupSockopt`, `cgroupDevice`): on each
/// node, every pod of `namespace` that `podSelector` matches, scheduled there and not ended
/// (hostNetwork pods included: a pod's cgroup is its own). A pod that starts later is attached
/// when its cgroup appears; a deleted pod's link is unpinned.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSelection {
    /// The pods' namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Which pods of `namespace` (labels; empty selects every pod of it).
    #[serde(default)]
    pub pod_selector: LabelSelector,
}

// `LabelSelector` is only `PartialEq` in k8s-openapi, but its equality is on strings.
impl Eq for PodSelection {}

impl PodSelection {
    /// The checks of the schema, again in Rust; `at` is the field path of `pods`.
    pub fn validate(&self, at: &str) -> Result<(), ValidationError> {
        validate_selection(at, &self.namespace, &self.pod_selector)
    }
}

/// The namespace and selector checks shared by `networkNamespaces` and `pods`; `at` is the
/// field path of the selection (`...xdp.networkNamespaces`, `...sockOps.pods`).
pub(crate) fn validate_selection(
    at: &str,
    namespace: &str,
    selector: &LabelSelector,
) -> Result<(), ValidationError> {
    let refuse = |field: &str, value: &str, reason: &str| ValidationError {
        field: format!("{at}.{field}"),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if namespace.is_empty()
        || namespace.len() > 63
        || !namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(refuse(
            "namespace",
            namespace,
            "must be a namespace name (a DNS label)",
        ));
    }
    crate::selector::Selector::parse(Some(selector))
        .map_err(|e| refuse("podSelector", "", &e.to_string()))?;
    Ok(())
}

/// A cgroup attach kind (`at`, e.g. `spec.programs[0].attach.sockOps`) sets exactly one of
/// `cgroup` (an absolute path without `..`) and `pods`.
pub(crate) fn validate_cgroup_or_pods(
    at: &str,
    cgroup: Option<&str>,
    pods: Option<&PodSelection>,
) -> Result<(), ValidationError> {
    match (cgroup, pods) {
        (Some(c), None) => crate::validation::validate_abs_path(format!("{at}.cgroup"), c),
        (None, Some(p)) => p.validate(&format!("{at}.pods")),
        (c, _) => Err(ValidationError {
            field: at.to_owned(),
            value: c.unwrap_or_default().to_owned(),
            reason: "set exactly one of cgroup (on the node) or pods (their cgroups)".into(),
        }),
    }
}
