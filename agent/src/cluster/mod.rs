//! Cluster mode: watch this node's `Node`, every `BpfObject` and the ConfigMaps their bytecode
//! comes from; reconcile on every change; report in this node's `BpfNodeState`.
//!
//! - Event-driven: a change wakes a pass at once, and changes that follow within a short debounce
//!   wait for one more pass (bursts coalesce); the only timers are the retry backoff of objects whose bytecode is unavailable or whose attach point
//!   is missing, and the heartbeat (a small Lease, [`heartbeat`]; the `BpfNodeState` is written
//!   only when something changed).
//! - Passes run on the blocking pool, one at a time, only once the Node and the `BpfObject`s have
//!   been listed completely. A failing watch keeps the last complete list, so an API server
//!   outage changes no pin.
//! - While a selected object names host interfaces by pattern or `primaryNodeInterface`, the
//!   kernel's link events ([`crate::link_events`]) wake a pass too: an interface that appears or
//!   goes is attached or unpinned without polling; for `primaryNodeInterface`, so does a default
//!   route added or deleted.
//! - Shutdown (SIGTERM/SIGINT) stops the watches and leaves every pin in place.

pub(crate) mod bytecode;
pub mod capabilities;
pub(crate) mod configmaps;
pub(crate) mod desired_set;
pub mod flags;
pub(crate) mod heartbeat;
pub(crate) mod index;
pub mod metrics;
pub(crate) mod node_state;
pub mod pods;
pub(crate) mod provenance;
pub(crate) mod trigger;
pub(crate) mod watch;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bpfpin_crds::{BpfNodeState, BpfNodeStateStatus};
use bpfpin_runtime::crd_check::{CrdCheckError, check_crds};
use kube::Client;
use kube::api::Api;
use tracing::Instrument;

use self::configmaps::{ConfigMapWatches, SharedConfigMaps};
use self::heartbeat::Heartbeat;
use self::metrics::Metrics;
use self::node_state::StatusWriter;
use self::trigger::Trigger;
use self::watch::SharedInputs;
use crate::backoff::{Retries, sleep_until};
use crate::pin::desired::DesiredObject;
use crate::pin::reconcile::{Action, PassReport, Reconciler};

/// Where bytecode files may be read from when no `--bytecode-dir` is given.
pub const DEFAULT_BYTECODE_DIR: &str = "/var/lib/bpfpin/bytecode";

/// Passes start at most this often while changes keep coming (the first one starts at once).
const DEBOUNCE: Duration = Duration::from_millis(100);
/// First retry of an object whose bytecode or attach point is unavailable; doubles up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_secs(5);
/// The longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What cluster mode needs besides the reconciler.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `Node` this agent serves.
    pub node_name: String,
    /// Folders `bytecode.path` may resolve into (empty: [`DEFAULT_BYTECODE_DIR`]).
    pub bytecode_dirs: Vec<PathBuf>,
    /// How often the heartbeat Lease is renewed, so the operator knows the agent lives.
    pub heartbeat_interval: Duration,
    /// The namespace of the heartbeat Lease (the operator's `--lease-namespace`).
    pub lease_namespace: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// Downloads `bytecode.url`.
    pub fetcher: crate::bytecode::Fetcher,
    /// Where the container runtime bind-mounts pod network namespaces (`networkNamespaces`).
    pub netns_dir: PathBuf,
    /// The cgroup v2 tree pod cgroups are found in (`--cgroup-dir`; `None`: the default).
    pub cgroup_dir: Option<PathBuf>,
    /// Label the Node with its kernel capabilities (`--label-node`).
    pub label_node: bool,
}

/// What cluster mode needs of the core: [`Reconciler`] in the agent; the fleet bench
/// (`e2e/scripts/bench --fleet`) runs many agents in one process with a stand-in that pins nothing, so
/// everything above this seam (watches, selection, planning, status writes, heartbeats) is the
/// real code.
pub trait Core: Send + 'static {
    /// The managed root, as reported in the `BpfNodeState`.
    fn root(&self) -> &Path;
    /// One pass; see [`Reconciler::reconcile`].
    fn reconcile(&mut self, desired: &[DesiredObject], hold: &BTreeSet<String>) -> PassReport;
    /// What the node's kernel can run ([`capabilities::probed`]); `None` gates nothing.
    fn capabilities(&self) -> Option<&'static bpfpin_crds::NodeCapabilities> {
        None
    }
}

impl Core for Reconciler {
    fn root(&self) -> &Path {
        self.layout().root()
    }
    fn reconcile(&mut self, desired: &[DesiredObject], hold: &BTreeSet<String>) -> PassReport {
        Reconciler::reconcile(self, desired, hold)
    }
    fn capabilities(&self) -> Option<&'static bpfpin_crds::NodeCapabilities> {
        Some(capabilities::probed())
    }
}

/// Runs cluster mode until SIGTERM/SIGINT. Pins stay in place when it returns.
pub async fn run(reconciler: Reconciler, config: ClusterConfig) -> anyhow::Result<()> {
    let span = tracing::info_span!("agent", node = %config.node_name);
    async move {
        // Before anything else: a SIGTERM during the first pass is a clean stop, not a kill.
        let stop = bpfpin_runtime::shutdown::Shutdown::install()
            .context("installing the SIGTERM and SIGINT handlers")?;
        let client = Client::try_default()
            .await
            .context("connecting to the API server (KUBECONFIG, ~/.kube/config or in-cluster)")?;
        let metrics = Arc::new(Metrics::default());
        // The capability probe loads a program of each type and parses the kernel's BTF (0.5-5 s
        // in a debug build): on the blocking pool, so Agent::new finds it done.
        let _ = tokio::task::spawn_blocking(capabilities::probed).await;
        run_with(client, reconciler, config, metrics, stop.requested()).await
    }
    .instrument(span)
    .await
}

/// Runs cluster mode with `core` until `shutdown` resolves: what [`run`] does after connecting,
/// for callers that bring their own client, metrics and stop signal (the fleet bench).
pub async fn run_with<C: Core>(
    client: Client,
    core: C,
    config: ClusterConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Agent::new(client, core, config, metrics)
        .run(shutdown)
        .await
}

/// Fails with a sentence when the CRDs are missing; other errors (the API server is down) are
/// only logged: the watches retry, and pins stay as they are meanwhile.
async fn check_crds_installed(client: &Client) -> anyhow::Result<()> {
    match check_crds(client, "bpfpin-agent").await {
        Err(missing @ CrdCheckError::NotInstalled { .. }) => Err(missing.into()),
        Err(CrdCheckError::Unknown { crd, source }) => {
            tracing::warn!(error = %source, crd, "cannot check the CRD yet; the watches will retry");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

struct Agent<C> {
    client: Client,
    config: ClusterConfig,
    /// `None` only while a pass runs on the blocking pool.
    reconciler: Option<C>,
    root: PathBuf,
    inputs: SharedInputs,
    configmap_cache: SharedConfigMaps,
    trigger: Trigger,
    wake: tokio::sync::mpsc::Receiver<()>,
    configmaps: ConfigMapWatches,
    retries: Retries,
    writer: StatusWriter,
    heartbeat: Heartbeat,
    metrics: Arc<Metrics>,
    /// The status after the last pass, and the Node uid it belongs to.
    status: Option<(BpfNodeStateStatus, String)>,
    /// The status an earlier run wrote, so objects held in the first pass (their ConfigMap is
    /// not listed yet) keep their entry instead of vanishing from it for a moment.
    earlier: Option<BpfNodeStateStatus>,
    /// Why the last pass could not run, so it is logged once, not on every event.
    waiting: Option<String>,
    /// When the last pass started (the debounce of the next one counts from it).
    last_pass: Option<std::time::Instant>,
    /// This node's kernel capabilities (`spec.requires` is judged with them).
    capabilities: Option<&'static bpfpin_crds::NodeCapabilities>,
    /// Events on a `BpfObject` whose running bytecode changed here.
    events: provenance::Events,
    /// This node's pods, watched once an object names `networkNamespaces`.
    pods: pods::PodWatch,
    /// The pod-link step after each pass.
    pod_attacher: Arc<std::sync::Mutex<pods::PodAttacher>>,
    /// The kernel's link events, listened to once an object names host interfaces by pattern
    /// or `primaryNodeInterface` (then its default route events too).
    links: crate::link_events::LinkWatch,
}

impl<C: Core> Agent<C> {
    fn new(
        client: Client,
        reconciler: C,
        mut config: ClusterConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        if config.bytecode_dirs.is_empty() {
            config
                .bytecode_dirs
                .push(PathBuf::from(DEFAULT_BYTECODE_DIR));
        }
        if let Some(addr) = config.metrics_addr {
            // Pinning matters more than metrics: a taken port is reported, not fatal (several
            // agents on one host, as in e2e, must each pass their own --metrics-addr).
            if let Err(error) = metrics.admin().serve(addr) {
                tracing::error!(
                    %addr, %error,
                    "cannot serve /healthz, /readyz and /metrics; continuing without them (use --metrics-addr HOST:0 or none)"
                );
            }
        }
        let (trigger, wake) = Trigger::new();
        {
            // A download that a pass stopped waiting for triggers a pass when it ends, rather
            // than waiting for the object's next retry.
            let trigger = trigger.clone();
            config.fetcher.downloads.on_done(move || trigger.poke());
        }
        let writer = StatusWriter::new(client.clone(), &config.node_name, metrics.clone());
        let heartbeat = Heartbeat::new(
            client.clone(),
            &config.lease_namespace,
            &config.node_name,
            config.heartbeat_interval,
            metrics.clone(),
        );
        let capabilities = reconciler.capabilities();
        let events = provenance::Events::new(client.clone(), &config.node_name);
        let mut pod_attacher = pods::PodAttacher::new(reconciler.root(), &config.netns_dir);
        if let Some(dir) = &config.cgroup_dir {
            pod_attacher = pod_attacher.with_cgroup_dir(dir);
        }
        Self {
            capabilities,
            events,
            pods: pods::PodWatch::default(),
            pod_attacher: Arc::new(std::sync::Mutex::new(pod_attacher)),
            links: crate::link_events::LinkWatch::default(),
            root: reconciler.root().to_path_buf(),
            reconciler: Some(reconciler),
            client,
            config,
            inputs: SharedInputs::default(),
            configmap_cache: SharedConfigMaps::default(),
            trigger,
            wake,
            configmaps: ConfigMapWatches::default(),
            retries: Retries::new(RETRY_BASE, RETRY_MAX),
            writer,
            heartbeat,
            metrics,
            status: None,
            earlier: None,
            waiting: None,
            last_pass: None,
        }
    }

    async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        check_crds_installed(&self.client).await?;
        if let Some(caps) = self.capabilities.filter(|_| self.config.label_node) {
            capabilities::label_node(&self.client, &self.config.node_name, caps).await;
        }
        self.earlier = match Api::<BpfNodeState>::all(self.client.clone())
            .get_opt(&self.config.node_name)
            .await
        {
            Ok(found) => found.and_then(|s| s.status),
            Err(error) => {
                tracing::debug!(%error, "cannot read the earlier BpfNodeState");
                None
            }
        };
        tracing::info!(
            root = %self.root.display(),
            bytecode_dirs = ?self.config.bytecode_dirs,
            heartbeat = ?self.config.heartbeat_interval,
            lease_namespace = %self.config.lease_namespace,
            version = env!("CARGO_PKG_VERSION"),
            "cluster mode started"
        );
        let watches = [
            watch::spawn_node_watch(
                self.client.clone(),
                &self.config.node_name,
                self.inputs.clone(),
                self.trigger.clone(),
                self.metrics.clone(),
            ),
            watch::spawn_object_watch(
                self.client.clone(),
                self.inputs.clone(),
                self.trigger.clone(),
                self.metrics.clone(),
            ),
        ];
        let result = self.serve(shutdown).await;
        for task in &watches {
            task.abort();
        }
        self.configmaps.stop_all();
        self.pods.stop();
        self.links.ensure(None, || || {});
        tracing::info!("shutting down; pins stay in place");
        result
    }

    async fn serve(&mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let retry = self.retries.next_due();
            let write = self.writer.next_due();
            let beat = self.heartbeat.next_due();
            let run_pass = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                Some(()) = self.wake.recv() => {
                    // Leading edge: the first change after a quiet [`DEBOUNCE`] starts a pass at
                    // once (one object reaches Ready without waiting); changes within DEBOUNCE of
                    // the last pass wait for its end, so a burst (a kubectl apply of many
                    // objects, a relist) still coalesces into one more pass.
                    if let Some(wait) = self
                        .last_pass
                        .and_then(|t| DEBOUNCE.checked_sub(t.elapsed()))
                    {
                        tokio::time::sleep(wait).await;
                    }
                    while self.wake.try_recv().is_ok() {}
                    true
                }
                _ = sleep_until(retry) => true,
                _ = sleep_until(write) => false,
                _ = sleep_until(beat) => false,
            };
            if run_pass {
                self.last_pass = Some(std::time::Instant::now());
                self.pass().await?;
            }
            if let Some((status, node_uid)) = &self.status {
                self.writer.sync(status, node_uid).await;
                // The first renewal waits for the first status write: a renewed Lease says the
                // agent lives and its BpfNodeState is current.
                let due = self
                    .heartbeat
                    .next_due()
                    .is_some_and(|t| t <= std::time::Instant::now());
                if due || (!self.heartbeat.started() && self.writer.is_current()) {
                    self.heartbeat.renew(node_uid).await;
                }
            }
        }
    }

    /// One pass, if the initial lists are complete and the Node exists.
    async fn pass(&mut self) -> anyhow::Result<()> {
        let (node_uid, selected, configmaps, unsupported) = {
            let inputs = self.inputs.lock();
            let node = inputs.node.get(&self.config.node_name);
            let why = if !inputs.node.is_synced() || !inputs.objects.is_synced() {
                Some("waiting for the initial list of the Node and the BpfObjects".to_owned())
            } else if node.is_none_or(|n| n.uid.is_none()) {
                Some(format!(
                    "Node {} does not exist; pins stay as they are until it does",
                    self.config.node_name
                ))
            } else {
                None
            };
            if let Some(why) = why {
                if self.waiting.as_ref() != Some(&why) {
                    tracing::info!("{why}");
                    self.waiting = Some(why);
                }
                // No retries while waiting: the event that ends the wait triggers a pass.
                self.retries.record(std::time::Instant::now(), []);
                return Ok(());
            }
            self.waiting = None;
            let node = node.cloned().unwrap_or_default();
            let selected = desired_set::select(inputs.objects.items(), &node.labels);
            let (selected, unsupported) = desired_set::gate(selected, self.capabilities);
            let configmaps = desired_set::configmaps_of(&selected);
            let owned: Vec<(String, watch::ObjectEntry)> = selected
                .into_iter()
                .map(|(n, o)| (n.clone(), o.clone()))
                .collect();
            (node.uid.unwrap_or_default(), owned, configmaps, unsupported)
        };
        let pod_scoped = selected.iter().any(|(_, o)| pods::is_pod_scoped(&o.spec));
        self.pods.ensure(
            pod_scoped,
            &self.client,
            &self.config.node_name,
            &self.trigger,
        );
        // Interfaces that appear or go (and, for primaryNodeInterface, default routes that move)
        // wake a pass while an object follows them.
        let follows_links = crate::link_events::Follow::needed(
            selected
                .iter()
                .flat_map(|(_, o)| o.spec.programs.iter().filter_map(|p| p.attach.as_ref())),
        );
        self.links.ensure(follows_links, || {
            let trigger = self.trigger.clone();
            move || trigger.poke()
        });
        let pod_snapshot = self.pods.snapshot();
        let pod_attacher = self.pod_attacher.clone();
        self.configmaps.sync(
            &configmaps,
            &self.client,
            &self.configmap_cache,
            &self.trigger,
        );
        let mut planned = {
            let selected: Vec<_> = selected.iter().map(|(n, o)| (n, o)).collect();
            desired_set::plan(&selected, &self.configmap_cache.lock())
        };
        desired_set::read_pull_secrets(&mut planned, &self.client).await;

        let Some(mut reconciler) = self.reconciler.take() else {
            anyhow::bail!("internal error: a pass started while another was running");
        };
        let dirs = self.config.bytecode_dirs.clone();
        let fetcher = self.config.fetcher.clone();
        let span = tracing::Span::current();
        let (reconciler, report, held, elapsed, provenance, pod_report) =
            tokio::task::spawn_blocking(move || {
                let _span = span.enter();
                let (desired, held) = desired_set::materialize(planned, &dirs, &fetcher);
                let provenance = provenance::of(&desired, &fetcher);
                let hold = held.keys().cloned().collect();
                let started = std::time::Instant::now();
                let report = reconciler.reconcile(&desired, &hold);
                let pod_report = pod_snapshot.map(|p| {
                    let mut attacher = pod_attacher
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    attacher.sync(&desired, &report, &p)
                });
                (
                    reconciler,
                    report,
                    held,
                    started.elapsed(),
                    provenance,
                    pod_report,
                )
            })
            .await
            .context("the reconcile pass panicked; restarting the agent adopts what is pinned")?;
        self.reconciler = Some(reconciler);

        self.metrics.observe_pass(&report, elapsed);
        self.metrics.set_ready();
        self.retries.record_pass(std::time::Instant::now(), &report);
        log_pass(&report, held.len(), elapsed);
        let earlier = self.earlier.take();
        let previous = self.status.as_ref().map(|(s, _)| s).or(earlier.as_ref());
        let mut status = node_state::build_status(&report, &held, previous, &self.root);
        provenance::apply(&mut status, &report, &provenance, previous);
        node_state::add_gating(&mut status, unsupported, self.capabilities);
        let changed = provenance::changes(previous, &status);
        self.events.publish(&changed).await;
        if let Some(pod_report) = &pod_report {
            pods::annotate(&mut status, pod_report);
            if pod_report.retry || pod_report.rescan {
                self.pods.retry_later(&self.trigger);
            }
        }
        self.status = Some((status, node_uid));
        Ok(())
    }
}

fn log_pass(report: &PassReport, held: usize, elapsed: Duration) {
    let pinned = report.objects.iter().filter(|r| r.is_ready()).count();
    let failed = report.objects.len() - pinned;
    let acted = report.objects.iter().any(|r| r.action != Action::Unchanged)
        || !report.removed.is_empty()
        || report.unpinned > 0;
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    if acted {
        tracing::info!(
            objects = report.objects.len(),
            pinned,
            failed,
            held,
            removed = report.removed.len(),
            unpinned = report.unpinned,
            ms,
            "reconciled"
        );
    } else {
        tracing::debug!(
            objects = report.objects.len(),
            pinned,
            failed,
            held,
            ms,
            "reconciled: no change"
        );
    }
}
