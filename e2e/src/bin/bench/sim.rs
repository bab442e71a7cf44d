//! The simulated agents of the fleet bench (`bench __fleet-agents`, started by `e2e/scripts/bench
//! --fleet`): many agents in one process, each running the agent's real cluster mode
//! ([`bpfpin_agent::cluster::run_with`]: its Node and BpfObject watches, selection, desired-set
//! planning and bytecode reads, BpfNodeState server-side apply, heartbeat Lease) with its own
//! API client, and a [`StandIn`] in place of the kernel core. The stand-in pins nothing: it
//! sleeps for the measured duration of a real load per new object and reports what the real core
//! reported for the same object (the same program, map and link entries, under the object's
//! name), so the status each agent writes has the real size.
//!
//! Protocol with the parent: the parent writes `stats` on stdin, the process answers one JSON
//! line on stdout ([`Stats`]); end of stdin ends the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bpfpin_agent::cluster::metrics::{Metrics, Watched};
use bpfpin_agent::cluster::{ClusterConfig, Core};
use bpfpin_agent::pin::loader::PinnedVersion;
use bpfpin_agent::{Action, DesiredObject, ObjectReport, PassReport};
use serde_json::json;

/// The root a real node reports (`/sys/fs/bpf/bpfpin`), so status entries have the real size.
pub const SIM_ROOT: &str = "/sys/fs/bpf/bpfpin";
/// Stands for the object's name in [`Template`] paths.
const NAME: &str = "{object}";

/// What a real load of the bench object pinned, with the object's name replaced by [`NAME`] and
/// paths relative to the root.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Template {
    /// Programs in spec order (kernel ids are made up by the stand-in).
    pub programs: Vec<String>,
    /// Map pins, relative to the root.
    pub maps: Vec<String>,
    /// Link pins, relative to the root.
    pub links: Vec<String>,
    /// Shared map pins, relative to the root.
    pub shared: Vec<String>,
}

impl Template {
    /// From what a real `Reconciler` reported for `object` under `root`.
    pub fn of(pinned: &PinnedVersion, object: &str, root: &Path) -> Self {
        let rel = |p: &PathBuf| {
            let r = p.strip_prefix(root).unwrap_or(p).display().to_string();
            r.split('/')
                .map(|seg| if seg == object { NAME } else { seg })
                .collect::<Vec<_>>()
                .join("/")
        };
        Self {
            programs: pinned.programs.iter().map(|(n, _)| n.clone()).collect(),
            maps: pinned.maps.iter().map(rel).collect(),
            links: pinned.links.iter().map(rel).collect(),
            shared: pinned.shared.iter().map(rel).collect(),
        }
    }

    fn pinned(&self, object: &str, version: &str, first_id: u32) -> PinnedVersion {
        let abs = |r: &String| Path::new(SIM_ROOT).join(r.replace(NAME, object));
        PinnedVersion {
            version: version.to_owned(),
            programs: self
                .programs
                .iter()
                .zip(first_id..)
                .map(|(n, id)| (n.clone(), id))
                .collect(),
            maps: self.maps.iter().map(abs).collect(),
            links: self.links.iter().map(abs).collect(),
            shared: self.shared.iter().map(abs).collect(),
        }
    }
}

/// Loads done by the stand-ins of one process, by object name.
pub type Loads = Arc<Mutex<BTreeMap<String, u64>>>;

/// The kernel core's stand-in: keeps what it "pinned" by (uid, generation), sleeps `load` per
/// object it has not pinned at that generation, and reports the template's pins.
#[derive(Debug)]
pub struct StandIn {
    root: PathBuf,
    load: Duration,
    template: Arc<Template>,
    known: HashMap<String, (Option<String>, i64, PinnedVersion)>,
    next_id: u32,
    loads: Loads,
}

impl StandIn {
    /// A stand-in taking `load` per new object.
    pub fn new(load: Duration, template: Arc<Template>, loads: Loads) -> Self {
        Self {
            root: PathBuf::from(SIM_ROOT),
            load,
            template,
            known: HashMap::new(),
            next_id: 1,
            loads,
        }
    }
}

impl Core for StandIn {
    fn root(&self) -> &Path {
        &self.root
    }

    fn reconcile(&mut self, desired: &[DesiredObject], hold: &BTreeSet<String>) -> PassReport {
        let mut report = PassReport::default();
        for d in desired {
            let path = self.root.join(&d.name);
            if let Err(e) = &d.bytecode {
                report.objects.push(ObjectReport {
                    name: d.name.clone(),
                    uid: d.uid.clone(),
                    generation: d.generation,
                    action: Action::Failed,
                    error: Some(e.clone()),
                    pinned: None,
                    path,
                });
                continue;
            }
            let action = match self.known.get(&d.name) {
                Some((uid, generation, _)) if *uid == d.uid && *generation == d.generation => {
                    Action::Unchanged
                }
                known => {
                    // The real core loads one object after the other, on the pass's thread.
                    std::thread::sleep(self.load);
                    let pinned =
                        self.template
                            .pinned(&d.name, &format!("g{}", d.generation), self.next_id);
                    self.next_id += pinned.programs.len() as u32;
                    let action = if known.is_some() {
                        Action::Updated
                    } else {
                        Action::Created
                    };
                    self.known
                        .insert(d.name.clone(), (d.uid.clone(), d.generation, pinned));
                    *self
                        .loads
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(d.name.clone())
                        .or_default() += 1;
                    action
                }
            };
            report.objects.push(ObjectReport {
                name: d.name.clone(),
                uid: d.uid.clone(),
                generation: d.generation,
                action,
                error: None,
                pinned: self.known.get(&d.name).map(|(_, _, p)| p.clone()),
                path,
            });
        }
        let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|n| !wanted.contains(n.as_str()) && !hold.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some((_, _, p)) = self.known.remove(&name) {
                report.unpinned += p.programs.len() + p.maps.len() + p.links.len();
            }
            report.removed.push(name);
        }
        report
    }
}

/// What `stats` answers: sums over the agents of this process.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Agents in this process.
    pub agents: u64,
    /// BpfObject watch events received after the initial lists.
    pub object_events: u64,
    /// Of which changed what a pass reads.
    pub object_changes: u64,
    /// Node watch events received after the initial lists.
    pub node_events: u64,
    /// API writes: `[BpfNodeState object, its status, heartbeat Lease]`.
    pub writes: [u64; 3],
    /// Loads done, by object.
    pub loads: BTreeMap<String, u64>,
}

impl Stats {
    /// Adds another process's stats.
    pub fn add(&mut self, o: &Stats) {
        self.agents += o.agents;
        self.object_events += o.object_events;
        self.object_changes += o.object_changes;
        self.node_events += o.node_events;
        for (a, b) in self.writes.iter_mut().zip(o.writes) {
            *a += b;
        }
        for (k, v) in &o.loads {
            *self.loads.entry(k.clone()).or_default() += v;
        }
    }
}

/// Arguments of `bench __fleet-agents`, positional: what [`SimArgs::to_args`] writes.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Node names `<prefix><i>` for i in `from..to`.
    pub prefix: String,
    pub from: usize,
    pub to: usize,
    /// The stand-in's time per load, in microseconds.
    #[arg(value_parser = micros)]
    pub load: Duration,
    pub template: PathBuf,
    pub bytecode_dir: PathBuf,
    /// The heartbeat interval, in milliseconds.
    #[arg(value_parser = millis)]
    pub heartbeat: Duration,
    pub lease_namespace: String,
}

fn micros(s: &str) -> Result<Duration, std::num::ParseIntError> {
    s.parse().map(Duration::from_micros)
}

fn millis(s: &str) -> Result<Duration, std::num::ParseIntError> {
    s.parse().map(Duration::from_millis)
}

impl SimArgs {
    /// The command-line form, for the parent.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "__fleet-agents".into(),
            self.prefix.clone(),
            self.from.to_string(),
            self.to.to_string(),
            self.load.as_micros().to_string(),
            self.template.display().to_string(),
            self.bytecode_dir.display().to_string(),
            self.heartbeat.as_millis().to_string(),
            self.lease_namespace.clone(),
        ]
    }
}

/// The child process: runs the agents until stdin ends.
pub fn main(args: SimArgs) -> Result<()> {
    let agents = args.to - args.from;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Every agent's pass runs on the blocking pool, as in the real agent; the stand-in
        // sleeps there, so each agent needs a thread of its own during a rollout.
        .max_blocking_threads(agents + 16)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let template: Arc<Template> = Arc::new(serde_json::from_slice(
        &std::fs::read(&args.template).context("reading the template")?,
    )?);
    let loads: Loads = Arc::default();
    let metrics: Vec<Arc<Metrics>> = (0..agents).map(|_| Arc::default()).collect();
    let config = rt.block_on(kube::Config::infer()).context("kubeconfig")?;
    {
        let metrics = metrics.clone();
        let loads = loads.clone();
        std::thread::spawn(move || serve_stats(&metrics, &loads));
    }
    rt.block_on(async move {
        let mut tasks = Vec::with_capacity(agents);
        for (k, i) in (args.from..args.to).enumerate() {
            // Each agent has its own client (its own connections), as on a real node.
            let client = kube::Client::try_from(config.clone()).context("client")?;
            let node_name = format!("{}{i}", args.prefix);
            let cluster = ClusterConfig {
                node_name: node_name.clone(),
                bytecode_dirs: vec![args.bytecode_dir.clone()],
                heartbeat_interval: args.heartbeat,
                lease_namespace: args.lease_namespace.clone(),
                metrics_addr: None,
                fetcher: bpfpin_agent::bytecode::Fetcher::default(),
                netns_dir: bpfpin_agent::cluster::pods::DEFAULT_NETNS_DIR.into(),
                cgroup_dir: None,
                label_node: false,
            };
            let core = StandIn::new(args.load, template.clone(), loads.clone());
            let m = metrics[k].clone();
            tasks.push(tokio::spawn(async move {
                let never = std::future::pending::<()>();
                if let Err(e) =
                    bpfpin_agent::cluster::run_with(client, core, cluster, m, never).await
                {
                    eprintln!("fleet agent {node_name}: {e:#}");
                }
            }));
            // Start 50 agents per 50 ms: a fleet's agents do not all start in the same instant.
            if k % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        futures::future::join_all(tasks).await;
        anyhow::Ok(())
    })
}

fn serve_stats(metrics: &[Arc<Metrics>], loads: &Loads) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() != "stats" {
            continue;
        }
        let mut s = Stats {
            agents: metrics.len() as u64,
            loads: loads.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            ..Default::default()
        };
        for m in metrics {
            let (ev, ch) = m.events(Watched::Object);
            s.object_events += ev;
            s.object_changes += ch;
            s.node_events += m.events(Watched::Node).0;
            for (a, b) in s.writes.iter_mut().zip(m.writes()) {
                *a += b;
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", json!(s));
        let _ = out.flush();
    }
    // The parent is gone or done: so are the agents.
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Arc<Template> {
        let pinned = PinnedVersion {
            version: "v1".into(),
            programs: vec![("count".into(), 7), ("tail".into(), 8)],
            maps: vec![
                "/b/bpfpin/_versions/x/v1/maps/counts".into(),
                "/b/bpfpin/shared/last".into(),
            ],
            links: vec![],
            shared: vec!["/b/bpfpin/shared/last".into()],
        };
        let t = Template::of(&pinned, "x", Path::new("/b/bpfpin"));
        assert_eq!(t.maps, ["_versions/{object}/v1/maps/counts", "shared/last"]);
        Arc::new(t)
    }

    fn desired(name: &str, generation: i64) -> DesiredObject {
        DesiredObject {
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            generation,
            spec: Default::default(),
            bytecode: Ok(vec![1, 2, 3]),
        }
    }

    #[test]
    fn loads_once_per_generation_and_removes_what_is_not_wanted() {
        let loads = Loads::default();
        let mut core = StandIn::new(Duration::from_millis(1), template(), loads.clone());
        let none = BTreeSet::new();
        let r = core.reconcile(&[desired("a", 1), desired("b", 1)], &none);
        let actions: Vec<_> = r.objects.iter().map(|o| o.action).collect();
        assert_eq!(actions, [Action::Created, Action::Created]);
        let a = r.objects[0].pinned.as_ref().expect("pinned");
        assert_eq!(
            a.maps[0],
            Path::new("/sys/fs/bpf/bpfpin/_versions/a/v1/maps/counts")
        );
        assert_eq!(a.programs.len(), 2);

        let r = core.reconcile(&[desired("a", 1), desired("b", 2)], &none);
        let actions: Vec<_> = r.objects.iter().map(|o| o.action).collect();
        assert_eq!(actions, [Action::Unchanged, Action::Updated]);

        // b held: kept; a not wanted: removed.
        let hold = BTreeSet::from(["b".to_owned()]);
        let r = core.reconcile(&[], &hold);
        assert_eq!(r.removed, ["a"]);
        assert_eq!(r.unpinned, 4);
        let r = core.reconcile(&[], &none);
        assert_eq!(r.removed, ["b"]);
        let loads = loads.lock().expect("loads").clone();
        assert_eq!(loads, BTreeMap::from([("a".into(), 1), ("b".into(), 2)]));
    }

    #[test]
    fn a_missing_bytecode_fails_the_object() {
        let mut core = StandIn::new(Duration::ZERO, template(), Loads::default());
        let mut d = desired("a", 1);
        d.bytecode = Err(bpfpin_agent::error::ObjectError::new(
            bpfpin_agent::error::Reason::BytecodeUnavailable,
            "gone",
        ));
        let r = core.reconcile(&[d], &BTreeSet::new());
        assert_eq!(r.objects[0].action, Action::Failed);
        assert!(r.objects[0].pinned.is_none());
    }

    #[test]
    fn arguments_round_trip() {
        let a = SimArgs {
            prefix: "fleet-".into(),
            from: 3,
            to: 9,
            load: Duration::from_micros(2500),
            template: "/t.json".into(),
            bytecode_dir: "/b".into(),
            heartbeat: Duration::from_secs(30),
            lease_namespace: "kube-system".into(),
        };
        let argv = a.to_args();
        // Through the bench's whole command line, as the child parses it.
        let cli = <crate::args::Cli as clap::Parser>::try_parse_from(
            std::iter::once("bench".to_owned()).chain(argv),
        )
        .expect("parse");
        let Some(crate::args::Internal::FleetAgents(b)) = cli.sim else {
            panic!("not parsed as __fleet-agents: {cli:?}");
        };
        assert_eq!(
            (b.from, b.to, b.load, b.heartbeat),
            (3, 9, a.load, a.heartbeat)
        );
    }
}
