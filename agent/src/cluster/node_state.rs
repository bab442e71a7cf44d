//! This node's `BpfNodeState`: what a pass pinned, turned into status, and written with
//! server-side apply only when it changed. The heartbeat is a separate, small Lease
//! ([`super::heartbeat`]), so an unchanged node writes nothing here.
//!
//! Writes per node: the object once (skipped when it already exists with this Node as owner),
//! then one status write per pass that changed something.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpfpin_crds::{BpfNodeState, BpfNodeStateStatus, NodeObjectState, ObjectPhase, PinnedProgram};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};

use super::desired_set::Held;
use super::metrics::{Metrics, Write};
use crate::pin::reconcile::{Action, ObjectReport, PassReport};

/// The field manager of every write of the agent.
pub const FIELD_MANAGER: &str = "bpfpin-agent";

/// After a failed write, the next attempt waits at most this long (or the next change).
const WRITE_RETRY: Duration = Duration::from_secs(5);

/// The status entry of one reported object.
pub fn object_state(r: &ObjectReport) -> NodeObjectState {
    let mut state = NodeObjectState {
        name: r.name.clone(),
        uid: r.uid.clone(),
        generation: r.generation,
        phase: ObjectPhase::Pinned,
        path: Some(r.path.display().to_string()),
        ..Default::default()
    };
    if let Some(p) = &r.pinned {
        state.programs = p
            .programs
            .iter()
            .map(|(name, id)| PinnedProgram {
                name: name.clone(),
                id: *id,
            })
            .collect();
        state.maps = p.maps.iter().map(|m| m.display().to_string()).collect();
        state.maps.sort();
        state.links = p.links.iter().map(|l| l.display().to_string()).collect();
        state.links.sort();
    }
    if let Some(e) = &r.error {
        state.phase = ObjectPhase::Failed;
        state.reason = Some(e.reason.as_str().to_owned());
        state.message = Some(if r.action == Action::KeptPrevious {
            format!(
                "{}; the previous version stays pinned and running",
                e.message
            )
        } else {
            e.message.clone()
        });
    } else if r.pinned.is_none() {
        // Not expected from the core; say so rather than claim it is pinned.
        state.phase = ObjectPhase::Pending;
    }
    state
}

/// The status after a pass. Held objects keep their previous entry, if the
/// previous status has one for the same uid; objects neither reported nor held (unselected,
/// deleted, unpinned by the pass) are not listed.
pub fn build_status(
    report: &PassReport,
    held: &Held,
    previous: Option<&BpfNodeStateStatus>,
    root: &Path,
) -> BpfNodeStateStatus {
    let mut objects: Vec<NodeObjectState> = report.objects.iter().map(object_state).collect();
    for (name, uid) in held {
        if let Some(prev) = previous
            .into_iter()
            .flat_map(|p| &p.objects)
            .find(|o| &o.name == name && &o.uid == uid)
        {
            objects.push(prev.clone());
        }
    }
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    let count = |phase| objects.iter().filter(|o| o.phase == phase).count() as i32;
    BpfNodeStateStatus {
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        root: Some(root.display().to_string()),
        pinned: count(ObjectPhase::Pinned),
        failed: count(ObjectPhase::Failed),
        objects,
        capabilities: None,
    }
}

/// Adds to `status` the entries of the objects this node's kernel cannot run (phase
/// `Unsupported`) and the capabilities they were judged with.
pub fn add_gating(
    status: &mut BpfNodeStateStatus,
    unsupported: Vec<NodeObjectState>,
    capabilities: Option<&bpfpin_crds::NodeCapabilities>,
) {
    status.capabilities = capabilities.cloned();
    if unsupported.is_empty() {
        return;
    }
    status.objects.extend(unsupported);
    status.objects.sort_by(|a, b| a.name.cmp(&b.name));
}

/// The owner reference that ties the `BpfNodeState` to its `Node` for garbage collection.
pub fn node_owner(node: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: uid.into(),
        block_owner_deletion: Some(false),
        controller: Some(false),
    }
}

/// Writes this node's `BpfNodeState`.
#[derive(Debug)]
pub struct StatusWriter {
    api: Api<BpfNodeState>,
    node: String,
    metrics: Arc<Metrics>,
    /// The Node uid the object was created (or found) with.
    owner_uid: Option<String>,
    written: Option<BpfNodeStateStatus>,
    retry_at: Option<Instant>,
}

impl StatusWriter {
    /// A writer for the `BpfNodeState` named `node`.
    pub fn new(client: Client, node: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            api: Api::all(client),
            node: node.to_owned(),
            metrics,
            owner_uid: None,
            written: None,
            retry_at: None,
        }
    }

    /// When a failed write is tried again.
    pub fn next_due(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether the last status handed to [`Self::sync`] is what the API server has.
    pub fn is_current(&self) -> bool {
        self.written.is_some() && self.retry_at.is_none()
    }

    /// Writes `status` if it differs from the last write (the first call always writes), or
    /// retries a failed write.
    pub async fn sync(&mut self, status: &BpfNodeStateStatus, node_uid: &str) {
        let now = Instant::now();
        let changed = self.written.as_ref() != Some(status);
        if !changed && self.retry_at.is_none_or(|due| now < due) {
            return;
        }
        match self.write(status, node_uid).await {
            Ok(()) => {
                if changed {
                    tracing::debug!(
                        pinned = status.pinned,
                        failed = status.failed,
                        "status written"
                    );
                }
                self.written = Some(status.clone());
                self.retry_at = None;
            }
            Err(error) => {
                tracing::warn!(%error, "writing BpfNodeState status failed; will retry");
                self.retry_at = Some(now + WRITE_RETRY);
            }
        }
    }

    async fn write(&mut self, status: &BpfNodeStateStatus, node_uid: &str) -> kube::Result<()> {
        if self.owner_uid.as_deref() != Some(node_uid) {
            self.ensure_object(node_uid).await?;
        }
        match self.patch_status(status).await {
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                // Deleted behind our back (or garbage-collected with a previous Node): recreate.
                self.owner_uid = None;
                self.ensure_object(node_uid).await?;
                self.patch_status(status).await
            }
            other => other,
        }
    }

    async fn patch_status(&self, status: &BpfNodeStateStatus) -> kube::Result<()> {
        let patch = serde_json::json!({
            "apiVersion": BpfNodeState::api_version(&()),
            "kind": BpfNodeState::kind(&()),
            "status": status,
        });
        self.api
            .patch_status(
                &self.node,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        self.metrics.count_write(Write::Status);
        Ok(())
    }

    /// Creates the object (spec and owner reference) unless it already exists as wanted.
    async fn ensure_object(&mut self, node_uid: &str) -> kube::Result<()> {
        if let Some(existing) = self.api.get_opt(&self.node).await?
            && existing.spec.node_name == self.node
            && existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Node" && o.uid == node_uid)
        {
            self.owner_uid = Some(node_uid.to_owned());
            return Ok(());
        }
        let patch = serde_json::json!({
            "apiVersion": BpfNodeState::api_version(&()),
            "kind": BpfNodeState::kind(&()),
            "metadata": {
                "name": self.node,
                "ownerReferences": [node_owner(&self.node, node_uid)],
            },
            "spec": {"nodeName": self.node},
        });
        self.api
            .patch(
                &self.node,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        self.metrics.count_write(Write::Object);
        tracing::info!(bpfnodestate = %self.node, "BpfNodeState applied");
        self.owner_uid = Some(node_uid.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ObjectError, Reason};
    use crate::pin::loader::PinnedVersion;

    fn pinned(name: &str) -> ObjectReport {
        ObjectReport {
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            generation: 2,
            action: Action::Created,
            error: None,
            pinned: Some(PinnedVersion {
                version: "v1".into(),
                programs: vec![("count".into(), 42)],
                maps: vec![
                    format!("/b/bpfpin/{name}/maps/z").into(),
                    "/b/bpfpin/shared/a".into(),
                ],
                links: vec![format!("/b/bpfpin/{name}/links/count/tp").into()],
                shared: vec!["/b/bpfpin/shared/a".into()],
            }),
            path: format!("/b/bpfpin/{name}").into(),
        }
    }

    fn report(objects: Vec<ObjectReport>) -> PassReport {
        PassReport {
            objects,
            ..Default::default()
        }
    }

    #[test]
    fn pinned_failed_and_kept_previous() {
        let ok = pinned("a");
        let failed = ObjectReport {
            name: "b".into(),
            action: Action::Failed,
            error: Some(ObjectError::new(
                Reason::BytecodeUnavailable,
                "configMap ns/cm has no key k",
            )),
            pinned: None,
            ..pinned("b")
        };
        let kept = ObjectReport {
            name: "c".into(),
            action: Action::KeptPrevious,
            generation: 3,
            error: Some(ObjectError::new(
                Reason::VerifierRejected,
                "program count: R0 !read_ok",
            )),
            ..pinned("c")
        };
        let status = build_status(
            &report(vec![kept, ok, failed]),
            &Held::new(),
            None,
            Path::new("/b/bpfpin"),
        );
        assert_eq!((status.pinned, status.failed), (1, 2));
        assert_eq!(status.root.as_deref(), Some("/b/bpfpin"));
        let names: Vec<_> = status.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);

        let a = &status.objects[0];
        assert_eq!(a.phase, ObjectPhase::Pinned);
        assert_eq!(a.uid.as_deref(), Some("uid-a"));
        assert_eq!(a.generation, 2);
        assert_eq!(
            a.programs,
            [PinnedProgram {
                name: "count".into(),
                id: 42
            }]
        );
        assert_eq!(a.maps, ["/b/bpfpin/a/maps/z", "/b/bpfpin/shared/a"]);
        assert_eq!(a.links, ["/b/bpfpin/a/links/count/tp"]);
        assert_eq!(a.reason, None);

        let b = &status.objects[1];
        assert_eq!(b.phase, ObjectPhase::Failed);
        assert_eq!(b.reason.as_deref(), Some("BytecodeUnavailable"));
        assert_eq!(b.message.as_deref(), Some("configMap ns/cm has no key k"));
        assert!(b.programs.is_empty());

        let c = &status.objects[2];
        assert_eq!(c.phase, ObjectPhase::Failed);
        assert_eq!(c.generation, 3);
        assert!(
            c.message
                .as_deref()
                .is_some_and(|m| m.contains("previous version stays pinned"))
        );
        assert_eq!(
            c.programs.len(),
            1,
            "the previous version's pins are reported"
        );
    }

    #[test]
    fn held_objects_keep_their_previous_entry_for_the_same_uid() {
        let previous = build_status(
            &report(vec![pinned("a"), pinned("b")]),
            &Held::new(),
            None,
            Path::new("/b/bpfpin"),
        );
        let held = Held::from([
            ("a".to_owned(), Some("uid-a".to_owned())),
            ("b".to_owned(), Some("recreated".to_owned())),
        ]);
        let status = build_status(
            &report(vec![]),
            &held,
            Some(&previous),
            Path::new("/b/bpfpin"),
        );
        let names: Vec<_> = status.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(status.pinned, 1);
    }

    #[test]
    fn unpinned_objects_are_not_listed() {
        let before = build_status(
            &report(vec![pinned("a"), pinned("b")]),
            &Held::new(),
            None,
            Path::new("/b/bpfpin"),
        );
        let after = build_status(
            &report(vec![pinned("a")]),
            &Held::new(),
            Some(&before),
            Path::new("/b/bpfpin"),
        );
        assert_eq!(after.objects.len(), 1);
        assert_ne!(before, after);
        assert_eq!(
            after,
            build_status(
                &report(vec![pinned("a")]),
                &Held::new(),
                None,
                Path::new("/b/bpfpin")
            )
        );
    }

    #[test]
    fn owner_reference_does_not_block_deletion() {
        let o = node_owner("n1", "u1");
        assert_eq!((o.api_version.as_str(), o.kind.as_str()), ("v1", "Node"));
        assert_eq!(o.block_owner_deletion, Some(false));
        assert_eq!(o.controller, Some(false));
    }
}
