//! Provenance of what a node runs: the SHA-256 of each object's bytecode, the image manifest
//! digest it came from, and the key that verified that image's signature; written into each
//! object's `BpfNodeState` entry, and an Event on the `BpfObject` when the bytecode a node runs
//! for it changes.
//!
//! The image digest and the signer are read back from the node's cache after the pull (the
//! pull records a tag's digest and a verification by digest there), and only used when the
//! cached image's `.o` has exactly the bytes handed to the pass, so a tag moved in between cannot
//! put a wrong digest in the status.

use std::collections::BTreeMap;

use bpfpin_crds::{BpfNodeStateStatus, NodeObjectState, ObjectPhase};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::bytecode::Fetcher;
use crate::bytecode::cache::Cache;
use crate::bytecode::image::ImageRef;
use crate::pin::desired::{DesiredObject, sha256_hex};
use crate::pin::reconcile::{Action, PassReport};
use crate::signature::{self, Mode, Signer, cache::VerifiedCache, keys::KeySet};

/// Where the bytecode handed to a pass for one object came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// Lowercase hex SHA-256 of the ELF bytes.
    pub sha256: String,
    /// `sha256:<hex>` of the image manifest, for `bytecode.image`.
    pub image_digest: Option<String>,
    /// The fingerprint of the key that verified the image's signature.
    pub verified_by: Option<String>,
}

/// The provenance of every object of a pass that has bytecode, by name.
pub fn of(desired: &[DesiredObject], fetcher: &Fetcher) -> BTreeMap<String, Provenance> {
    desired
        .iter()
        .filter_map(|d| {
            let bytes = d.bytecode.as_ref().ok()?;
            let sha256 = sha256_hex(bytes);
            let image_digest = d
                .spec
                .bytecode
                .image
                .as_deref()
                .and_then(|image| image_digest(image, &sha256, fetcher));
            let verified_by = image_digest
                .as_deref()
                .and_then(|digest| verified_by(digest, fetcher));
            Some((
                d.name.clone(),
                Provenance {
                    sha256,
                    image_digest,
                    verified_by,
                },
            ))
        })
        .collect()
}

/// The manifest digest of `image` whose `.o` has digest `sha256`: the reference's own digest, or
/// the one the cache recorded for its tag at the last pull.
fn image_digest(image: &str, sha256: &str, fetcher: &Fetcher) -> Option<String> {
    let reference = ImageRef::parse(image).ok()?;
    let cache = Cache(fetcher.cache_dir.as_deref()?);
    let digest = match &reference.digest {
        Some(d) => d.clone(),
        // The key the pull stores a tag's digest under (`registry/repository:tag`).
        None => cache.digest_of_tag(&format!(
            "{}/{}:{}",
            reference.registry,
            reference.repository,
            reference.tag.as_deref()?
        ))?,
    };
    let cached = cache.object_of_image(&digest)?;
    (sha256_hex(&cached) == sha256).then_some(digest)
}

/// Who verified `digest`, if the policy checks signatures and one did: the fingerprint of the
/// configured key (`sha256:<hex>` of its DER), or the certificate's `subject (issuer)`. This
/// process's last verification is asked first; after a restart, the verification cache.
fn verified_by(digest: &str, fetcher: &Fetcher) -> Option<String> {
    let policy = signature::installed();
    if policy.mode == Mode::Off {
        return None;
    }
    let signer = match signature::verified(digest) {
        Some(v) => v.signer,
        None => {
            let keys = KeySet::load(policy.keys_dir.as_deref()?);
            let trusted = |s: &Signer| match s {
                Signer::Key { fingerprint, .. } => {
                    keys.usable.iter().any(|k| &k.fingerprint == fingerprint)
                }
                Signer::Certificate(_) => false,
            };
            VerifiedCache(fetcher.cache_dir.as_deref()?)
                .get(digest, trusted)?
                .signer
        }
    };
    Some(match signer {
        Signer::Key { fingerprint, .. } => fingerprint,
        Signer::Certificate(c) => format!("{} ({})", c.subject, c.issuer),
    })
}

/// Fills in the provenance of each entry of `status`: a fresh or unchanged pin gets the pass's
/// provenance; a failed update keeps the previous entry's (its previous version runs); a failure
/// or an unsupported object gets none; held entries keep theirs.
pub fn apply(
    status: &mut BpfNodeStateStatus,
    report: &PassReport,
    provenance: &BTreeMap<String, Provenance>,
    previous: Option<&BpfNodeStateStatus>,
) {
    for entry in &mut status.objects {
        let Some(r) = report.objects.iter().find(|r| r.name == entry.name) else {
            continue; // held: the previous entry, provenance included
        };
        let from = match r.action {
            Action::Unchanged | Action::Adopted | Action::Created | Action::Updated => {
                provenance.get(&entry.name).cloned()
            }
            Action::KeptPrevious => previous
                .into_iter()
                .flat_map(|p| &p.objects)
                .find(|p| p.name == entry.name && p.uid == entry.uid)
                .and_then(|p| {
                    Some(Provenance {
                        sha256: p.bytecode_sha256.clone()?,
                        image_digest: p.image_digest.clone(),
                        verified_by: p.verified_by.clone(),
                    })
                }),
            Action::Failed => None,
        };
        if entry.phase == ObjectPhase::Unsupported {
            continue;
        }
        let from = from.unwrap_or_default();
        entry.bytecode_sha256 = (!from.sha256.is_empty()).then_some(from.sha256);
        entry.image_digest = from.image_digest;
        entry.verified_by = from.verified_by;
    }
}

/// An object whose running bytecode changed on this node between `before` and `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The object's name.
    pub name: String,
    /// Its uid.
    pub uid: Option<String>,
    /// The digest it ran before.
    pub from: String,
    /// The digest it runs now.
    pub to: String,
    /// The image digest it runs now, if any.
    pub image_digest: Option<String>,
}

/// The objects whose `bytecodeSha256` went from one value to another (same uid), pinned now.
/// A first pin is not a change.
pub fn changes(before: Option<&BpfNodeStateStatus>, after: &BpfNodeStateStatus) -> Vec<Change> {
    let Some(before) = before else {
        return Vec::new();
    };
    let running = |e: &NodeObjectState| {
        matches!(e.phase, ObjectPhase::Pinned | ObjectPhase::Failed)
            .then_some(e.bytecode_sha256.as_deref())
            .flatten()
            .map(str::to_owned)
    };
    after
        .objects
        .iter()
        .filter_map(|now| {
            let to = running(now)?;
            let old = before
                .objects
                .iter()
                .find(|b| b.name == now.name && b.uid == now.uid)?;
            let from = running(old)?;
            (from != to).then(|| Change {
                name: now.name.clone(),
                uid: now.uid.clone(),
                from,
                to,
                image_digest: now.image_digest.clone(),
            })
        })
        .collect()
}

/// Publishes an Event on each changed `BpfObject`, as this node's agent.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
    node: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The reason of the Event published when a node's running bytecode changes.
pub const BYTECODE_CHANGED: &str = "BytecodeChanged";

impl Events {
    /// Events published as `bpfpin-agent` of `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        Self {
            client,
            reporter: Reporter {
                controller: "bpfpin-agent".into(),
                instance: Some(format!("bpfpin-agent-{node}")),
            },
            node: node.to_owned(),
        }
    }

    /// One Event per change; a failure to publish is logged (the status has the digests).
    pub async fn publish(&self, changes: &[Change]) {
        for c in changes {
            let image = c
                .image_digest
                .as_deref()
                .map(|d| format!(" (image {d})"))
                .unwrap_or_default();
            let note = format!(
                "node {} now runs bytecode sha256:{}{image}, was sha256:{}",
                self.node, c.to, c.from
            );
            let event = Event {
                type_: EventType::Normal,
                reason: BYTECODE_CHANGED.into(),
                note: Some(note),
                action: "Load".into(),
                secondary: None,
            };
            let object = ObjectReference {
                api_version: Some("bpfpin.io/v1alpha1".into()),
                kind: Some("BpfObject".into()),
                name: Some(c.name.clone()),
                uid: c.uid.clone(),
                ..Default::default()
            };
            // A fresh Recorder per event: a series would keep the first note.
            let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
            if let Err(error) = recorder.publish(&event, &object).await {
                tracing::warn!(object = %c.name, %error, "publishing the bytecode-changed event");
            } else {
                tracing::info!(object = %c.name, from = %c.from, to = %c.to, "running bytecode changed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, uid: &str, phase: ObjectPhase, sha: Option<&str>) -> NodeObjectState {
        NodeObjectState {
            name: name.into(),
            uid: Some(uid.into()),
            phase,
            bytecode_sha256: sha.map(Into::into),
            ..Default::default()
        }
    }

    fn status(objects: Vec<NodeObjectState>) -> BpfNodeStateStatus {
        BpfNodeStateStatus {
            objects,
            ..Default::default()
        }
    }

    #[test]
    fn a_change_is_another_digest_for_the_same_object() {
        let before = status(vec![
            entry("a", "u1", ObjectPhase::Pinned, Some("aa")),
            entry("b", "u2", ObjectPhase::Pinned, Some("bb")),
            entry("c", "u3", ObjectPhase::Pinned, Some("cc")),
            entry("d", "u4", ObjectPhase::Pinned, Some("dd")),
        ]);
        let after = status(vec![
            entry("a", "u1", ObjectPhase::Pinned, Some("a2")),
            entry("b", "u2", ObjectPhase::Pinned, Some("bb")),
            // Re-created: another object, not a change.
            entry("c", "other", ObjectPhase::Pinned, Some("c2")),
            // Failed without a running version: nothing runs, so no event.
            entry("d", "u4", ObjectPhase::Failed, None),
            entry("e", "u5", ObjectPhase::Pinned, Some("ee")),
        ]);
        let got = changes(Some(&before), &after);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (
                got[0].name.as_str(),
                got[0].from.as_str(),
                got[0].to.as_str()
            ),
            ("a", "aa", "a2")
        );
        assert!(
            changes(None, &after).is_empty(),
            "a first pin is not a change"
        );
    }

    #[test]
    fn provenance_is_of_the_bytes_handed_to_the_pass() {
        let spec =
            serde_yaml::from_str("bytecode: {path: a.o}\nprograms: [{name: p}]").expect("spec");
        let desired = vec![DesiredObject {
            name: "a".into(),
            uid: None,
            generation: 1,
            spec,
            bytecode: Ok(b"elf".to_vec()),
        }];
        let got = of(&desired, &Fetcher::default());
        assert_eq!(got["a"].sha256, sha256_hex(b"elf"));
        assert_eq!(got["a"].image_digest, None);
    }
}
