//! The secondary watches: `BpfNodeState`s, the agents' heartbeat Leases (the label selector of
//! [`bpfpin_crds::heartbeat`], one namespace) and Nodes (metadata only), each reflected
//! into what the reconciler reads, and turned into reconcile requests through the indexes of
//! [`crate::triggers`]. No polling: the only timer is an in-memory check for agents whose
//! heartbeat just went stale.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bpfpin_crds::heartbeat::{self, lease_selector};
use bpfpin_crds::{BpfNodeState, BpfObject};
use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

use crate::node_report::Heartbeats;
use crate::triggers::{self, NodeIndex, NodeStateIndex, Trigger};

/// How often agents' liveness is re-judged in memory.
const LIVENESS_TICK: Duration = Duration::from_secs(1);

/// Node metadata, as reflected.
pub type NodeMeta = PartialObjectMeta<Node>;

/// The caches whose first list the reconciler waits for (bits of [`CacheSync`]).
#[derive(Debug, Clone, Copy)]
pub enum Cache {
    Objects = 1,
    NodeStates = 2,
    Nodes = 4,
    /// The agents' heartbeat Leases. Until they are listed every agent would look dead.
    Heartbeats = 8,
}

const ALL_CACHES: u8 =
    Cache::Objects as u8 | Cache::NodeStates as u8 | Cache::Nodes as u8 | Cache::Heartbeats as u8;

/// Whether every cache has completed its first list. `Store::wait_until_ready` cannot be shared:
/// its oneshot wakes only the last task that polled it (the controller's own runner waits on the
/// `BpfObject` store), so concurrent waiters could sleep forever. This is a watch channel, which
/// wakes everyone.
#[derive(Debug, Clone)]
pub struct CacheSync(Arc<watch::Sender<u8>>);

impl Default for CacheSync {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl CacheSync {
    /// `cache` completed a list.
    pub fn mark(&self, cache: Cache) {
        self.0.send_if_modified(|synced| {
            let before = *synced;
            *synced |= cache as u8;
            before != *synced
        });
    }

    /// Resolves once every cache completed its first list.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // Err only if the sender is dropped, and `self` holds it.
        let _ = rx.wait_for(|synced| *synced == ALL_CACHES).await;
    }
}

/// The controller's `BpfObject` watch, reflected into `writer`. Only spec (generation) and
/// finalizer changes pass: the operator's own status writes do not wake it again.
pub fn objects(
    api: Api<BpfObject>,
    writer: Writer<BpfObject>,
    sync: CacheSync,
) -> impl Stream<Item = Result<BpfObject, watcher::Error>> + Send + 'static {
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .map_ok(|event| event.modify(project_object))
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                sync.mark(Cache::Objects);
            }
        })
        .touched_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            Default::default(),
        )
}

/// Turns triggers into reconcile requests for the controller.
#[derive(Clone)]
pub struct Resolver {
    /// The controller's store of `BpfObject`s.
    pub objects: Store<BpfObject>,
    pub nodes: Store<NodeMeta>,
    /// The controller's `reconcile_on` input.
    pub tx: UnboundedSender<ObjectRef<BpfObject>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    fn send(&self, trigger: &Trigger, cause: &str) {
        if trigger.is_empty() {
            return;
        }
        let names = triggers::resolve(trigger, &self.objects.state(), |node| {
            self.nodes
                .get(&ObjectRef::new(node))
                .map(|n| n.labels().clone())
        });
        for name in names {
            tracing::debug!(object = %name, cause, "reconcile requested");
            // The receiver is gone only when the controller stopped.
            let _ = self.tx.unbounded_send(ObjectRef::new(&name));
        }
    }
}

/// Keeps of a `BpfNodeState` only what the operator reads: per entry the object's name, uid,
/// generation, phase, reason and message. Pin paths, program ids and managedFields are most of an
/// entry's bytes, and the cache holds one entry per (node, object). (At 10 nodes × 300 objects
/// the operator's RSS did not change with it: see docs/performance.md, fix 5.)
pub fn project(state: &mut BpfNodeState) {
    state.metadata.managed_fields = None;
    state.metadata.annotations = None;
    state.metadata.labels = None;
    state.metadata.owner_references = None;
    if let Some(status) = &mut state.status {
        status.agent_version = None;
        status.root = None;
        for e in &mut status.objects {
            e.path = None;
            e.programs = Vec::new();
            e.maps = Vec::new();
            e.links = Vec::new();
        }
        status.objects.shrink_to_fit();
    }
}

/// Drops of a cached `BpfObject` what the operator never reads: `managedFields` (one entry per
/// writer, with the tree of every field it owns: the creator's, the finalizer's and the status
/// apply's) and kubectl's last-applied copy of the whole object. Status writes are server-side
/// applies and the finalizer patch tests only `finalizers`, so neither needs them.
pub fn project_object(obj: &mut BpfObject) {
    obj.metadata.managed_fields = None;
    if let Some(a) = &mut obj.metadata.annotations {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        if a.is_empty() {
            obj.metadata.annotations = None;
        }
    }
}

/// Watches `BpfNodeState`s into `writer` and the agents' heartbeat Leases (in `leases`' namespace)
/// into `heartbeats` (through the liveness index, which keeps them there), until dropped. One task for both, so that the index judging liveness sees
/// them in order.
pub async fn node_states(
    api: Api<BpfNodeState>,
    writer: Writer<BpfNodeState>,
    leases: Api<Lease>,
    heartbeats: Heartbeats,
    resolver: Resolver,
    stale_after: Duration,
    sync: CacheSync,
) {
    let mut index = NodeStateIndex::with_heartbeats(stale_after, heartbeats);
    let mut events = pin!(
        watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .map_ok(|event| event.modify(project))
            .reflect(writer)
    );
    let mut lease_events = pin!(
        watcher(
            leases,
            watcher::Config::default()
                .labels(&lease_selector())
                .any_semantic()
        )
        .default_backoff()
    );
    let mut tick = tokio::time::interval(LIVENESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let (trigger, cause) = tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => (match event {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                        index.apply(&s, Timestamp::now())
                    }
                    watcher::Event::Delete(s) => index.delete(&s.name_any()),
                    watcher::Event::Init => {
                        index.init();
                        Trigger::default()
                    }
                    watcher::Event::InitDone => {
                        sync.mark(Cache::NodeStates);
                        index.init_done()
                    }
                }, "BpfNodeState"),
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching BpfNodeStates");
                    (Trigger::default(), "")
                }
                None => return,
            },
            event = lease_events.next() => match event {
                Some(Ok(event)) => (match event {
                    watcher::Event::Apply(l) | watcher::Event::InitApply(l) => {
                        match heartbeat::holder(&l) {
                            Some((node, renewed)) => index.heartbeat(&node, renewed, Timestamp::now()),
                            None => Trigger::default(),
                        }
                    }
                    watcher::Event::Delete(l) => match heartbeat::holder(&l) {
                        Some((node, _)) => index.heartbeat(&node, None, Timestamp::now()),
                        None => Trigger::default(),
                    },
                    watcher::Event::Init => {
                        index.heartbeats_init();
                        Trigger::default()
                    }
                    watcher::Event::InitDone => {
                        let t = index.heartbeats_init_done(Timestamp::now());
                        sync.mark(Cache::Heartbeats);
                        t
                    }
                }, "heartbeat Lease"),
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching the agents' heartbeat Leases");
                    (Trigger::default(), "")
                }
                None => return,
            },
            _ = tick.tick() => (index.tick(Timestamp::now()), "heartbeat went stale"),
        };
        resolver.send(&trigger, cause);
    }
}

/// Watches Node metadata into `writer` until dropped.
pub async fn nodes(
    api: Api<NodeMeta>,
    writer: Writer<NodeMeta>,
    resolver: Resolver,
    sync: CacheSync,
) {
    let mut index = NodeIndex::default();
    let empty = BTreeMap::new();
    let mut events = pin!(
        watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(writer)
    );
    while let Some(event) = events.next().await {
        let trigger = match event {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                index.apply(&n.name_any(), n.metadata.labels.as_ref().unwrap_or(&empty))
            }
            Ok(watcher::Event::Delete(n)) => index.delete(&n.name_any()),
            Ok(watcher::Event::Init) => {
                index.init();
                Trigger::default()
            }
            Ok(watcher::Event::InitDone) => {
                sync.mark(Cache::Nodes);
                index.init_done()
            }
            Err(error) => {
                tracing::warn!(%error, "watching Nodes");
                Trigger::default()
            }
        };
        resolver.send(&trigger, "Node");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_keeps_what_the_operator_reads() {
        use bpfpin_crds::{
            BpfNodeStateSpec, BpfNodeStateStatus, NodeObjectState, ObjectPhase, PinnedProgram,
        };
        let entry = NodeObjectState {
            name: "a".into(),
            uid: Some("u".into()),
            generation: 3,
            phase: ObjectPhase::Failed,
            reason: Some("AttachFailed".into()),
            message: Some("no such interface".into()),
            path: Some("/sys/fs/bpf/bpfpin/a".into()),
            programs: vec![PinnedProgram {
                name: "p".into(),
                id: 7,
            }],
            maps: vec!["/sys/fs/bpf/bpfpin/a/maps/m".into()],
            links: vec!["/sys/fs/bpf/bpfpin/a/links/p/xdp-eth0".into()],
            pods: None,
        };
        let mut s = BpfNodeState::new(
            "n1",
            BpfNodeStateSpec {
                node_name: "n1".into(),
            },
        );
        s.metadata.managed_fields = Some(vec![Default::default()]);
        s.status = Some(BpfNodeStateStatus {
            agent_version: Some("0.1.0".into()),
            root: Some("/sys/fs/bpf/bpfpin".into()),
            pinned: 0,
            failed: 1,
            objects: vec![entry.clone()],
        });
        project(&mut s);
        let kept = &s.status.as_ref().expect("status").objects[0];
        assert_eq!(
            kept,
            &NodeObjectState {
                path: None,
                programs: vec![],
                maps: vec![],
                links: vec![],
                ..entry
            }
        );
        assert_eq!(s.metadata.managed_fields, None);
        assert_eq!(s.status.as_ref().map(|st| st.failed), Some(1));
        assert_eq!(s.metadata.name.as_deref(), Some("n1"));
    }

    #[test]
    fn object_projection_keeps_what_the_reconciler_reads() {
        let mut o: BpfObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "bpfpin.io/v1alpha1", "kind": "BpfObject",
            "metadata": {
                "name": "a", "uid": "u", "generation": 2, "resourceVersion": "9",
                "finalizers": ["bpfpin.io/unpin"],
                "labels": {"team": "x"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                    "note": "kept"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {"bytecode": {"path": "/b/a.o"}, "programs": [{"name": "p"}]},
            "status": {"observedGeneration": 2}
        }))
        .expect("object");
        let before = o.clone();
        project_object(&mut o);
        assert_eq!(o.metadata.managed_fields, None);
        assert_eq!(
            o.metadata.annotations,
            Some(BTreeMap::from([("note".into(), "kept".into())]))
        );
        assert_eq!(o.spec, before.spec);
        assert_eq!(o.status, before.status);
        assert_eq!(
            (
                o.metadata.uid,
                o.metadata.generation,
                o.metadata.finalizers,
                o.metadata.labels
            ),
            (
                before.metadata.uid,
                before.metadata.generation,
                before.metadata.finalizers,
                before.metadata.labels
            )
        );
    }

    #[tokio::test]
    async fn cache_sync_wakes_every_waiter() {
        let sync = CacheSync::default();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = sync.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        sync.mark(Cache::Objects);
        sync.mark(Cache::Nodes);
        sync.mark(Cache::Heartbeats);
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        sync.mark(Cache::NodeStates);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("woken")
                .expect("joined");
        }
        // Later waiters return at once.
        sync.wait().await;
    }
}
