//! Pod-aware attachment (`networkNamespaces` on `xdp` and `tc`, `pods` on the cgroup hooks,
//! `containers` on `uprobe`): the watch of this node's pods and the step after each pass that
//! makes the pod links equal to the matching pods.
//!
//! - The pods of this node only, by the field selector `spec.nodeName=<node>`; the watch starts
//!   with the first selected object that is pod-scoped, and feeds an index that keeps only what
//!   the step reads (labels, IP, hostNetwork, whether it ended, the IDs of its running
//!   containers), so status churn (readiness, restarts counts, conditions) wakes no pass.
//! - One link per pod, program and interface, pinned in the object's current version at
//!   `links/<program>/xdp-pod-<pod uid>-<interface>` (or `tc-<direction>-pod-...`). A new version
//!   of the object starts without them and the step attaches its programs again; a pod that is
//!   gone, or has ended, loses its pins; a pod whose sandbox was re-created (a new network
//!   namespace) is attached again.
//! - `pods` on a cgroup hook: one link per pod and program, `links/<program>/<hook>-pod-<uid>`
//!   (`cgroupskb-egress-pod-<uid>`, `sockops-pod-<uid>`...), on the pod's cgroup found by UID
//!   under `--cgroup-dir` ([`crate::pin::pod_cgroup`] says how).
//! - `containers` on `uprobe`: one link per pod, container and program,
//!   `links/<program>/uprobe-pod-<uid>-<container>`, on the file `target` names inside the
//!   container ([`crate::pin::containers`] says how it is found), attached once the container
//!   runs; a container that restarted (a new container ID) is attached again. A restarted agent
//!   keeps (adopts) a container link it finds pinned.
//! - A pinned link whose target went away while the pod stayed (the kernel detached it: an XDP or
//!   tcx link reports interface 0, a cgroup link a cgroup id that is not the pod's cgroup's now)
//!   is attached again, also when a restarted agent finds it.
//! - A pod is attached as soon as its IP is known, before its containers start; the namespace is
//!   found by that IP ([`crate::pin::netns`] says why).
//! - Nothing is removed before the first complete list of the pods: a restarted agent keeps
//!   every pod link until it knows which pods exist.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bpfpin_crds::selector::Selector;
use bpfpin_crds::{
    BpfNodeStateStatus, BpfObjectSpec, ContainerSelection, LinkOrder, NetworkNamespaces,
    PodAttachments, PodFailure, PodSelection, UprobeAttach, node_state::MAX_POD_FAILURES,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::Instrument;

use super::index::{Index, IndexEvent};
use super::trigger::Trigger;
use crate::error::ObjectError;
use crate::pin::containers;
use crate::pin::desired::DesiredObject;
use crate::pin::fsops;
use crate::pin::layout::Layout;
use crate::pin::netns::{self, Netns, NetnsDir, PodHook};
use crate::pin::pod_cgroup::{self, CgroupPodHook, PodCgroup, SectionType};
use crate::pin::reconcile::PassReport;

/// Where containerd and CRI-O bind-mount pod network namespaces.
pub const DEFAULT_NETNS_DIR: &str = "/var/run/netns";

/// A failed or waiting pod is tried again after this long (or at the next pod event).
const RETRY: Duration = Duration::from_secs(2);

/// What the agent keeps of one pod of its node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodEntry {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`: names its links.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `status.podIP`, once the sandbox has one.
    pub ip: Option<IpAddr>,
    /// `spec.hostNetwork`: no namespace of its own.
    pub host_network: bool,
    /// Phase `Succeeded` or `Failed`: its sandbox is gone or going.
    pub ended: bool,
    /// `metadata.creationTimestamp`, to log how long the pod waited for its programs.
    pub created: Option<k8s_openapi::jiff::Timestamp>,
    /// The running containers, by name: their container IDs (from `containerd://<id>`).
    pub containers: BTreeMap<String, String>,
}

/// The part of a `Pod` the agent keeps.
pub fn pod_entry(pod: &Pod) -> (String, PodEntry) {
    let namespace = pod.namespace().unwrap_or_default();
    let status = pod.status.as_ref();
    let entry = PodEntry {
        name: pod.name_any(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip: status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
        ended: matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ),
        created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        containers: status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            .filter_map(|c| {
                let id = containers::container_id(c.container_id.as_deref()?)?;
                Some((c.name.clone(), id))
            })
            .collect(),
        namespace,
    };
    (format!("{}/{}", entry.namespace, entry.name), entry)
}

/// The pods of this node, shared between their watch and the pass loop.
#[derive(Debug, Clone, Default)]
pub struct PodWatch {
    index: Arc<Mutex<Index<PodEntry>>>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    retry_armed: Arc<AtomicBool>,
}

impl PodWatch {
    fn lock(&self) -> MutexGuard<'_, Index<PodEntry>> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the watch of this node's pods if `needed` and not started yet (it then runs until
    /// [`PodWatch::stop`]).
    pub fn ensure(&self, needed: bool, client: &Client, node: &str, trigger: &Trigger) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if !needed || task.is_some() {
            return;
        }
        let api: Api<Pod> = Api::all(client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let stream = watcher(api, config).default_backoff();
        let index = self.index.clone();
        let trigger = trigger.clone();
        tracing::info!(
            node,
            "watching this node's pods (networkNamespaces, pods, containers)"
        );
        *task = Some(tokio::spawn(
            async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(event) => {
                            let changed = index
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .apply(IndexEvent::from_watch(event, pod_entry));
                            if changed {
                                trigger.poke();
                            }
                        }
                        Err(error) => {
                            tracing::warn!(kind = "Pod", %error, "watch failed; keeping the last known pods and retrying");
                        }
                    }
                }
            }
            .instrument(tracing::Span::current()),
        ));
    }

    /// Stops the watch.
    pub fn stop(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    /// The pods as last listed completely; `None` before the first complete list.
    pub fn snapshot(&self) -> Option<BTreeMap<String, PodEntry>> {
        let index = self.lock();
        index.is_synced().then(|| index.items().clone())
    }

    /// Pokes `trigger` after [`RETRY`] (once, however often it is asked meanwhile).
    pub fn retry_later(&self, trigger: &Trigger) {
        if self.retry_armed.swap(true, Ordering::SeqCst) {
            return;
        }
        let armed = self.retry_armed.clone();
        let trigger = trigger.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETRY).await;
            armed.store(false, Ordering::SeqCst);
            trigger.poke();
        });
    }
}

/// Whether any program of `spec` attaches in pods.
pub fn is_pod_scoped(spec: &BpfObjectSpec) -> bool {
    spec.programs
        .iter()
        .filter_map(|p| p.attach.as_ref())
        .any(|a| {
            a.network_namespaces().is_some()
                || a.cgroup_pods().is_some()
                || a.containers().is_some()
        })
}

/// What the step did, per object.
#[derive(Debug, Default)]
pub struct PodReport {
    /// Per object name.
    pub objects: BTreeMap<String, PodAttachments>,
    /// Public paths of the pod links, per object name.
    pub links: BTreeMap<String, Vec<String>>,
    /// Something failed or waits for its pod: try again soon.
    pub retry: bool,
    /// Some program names its pod interfaces by pattern: look again soon (interfaces that appear
    /// or go raise no pod event).
    pub rescan: bool,
}

/// The pod links of one program: the hook, and the selection.
struct Scoped<'a> {
    program: &'a str,
    hook: PodHook,
    pods: &'a NetworkNamespaces,
}

/// The pod cgroup links of one program: the hook, and the selection.
struct CgroupScoped<'a> {
    program: &'a str,
    hook: CgroupPodHook,
    pods: &'a PodSelection,
}

/// The container uprobe links of one program: the probe, and the selection.
struct ContainerScoped<'a> {
    program: &'a str,
    uprobe: &'a UprobeAttach,
    containers: &'a ContainerSelection,
}

fn container_scoped_programs(spec: &BpfObjectSpec) -> Vec<ContainerScoped<'_>> {
    spec.programs
        .iter()
        .filter_map(|p| {
            let uprobe = p.attach.as_ref()?.uprobe.as_ref()?;
            Some(ContainerScoped {
                program: &p.name,
                uprobe,
                containers: uprobe.containers.as_ref()?,
            })
        })
        .collect()
}

/// Where in its pod an attachment is.
#[derive(Debug, Clone, Copy)]
enum InPod<'a> {
    /// An interface of the pod's network namespace.
    Interface(&'a str),
    /// The pod's cgroup.
    Cgroup,
    /// A container's file.
    Container(&'a str),
}

/// One pod attachment the step made or kept, or tried to.
struct Site<'a> {
    object: &'a str,
    program: &'a str,
    link: &'a Path,
    pod: &'a PodEntry,
    in_pod: InPod<'a>,
}

/// The counts, failures and links of one object in one step.
#[derive(Default)]
struct Tally {
    state: PodAttachments,
    links: Vec<String>,
    retry: bool,
}

impl Tally {
    /// Counts one attachment: its link's public path (under `root`) when it is there, else the
    /// failure, naming the pod and where in it. Whether it is there.
    fn record(&mut self, root: &Path, at: &Site<'_>, result: Result<(), ObjectError>) -> bool {
        let error = match result {
            Ok(()) => {
                self.links.push(
                    root.join(at.object)
                        .join("links")
                        .join(at.program)
                        .join(at.link.file_name().unwrap_or_default())
                        .display()
                        .to_string(),
                );
                return true;
            }
            Err(error) => error,
        };
        self.retry = true;
        let pod = format!("{}/{}", at.pod.namespace, at.pod.name);
        let (interface, container) = match at.in_pod {
            InPod::Interface(i) => (i, ""),
            InPod::Cgroup => ("", ""),
            InPod::Container(c) => ("", c),
        };
        tracing::warn!(object = %at.object, program = at.program, pod = %pod, interface, container, reason = %error.reason, error = %error.message, "pod attachment failed");
        if self.state.failures.len() < MAX_POD_FAILURES {
            self.state.failures.push(PodFailure {
                pod,
                program: at.program.to_owned(),
                interface: interface.to_owned(),
                container: container.to_owned(),
                reason: error.reason.as_str().to_owned(),
                message: error.message,
            });
        }
        false
    }
}

fn cgroup_scoped_programs(spec: &BpfObjectSpec) -> Vec<CgroupScoped<'_>> {
    use crate::pin::attach::CgroupHook as H;
    let mut out = Vec::new();
    for p in &spec.programs {
        let Some(a) = &p.attach else { continue };
        if let Some(c) = &a.cgroup_skb
            && let Some(pods) = &c.pods
        {
            out.push(CgroupScoped {
                program: &p.name,
                hook: CgroupPodHook::Skb(c.direction),
                pods,
            });
        }
        for (hook, c) in [
            (H::SockOps, &a.sock_ops),
            (H::SockAddr, &a.cgroup_sock_addr),
            (H::Sock, &a.cgroup_sock),
            (H::Sysctl, &a.cgroup_sysctl),
            (H::Sockopt, &a.cgroup_sockopt),
            (H::Device, &a.cgroup_device),
        ] {
            if let Some(pods) = c.as_ref().and_then(|c| c.pods.as_ref()) {
                out.push(CgroupScoped {
                    program: &p.name,
                    hook: CgroupPodHook::Hook(hook),
                    pods,
                });
            }
        }
    }
    out
}

fn scoped_programs(spec: &BpfObjectSpec) -> Vec<Scoped<'_>> {
    let mut out = Vec::new();
    for p in &spec.programs {
        let Some(attach) = &p.attach else { continue };
        if let Some(x) = &attach.xdp
            && let Some(pods) = &x.network_namespaces
        {
            out.push(Scoped {
                program: &p.name,
                hook: PodHook::Xdp(x.mode),
                pods,
            });
        }
        if let Some(t) = &attach.tc
            && let Some(pods) = &t.network_namespaces
        {
            out.push(Scoped {
                program: &p.name,
                hook: PodHook::Tc(t.direction, t.order == Some(LinkOrder::First)),
                pods,
            });
        }
    }
    out
}

/// Makes the pod links of the pinned objects equal to the matching pods. Runs on the blocking
/// pool after the reconciler's pass.
#[derive(Debug)]
pub struct PodAttacher {
    root: PathBuf,
    netns: NetnsDir,
    /// The namespace inode each link this process made (or found) was attached in.
    attached: HashMap<PathBuf, u64>,
    /// Where pod cgroups are looked for.
    cgroup_dir: PathBuf,
    /// The attach types of the programs of each pinned version (by its directory), from its ELF.
    sections: HashMap<PathBuf, HashMap<String, SectionType>>,
    /// The container ID each container link this process made (or found) was attached for.
    container_ids: HashMap<PathBuf, String>,
}

impl PodAttacher {
    /// The attacher of the managed root `root`, finding namespaces in `netns_dir`.
    pub fn new(root: &Path, netns_dir: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            netns: NetnsDir::new(netns_dir),
            attached: HashMap::new(),
            cgroup_dir: pod_cgroup::default_cgroup_dir(),
            sections: HashMap::new(),
            container_ids: HashMap::new(),
        }
    }

    /// Looks for pod cgroups under `dir` (a cgroup v2 tree) instead of the default
    /// ([`pod_cgroup::default_cgroup_dir`]).
    pub fn with_cgroup_dir(mut self, dir: &Path) -> Self {
        self.cgroup_dir = dir.to_path_buf();
        self
    }

    /// One step over every pinned pod-scoped object of the pass.
    pub fn sync(
        &mut self,
        desired: &[DesiredObject],
        report: &PassReport,
        pods: &BTreeMap<String, PodEntry>,
    ) -> PodReport {
        let mut out = PodReport::default();
        let mut namespaces: Option<HashMap<IpAddr, Netns>> = None;
        let mut cgroups: Option<HashMap<String, PodCgroup>> = None;
        // The interfaces of each namespace, by inode, listed once per step (for patterns).
        let mut listed: HashMap<u64, Vec<String>> = HashMap::new();
        let mut kept: BTreeSet<PathBuf> = BTreeSet::new();
        let mut versions: BTreeSet<PathBuf> = BTreeSet::new();
        for obj in desired {
            let scoped = scoped_programs(&obj.spec);
            let cgroup_scoped = cgroup_scoped_programs(&obj.spec);
            let container_scoped = container_scoped_programs(&obj.spec);
            if scoped.is_empty() && cgroup_scoped.is_empty() && container_scoped.is_empty() {
                continue;
            }
            let pinned = report
                .objects
                .iter()
                .any(|r| r.name == obj.name && r.pinned.is_some());
            let Some(version_dir) = self.version_dir(&obj.name).filter(|_| pinned) else {
                continue;
            };
            let mut tally = Tally::default();
            let mut matched: BTreeSet<&str> = BTreeSet::new();
            let mut complete: BTreeMap<&str, bool> = BTreeMap::new();
            for s in &scoped {
                let selector = Selector::parse(Some(&s.pods.pod_selector)).unwrap_or_default();
                let prog_pin = Layout::prog_in(&version_dir, s.program);
                let link_dir = version_dir.join("links").join(s.program);
                for pod in pods.values() {
                    if pod.namespace != s.pods.namespace
                        || pod.host_network
                        || pod.ended
                        || !selector.matches(&pod.labels)
                    {
                        continue;
                    }
                    let Some(ip) = pod.ip else {
                        tally.state.waiting += 1;
                        out.retry = true;
                        continue;
                    };
                    matched.insert(&pod.uid);
                    let ok = complete.entry(&pod.uid).or_insert(true);
                    let found = namespaces.get_or_insert_with(|| self.scan()).get(&ip);
                    let wanted = s.pods.interfaces();
                    let patterns: Vec<regex::Regex> = wanted
                        .iter()
                        .filter_map(|w| bpfpin_crds::interface_pattern(w))
                        .filter_map(|p| regex::Regex::new(p).ok())
                        .collect();
                    let mut ifaces: Vec<String> = wanted
                        .iter()
                        .filter(|w| bpfpin_crds::interface_pattern(w).is_none())
                        .cloned()
                        .collect();
                    if !patterns.is_empty() {
                        out.rescan = true;
                        if let Some(ns) = found {
                            let names = match listed.get(&ns.inode) {
                                Some(names) => names.clone(),
                                None => {
                                    let names = netns::interface_names(ns).unwrap_or_else(|error| {
                                        tracing::warn!(netns = %ns.path.display(), %error, "cannot list the pod's interfaces");
                                        Vec::new()
                                    });
                                    listed.insert(ns.inode, names.clone());
                                    names
                                }
                            };
                            for name in names {
                                if patterns.iter().any(|p| p.is_match(&name))
                                    && !ifaces.contains(&name)
                                {
                                    ifaces.push(name);
                                }
                            }
                        }
                    }
                    for iface in ifaces {
                        let link = link_dir.join(s.hook.link_name(&pod.uid, &iface));
                        kept.insert(link.clone());
                        let result = match found {
                            Some(ns) => self.ensure_link(ns, &prog_pin, s.hook, &iface, &link, pod),
                            None => Err(netns::NetnsError::NotFound(
                                ip,
                                self.netns.dir().to_path_buf(),
                            )),
                        };
                        let at = Site {
                            object: &obj.name,
                            program: s.program,
                            link: &link,
                            pod,
                            in_pod: InPod::Interface(&iface),
                        };
                        if !tally.record(&self.root, &at, result.map_err(ObjectError::from)) {
                            *ok = false;
                        }
                    }
                }
                self.sweep(&link_dir, &kept);
            }
            if !cgroup_scoped.is_empty() {
                versions.insert(version_dir.clone());
            }
            for s in &cgroup_scoped {
                let selector = Selector::parse(Some(&s.pods.pod_selector)).unwrap_or_default();
                let prog_pin = Layout::prog_in(&version_dir, s.program);
                let link_dir = version_dir.join("links").join(s.program);
                // Only these hooks open their program from its pin with the section's attach
                // type; the ELF is parsed for them alone.
                use crate::pin::attach::CgroupHook as H;
                let section = match s.hook {
                    CgroupPodHook::Hook(H::SockAddr | H::Sock | H::Sockopt) => {
                        self.section(&version_dir, obj, s.program)
                    }
                    _ => SectionType::Other,
                };
                for pod in pods.values() {
                    if pod.namespace != s.pods.namespace
                        || pod.ended
                        || !selector.matches(&pod.labels)
                    {
                        continue;
                    }
                    let found = cgroups
                        .get_or_insert_with(|| pod_cgroup::scan(&self.cgroup_dir))
                        .get(&pod.uid.to_ascii_lowercase());
                    if found.is_none() {
                        out.retry = true;
                        if pod.ip.is_none() {
                            // The sandbox is being made: its cgroup comes with it.
                            tally.state.waiting += 1;
                            continue;
                        }
                    }
                    matched.insert(&pod.uid);
                    let ok = complete.entry(&pod.uid).or_insert(true);
                    let link = link_dir.join(s.hook.link_name(&pod.uid));
                    kept.insert(link.clone());
                    let result = match found {
                        Some(cgroup) => {
                            self.ensure_cgroup_link(cgroup, &prog_pin, s, section, &link, pod)
                        }
                        None => Err(pod_cgroup::PodCgroupError::NotFound(
                            pod.uid.clone(),
                            self.cgroup_dir.clone(),
                        )),
                    };
                    let at = Site {
                        object: &obj.name,
                        program: s.program,
                        link: &link,
                        pod,
                        in_pod: InPod::Cgroup,
                    };
                    if !tally.record(&self.root, &at, result.map_err(ObjectError::from)) {
                        *ok = false;
                    }
                }
                self.sweep(&link_dir, &kept);
            }
            if !container_scoped.is_empty() {
                versions.insert(version_dir.clone());
            }
            for s in &container_scoped {
                let selector =
                    Selector::parse(Some(&s.containers.pod_selector)).unwrap_or_default();
                let prog_pin = Layout::prog_in(&version_dir, s.program);
                let link_dir = version_dir.join("links").join(s.program);
                let ret = matches!(
                    self.section(&version_dir, obj, s.program),
                    SectionType::Uprobe { ret: true }
                );
                let probe = containers::Probe {
                    target: &s.uprobe.target,
                    symbol: s.uprobe.symbol.as_deref(),
                    offset: s.uprobe.offset,
                    ret,
                };
                for pod in pods.values() {
                    if pod.namespace != s.containers.namespace
                        || pod.ended
                        || !selector.matches(&pod.labels)
                    {
                        continue;
                    }
                    let running: Vec<(&String, &String)> = pod
                        .containers
                        .iter()
                        .filter(|(name, _)| s.containers.selects(name))
                        .collect();
                    if running.is_empty() {
                        // No selected container runs yet: the pod's event when one starts
                        // brings the next step.
                        tally.state.waiting += 1;
                        continue;
                    }
                    matched.insert(&pod.uid);
                    let ok = complete.entry(&pod.uid).or_insert(true);
                    let found = cgroups
                        .get_or_insert_with(|| pod_cgroup::scan(&self.cgroup_dir))
                        .get(&pod.uid.to_ascii_lowercase())
                        .cloned();
                    for (name, id) in running {
                        let link = link_dir.join(containers::link_name(&pod.uid, name));
                        kept.insert(link.clone());
                        let result = match &found {
                            Some(cgroup) => self
                                .ensure_container_link(cgroup, id, &prog_pin, probe, &link, pod)
                                .map_err(ObjectError::from),
                            None => Err(ObjectError::from(pod_cgroup::PodCgroupError::NotFound(
                                pod.uid.clone(),
                                self.cgroup_dir.clone(),
                            ))),
                        };
                        let at = Site {
                            object: &obj.name,
                            program: s.program,
                            link: &link,
                            pod,
                            in_pod: InPod::Container(name),
                        };
                        if !tally.record(&self.root, &at, result) {
                            *ok = false;
                        }
                    }
                }
                self.sweep(&link_dir, &kept);
            }
            let Tally {
                mut state,
                mut links,
                retry,
            } = tally;
            out.retry |= retry;
            state.matched = i32::try_from(matched.len()).unwrap_or(i32::MAX);
            state.attached =
                i32::try_from(complete.values().filter(|ok| **ok).count()).unwrap_or(i32::MAX);
            links.sort();
            out.objects.insert(obj.name.clone(), state);
            out.links.insert(obj.name.clone(), links);
        }
        self.attached.retain(|path, _| kept.contains(path));
        self.container_ids.retain(|path, _| kept.contains(path));
        self.sections.retain(|dir, _| versions.contains(dir));
        out
    }

    /// The attach type the ELF section of `program` gives (parsed once per pinned version).
    fn section(&mut self, version_dir: &Path, obj: &DesiredObject, program: &str) -> SectionType {
        let types = self
            .sections
            .entry(version_dir.to_path_buf())
            .or_insert_with(|| {
                let Ok(bytes) = &obj.bytecode else {
                    return HashMap::new();
                };
                match crate::pin::loader::parse_elf(bytes) {
                    Ok(elf) => elf
                        .programs
                        .iter()
                        .map(|(name, p)| (name.clone(), SectionType::of(&p.section)))
                        .collect(),
                    Err(error) => {
                        tracing::warn!(object = %obj.name, %error, "cannot read the program sections");
                        HashMap::new()
                    }
                }
            });
        types.get(program).copied().unwrap_or(SectionType::Other)
    }

    /// The link is pinned and attached to the pod's current cgroup, or made so.
    fn ensure_cgroup_link(
        &mut self,
        cgroup: &PodCgroup,
        prog_pin: &Path,
        s: &CgroupScoped<'_>,
        section: SectionType,
        link: &Path,
        pod: &PodEntry,
    ) -> Result<(), pod_cgroup::PodCgroupError> {
        if link.exists() {
            if pod_cgroup::is_attached_to(link, cgroup) {
                return Ok(());
            }
            tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), link = %link.display(), cgroup = %cgroup.path.display(), "the link is not on the pod's cgroup now (re-created): attaching again");
            fsops::remove_tree(&self.root, link);
        }
        if let Some(dir) = link.parent()
            && let Err(e) = fsops::create_dirs(&self.root, dir)
        {
            tracing::warn!(path = %dir.display(), error = %e, "cannot create the pod link directory");
        }
        pod_cgroup::attach(cgroup, prog_pin, s.program, s.hook, section, link)?;
        let waited_ms = pod.created.map(|t| {
            (k8s_openapi::jiff::Timestamp::now() - t)
                .get_milliseconds()
                .max(0)
        });
        tracing::info!(
            pod = %format!("{}/{}", pod.namespace, pod.name),
            link = %link.display(),
            cgroup = %cgroup.path.display(),
            since_pod_created_ms = waited_ms,
            "attached to pod cgroup"
        );
        Ok(())
    }

    /// The link is pinned and was attached for the container `id`, or made so: a container that
    /// restarted (a new ID, maybe a new image) is attached again.
    fn ensure_container_link(
        &mut self,
        pod_cgroup: &PodCgroup,
        id: &str,
        prog_pin: &Path,
        probe: containers::Probe<'_>,
        link: &Path,
        pod: &PodEntry,
    ) -> Result<(), containers::ContainerError> {
        if link.exists() {
            match self.container_ids.get(link) {
                // Pinned by an earlier run: adopted.
                None => {
                    self.container_ids.insert(link.to_path_buf(), id.to_owned());
                    return Ok(());
                }
                Some(had) if had == id => return Ok(()),
                Some(_) => {
                    tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), link = %link.display(), container_id = id, "the container restarted: attaching again");
                    fsops::remove_tree(&self.root, link);
                    self.container_ids.remove(link);
                }
            }
        }
        let cgroup = containers::container_cgroup(&pod_cgroup.path, id)?;
        let pid = containers::container_pid(&cgroup)?;
        let file = containers::open_in_root(pid, probe.target)?;
        if let Some(dir) = link.parent()
            && let Err(e) = fsops::create_dirs(&self.root, dir)
        {
            tracing::warn!(path = %dir.display(), error = %e, "cannot create the pod link directory");
        }
        containers::attach(prog_pin, probe, &file, link)?;
        self.container_ids.insert(link.to_path_buf(), id.to_owned());
        let waited_ms = pod.created.map(|t| {
            (k8s_openapi::jiff::Timestamp::now() - t)
                .get_milliseconds()
                .max(0)
        });
        tracing::info!(
            pod = %format!("{}/{}", pod.namespace, pod.name),
            link = %link.display(),
            cgroup = %cgroup.display(),
            pid,
            target = probe.target,
            since_pod_created_ms = waited_ms,
            "attached uprobe in container"
        );
        Ok(())
    }

    /// `<root>/_versions/<object>/<version>`, the real directory behind `<root>/<object>`.
    fn version_dir(&self, object: &str) -> Option<PathBuf> {
        let target = std::fs::read_link(self.root.join(object)).ok()?;
        Layout::version_from_target(object, &target)?;
        Some(self.root.join(target))
    }

    /// Every pod namespace by IP (one look at the runtime's directory per step).
    fn scan(&mut self) -> HashMap<IpAddr, Netns> {
        match self.netns.scan() {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "cannot find pod network namespaces");
                HashMap::new()
            }
        }
    }

    /// The link is pinned and attached in the pod's current namespace, or made so.
    fn ensure_link(
        &mut self,
        ns: &Netns,
        prog_pin: &Path,
        hook: PodHook,
        iface: &str,
        link: &Path,
        pod: &PodEntry,
    ) -> Result<(), netns::NetnsError> {
        if link.exists() {
            // A link holds its interface: when the interface goes (its namespace was re-created)
            // the kernel detaches the link, which then reports interface 0.
            let detached = !netns::is_attached(link);
            match self.attached.get(link) {
                // Pinned by an earlier run and still attached: adopted.
                None if !detached => {
                    self.attached.insert(link.to_path_buf(), ns.inode);
                    return Ok(());
                }
                Some(ino) if *ino == ns.inode && !detached => return Ok(()),
                _ => {
                    tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), link = %link.display(), detached, "the pod has a new network namespace: attaching again");
                    fsops::remove_tree(&self.root, link);
                }
            }
        }
        if let Some(dir) = link.parent()
            && let Err(e) = fsops::create_dirs(&self.root, dir)
        {
            tracing::warn!(path = %dir.display(), error = %e, "cannot create the pod link directory");
        }
        netns::attach(ns, prog_pin, hook, iface, link)?;
        self.attached.insert(link.to_path_buf(), ns.inode);
        let waited_ms = pod.created.map(|t| {
            (k8s_openapi::jiff::Timestamp::now() - t)
                .get_milliseconds()
                .max(0)
        });
        tracing::info!(
            pod = %format!("{}/{}", pod.namespace, pod.name),
            interface = iface,
            link = %link.display(),
            netns = %ns.path.display(),
            since_pod_created_ms = waited_ms,
            "attached in pod"
        );
        Ok(())
    }

    /// Unpins the pod links of `dir` that no matching pod has any more.
    fn sweep(&mut self, dir: &Path, kept: &BTreeSet<PathBuf>) {
        for (name, _) in fsops::list(&self.root, dir) {
            let path = dir.join(&name);
            let pod_link = PodHook::is_pod_link(&name)
                || CgroupPodHook::is_pod_link(&name)
                || containers::is_pod_link(&name);
            if pod_link && !kept.contains(&path) {
                fsops::remove_tree(&self.root, &path);
                self.attached.remove(&path);
                self.container_ids.remove(&path);
                tracing::info!(link = %path.display(), "pod gone: unpinned its link");
            }
        }
    }
}

/// Puts the step's counts, failures and links into the objects of `status`.
pub fn annotate(status: &mut BpfNodeStateStatus, report: &PodReport) {
    for entry in &mut status.objects {
        if let Some(pods) = report.objects.get(&entry.name) {
            entry.pods = Some(pods.clone());
        }
        if let Some(links) = report.links.get(&entry.name) {
            entry.links.extend(links.iter().cloned());
            entry.links.sort();
            entry.links.dedup();
        }
    }
}
