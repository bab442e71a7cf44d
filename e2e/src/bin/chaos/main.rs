//! `e2e/scripts/chaos --seed S --minutes M`: churn of creates, updates, relabels and deletes over about
//! 100 BpfObjects on simulated nodes (real agents, private bpffs mounts) while agents, both
//! operator replicas, kube-apiserver and etcd are SIGKILLed at random, with invariants checked
//! throughout and after the faults stop (see e2e/README.md, "Chaos"). The last line of stdout is
//! `chaos: faults=N checks=M violations=V`; the exit status is 1 when V > 0. Run it through
//! `e2e/scripts/chaos` (it builds the binaries and brings the control plane up).

mod model;
mod probe;
mod procs;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bpfpin_crds::{BpfNodeState, BpfObject, ObjectPhase};
use bpfpin_e2e::{Env, LEASE_NAMESPACE, entry, ready_is, repo, reported_ids};
use bpfpin_e2e::{add_node, agent_args, remove_node, target_debug};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, ObjectList, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use model::{Known, Slot};
use procs::{Component, Managed};

/// Any single API call of the driver gives up after this (the API server may be dead).
const CALL: Duration = Duration::from_secs(10);
/// A deleted object may stay pinned on a node this long after it left the API server, counted
/// from when the node's agent and the control plane were last (re)started.
const GRACE: Duration = Duration::from_secs(60);
/// During the faults, a deletion not finished after this is stuck.
const STUCK: Duration = Duration::from_secs(240);
/// The operators' `--stale-after`.
const STALE_AFTER: &str = "15s";
/// Stable objects whose program is attached to `sys_enter_getpid`, on every node: the kernel
/// allows 64 programs per tracepoint, shared by every simulated node and other tests.
const COUNTING: usize = 3;

/// The run's settings (e2e/README.md, "Chaos").
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "e2e/scripts/chaos", args_override_self = true)]
struct Args {
    /// The seed of every choice (default: the current time).
    #[arg(long, default_value_t = now_secs())]
    seed: u64,
    /// How long the faults go on.
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Simulated nodes (at least 2).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// BpfObjects, the stable ones included.
    #[arg(long, default_value_t = 100)]
    objects: usize,
    /// Objects never written after their creation (at least 1, fewer than --objects).
    #[arg(long, default_value_t = 20)]
    stable: usize,
    /// How long the objects may take to converge after the faults, and to be cleaned up.
    #[arg(long = "converge-secs", value_name = "SECS", value_parser = secs, default_value = "180")]
    converge: Duration,
    /// The pause between two faults: `LOW-HIGH` milliseconds, 0 < LOW <= HIGH.
    #[arg(long = "fault-every-ms", value_name = "LOW-HIGH", value_parser = ms_range, default_value = "3000-12000")]
    fault_ms: (u64, u64),
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
}

fn secs(v: &str) -> Result<Duration, std::num::ParseIntError> {
    v.parse().map(Duration::from_secs)
}

fn ms_range(v: &str) -> Result<(u64, u64), String> {
    match v.split_once('-').map(|(l, h)| (l.parse(), h.parse())) {
        Some((Ok(l), Ok(h))) if 0 < l && l <= h => Ok((l, h)),
        _ => Err(format!("{v:?} is not LOW-HIGH with 0 < LOW <= HIGH")),
    }
}

fn parse_args() -> Args {
    use clap::{CommandFactory as _, Parser as _};
    let a = Args::parse();
    if a.nodes < 2 || a.stable == 0 || a.objects <= a.stable || a.minutes <= 0.0 {
        Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                "needs --nodes >= 2, 0 < --stable < --objects and --minutes > 0",
            )
            .exit()
    }
    a
}

/// A simulated node: Node object and bpffs from `e2e/scripts/cluster node add`, its agent run by the
/// driver (so it can be killed and restarted), and the reloads its agent logged.
#[derive(Debug)]
struct SimNode {
    name: String,
    bpffs: PathBuf,
    agent: Managed,
    log: probe::AgentLog,
}

impl SimNode {
    fn root(&self) -> PathBuf {
        self.bpffs.join("bpfpin")
    }
}

/// What was counted, for the summary.
#[derive(Debug, Default)]
struct Tally {
    faults: BTreeMap<&'static str, u64>,
    skipped_faults: u64,
    ops: BTreeMap<&'static str, (u64, u64)>,
    checks: u64,
    violations: Vec<String>,
    reported: BTreeSet<String>,
    notes: Vec<String>,
}

impl Tally {
    /// Counts a write `op` tried, and whether it succeeded.
    fn op(&mut self, op: &'static str, ok: bool) {
        let e = self.ops.entry(op).or_default();
        e.0 += 1;
        e.1 += u64::from(ok);
    }
}

struct Chaos {
    args: Args,
    repo: PathBuf,
    state: PathBuf,
    client: Client,
    /// Holds the compiled objects' folder (and the download caches) for the agents.
    env: Env,
    bytecode: String,
    nodes: Vec<SimNode>,
    operators: Vec<Managed>,
    stable: Vec<String>,
    slots: Vec<Slot>,
    tiers: model::Tiers,
    churn_rng: fastrand::Rng,
    fault_rng: fastrand::Rng,
    check_rng: fastrand::Rng,
    restarting: Option<tokio::task::JoinHandle<Result<()>>>,
    cp_up_since: Option<Instant>,
    stable_ids: BTreeMap<(String, String), u32>,
    stable_counts: BTreeMap<(String, String), u64>,
    absent_since: BTreeMap<String, Instant>,
    tally: Tally,
    start: Instant,
    journal: std::fs::File,
}

impl std::fmt::Debug for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chaos")
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

/// An API call with a time bound (a dead API server must not hang the driver).
async fn call<T>(fut: impl Future<Output = kube::Result<T>>) -> Result<T> {
    match tokio::time::timeout(CALL, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => bail!("no answer within {CALL:?}"),
    }
}

/// Whether an error says for sure that the write did not happen (4xx), as opposed to an
/// unanswered request that may have landed.
fn refused(e: &anyhow::Error) -> Option<u16> {
    match e.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(s)) if (400..500).contains(&s.code) => Some(s.code),
        _ => None,
    }
}

impl Chaos {
    fn objects(&self) -> Api<BpfObject> {
        Api::all(self.client.clone())
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn journal(&mut self, what: &str) {
        let _ = writeln!(self.journal, "t={:.3} {what}", self.t());
    }

    /// Records a violation once per `key` (a persistent one is not counted at every check).
    fn violation(&mut self, key: String, what: String) {
        if self.tally.reported.insert(key) {
            eprintln!("chaos: VIOLATION at t={:.1}s: {what}", self.t());
            self.journal(&format!("VIOLATION {what}"));
            self.tally.violations.push(what);
        }
    }

    fn note(&mut self, what: String) {
        eprintln!("chaos: note at t={:.1}s: {what}", self.t());
        self.journal(&format!("NOTE {what}"));
        self.tally.notes.push(what);
    }

    // -----------------------------------------------------------------------------------------
    // Setup and teardown

    async fn new(args: Args) -> Result<Self> {
        let env = Env::new().await?;
        let client = env.client.clone();
        let repo = repo();
        let state = PathBuf::from(
            std::env::var("BPFPIN_E2E_STATE").unwrap_or_else(|_| "/tmp/bpfpin-e2e".into()),
        );
        let logs = PathBuf::from(
            std::env::var("BPFPIN_E2E_LOGS").unwrap_or_else(|_| "/tmp/bpfpin-e2e-logs".into()),
        );
        std::fs::create_dir_all(&logs)?;
        let journal_path = logs.join("chaos-events.log");
        let journal = std::fs::File::create(&journal_path)
            .with_context(|| format!("creating {}", journal_path.display()))?;
        let target = target_debug();
        let kubeconfig = env.kubeconfig.display().to_string();
        let mut operators = Vec::new();
        for replica in ["a", "b"] {
            let log = logs.join(format!("chaos-operator-{replica}.log"));
            let _ = std::fs::remove_file(&log);
            operators.push(Managed::new(
                format!("operator {replica}"),
                procs::Spec {
                    program: target.join("bpfpin-operator"),
                    args: [
                        "--stale-after",
                        STALE_AFTER,
                        "--metrics-addr",
                        "127.0.0.1:0",
                        "--lease-namespace",
                        LEASE_NAMESPACE,
                        "--log-format",
                        "json",
                    ]
                    .map(String::from)
                    .to_vec(),
                    env: vec![
                        ("KUBECONFIG".into(), kubeconfig.clone()),
                        ("POD_NAME".into(), format!("chaos-operator-{replica}")),
                        ("RUST_LOG".into(), "info".into()),
                    ],
                },
                log,
            ));
        }
        let mut nodes = Vec::new();
        let mut tiers = model::Tiers::default();
        for i in 0..args.nodes {
            let name = format!("chaos-{i}");
            remove_node(&env.kubeconfig, &name);
            let tier = if i % 2 == 0 { "a" } else { "b" };
            let bpffs = add_node(
                &env.kubeconfig,
                &name,
                &format!("{}=true,{}={tier}", model::NODE_LABEL, model::TIER_LABEL),
            )?;
            tiers.tier.insert(name.clone(), tier.into());
            let log = logs.join(format!("chaos-agent-{name}.log"));
            let _ = std::fs::remove_file(&log);
            let agent = Managed::new(
                format!("agent {name}"),
                procs::Spec {
                    program: target.join("bpfpin-agent"),
                    args: ["--log-format".into(), "json".into()]
                        .into_iter()
                        .chain(agent_args(
                            &name,
                            &bpffs,
                            env.bytecode_dir.path(),
                            &env.cache_dir.path().join(&name),
                        ))
                        .collect(),
                    env: vec![
                        ("KUBECONFIG".into(), kubeconfig.clone()),
                        ("RUST_LOG".into(), "info".into()),
                    ],
                },
                log.clone(),
            );
            nodes.push(SimNode {
                name,
                bpffs,
                agent,
                log: probe::AgentLog::new(log),
            });
        }
        let stable = (0..args.stable).map(|i| format!("chaos-s{i:02}")).collect();
        let slots = (0..args.objects - args.stable)
            .map(|i| Slot::new(format!("chaos-c{i:02}")))
            .collect();
        let bytecode = env.object_path("counter");
        let seed = args.seed;
        Ok(Self {
            args,
            repo,
            state,
            client,
            env,
            bytecode,
            nodes,
            operators,
            stable,
            slots,
            tiers,
            churn_rng: fastrand::Rng::with_seed(seed),
            fault_rng: fastrand::Rng::with_seed(seed ^ 0x5eed_fa17),
            check_rng: fastrand::Rng::with_seed(seed ^ 0xc4ec_0000),
            restarting: None,
            cp_up_since: Some(Instant::now()),
            stable_ids: BTreeMap::new(),
            stable_counts: BTreeMap::new(),
            absent_since: BTreeMap::new(),
            tally: Tally::default(),
            start: Instant::now(),
            journal,
        })
    }

    /// Starts operators and agents, removes what an earlier run left, creates every object and
    /// waits until all are pinned; records the stable objects' program ids and counters.
    async fn setup(&mut self) -> Result<()> {
        for op in &mut self.operators {
            op.start()?;
        }
        for n in &mut self.nodes {
            n.agent.start()?;
        }
        self.delete_all().await?;
        let deadline = Instant::now() + self.args.converge;
        while !self.list().await?.items.is_empty() {
            if Instant::now() > deadline {
                bail!("objects of an earlier run were not deleted");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for name in self.stable.clone() {
            let counting = self.counting(&name);
            let body = model::object(&name, model::stable_spec(&self.bytecode, counting), 0, 0);
            self.create_object(body).await?;
        }
        for i in 0..self.slots.len() {
            let content = self.churn_rng.usize(..model::CONTENTS.len());
            let selector = self.churn_rng.usize(..model::SELECTORS);
            let body = self.churn_object(i, content, selector);
            self.create_object(body).await?;
            self.slots[i].known = Known::Present { content, selector };
        }
        // Not under test yet (no fault so far): a slow machine gets more time.
        let bound = self.args.converge;
        self.args.converge = bound.max(Duration::from_secs(300));
        let took = self.converge("the first pin of every object").await;
        self.args.converge = bound;
        let took = took?;
        if !self.tally.violations.is_empty() {
            bail!("the objects did not all pin before any fault");
        }
        eprintln!(
            "chaos: {} objects pinned on {} nodes in {:.1}s",
            self.args.objects,
            self.nodes.len(),
            took.as_secs_f64()
        );
        self.record_stable()?;
        self.refresh_logs();
        for n in &self.nodes {
            for s in &self.stable {
                let loads = n.log.pinned.get(s).copied().unwrap_or(0);
                if loads != 1 {
                    bail!(
                        "{s} was loaded {loads} times on {} before any fault",
                        n.name
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether a stable object's program is attached (and its counter checked): the first
    /// [`COUNTING`] of them.
    fn counting(&self, name: &str) -> bool {
        self.stable.iter().take(COUNTING).any(|s| s == name)
    }

    /// Every chaos object.
    async fn list(&self) -> Result<ObjectList<BpfObject>> {
        let by_label = ListParams::default().labels(&format!("{}=true", model::OBJECT_LABEL));
        call(self.objects().list(&by_label)).await
    }

    /// Deletes every chaos object (the finalizers then hold them until the nodes unpin).
    async fn delete_all(&self) -> Result<()> {
        for o in self.list().await? {
            call(
                self.objects()
                    .delete(&o.name_any(), &DeleteParams::default()),
            )
            .await?;
        }
        Ok(())
    }

    async fn create_object(&self, body: Value) -> Result<()> {
        let o: BpfObject = serde_json::from_value(body)?;
        call(self.objects().create(&PostParams::default(), &o)).await?;
        Ok(())
    }

    /// Sets the object's mood label: a write that changes no spec, so no reload.
    async fn relabel_object(&mut self, slot: usize, mood: String) {
        let patch = json!({"metadata": {"labels": {model::MOOD_LABEL: mood}}});
        let name = self.slots[slot].name.clone();
        let r = call(
            self.objects()
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await;
        self.outcome(slot, "relabel-object", r.map(|_| ()), None);
    }

    fn record_stable(&mut self) -> Result<()> {
        for n in &self.nodes {
            for s in &self.stable {
                let root = n.root().join(s);
                let id = probe::program_id(&root.join("progs/count_getpid"))?;
                let count = probe::counter(&root.join("maps/counts"))?;
                self.stable_ids.insert((s.clone(), n.name.clone()), id);
                self.stable_counts
                    .insert((s.clone(), n.name.clone()), count);
            }
        }
        Ok(())
    }

    /// Deletes every chaos object and waits until each is gone and every node's root is empty.
    async fn cleanup(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + self.args.converge;
        self.delete_all().await?;
        loop {
            let left = self.list().await?;
            let mut pinned = Vec::new();
            for n in &self.nodes {
                for p in probe::leftovers(&n.root()) {
                    pinned.push(format!("{}: {}", n.name, p.display()));
                }
            }
            self.tally.checks += 1;
            if left.items.is_empty() && pinned.is_empty() {
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                for o in &left.items {
                    let name = o.name_any();
                    self.violation(
                        format!("cleanup-stuck/{name}"),
                        format!("{name}: deletion not finished {:?} after the last delete (object stuck deleting; finalizers {:?})",
                            self.args.converge, o.metadata.finalizers),
                    );
                }
                for p in pinned {
                    self.violation(
                        format!("cleanup-pin/{p}"),
                        format!(
                            "{p}: still pinned {:?} after every object was deleted",
                            self.args.converge
                        ),
                    );
                }
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn shutdown(&mut self) {
        for n in &mut self.nodes {
            n.agent.stop();
        }
        for op in &mut self.operators {
            op.stop();
        }
        for n in &self.nodes {
            remove_node(&self.env.kubeconfig, &n.name);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Churn

    /// One churn step. Draws the same random values whatever the outcome, so a seed gives the
    /// same sequence of choices.
    async fn churn(&mut self) {
        let slot = self.churn_rng.usize(..self.slots.len());
        let roll = self.churn_rng.u32(..100);
        let content_roll = self.churn_rng.usize(1..model::CONTENTS.len());
        let selector_roll = self.churn_rng.usize(1..model::SELECTORS);
        let node_roll = self.churn_rng.usize(..self.nodes.len());
        let mood = self.churn_rng.u32(..1000);
        if roll < 6 {
            return self.relabel_node(node_roll).await;
        }
        let name = self.slots[slot].name.clone();
        match self.slots[slot].known.clone() {
            Known::Absent => self.create(slot, content_roll, selector_roll).await,
            Known::Present { content, selector } => {
                if roll < 45 {
                    let new = (content + content_roll) % model::CONTENTS.len();
                    self.update(slot, "update-content", new, selector).await;
                } else if roll < 62 {
                    let new = (selector + selector_roll) % model::SELECTORS;
                    self.update(slot, "update-selector", content, new).await;
                } else if roll < 75 {
                    self.slots[slot].touched = true;
                    self.relabel_object(slot, format!("m{mood}")).await;
                } else {
                    let r = call(self.objects().delete(&name, &DeleteParams::default())).await;
                    self.slots[slot].touched = true;
                    self.outcome(slot, "delete", r.map(|_| ()), Some(Known::Deleting));
                }
            }
            // Its state is not known yet (deleting, or a write without an answer): next time.
            Known::Deleting | Known::Unknown => {}
        }
    }

    /// The object of churn slot `slot` with content `content` and selector `selector`; pinning
    /// it is one more reload of the slot.
    fn churn_object(&mut self, slot: usize, content: usize, selector: usize) -> serde_json::Value {
        self.slots[slot].reload_causes += 1;
        let spec = model::churn_spec(&self.bytecode, content, selector);
        model::object(&self.slots[slot].name, spec, content, selector)
    }

    async fn create(&mut self, slot: usize, content: usize, selector: usize) {
        let body = self.churn_object(slot, content, selector);
        self.slots[slot].touched = true;
        let r = match serde_json::from_value::<BpfObject>(body) {
            Ok(o) => call(self.objects().create(&PostParams::default(), &o))
                .await
                .map(|_| ()),
            Err(e) => Err(e.into()),
        };
        self.outcome(
            slot,
            "create",
            r,
            Some(Known::Present { content, selector }),
        );
    }

    async fn update(&mut self, slot: usize, op: &'static str, content: usize, selector: usize) {
        let name = self.slots[slot].name.clone();
        let patch = json!({
            "metadata": {"annotations": {
                model::CONTENT_ANNOTATION: content.to_string(),
                model::SELECTOR_ANNOTATION: selector.to_string(),
            }},
            "spec": model::churn_spec(&self.bytecode, content, selector),
        });
        self.slots[slot].reload_causes += 1;
        self.slots[slot].touched = true;
        let r = call(
            self.objects()
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map(|_| ());
        self.outcome(slot, op, r, Some(Known::Present { content, selector }));
    }

    fn outcome(&mut self, slot: usize, op: &'static str, r: Result<()>, then: Option<Known>) {
        let name = self.slots[slot].name.clone();
        self.tally.op(op, r.is_ok());
        match r {
            Ok(()) => {
                if let Some(k) = then {
                    self.slots[slot].known = k;
                }
                self.journal(&format!("{op} {name} ok"));
            }
            Err(err) => {
                let code = refused(&err);
                // 404: it is gone; 409 on create: it still exists (deleting). Anything else
                // (no answer, 5xx) may have landed: the next list tells.
                self.slots[slot].known = match code {
                    Some(404) => Known::Absent,
                    _ => Known::Unknown,
                };
                self.journal(&format!("{op} {name} failed: {err:#}"));
            }
        }
    }

    async fn relabel_node(&mut self, i: usize) {
        let name = self.nodes[i].name.clone();
        let tier = if self.tiers.tier.get(&name).map(String::as_str) == Some("a") {
            "b"
        } else {
            "a"
        };
        *self.tiers.relabels.entry(name.clone()).or_default() += 1;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"metadata": {"labels": {model::TIER_LABEL: tier}}});
        let r = call(nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))).await;
        self.tally.op("relabel-node", r.is_ok());
        match r {
            Ok(_) => {
                self.tiers.tier.insert(name.clone(), tier.into());
                self.journal(&format!("relabel-node {name} {tier} ok"));
            }
            Err(err) => self.journal(&format!("relabel-node {name} failed: {err:#}")),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Faults

    /// One fault: a SIGKILL of an agent, an operator replica, kube-apiserver or etcd.
    fn fault(&mut self) {
        let kind = self.fault_rng.u32(..100);
        let target = self.fault_rng.usize(..64);
        let delay = Duration::from_millis(self.fault_rng.u64(..4000));
        let cp_busy = self.restarting.is_some();
        let kind = match kind {
            0..45 => "agent",
            45..70 => "operator",
            // One control-plane outage at a time: a second one becomes an agent kill.
            _ if cp_busy => "agent",
            70..85 => "kube-apiserver",
            _ => "etcd",
        };
        let count = self.nodes.len();
        let what = match kind {
            "agent" | "operator" => {
                let p = match kind {
                    "agent" => &mut self.nodes[target % count].agent,
                    _ => &mut self.operators[target % 2],
                };
                p.up().then(|| {
                    p.kill(delay);
                    // `agent chaos-1`, `operator b`.
                    format!("SIGKILL {} (restart in {delay:?})", p.name)
                })
            }
            _ => {
                let c = if kind == "etcd" {
                    Component::Etcd
                } else {
                    Component::ApiServer
                };
                match procs::kill_component(&self.state, c) {
                    Ok(pid) => {
                        let repo = self.repo.clone();
                        let wait = delay / 2;
                        self.cp_up_since = None;
                        self.restarting = Some(tokio::task::spawn_blocking(move || {
                            std::thread::sleep(wait);
                            procs::cluster_up(&repo)
                        }));
                        Some(format!(
                            "SIGKILL {} (pid {pid}; e2e/scripts/cluster up in {wait:?})",
                            c.name()
                        ))
                    }
                    Err(e) => {
                        self.journal(&format!("no {kind} to kill: {e:#}"));
                        None
                    }
                }
            }
        };
        match what {
            Some(w) => {
                *self.tally.faults.entry(kind).or_default() += 1;
                self.journal(&w);
            }
            None => self.tally.skipped_faults += 1,
        }
    }

    /// Restarts what is due and notices exits nobody asked for and a finished control-plane
    /// restart.
    async fn supervise(&mut self) -> Result<()> {
        let mut notes = Vec::new();
        for n in &mut self.nodes {
            notes.extend(n.agent.supervise()?);
        }
        for op in &mut self.operators {
            notes.extend(op.supervise()?);
        }
        for n in notes {
            self.note(n);
        }
        if self.restarting.as_ref().is_some_and(|h| h.is_finished())
            && let Some(h) = self.restarting.take()
        {
            match h.await {
                Ok(Ok(())) => {
                    self.cp_up_since = Some(Instant::now());
                    self.journal("control plane up");
                }
                Ok(Err(e)) => {
                    self.note(format!("e2e/scripts/cluster up failed, retrying: {e:#}"));
                    let repo = self.repo.clone();
                    self.restarting = Some(tokio::task::spawn_blocking(move || {
                        std::thread::sleep(Duration::from_secs(1));
                        procs::cluster_up(&repo)
                    }));
                }
                Err(e) => bail!("the control-plane restart task failed: {e}"),
            }
        }
        Ok(())
    }

    /// After the faults: the control plane up, every agent and operator running.
    async fn heal(&mut self) -> Result<()> {
        if let Some(h) = self.restarting.take() {
            let _ = h.await;
        }
        let repo = self.repo.clone();
        tokio::task::spawn_blocking(move || procs::cluster_up(&repo)).await??;
        self.cp_up_since = Some(Instant::now());
        for n in &mut self.nodes {
            n.agent.ensure_up()?;
        }
        for op in &mut self.operators {
            op.ensure_up()?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Invariants

    fn refresh_logs(&mut self) {
        for n in &mut self.nodes {
            n.log.refresh();
        }
    }

    /// Stable objects: the same program ids, counters that count, one load each (the first),
    /// never unpinned.
    fn check_stable(&mut self, sample: usize) {
        // Each getpid() runs every stable object's tracepoint program on every node.
        for _ in 0..3 {
            let _ = std::process::id();
        }
        let mut names = self.stable.clone();
        self.check_rng.shuffle(&mut names);
        names.truncate(sample);
        // The counting ones every time: theirs is the counter check.
        for s in self.stable.iter().take(COUNTING) {
            if !names.contains(s) {
                names.push(s.clone());
            }
        }
        let mut found = Vec::new();
        for n in &self.nodes {
            for s in &names {
                let root = n.root().join(s);
                let id = probe::program_id(&root.join("progs/count_getpid"));
                let count = probe::counter(&root.join("maps/counts"));
                found.push((s.clone(), n.name.clone(), id, count));
            }
        }
        for (s, node, id, count) in found {
            let key = (s.clone(), node.clone());
            self.tally.checks += 2;
            match id {
                Ok(id) if Some(&id) == self.stable_ids.get(&key) => {}
                Ok(id) => self.violation(
                    format!("stable-id/{s}/{node}"),
                    format!(
                        "{s} on {node}: program count_getpid changed id {:?} -> {id} though the object never changed",
                        self.stable_ids.get(&key)
                    ),
                ),
                Err(e) => self.violation(
                    format!("stable-pin/{s}/{node}"),
                    format!("{s} on {node}: program count_getpid not pinned: {e:#}"),
                ),
            }
            match count {
                _ if !self.counting(&s) => {}
                Ok(c) => {
                    let before = self.stable_counts.get(&key).copied().unwrap_or(0);
                    if c <= before {
                        self.violation(
                            format!("stable-count/{s}/{node}"),
                            format!("{s} on {node}: counts[0] went {before} -> {c} across getpid() calls (stopped counting or lost its data)"),
                        );
                    }
                    self.stable_counts.insert(key, c);
                }
                Err(e) => self.violation(
                    format!("stable-map/{s}/{node}"),
                    format!("{s} on {node}: map counts not readable: {e:#}"),
                ),
            }
        }
        let mut bad = Vec::new();
        for n in &self.nodes {
            for s in &self.stable {
                self.tally.checks += 1;
                let loads = n.log.pinned.get(s).copied().unwrap_or(0);
                let unpins = n.log.unpinned.get(s).copied().unwrap_or(0);
                if loads != 1 || unpins != 0 {
                    bad.push((s.clone(), n.name.clone(), loads, unpins));
                }
            }
        }
        for (s, node, loads, unpins) in bad {
            self.violation(
                format!("stable-reload/{s}/{node}/{loads}/{unpins}"),
                format!("{s} on {node}: loaded {loads} times and unpinned {unpins} times though its spec never changed (want 1 load, 0 unpins)"),
            );
        }
    }

    /// Churned objects: no node loaded one more often than writes could have asked for (a
    /// create, a content or selector change, a relabel of that node: each may cause one load).
    fn check_reload_bounds(&mut self) {
        let mut bad = Vec::new();
        for n in &self.nodes {
            let relabels = self.tiers.relabels.get(&n.name).copied().unwrap_or(0);
            for s in &self.slots {
                self.tally.checks += 1;
                let loads = n.log.pinned.get(&s.name).copied().unwrap_or(0);
                let bound = s.reload_causes + relabels;
                if loads > bound {
                    bad.push((
                        s.name.clone(),
                        n.name.clone(),
                        loads,
                        s.reload_causes,
                        relabels,
                    ));
                }
            }
        }
        for (o, node, loads, causes, relabels) in bad {
            self.violation(
                format!("reload-bound/{o}/{node}/{loads}"),
                format!("{o} on {node}: {loads} loads, but only {causes} writes to it and {relabels} relabels of the node could cause one each"),
            );
        }
    }

    /// What a list of the objects tells during the faults: the driver's view resynced, no
    /// deletion stuck, no pin of an object gone from the API server on a node whose agent had
    /// time to sweep it.
    fn check_listed(&mut self, list: &[BpfObject]) {
        let now = Instant::now();
        let present: BTreeMap<String, &BpfObject> =
            list.iter().map(|o| (o.name_any(), o)).collect();
        for s in &mut self.slots {
            s.known = match present.get(&s.name) {
                None => Known::Absent,
                Some(o) if o.metadata.deletion_timestamp.is_some() => Known::Deleting,
                Some(o) => {
                    let ann = |k: &str| {
                        o.annotations()
                            .get(k)
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0)
                    };
                    Known::Present {
                        content: ann(model::CONTENT_ANNOTATION),
                        selector: ann(model::SELECTOR_ANNOTATION),
                    }
                }
            };
        }
        let names: Vec<String> = self
            .stable
            .iter()
            .cloned()
            .chain(self.slots.iter().map(|s| s.name.clone()))
            .collect();
        for name in &names {
            if present.contains_key(name) {
                self.absent_since.remove(name);
            } else {
                self.absent_since.entry(name.clone()).or_insert(now);
            }
        }
        let gone: Vec<String> = self
            .stable
            .iter()
            .filter(|s| !present.contains_key(*s))
            .cloned()
            .collect();
        for s in gone {
            let what = format!("{s}: a stable object disappeared from the API server");
            self.violation(format!("stable-gone/{s}"), what);
        }
        let stuck: Vec<(String, String, f64)> = list
            .iter()
            .filter_map(|o| {
                let since = o.metadata.deletion_timestamp.as_ref()?.0;
                let age = k8s_openapi::jiff::Timestamp::now()
                    .duration_since(since)
                    .as_secs_f64();
                (age > STUCK.as_secs_f64()).then(|| {
                    (
                        o.name_any(),
                        o.metadata.uid.clone().unwrap_or_default(),
                        age,
                    )
                })
            })
            .collect();
        for (name, uid, age) in stuck {
            self.tally.checks += 1;
            self.violation(
                format!("stuck/{uid}"),
                format!("{name}: stuck deleting for {age:.0}s (more than {STUCK:?})"),
            );
        }
        let cp_settled = self
            .cp_up_since
            .is_some_and(|t| now.duration_since(t) > GRACE);
        let mut found = Vec::new();
        for n in &self.nodes {
            let settled = cp_settled
                && n.agent
                    .started
                    .is_some_and(|t| now.duration_since(t) > GRACE);
            if !settled {
                continue;
            }
            for o in probe::pinned_objects(&n.root()) {
                if let Some(since) = self.absent_since.get(&o)
                    && now.duration_since(*since) > GRACE
                {
                    found.push((o, n.name.clone(), now.duration_since(*since)));
                }
            }
        }
        self.tally.checks += self.nodes.len() as u64;
        for (o, node, gone) in found {
            self.violation(
                format!("deleted-pin/{o}/{node}"),
                format!(
                    "{o}: still pinned on {node} {:.0}s after it left the API server (agent and control plane up for more than {GRACE:?})",
                    gone.as_secs_f64()
                ),
            );
        }
    }

    /// One round of the checks during the faults.
    async fn check(&mut self) {
        self.refresh_logs();
        self.check_stable(4);
        self.check_reload_bounds();
        if self.restarting.is_none()
            && let Ok(list) = self.list().await
        {
            self.check_listed(&list.items);
        }
    }

    /// What differs from the converged state: every object Ready at its generation on exactly
    /// the nodes its selector picks, pinned there (with the ids the node reports) and nowhere
    /// else, nothing deleting, nothing pinned of an object the API server does not have.
    async fn problems(&mut self, probe_ids: bool) -> Result<Vec<String>> {
        let list = self.list().await?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node_list =
            call(nodes.list(&ListParams::default().labels(&format!("{}=true", model::NODE_LABEL))))
                .await?;
        let labels: BTreeMap<String, BTreeMap<String, String>> = node_list
            .iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect();
        let states: Api<BpfNodeState> = Api::all(self.client.clone());
        let mut node_states = BTreeMap::new();
        for n in &self.nodes {
            node_states.insert(n.name.clone(), call(states.get_opt(&n.name)).await?);
        }
        let mut p = Vec::new();
        let names: BTreeSet<String> = list.iter().map(ResourceExt::name_any).collect();
        for o in &list {
            let name = o.name_any();
            if o.metadata.deletion_timestamp.is_some() {
                p.push(format!("{name}: still deleting"));
                continue;
            }
            let selector = o.spec.node_selector.as_ref();
            let expected: Vec<&SimNode> = self
                .nodes
                .iter()
                .filter(|n| {
                    labels
                        .get(&n.name)
                        .is_some_and(|l| probe::selects(selector, l))
                })
                .collect();
            let counts = o.status.as_ref().and_then(|s| s.nodes.as_ref());
            let want = i32::try_from(expected.len()).unwrap_or(i32::MAX);
            if !ready_is(o, "True") || counts.is_none_or(|c| c.selected != want || c.ready != want)
            {
                p.push(format!(
                    "{name}: want Ready on {want} nodes at generation {:?}, status {}",
                    o.metadata.generation,
                    serde_json::to_string(&o.status).unwrap_or_default()
                ));
            }
            for n in &self.nodes {
                let e = node_states
                    .get(&n.name)
                    .and_then(Option::as_ref)
                    .and_then(|s| entry(s, &name));
                let pinned = n.root().join(&name).join("progs/count_getpid");
                if expected.iter().any(|x| x.name == n.name) {
                    match e {
                        Some(e)
                            if e.phase == ObjectPhase::Pinned
                                && Some(e.generation) == o.metadata.generation
                                && e.uid == o.metadata.uid => {}
                        _ => p.push(format!(
                            "{name} on {}: want Pinned at generation {:?}, node reports {}",
                            n.name,
                            o.metadata.generation,
                            serde_json::to_string(&e).unwrap_or_default()
                        )),
                    }
                    if !pinned.exists() {
                        p.push(format!(
                            "{name} on {}: {} missing",
                            n.name,
                            pinned.display()
                        ));
                    } else if probe_ids {
                        let reported = e.and_then(|e| {
                            e.programs
                                .iter()
                                .find(|p| p.name == "count_getpid")
                                .map(|p| p.id)
                        });
                        let actual = probe::program_id(&pinned).ok();
                        if reported != actual {
                            p.push(format!(
                                "{name} on {}: the node reports program id {reported:?}, the pin is {actual:?}",
                                n.name
                            ));
                        }
                    }
                } else {
                    if e.is_some() {
                        p.push(format!("{name} on {}: reported but not selected", n.name));
                    }
                    if probe::pinned_objects(&n.root()).contains(&name) {
                        p.push(format!("{name} on {}: pinned but not selected", n.name));
                    }
                }
            }
        }
        for n in &self.nodes {
            for o in probe::pinned_objects(&n.root()) {
                if !names.contains(&o) {
                    p.push(format!(
                        "{o} on {}: pinned, but the object is deleted",
                        n.name
                    ));
                }
            }
        }
        Ok(p)
    }

    /// Waits until [`Self::problems`] finds nothing, within `--converge-secs`; otherwise each
    /// remaining problem is a violation.
    async fn converge(&mut self, what: &str) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + self.args.converge;
        loop {
            let last = match self.problems(false).await {
                Ok(p) if p.is_empty() => {
                    // Once more with the program ids read back from the pins.
                    match self.problems(true).await {
                        Ok(p) if p.is_empty() => {
                            self.tally.checks += 1;
                            return Ok(started.elapsed());
                        }
                        Ok(p) => p,
                        Err(e) => vec![format!("reading the cluster: {e:#}")],
                    }
                }
                Ok(p) => p,
                Err(e) => vec![format!("reading the cluster: {e:#}")],
            };
            if Instant::now() > deadline {
                self.tally.checks += 1;
                for p in &last {
                    self.violation(
                        format!("converge/{what}/{p}"),
                        format!("not converged {:?} after {what}: {p}", self.args.converge),
                    );
                }
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// After convergence, with no faults: writes whose reload count is known exactly. A content
    /// change loads the object once on each node that has it; a selector that selects the same
    /// nodes spelled differently, or a label of the object, loads nothing and keeps the ids.
    async fn exact_reloads(&mut self) -> Result<()> {
        self.refresh_logs();
        let list = self.list().await?;
        self.check_listed(&list.items);
        let mut content = Vec::new();
        let mut respell = Vec::new();
        let mut mood = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let Known::Present {
                content: c,
                selector,
            } = s.known
            else {
                continue;
            };
            if content.len() < 5 {
                content.push((i, c, selector));
            } else if respell.len() < 5 && (selector == 0 || selector == 3) {
                respell.push((i, c, selector));
            } else if mood.len() < 5 {
                mood.push(i);
            }
        }
        let states: Api<BpfNodeState> = Api::all(self.client.clone());
        // The writes that must reload nothing: the same program ids before and after.
        let unchanged: Vec<(usize, &str)> = respell
            .iter()
            .map(|&(i, _, _)| (i, "selector respelled"))
            .chain(mood.iter().map(|&i| (i, "label of the object")))
            .collect();
        let mut ids_before = BTreeMap::new();
        for n in &self.nodes {
            let st = call(states.get(&n.name)).await?;
            for &(i, _) in &unchanged {
                let o = &self.slots[i].name;
                ids_before.insert((o.clone(), n.name.clone()), reported_ids(&st, o));
            }
        }
        let before: Vec<BTreeMap<String, u32>> =
            self.nodes.iter().map(|n| n.log.pinned.clone()).collect();
        for &(i, c, sel) in &content {
            self.update(i, "update-content", (c + 1) % model::CONTENTS.len(), sel)
                .await;
        }
        for &(i, c, sel) in &respell {
            self.update(i, "update-selector", c, 3 - sel).await;
        }
        for &i in &mood {
            self.relabel_object(i, "final".into()).await;
        }
        self.converge("the exact-reload writes").await?;
        self.refresh_logs();
        let mut found = Vec::new();
        for (k, n) in self.nodes.iter().enumerate() {
            let st = call(states.get(&n.name)).await?;
            let delta = |o: &str| {
                n.log
                    .pinned
                    .get(o)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(before[k].get(o).copied().unwrap_or(0))
            };
            for &(i, _, _) in &content {
                let o = &self.slots[i].name;
                let has = entry(&st, o).is_some();
                let want = u32::from(has);
                found.push((
                    o.clone(),
                    n.name.clone(),
                    "content change",
                    delta(o),
                    want,
                    true,
                ));
            }
            for &(i, what) in &unchanged {
                let o = &self.slots[i].name;
                let same =
                    ids_before.get(&(o.clone(), n.name.clone())) == Some(&reported_ids(&st, o));
                found.push((o.clone(), n.name.clone(), what, delta(o), 0, same));
            }
        }
        for (o, node, what, got, want, same_ids) in found {
            self.tally.checks += 1;
            if got != want || !same_ids {
                self.violation(
                    format!("exact/{o}/{node}"),
                    format!(
                        "{o} on {node}: after a {what}, {got} loads (want {want}){}",
                        if same_ids {
                            ""
                        } else {
                            ", and its program ids changed"
                        }
                    ),
                );
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------

    async fn run(&mut self) -> Result<()> {
        self.setup().await?;
        eprintln!(
            "chaos: seed {} for {} min: {} nodes, {} stable + {} churned objects, a fault every {}-{} ms",
            self.args.seed,
            self.args.minutes,
            self.nodes.len(),
            self.stable.len(),
            self.slots.len(),
            self.args.fault_ms.0,
            self.args.fault_ms.1
        );
        self.start = Instant::now();
        self.journal(&format!("faults start, seed {}", self.args.seed));
        let end = Instant::now() + Duration::from_secs_f64(self.args.minutes * 60.0);
        let mut next_churn = Instant::now();
        let mut next_fault = Instant::now() + Duration::from_secs(2);
        let mut next_check = Instant::now() + Duration::from_secs(5);
        let mut next_progress = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            let now = Instant::now();
            if now >= next_fault {
                self.fault();
                let (lo, hi) = self.args.fault_ms;
                next_fault = now + Duration::from_millis(self.fault_rng.u64(lo..=hi));
            }
            if now >= next_churn {
                self.churn().await;
                next_churn = now + Duration::from_millis(self.churn_rng.u64(150..600));
            }
            if now >= next_check {
                self.check().await;
                next_check = Instant::now() + Duration::from_secs(5);
            }
            if now >= next_progress {
                eprintln!(
                    "chaos: t={:.0}s faults={} checks={} violations={}",
                    self.t(),
                    self.tally.faults.values().sum::<u64>(),
                    self.tally.checks,
                    self.tally.violations.len()
                );
                next_progress = now + Duration::from_secs(60);
            }
            self.supervise().await?;
            let wake = next_churn.min(next_fault).min(next_check);
            tokio::time::sleep(
                wake.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            )
            .await;
        }
        let chaos_secs = self.t();
        self.journal("faults stop");
        self.heal().await?;
        let took = self.converge("the faults stopped").await?;
        let converged = took.as_secs_f64();
        self.journal(&format!("converged in {converged:.1}s"));
        self.refresh_logs();
        self.check_stable(self.stable.len());
        self.check_reload_bounds();
        self.exact_reloads().await?;
        self.refresh_logs();
        self.check_stable(self.stable.len());
        let cleaned = self.cleanup().await?.as_secs_f64();
        let kills: Vec<String> = self
            .tally
            .faults
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let ops: Vec<String> = self
            .tally
            .ops
            .iter()
            .map(|(k, (a, ok))| format!("{k}={ok}/{a}"))
            .collect();
        let self_exits: usize = self
            .nodes
            .iter()
            .map(|n| n.agent.self_exits.len())
            .chain(self.operators.iter().map(|o| o.self_exits.len()))
            .sum();
        println!(
            "chaos: seed={} ran={chaos_secs:.0}s nodes={} objects={} kills: {} (skipped {}) self-exits={self_exits} writes(ok/tried): {} converged_in={converged:.1}s cleanup_in={cleaned:.1}s",
            self.args.seed,
            self.nodes.len(),
            self.args.objects,
            kills.join(" "),
            self.tally.skipped_faults,
            ops.join(" "),
        );
        for v in &self.tally.violations {
            println!("chaos: violation: {v}");
        }
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = parse_args();
    let seed = args.seed;
    eprintln!("chaos: seed {seed} (repeat with --seed {seed})");
    let mut chaos = match Chaos::new(args).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chaos: setting up: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = chaos.run().await;
    chaos.shutdown();
    let faults: u64 = chaos.tally.faults.values().sum();
    let violations = chaos.tally.violations.len();
    if let Err(e) = &result {
        eprintln!("chaos: the run could not finish: {e:#}");
    }
    println!(
        "chaos: faults={faults} checks={} violations={violations}",
        chaos.tally.checks
    );
    if violations > 0 || result.is_err() {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
