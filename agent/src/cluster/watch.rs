//! The watches on this node's `Node` and on every `BpfObject`, and the in-memory state they feed.
//! Each watch keeps only what a pass needs (labels; uid, generation, deletion and spec), so writes
//! that change nothing the agent reads (status, finalizers, node heartbeats) wake nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bpfpin_crds::{BpfObject, BpfObjectSpec};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::Instrument;

use super::index::{Index, IndexEvent};
use super::metrics::{Metrics, Watched};
use super::trigger::Trigger;

/// What the agent knows of its `Node`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeEntry {
    /// `metadata.uid`, for the owner reference of the `BpfNodeState`.
    pub uid: Option<String>,
    /// `metadata.labels`, for node selectors.
    pub labels: BTreeMap<String, String>,
}

/// What the agent knows of one `BpfObject`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectEntry {
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.generation`.
    pub generation: i64,
    /// `metadata.deletionTimestamp` is set: unpin it and stop reporting it.
    pub deleting: bool,
    /// The whole spec: every field of it can change what a pass pins.
    pub spec: BpfObjectSpec,
}

/// The part of a `Node` the agent keeps.
pub fn node_entry(node: &PartialObjectMeta<Node>) -> (String, NodeEntry) {
    (
        node.name_any(),
        NodeEntry {
            uid: node.metadata.uid.clone(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
        },
    )
}

/// The part of a `BpfObject` the agent keeps.
pub fn object_entry(obj: &BpfObject) -> (String, ObjectEntry) {
    (
        obj.name_any(),
        ObjectEntry {
            uid: obj.metadata.uid.clone(),
            generation: obj.metadata.generation.unwrap_or(0),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            spec: obj.spec.clone(),
        },
    )
}

/// What the Node and `BpfObject` watches feed; a pass reads a snapshot of it (the ConfigMaps are
/// in [`super::configmaps::SharedConfigMaps`]).
#[derive(Debug, Default)]
pub struct Inputs {
    /// This node (at most one entry: the watch selects it by name).
    pub node: Index<NodeEntry>,
    /// Every `BpfObject`.
    pub objects: Index<ObjectEntry>,
}

/// [`Inputs`] shared between the watch tasks and the pass loop. Held only briefly, never across
/// an await.
#[derive(Debug, Clone, Default)]
pub struct SharedInputs(Arc<Mutex<Inputs>>);

impl SharedInputs {
    /// Locks the inputs (a panicked holder leaves consistent data: every update is one call).
    pub fn lock(&self) -> MutexGuard<'_, Inputs> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Watches this node's `Node` (metadata only, selected by name) until aborted.
pub fn spawn_node_watch(
    client: Client,
    node_name: &str,
    inputs: SharedInputs,
    trigger: Trigger,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<PartialObjectMeta<Node>> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let stream = watcher(api, config).default_backoff();
    let sink = Sink {
        kind: Watched::Node,
        inputs,
        trigger,
        metrics,
    };
    tokio::spawn(
        feed(stream, sink, |i| &mut i.node, node_entry).instrument(tracing::Span::current()),
    )
}

/// Watches every `BpfObject` until aborted.
pub fn spawn_object_watch(
    client: Client,
    inputs: SharedInputs,
    trigger: Trigger,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<BpfObject> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let sink = Sink {
        kind: Watched::Object,
        inputs,
        trigger,
        metrics,
    };
    tokio::spawn(
        feed(stream, sink, |i| &mut i.objects, object_entry).instrument(tracing::Span::current()),
    )
}

/// Where a watch's events go.
struct Sink {
    kind: Watched,
    inputs: SharedInputs,
    trigger: Trigger,
    metrics: Arc<Metrics>,
}

async fn feed<K, V, S>(
    stream: S,
    sink: Sink,
    index: fn(&mut Inputs) -> &mut Index<V>,
    project: fn(&K) -> (String, V),
) where
    S: futures::Stream<Item = watcher::Result<watcher::Event<K>>>,
    V: PartialEq,
{
    let Sink {
        kind: watched,
        inputs,
        trigger,
        metrics,
    } = sink;
    let kind = match watched {
        Watched::Node => "Node",
        Watched::Object => "BpfObject",
    };
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                let done = matches!(event, watcher::Event::InitDone);
                let live = matches!(event, watcher::Event::Apply(_) | watcher::Event::Delete(_));
                let changed =
                    index(&mut inputs.lock()).apply(IndexEvent::from_watch(event, project));
                if live {
                    metrics.count_event(watched, changed);
                }
                if done {
                    if failing {
                        tracing::info!(kind, "watch recovered");
                        failing = false;
                    } else {
                        tracing::debug!(kind, "listed");
                    }
                }
                if changed {
                    trigger.poke();
                }
            }
            Err(error) => {
                // The index keeps the last complete list: pins stay as they are meanwhile.
                failing = true;
                tracing::warn!(kind, %error, "watch failed; keeping the last known state and retrying");
            }
        }
    }
}
