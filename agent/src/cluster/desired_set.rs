//! The desired set of this node: the `BpfObject`s whose node selector matches the node's labels
//! and which are not being deleted, each with its bytecode. Pure functions of the watched state,
//! so the selection rules are tested without an API server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bpfpin_crds::selector;
use bpfpin_crds::{BpfObjectSpec, NodeCapabilities, NodeObjectState, ObjectPhase};

use super::bytecode::{self, Source};
use super::configmaps::{ConfigMapCache, ConfigMapRef};
use super::watch::ObjectEntry;
use crate::bytecode::{Batch, BytecodeDirs};
use crate::pin::desired::DesiredObject;

/// One selected object, with where its bytecode comes from.
#[derive(Debug, Clone)]
pub struct Planned {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.generation`.
    pub generation: i64,
    /// The object's spec.
    pub spec: BpfObjectSpec,
    /// Its bytecode, or why there is none yet.
    pub source: Source,
}

/// The objects selected for a node with `labels`: selector matches, not being deleted. Objects
/// whose selector cannot be evaluated select no node (the operator reports why).
pub fn select<'a>(
    objects: &'a BTreeMap<String, ObjectEntry>,
    labels: &BTreeMap<String, String>,
) -> Vec<(&'a String, &'a ObjectEntry)> {
    objects
        .iter()
        .filter(|(name, obj)| {
            if obj.deleting {
                return false;
            }
            match selector::matches(obj.spec.node_selector.as_ref(), labels) {
                Ok(selected) => selected,
                Err(why) => {
                    tracing::debug!(object = %name, %why, "invalid node selector: not selected");
                    false
                }
            }
        })
        .collect()
}

/// Splits the selected objects into those this node's kernel can run and the entries of those it
/// cannot (`spec.requires` unmet: phase `Unsupported`, the requirement as message). Without
/// capabilities (the fleet bench's stand-in core) nothing is gated.
pub fn gate<'a>(
    selected: Vec<(&'a String, &'a ObjectEntry)>,
    capabilities: Option<&NodeCapabilities>,
) -> (Vec<(&'a String, &'a ObjectEntry)>, Vec<NodeObjectState>) {
    let Some(caps) = capabilities else {
        return (selected, Vec::new());
    };
    let mut unsupported = Vec::new();
    let runnable = selected
        .into_iter()
        .filter(|(name, obj)| {
            let Some(why) = obj.spec.requires.as_ref().and_then(|r| r.unmet(caps)) else {
                return true;
            };
            tracing::debug!(object = %name, %why, "spec.requires not met: not pinned here");
            unsupported.push(NodeObjectState {
                name: (*name).clone(),
                uid: obj.uid.clone(),
                generation: obj.generation,
                phase: ObjectPhase::Unsupported,
                reason: Some(crate::error::Reason::Unsupported.as_str().to_owned()),
                message: Some(why),
                ..Default::default()
            });
            false
        })
        .collect();
    (runnable, unsupported)
}

/// The ConfigMaps the selected objects take their bytecode from.
pub fn configmaps_of(selected: &[(&String, &ObjectEntry)]) -> BTreeSet<ConfigMapRef> {
    selected
        .iter()
        .filter_map(|(_, obj)| obj.spec.bytecode.config_map.as_ref())
        .map(ConfigMapRef::of)
        .collect()
}

/// Every selected object with its bytecode source.
pub fn plan(selected: &[(&String, &ObjectEntry)], configmaps: &ConfigMapCache) -> Vec<Planned> {
    selected
        .iter()
        .map(|(name, obj)| Planned {
            name: (*name).clone(),
            uid: obj.uid.clone(),
            generation: obj.generation,
            spec: obj.spec.clone(),
            source: bytecode::source_of(&obj.spec, configmaps),
        })
        .collect()
}

/// Reads the `imagePullSecret` of every planned image, each Secret once per pass, into its
/// [`ImagePull::auth`](bytecode::ImagePull). An object whose Secret cannot be read fails with
/// `BytecodeUnavailable` (retried): the agent needs `get` on Secrets in that namespace.
pub async fn read_pull_secrets(planned: &mut [Planned], client: &kube::Client) {
    let mut read: BTreeMap<(String, String), Result<crate::bytecode::image::RegistryAuth, String>> =
        BTreeMap::new();
    for p in planned.iter_mut() {
        let Source::Image(pull) = &mut p.source else {
            continue;
        };
        let Some(secret) = &pull.pull_secret else {
            continue;
        };
        let key = (secret.namespace.clone(), secret.name.clone());
        if !read.contains_key(&key) {
            let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(client.clone(), &key.0);
            let auth = match api.get_opt(&key.1).await {
                Ok(Some(s)) => bytecode::registry_auth_of(&s),
                Ok(None) => Err("does not exist".to_owned()),
                Err(kube::Error::Api(e)) if e.code == 403 => Err(format!(
                    "cannot be read: the agent may not get Secrets in namespace {} ({})",
                    key.0, e.message
                )),
                Err(e) => Err(format!("cannot be read: {e}")),
            };
            read.insert(key.clone(), auth);
        }
        match &read[&key] {
            Ok(auth) => pull.auth = Some(auth.clone()),
            Err(why) => {
                p.source = Source::Failed(crate::error::ObjectError::new(
                    crate::error::Reason::BytecodeUnavailable,
                    format!("imagePullSecret {}/{} {why}", key.0, key.1),
                ));
            }
        }
    }
}

/// Objects left as they are this pass (their ConfigMap is not listed yet), by name, with uid.
pub type Held = BTreeMap<String, Option<String>>;

/// Reads the bytecode files (blocking I/O: run it on the blocking pool) and splits the plan into
/// the objects to reconcile and the ones to hold. Urls and images are fetched in parallel, each
/// under its own time bound; the pass waits for them up to the fetcher's `pass_wait` only.
pub fn materialize(
    planned: Vec<Planned>,
    bytecode_dirs: &[PathBuf],
    fetcher: &crate::bytecode::Fetcher,
) -> (Vec<DesiredObject>, Held) {
    let mut desired = Vec::with_capacity(planned.len());
    let mut held = Held::new();
    let mut remote = Batch::new(fetcher);
    let dirs = BytecodeDirs::cluster(bytecode_dirs);
    for p in planned {
        let Some(bytecode) = remote.bytecode(&p.name, &p.spec, p.source, &dirs) else {
            held.insert(p.name, p.uid);
            continue;
        };
        desired.push(DesiredObject {
            name: p.name,
            uid: p.uid,
            generation: p.generation,
            spec: p.spec,
            bytecode,
        });
    }
    remote.resolve(desired.iter_mut());
    (desired, held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Reason;

    fn entry(yaml: &str, deleting: bool) -> ObjectEntry {
        ObjectEntry {
            uid: Some("u".into()),
            generation: 1,
            deleting,
            spec: serde_yaml::from_str(yaml).expect("spec"),
        }
    }

    fn objects() -> BTreeMap<String, ObjectEntry> {
        [
            ("all", entry("bytecode: {path: a.o}\nprograms: [{name: p}]", false)),
            (
                "edge",
                entry(
                    "nodeSelector: {matchLabels: {role: edge}}\nbytecode: {configMap: {namespace: ns, name: cm, key: k}}\nprograms: [{name: p}]",
                    false,
                ),
            ),
            (
                "core",
                entry(
                    "nodeSelector: {matchExpressions: [{key: role, operator: NotIn, values: [edge]}]}\nbytecode: {path: c.o}\nprograms: [{name: p}]",
                    false,
                ),
            ),
            ("gone", entry("bytecode: {path: g.o}\nprograms: [{name: p}]", true)),
            (
                "broken",
                entry(
                    "nodeSelector: {matchExpressions: [{key: role, operator: Equals}]}\nbytecode: {path: b.o}\nprograms: [{name: p}]",
                    false,
                ),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn names(selected: &[(&String, &ObjectEntry)]) -> Vec<String> {
        selected.iter().map(|(n, _)| (*n).clone()).collect()
    }

    #[test]
    fn selection_follows_labels_and_skips_deletions() {
        let objects = objects();
        let edge = BTreeMap::from([("role".to_owned(), "edge".to_owned())]);
        assert_eq!(names(&select(&objects, &edge)), ["all", "edge"]);
        assert_eq!(names(&select(&objects, &BTreeMap::new())), ["all", "core"]);
        let selected = select(&objects, &edge);
        assert_eq!(
            configmaps_of(&selected).into_iter().collect::<Vec<_>>(),
            [ConfigMapRef {
                namespace: "ns".into(),
                name: "cm".into()
            }]
        );
        assert!(configmaps_of(&select(&objects, &BTreeMap::new())).is_empty());
    }

    #[test]
    fn objects_whose_requirements_the_kernel_fails_are_unsupported_not_selected() {
        let mut objects = objects();
        objects.insert(
            "old-kernels".into(),
            entry(
                "bytecode: {path: o.o}\nprograms: [{name: p}]\nrequires: {kernel: {max: '5.15'}}",
                false,
            ),
        );
        objects.insert(
            "needs-fentry".into(),
            entry(
                "bytecode: {path: f.o}\nprograms: [{name: p}]\nrequires: {btf: true, attachTypes: [fentry]}",
                false,
            ),
        );
        let caps = NodeCapabilities {
            kernel: "6.18.44".into(),
            btf: true,
            program_types: vec![],
            attach_types: vec![bpfpin_crds::AttachType::Fentry],
        };
        let selected = select(&objects, &BTreeMap::new());
        assert_eq!(selected.len(), 4);
        let (runnable, unsupported) = gate(selected.clone(), Some(&caps));
        assert_eq!(names(&runnable), ["all", "core", "needs-fentry"]);
        assert_eq!(unsupported.len(), 1);
        assert_eq!(unsupported[0].name, "old-kernels");
        assert_eq!(unsupported[0].phase, ObjectPhase::Unsupported);
        assert_eq!(unsupported[0].reason.as_deref(), Some("Unsupported"));
        assert_eq!(
            unsupported[0].message.as_deref(),
            Some("kernel 6.18.44 is newer than spec.requires.kernel.max 5.15")
        );
        let no_fentry = NodeCapabilities {
            attach_types: vec![],
            ..caps
        };
        let (runnable, unsupported) = gate(selected.clone(), Some(&no_fentry));
        assert_eq!(names(&runnable), ["all", "core"]);
        assert_eq!(unsupported.len(), 2);
        // Without capabilities (a stand-in core) nothing is gated.
        assert_eq!(gate(selected, None).0.len(), 4);
    }

    /// A server on loopback: `/good` answers `body`, anything else is never answered.
    fn server(body: &'static [u8]) -> u16 {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut head = [0u8; 1024];
                    let n = stream.read(&mut head).unwrap_or(0);
                    if head[..n].starts_with(b"GET /good ") {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(body);
                    } else {
                        std::thread::sleep(std::time::Duration::from_secs(30));
                    }
                });
            }
        });
        port
    }

    #[test]
    fn a_download_that_hangs_holds_no_other_object() {
        const BODY: &[u8] = b"elf";
        let port = server(BODY);
        let url = |p: &str| format!("http://127.0.0.1:{port}/{p}");
        let planned = |name: &str, source: Source| Planned {
            name: name.into(),
            uid: None,
            generation: 1,
            spec: serde_yaml::from_str("bytecode: {url: x}\nprograms: [{name: p}]").expect("spec"),
            source,
        };
        let fetcher = crate::bytecode::Fetcher {
            pass_wait: Some(std::time::Duration::from_millis(300)),
            deadline: std::time::Duration::from_secs(20),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let (desired, _) = materialize(
            vec![
                planned("slow", Source::Url(url("slow"), Some("1".repeat(64)))),
                planned(
                    "good",
                    Source::Url(url("good"), Some(crate::pin::desired::sha256_hex(BODY))),
                ),
                planned("cm", Source::Bytes(b"cm".to_vec())),
            ],
            &[],
            &fetcher,
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let by_name = |n: &str| &desired.iter().find(|d| d.name == n).expect(n).bytecode;
        assert_eq!(by_name("good"), &Ok(BODY.to_vec()));
        assert_eq!(by_name("cm"), &Ok(b"cm".to_vec()));
        let slow = by_name("slow").as_ref().expect_err("still downloading");
        assert_eq!(slow.reason, Reason::BytecodeUnavailable);
        assert!(
            slow.message
                .starts_with(&format!("still downloading {}", url("slow"))),
            "{}",
            slow.message
        );
        assert_eq!(
            fetcher.downloads.running(),
            1,
            "it goes on in the background"
        );
    }

    #[test]
    fn objects_waiting_for_their_configmap_are_held() {
        let objects = objects();
        let edge = BTreeMap::from([("role".to_owned(), "edge".to_owned())]);
        let planned = plan(&select(&objects, &edge), &ConfigMapCache::default());
        let (desired, held) = materialize(
            planned,
            &[PathBuf::from("/nonexistent")],
            &crate::bytecode::Fetcher::default(),
        );
        assert_eq!(
            held,
            Held::from([("edge".to_owned(), Some("u".to_owned()))])
        );
        assert_eq!(desired.len(), 1);
        assert_eq!(desired[0].name, "all");
        assert_eq!(
            desired[0].bytecode.as_ref().expect_err("fails").reason,
            Reason::BytecodeUnavailable
        );
    }
}
