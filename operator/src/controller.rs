//! The `BpfObject` controller: `reconcile` wraps `kube::runtime::finalizer`; `apply` aggregates
//! node reports into the status, `cleanup` holds the `bpfpin.io/unpin` finalizer until every live
//! node has unpinned the object.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bpfpin_crds::{BpfNodeState, BpfObject, BpfObjectStatus};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};

use crate::aggregate::{self, Input, NodeInfo};
use crate::cleanup;
use crate::error::Error;
use crate::events::{self, Notice};
use crate::messages;
use crate::metrics::Metrics;
use crate::node_report::{Heartbeats, now_seconds};
use crate::watches::{self, CacheSync, NodeMeta, Resolver};

/// The finalizer on every `BpfObject`.
pub const FINALIZER: &str = "bpfpin.io/unpin";
/// Server-side apply field manager of `status`, and the Events' reporting controller.
pub const FIELD_MANAGER: &str = "bpfpin-operator";
/// Reconcile again after this long without any event, in case one was missed.
const RESYNC: Duration = Duration::from_secs(300);
/// Retry a failed reconcile after this long.
const RETRY: Duration = Duration::from_secs(10);

/// Settings the reconciler reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// A node whose agent's heartbeat is older than this is not live.
    pub stale_after: Duration,
    /// At most one reconcile of an object per this interval for node reports (the first at once).
    pub debounce: Duration,
    /// Watch events per second that progress-only status writes may cause, summed over the
    /// objects rolling out (see [`progress_interval`]); 0: one per object per second at most.
    pub progress_budget: u32,
    /// Reconciles that may run at once (0: no limit): bounds the API connections the client keeps.
    pub concurrency: u16,
    /// Where the agents' heartbeat Leases are (the `--lease-namespace`).
    pub lease_namespace: String,
}

/// The caches the reconciler reads.
#[derive(Clone)]
pub struct Stores {
    /// `BpfObject`s (the controller's own store).
    pub objects: Store<BpfObject>,
    pub node_states: Store<BpfNodeState>,
    /// Nodes (metadata only).
    pub nodes: Store<NodeMeta>,
    /// The agents' heartbeats, by node.
    pub heartbeats: Heartbeats,
    /// Whether all of them hold a complete list.
    pub sync: CacheSync,
}

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    pub client: Client,
    /// Who publishes Events on `BpfObject`s.
    pub reporter: Reporter,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub stores: Stores,
    /// For each object being deleted (by uid), the nodes its last "waiting" event named, so the
    /// event is published only when that set changes.
    waiting: Mutex<HashMap<String, Vec<String>>>,
    /// When each object's status was last written (by name), and whether it was still rolling
    /// out then, to coalesce progress-only writes.
    last_write: Mutex<HashMap<String, Written>>,
}

/// The last status write of one object.
#[derive(Debug, Clone, Copy)]
struct Written {
    at: std::time::Instant,
    /// Some selected node was neither Ready nor failed: progress writes may follow.
    rolling_out: bool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    async fn publish(&self, obj: &BpfObject, notice: Notice) {
        let event = Event {
            type_: notice.type_,
            reason: notice.reason.clone(),
            note: Some(notice.note),
            action: notice.action.into(),
            secondary: None,
        };
        // A Recorder folds events with the same reason into a series that keeps the first note
        // ("waiting for n1, n2" would stay when only n2 is left); events are only published on
        // transitions here, so each one gets a fresh Recorder and is its own Event.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        match recorder.publish(&event, &obj.object_ref(&())).await {
            Ok(()) => self.metrics.event(),
            Err(error) => tracing::warn!(
                object = %obj.name_any(),
                reason = %notice.reason,
                %error,
                "publishing an event"
            ),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reconciles one `BpfObject`.
pub async fn reconcile(obj: Arc<BpfObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile();
    // Before the caches are complete, "no node state" would read as "pending" and be written.
    ctx.stores.sync.wait().await;
    let api: Api<BpfObject> = Api::all(ctx.client.clone());
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(&obj, &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(&obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// What to do after a failed reconcile.
pub fn error_policy(obj: Arc<BpfObject>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Some(retry) = error.still_pinned_retry() {
        return Action::requeue(retry);
    }
    ctx.metrics.reconcile_error(error.metric_label());
    tracing::warn!(object = %obj.name_any(), %error, "reconcile failed");
    Action::requeue(RETRY)
}

/// Writes the aggregated status when it differs from the current one.
async fn apply(obj: &BpfObject, ctx: &Context) -> Result<Action, Error> {
    let name = obj.name_any();
    let generation = obj.metadata.generation.unwrap_or_default();
    let now = now_seconds();
    let nodes = ctx.stores.nodes.state();
    let no_labels = BTreeMap::new();
    let input = Input {
        name: &name,
        uid: obj.metadata.uid.as_deref(),
        generation,
        selector: obj.spec.node_selector.as_ref(),
        now,
        stale_after: ctx.config.stale_after,
        requires: obj.spec.requires.as_ref(),
    };
    let aggregate = aggregate::aggregate(
        &input,
        nodes.iter().filter_map(|n| {
            Some(NodeInfo {
                name: n.metadata.name.as_deref()?,
                labels: n.metadata.labels.as_ref().unwrap_or(&no_labels),
            })
        }),
        |node| ctx.stores.node_states.get(&ObjectRef::new(node)),
        |node| ctx.stores.heartbeats.get(node),
    );
    let old = obj.status.as_ref();
    let status = aggregate.status(old, now);
    if old == Some(&status) {
        tracing::debug!(object = %name, generation, "status unchanged");
        return Ok(Action::requeue(RESYNC));
    }
    // Progress alone ("3/10 nodes", ...) is written at most once per progress interval per
    // object: each write goes to every agent's watch (they watch every BpfObject, status
    // included), so at scale these writes dominate what the API server sends. Anything a user
    // acts on (Ready, failures, a new generation, the selection) is written at once.
    if let Some(old) = old
        && progress_only(old, &status)
    {
        let (last, rollouts) = {
            let written = ctx
                .last_write
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let rollouts = written.values().filter(|w| w.rolling_out).count();
            (written.get(&name).map(|w| w.at), rollouts)
        };
        let every = progress_interval(nodes.len(), rollouts, ctx.config.progress_budget);
        if let Some(wait) = last.and_then(|t| every.checked_sub(t.elapsed()))
            && !wait.is_zero()
        {
            tracing::debug!(object = %name, generation, ?wait, "coalescing a progress-only status write");
            return Ok(Action::requeue(wait));
        }
    }

    let patch = serde_json::json!({
        "apiVersion": BpfObject::api_version(&()),
        "kind": BpfObject::kind(&()),
        "status": status,
    });
    Api::<BpfObject>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            object: name.clone(),
            source,
        })?;
    ctx.metrics.status_patch();
    let written = Written {
        at: std::time::Instant::now(),
        rolling_out: rolling_out(&status),
    };
    ctx.last_write
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(name.clone(), written);
    log_changes(&name, generation, old, &status);
    for notice in events::status_events(old, &status) {
        ctx.publish(obj, notice).await;
    }
    Ok(Action::requeue(RESYNC))
}

/// At most one progress-only status write per object per this interval.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Progress is written at least this often while an object rolls out, whatever the fan-out.
const PROGRESS_MAX: Duration = Duration::from_secs(30);

/// The least time between two progress-only writes of one object. Each write is one watch
/// event for each of the `agents` (one per Node); with `rollouts` objects rolling out at once,
/// the interval grows so that their progress writes together cause at most `budget` events per
/// second, between [`PROGRESS_INTERVAL`] and [`PROGRESS_MAX`]. `budget` 0: [`PROGRESS_INTERVAL`].
///
/// Why this and not a metadata-only watch in the agents: a metadata watch still delivers one
/// event per status write to every agent (only smaller), and costs every agent a GET per spec
/// change; fewer writes cut the events, the bytes and the etcd writes alike, and leave the
/// agent↔operator contract as it is. The first status, Ready and failures are never delayed.
pub fn progress_interval(agents: usize, rollouts: usize, budget: u32) -> Duration {
    if budget == 0 {
        return PROGRESS_INTERVAL;
    }
    let events_per_round = agents as f64 * rollouts.max(1) as f64;
    Duration::from_secs_f64(events_per_round / f64::from(budget))
        .clamp(PROGRESS_INTERVAL, PROGRESS_MAX)
}

/// Whether some selected node of `status` is neither Ready nor failed (progress writes follow).
fn rolling_out(status: &BpfObjectStatus) -> bool {
    status
        .nodes
        .as_ref()
        .is_some_and(|n| n.ready + n.failed < n.selected)
}

/// Whether `new` differs from `old` only in progress: same generation, same condition statuses
/// and reasons, same failures.
fn progress_only(old: &BpfObjectStatus, new: &BpfObjectStatus) -> bool {
    let key = |s: &BpfObjectStatus| {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect::<Vec<_>>()
    };
    old.observed_generation == new.observed_generation
        && key(old) == key(new)
        && old.failures == new.failures
        && old.nodes.as_ref().map(|n| (n.selected, n.failed))
            == new.nodes.as_ref().map(|n| (n.selected, n.failed))
}

/// One log event for the status write, and one per node whose failure is new.
fn log_changes(name: &str, generation: i64, old: Option<&BpfObjectStatus>, new: &BpfObjectStatus) {
    let ready = crate::conditions::find(&new.conditions, crate::conditions::READY);
    tracing::info!(
        object = %name,
        generation,
        nodes_ready = new.nodes_ready.as_deref().unwrap_or_default(),
        ready = ready.map(|c| c.status.as_str()).unwrap_or_default(),
        reason = ready.map(|c| c.reason.as_str()).unwrap_or_default(),
        "status updated"
    );
    for f in &new.failures {
        if !old.is_some_and(|o| o.failures.contains(f)) {
            tracing::warn!(
                object = %name,
                node = %f.node,
                reason = %f.reason,
                detail = %f.message,
                "failed on node"
            );
        }
    }
}

/// Lets the finalizer go once no live node lists the object; until then, keeps it (by returning
/// `StillPinned`) and looks again when the first blocking node would turn stale.
async fn cleanup(obj: &BpfObject, ctx: &Context) -> Result<Action, Error> {
    let name = obj.name_any();
    let uid = obj.metadata.uid.as_deref();
    let now = now_seconds();
    let states = ctx.stores.node_states.state();
    let decision = cleanup::decide(
        &name,
        uid,
        states.iter().map(AsRef::as_ref),
        |node| ctx.stores.nodes.get(&ObjectRef::new(node)).is_some(),
        |node| ctx.stores.heartbeats.get(node),
        now,
        ctx.config.stale_after,
    );
    let key = uid.unwrap_or(&name).to_owned();
    if decision.released() {
        ctx.waiting().remove(&key);
        ctx.last_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name);
        tracing::info!(
            object = %name,
            not_waited_for = %decision.ignored_text(),
            "unpinned on every live node; removing the finalizer"
        );
        ctx.publish(obj, events::finalizer_released(&decision))
            .await;
        return Ok(Action::await_change());
    }

    let nodes = decision.blocking_nodes();
    let previous = ctx.waiting().insert(key, nodes.clone());
    // One log line and one Event when the wait starts or a node joins it, none as nodes leave it:
    // a deletion on 1,000 nodes shrinks the set up to 1,000 times, and a line per blocking node
    // per change was O(nodes²) lines per object (38 MB of log in two minutes of the fleet bench).
    if grew(previous.as_deref(), &nodes) {
        tracing::info!(
            object = %name,
            nodes = nodes.len(),
            blocking = %messages::names(&nodes),
            "waiting for nodes to unpin"
        );
        ctx.publish(
            obj,
            events::finalizer_held(&decision, ctx.config.stale_after),
        )
        .await;
    } else if previous.as_ref() != Some(&nodes) {
        tracing::debug!(object = %name, nodes = nodes.len(), "still waiting for nodes to unpin");
    }
    Err(Error::StillPinned {
        object: name,
        nodes: messages::names(&nodes),
        retry_in: decision.requeue_after(now).unwrap_or(RETRY),
    })
}

/// Whether `now` (the nodes blocking a deletion) has a node `before` did not have, or is the first
/// set seen for the object.
fn grew(before: Option<&[String]>, now: &[String]) -> bool {
    let Some(before) = before else {
        return true;
    };
    let before: std::collections::HashSet<&str> = before.iter().map(String::as_str).collect();
    now.iter().any(|n| !before.contains(n.as_str()))
}

/// Runs the controller until `stop` resolves and the running reconciles finish.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    instance: String,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let sync = CacheSync::default();
    let admin = metrics.admin().clone();
    let (objects, objects_writer) = reflector::store::<BpfObject>();
    let (node_states, node_states_writer) = reflector::store::<BpfNodeState>();
    let (nodes, nodes_writer) = reflector::store::<NodeMeta>();
    let stores = Stores {
        objects: objects.clone(),
        node_states,
        nodes,
        heartbeats: Heartbeats::default(),
        sync: sync.clone(),
    };
    let controller = Controller::for_stream(
        watches::objects(Api::all(client.clone()), objects_writer, sync.clone()),
        objects,
    )
    // No debounce in the controller's scheduler: it would delay every first reconcile, and push
    // a pending one back on every node report. Node reports are throttled instead (throttle.rs).
    // A bounded number of reconciles at once: each may hold a connection to the API server, and
    // the client's pool keeps every connection it opened (finding 8 in docs/performance.md).
    .with_config(
        controller::Config::default()
            .debounce(Duration::ZERO)
            .concurrency(config.concurrency),
    );
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let resolver = Resolver {
        objects: stores.objects.clone(),
        nodes: stores.nodes.clone(),
        tx,
    };
    let background = [
        tokio::spawn(watches::node_states(
            Api::all(client.clone()),
            node_states_writer,
            Api::namespaced(client.clone(), &config.lease_namespace),
            stores.heartbeats.clone(),
            resolver.clone(),
            config.stale_after,
            sync.clone(),
        )),
        tokio::spawn(watches::nodes(
            Api::<NodeMeta>::all(client.clone()),
            nodes_writer,
            resolver,
            sync.clone(),
        )),
        tokio::spawn(async move {
            sync.wait().await;
            tracing::info!("caches synced: BpfObjects, BpfNodeStates, heartbeat Leases, Nodes");
            admin.set_ready(true);
        }),
    ];

    let ctx = Arc::new(Context {
        client,
        reporter: Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance),
        },
        config,
        metrics,
        stores,
        waiting: Mutex::default(),
        last_write: Mutex::default(),
    });

    tracing::info!("controller started");
    controller
        .reconcile_on(crate::throttle::spawn(rx, ctx.config.debounce))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::trace!(object = %obj.name, "reconciled"),
                // Logged by error_policy, with the object.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(object = %obj.name, "requested object is gone");
                }
                Err(error) => tracing::warn!(%error, "controller"),
            }
        })
        .await;
    for task in background {
        task.abort();
    }
    tracing::info!("controller stopped");
}

#[cfg(test)]
mod progress_tests {
    use super::*;
    use bpfpin_crds::NodeCounts;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(ready: i32, ready_cond: &str, reason: &str) -> BpfObjectStatus {
        BpfObjectStatus {
            observed_generation: Some(1),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready_cond.into(),
                reason: reason.into(),
                message: format!("{ready}/3"),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: Some(1),
            }],
            nodes: Some(NodeCounts {
                selected: 3,
                ready,
                failed: 0,
                ..Default::default()
            }),
            nodes_ready: Some(format!("{ready}/3")),
            failures: vec![],
            ..Default::default()
        }
    }

    #[test]
    fn only_progress_is_coalesced() {
        let one = status(1, "False", "Progressing");
        assert!(progress_only(&one, &status(2, "False", "Progressing")));
        assert!(
            !progress_only(&one, &status(3, "True", "Pinned")),
            "Ready is written at once"
        );
        let mut new_gen = status(1, "False", "Progressing");
        new_gen.observed_generation = Some(2);
        assert!(!progress_only(&one, &new_gen));
        let mut failed = status(1, "False", "Progressing");
        failed.nodes.as_mut().expect("nodes").failed = 1;
        assert!(!progress_only(&one, &failed));
    }

    #[test]
    fn the_progress_interval_bounds_the_fan_out_of_all_rollouts() {
        // No budget: one progress write per object per second, as before.
        assert_eq!(progress_interval(5000, 500, 0), PROGRESS_INTERVAL);
        // Few agents: the one-second floor.
        assert_eq!(progress_interval(3, 1, 2000), PROGRESS_INTERVAL);
        // 200 agents x 30 rollouts = 6,000 events per round, at 2,000 events/s: 3 s.
        assert_eq!(progress_interval(200, 30, 2000), Duration::from_secs(3));
        // No rollout recorded yet counts as one.
        assert_eq!(progress_interval(4000, 0, 2000), Duration::from_secs(2));
        // Huge fleets still see progress every PROGRESS_MAX.
        assert_eq!(progress_interval(5000, 500, 2000), PROGRESS_MAX);
    }

    #[test]
    fn an_object_rolls_out_until_every_selected_node_is_ready_or_failed() {
        assert!(rolling_out(&status(1, "False", "Progressing")));
        assert!(!rolling_out(&status(3, "True", "Pinned")));
        let mut failed = status(2, "False", "Failed");
        failed.nodes.as_mut().expect("nodes").failed = 1;
        assert!(!rolling_out(&failed));
    }
}

#[cfg(test)]
mod wait_tests {
    use super::grew;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_wait_is_told_when_it_starts_and_when_a_node_joins_it_not_as_nodes_leave() {
        assert!(grew(None, &v(&["n1", "n2"])), "the wait starts");
        assert!(!grew(Some(&v(&["n1", "n2"])), &v(&["n2"])), "n1 unpinned");
        assert!(
            !grew(Some(&v(&["n1", "n2"])), &v(&["n1", "n2"])),
            "unchanged"
        );
        assert!(grew(Some(&v(&["n2"])), &v(&["n2", "n3"])), "n3 joined");
        assert!(
            grew(Some(&v(&["n1"])), &v(&["n2"])),
            "one left, another joined"
        );
    }
}
