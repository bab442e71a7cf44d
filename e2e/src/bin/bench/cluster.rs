//! The cluster scenario: simulated nodes with real agents on private bpffs mounts, the operator,
//! and convergence, deletion, footprint, restart and API-write figures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bpfpin_crds::heartbeat::lease_name;
use bpfpin_crds::{BpfNodeState, BpfObject, ObjectPhase};
use bpfpin_e2e::Proc;
use bpfpin_e2e::{LEASE_NAMESPACE, ready_is, repo};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::api::{
    WRITE_VERBS, apiserver_metrics, drop_objects, each, samples, spawn_watch, wait_init,
};
use crate::args::Args;
use crate::host::{extra_args, log_file, memory_mib, pinned_prog_id, run, start_operator};
use crate::stats::{Figure, Results, latencies, ms, percentile};
use crate::{COUNTER_PROGRAMS, counter_object};

/// Label on the bench's Nodes (selected by the objects) and on its BpfObjects.
pub const LABEL: &str = "bpfpin-bench";
/// Prefix of the simulated node names.
pub const NODE_PREFIX: &str = "bench-";
/// How long any wait of the cluster scenario may take.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// A simulated node of the bench: Node object + private bpffs (`e2e/scripts/cluster node add`) + agent.
pub struct BenchNode {
    pub name: String,
    pub bpffs: PathBuf,
    pub agent: Proc,
}

impl BenchNode {
    pub fn root(&self) -> PathBuf {
        self.bpffs.join("bpfpin")
    }
    pub fn has_object(&self, object: &str) -> bool {
        std::fs::symlink_metadata(self.root().join(object)).is_ok()
            || self.root().join("_versions").join(object).exists()
    }
    pub fn program_ids(&self, object: &str) -> Vec<(String, Option<u32>)> {
        COUNTER_PROGRAMS
            .iter()
            .map(|p| {
                (
                    format!("{object}/{p}"),
                    pinned_prog_id(&self.root().join(object).join("progs").join(p)),
                )
            })
            .collect()
    }
}

pub struct Cluster<'a> {
    pub args: &'a Args,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub bytecode: PathBuf,
    pub agent_bin: PathBuf,
    pub operator: Option<Proc>,
    pub nodes: Vec<BenchNode>,
}

/// API server write requests on bpfpin's resources, by (resource, subresource, verb).
pub type Writes = BTreeMap<(String, String, String), f64>;

pub fn scrape_writes(kubeconfig: &Path) -> Result<Writes> {
    let text = apiserver_metrics(kubeconfig)?;
    let mut out = Writes::new();
    for sample in samples(&text).filter(|s| s.metric == "apiserver_request_total") {
        let resource = sample.label("resource");
        let verb = sample.label("verb");
        if !["bpfobjects", "bpfnodestates", "events"].contains(&resource.as_str())
            || !WRITE_VERBS.contains(&verb.as_str())
        {
            continue;
        }
        *out.entry((resource, sample.label("subresource"), verb))
            .or_default() += sample.value;
    }
    Ok(out)
}

pub fn diff_writes(before: &Writes, after: &Writes) -> Writes {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Other bpfpin processes on this machine (another test using the same control plane).
pub fn foreign_processes(ours: &BTreeSet<u32>) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me || ours.contains(&pid) {
                continue;
            }
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let first = cmd.split(|b| *b == 0).next().unwrap_or_default();
            let exe = String::from_utf8_lossy(first);
            let base = exe.rsplit('/').next().unwrap_or_default();
            if base == "bpfpin-operator" || base == "bpfpin-agent" {
                found.push(format!("{base}[{pid}]"));
            }
        }
    }
    found
}

pub fn object_json(name: &str, bytecode: &Path) -> Result<BpfObject> {
    counter_object(name, bytecode, LABEL, (LABEL, "yes"))
}

pub fn all_ready(o: &BpfObject, nodes: usize) -> bool {
    ready_is(o, "True")
        && o.status
            .as_ref()
            .and_then(|s| s.nodes.as_ref())
            .is_some_and(|n| n.selected as usize == nodes && n.ready as usize == nodes)
}

/// Per-run measurements of the cluster scenario.
#[derive(Debug, Default)]
pub struct ClusterFigures {
    pub ready_p50: Figure,
    pub ready_p99: Figure,
    pub ready_max: Figure,
    pub create_spread: Figure,
    pub delete_p50: Figure,
    pub delete_p99: Figure,
    pub agent_rss: Figure,
    pub agent_hwm: Figure,
    pub operator_rss: Figure,
    pub operator_hwm: Figure,
    pub restart_ms: Figure,
    pub restart_reloads: Figure,
    pub restarted_rss: Figure,
    pub writes_per_on: Figure,
    pub writes_total: Figure,
    pub writes_by: BTreeMap<String, Figure>,
    pub write_runs: usize,
    pub delete_writes_by: BTreeMap<String, Figure>,
    pub state_bytes: Figure,
    pub heartbeat_bytes: Figure,
    pub entry_bytes: Figure,
    pub object_bytes: Figure,
}

impl Cluster<'_> {
    pub fn start_agent(&self, name: &str, bpffs: &Path) -> Result<Proc> {
        let child = Command::new(&self.agent_bin)
            .args(["cluster", "--node-name", name, "--bpffs"])
            .arg(bpffs)
            .arg("--bytecode-dir")
            .arg(&self.bytecode)
            .args(["--metrics-addr", "none"])
            .arg("--cache-dir")
            .arg(self.bytecode.join("cache"))
            .args(extra_args("BPFPIN_BENCH_AGENT_ARGS"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.args.logs, &format!("agent-{name}"))?)
            .spawn()
            .context("starting bpfpin-agent")?;
        Ok(Proc::new("agent", child, PathBuf::new()))
    }

    /// Removes what an interrupted earlier run left: bench objects and bench nodes.
    pub async fn clean_leftovers(&self) -> Result<()> {
        let lp = ListParams::default().labels(&format!("{LABEL}=yes"));
        drop_objects(&self.client, &lp).await?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        for n in nodes.list_metadata(&lp).await?.items {
            let name = n.name_any();
            if name.starts_with(NODE_PREFIX) {
                eprintln!("bench: removing node {name} left by an earlier run");
                let _ = run(Command::new(repo().join("e2e/scripts/cluster"))
                    .args(["node", "remove", &name])
                    .env("KUBECONFIG", &self.kubeconfig)
                    .env_remove("BPFPIN_AGENT"));
            }
        }
        Ok(())
    }

    pub async fn setup(&mut self) -> Result<()> {
        self.clean_leftovers().await?;
        let setup_started = Timestamp::now();
        self.operator = Some(start_operator(
            &self.kubeconfig,
            &self.args.logs,
            "operator",
        )?);
        for i in 0..self.args.nodes {
            let name = format!("{NODE_PREFIX}{i}");
            let out = run(Command::new(repo().join("e2e/scripts/cluster"))
                .args(["node", "add", &name, "--labels", &format!("{LABEL}=yes")])
                .env("KUBECONFIG", &self.kubeconfig)
                .env_remove("BPFPIN_AGENT"))?;
            let bpffs = PathBuf::from(
                out.lines()
                    .last()
                    .context("node add printed no mount point")?
                    .trim(),
            );
            let agent = self.start_agent(&name, &bpffs)?;
            self.nodes.push(BenchNode { name, bpffs, agent });
        }
        // Every agent has written its (empty) state and then renewed its heartbeat Lease: they
        // are listening.
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut ready = 0;
            for n in &self.nodes {
                let renewed = leases
                    .get_opt(&lease_name(&n.name))
                    .await?
                    .and_then(|l| l.spec?.renew_time)
                    .map(|t| t.0);
                if renewed.is_some_and(|t| t >= setup_started) {
                    ready += 1;
                }
            }
            if ready == self.nodes.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "agents did not report within {TIMEOUT:?}; logs in {}",
                    self.args.logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub async fn teardown(&mut self) {
        let objects: Api<BpfObject> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("{LABEL}=yes"));
        if let Ok(left) = objects.list_metadata(&lp).await
            && !left.items.is_empty()
        {
            for o in &left.items {
                let _ = objects
                    .delete(&o.name_any(), &DeleteParams::default())
                    .await;
            }
            // Give the operator a moment to release them, then drop the finalizers.
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                match objects.list_metadata(&lp).await {
                    Ok(l) if l.items.is_empty() => break,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            if let Ok(l) = objects.list_metadata(&lp).await {
                for o in &l.items {
                    let _ = objects
                        .patch(
                            &o.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
                        )
                        .await;
                }
            }
        }
        for n in &mut self.nodes {
            n.agent.stop();
            let _ = run(Command::new(repo().join("e2e/scripts/cluster"))
                .args(["node", "remove", &n.name])
                .env("KUBECONFIG", &self.kubeconfig)
                .env_remove("BPFPIN_AGENT"));
        }
        self.nodes.clear();
        if let Some(mut op) = self.operator.take() {
            op.stop();
        }
    }

    pub fn ours(&self) -> BTreeSet<u32> {
        let mut s: BTreeSet<u32> = self.nodes.iter().map(|n| n.agent.pid()).collect();
        if let Some(op) = &self.operator {
            s.insert(op.pid());
        }
        s
    }

    pub async fn one_run(&mut self, r: usize, f: &mut ClusterFigures) -> Result<()> {
        let n_nodes = self.nodes.len();
        let objects_api: Api<BpfObject> = Api::all(self.client.clone());
        let names: Vec<String> = (0..self.args.objects)
            .map(|i| format!("bench-r{r}-{i:03}"))
            .collect();
        let (mut rx, watch_task) = spawn_watch(
            objects_api.clone(),
            watcher::Config::default().labels(&format!("{LABEL}=yes")),
        );
        wait_init(&mut rx).await?;

        // --- create all at once, wait until every object is Ready on every node
        let before = scrape_writes(&self.kubeconfig)?;
        let bodies: HashMap<String, BpfObject> = names
            .iter()
            .map(|n| Ok((n.clone(), object_json(n, &self.bytecode)?)))
            .collect::<Result<_>>()?;
        let bodies = &bodies;
        let first_sent = Instant::now();
        let created = each(
            &names,
            self.args.objects,
            |n| format!("creating {n}"),
            |n| {
                let api = objects_api.clone();
                async move {
                    api.create(&PostParams::default(), &bodies[&n]).await?;
                    Ok(())
                }
            },
        )
        .await?;
        let last_created = created.values().copied().fold(first_sent, Instant::max);
        f.create_spread.push(ms(last_created - first_sent));

        let mut ready: HashMap<String, Instant> = HashMap::new();
        let mut latest: HashMap<String, BpfObject> = HashMap::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while ready.len() < names.len() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((at, watcher::Event::Apply(o) | watcher::Event::InitApply(o)))) => {
                    let name = o.name_any();
                    if created.contains_key(&name)
                        && !ready.contains_key(&name)
                        && all_ready(&o, n_nodes)
                    {
                        ready.insert(name.clone(), at);
                    }
                    latest.insert(name, o);
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the BpfObject watch ended"),
                Err(_) => {
                    let missing: Vec<_> = names
                        .iter()
                        .filter(|n| !ready.contains_key(*n))
                        .take(5)
                        .collect();
                    bail!(
                        "run {r}: {} of {} objects not Ready on all nodes after {TIMEOUT:?}, e.g. {missing:?}; status of the first: {}",
                        names.len() - ready.len(),
                        names.len(),
                        serde_json::to_string(
                            &missing
                                .first()
                                .and_then(|n| latest.get(*n))
                                .and_then(|o| o.status.as_ref())
                        )
                        .unwrap_or_default()
                    );
                }
            }
        }
        let after = scrape_writes(&self.kubeconfig)?;
        let writes = diff_writes(&before, &after);
        // Events (any client's, e.g. the node-lifecycle controller's) are listed, not counted.
        let total: f64 = writes
            .iter()
            .filter(|((res, _, _), _)| res != "events")
            .map(|(_, v)| v)
            .sum();
        f.writes_total.push(total);
        f.writes_per_on
            .push(total / (self.args.objects * n_nodes) as f64);
        for ((res, sub, verb), v) in &writes {
            let key = if sub.is_empty() {
                format!("{res} {verb}")
            } else {
                format!("{res}/{sub} {verb}")
            };
            f.writes_by.entry(key).or_default().push(*v);
        }
        f.write_runs += 1;
        let lat = latencies(&names, &created, &ready);
        f.ready_p50.push(percentile(&lat, 50.0));
        f.ready_p99.push(percentile(&lat, 99.0));
        f.ready_max.push(percentile(&lat, 100.0));

        // --- footprint with everything pinned
        for n in &self.nodes {
            for o in &names {
                if !n.has_object(o) {
                    bail!("{o} is Ready but not pinned on {}", n.name);
                }
            }
        }
        let (mut rss, mut hwm) = (0.0f64, 0.0f64);
        for n in &self.nodes {
            if let Some((a, b)) = memory_mib(n.agent.pid()) {
                rss = rss.max(a);
                hwm = hwm.max(b);
            }
        }
        f.agent_rss.push(rss);
        f.agent_hwm.push(hwm);
        let states: Api<BpfNodeState> = Api::all(self.client.clone());
        let raw = run(Command::new("kubectl")
            .args([
                "get",
                "--raw",
                &format!(
                    "/apis/bpfpin.io/v1alpha1/bpfnodestates/{}",
                    self.nodes[0].name
                ),
            ])
            .env("KUBECONFIG", &self.kubeconfig))?;
        f.state_bytes.push(raw.len() as f64);
        // What a heartbeat writes now: the node's Lease, as served.
        let raw = run(Command::new("kubectl")
            .args([
                "get",
                "--raw",
                &format!(
                    "/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{}",
                    lease_name(&self.nodes[0].name)
                ),
            ])
            .env("KUBECONFIG", &self.kubeconfig))?;
        f.heartbeat_bytes.push(raw.len() as f64);
        let state0 = states.get(&self.nodes[0].name).await?;
        let entries = state0
            .status
            .as_ref()
            .map(|s| s.objects.clone())
            .unwrap_or_default();
        let ours: Vec<_> = entries
            .iter()
            .filter(|e| created.contains_key(&e.name))
            .collect();
        if !ours.is_empty() {
            let bytes: usize = ours
                .iter()
                .map(|e| serde_json::to_vec(e).map(|v| v.len()).unwrap_or(0) + 1)
                .sum();
            f.entry_bytes.push(bytes as f64 / ours.len() as f64);
        }
        let obj_raw = run(Command::new("kubectl")
            .args([
                "get",
                "--raw",
                &format!("/apis/bpfpin.io/v1alpha1/bpfobjects/{}", names[0]),
            ])
            .env("KUBECONFIG", &self.kubeconfig))?;
        f.object_bytes.push(obj_raw.len() as f64);

        // --- restart one agent with everything pinned
        self.restart(&names, f).await?;

        // --- delete all at once, wait until gone and unpinned everywhere
        let before_delete = scrape_writes(&self.kubeconfig)?;
        let deleted = each(
            &names,
            self.args.objects,
            |n| format!("deleting {n}"),
            |n| {
                let api = objects_api.clone();
                async move {
                    api.delete(&n, &DeleteParams::default()).await?;
                    Ok(())
                }
            },
        )
        .await?;
        let mut gone: HashMap<String, Instant> = HashMap::new();
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut done: HashMap<String, Instant> = HashMap::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        while done.len() < names.len() {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some((at, watcher::Event::Delete(o))) => {
                        let name = o.name_any();
                        if deleted.contains_key(&name) && !gone.contains_key(&name) {
                            gone.insert(name.clone(), at);
                            if self.nodes.iter().any(|n| n.has_object(&name)) {
                                pending.insert(name);
                            } else {
                                done.insert(name, at);
                            }
                        }
                    }
                    Some(_) => {}
                    None => bail!("the BpfObject watch ended"),
                },
                _ = tick.tick(), if !pending.is_empty() => {
                    let now = Instant::now();
                    let cleared: Vec<String> = pending
                        .iter()
                        .filter(|o| !self.nodes.iter().any(|n| n.has_object(o)))
                        .cloned()
                        .collect();
                    for o in cleared {
                        pending.remove(&o);
                        done.insert(o, now);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    bail!("run {r}: {} of {} objects not deleted and unpinned after {TIMEOUT:?}", names.len() - done.len(), names.len());
                }
            }
        }
        watch_task.abort();
        let after_delete = scrape_writes(&self.kubeconfig)?;
        for ((res, sub, verb), v) in diff_writes(&before_delete, &after_delete) {
            let key = if sub.is_empty() {
                format!("{res} {verb}")
            } else {
                format!("{res}/{sub} {verb}")
            };
            let fig = f.delete_writes_by.entry(key).or_default();
            while fig.values.len() + 1 < f.write_runs {
                fig.push(0.0);
            }
            fig.push(v);
        }
        let lat = latencies(&names, &deleted, &done);
        f.delete_p50.push(percentile(&lat, 50.0));
        f.delete_p99.push(percentile(&lat, 99.0));

        if let Some(op) = &self.operator
            && let Some((rss, hwm)) = memory_mib(op.pid())
        {
            f.operator_rss.push(rss);
            f.operator_hwm.push(hwm);
        }
        for n in &mut self.nodes {
            if !n.agent.alive() {
                bail!(
                    "the agent of {} died; log in {}",
                    n.name,
                    self.args.logs.display()
                );
            }
        }
        if self.operator.as_mut().is_some_and(|o| !o.alive()) {
            bail!("the operator died; log in {}", self.args.logs.display());
        }
        Ok(())
    }

    pub async fn restart(&mut self, names: &[String], f: &mut ClusterFigures) -> Result<()> {
        let node = &self.nodes[0];
        let node_name = node.name.clone();
        let states: Api<BpfNodeState> = Api::all(self.client.clone());
        let ids_before: Vec<_> = names.iter().flat_map(|o| node.program_ids(o)).collect();
        if ids_before.iter().any(|(_, id)| id.is_none()) {
            bail!("a program pin is missing on {node_name} before the restart");
        }
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let lease = lease_name(&node_name);
        let renewed = |l: &Lease| {
            l.spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0)
        };
        let (mut rx, task) = spawn_watch(
            leases.clone(),
            watcher::Config::default().fields(&format!("metadata.name={lease}")),
        );
        wait_init(&mut rx).await?;
        let before = leases.get(&lease).await.map(|l| renewed(&l))?;
        let killed = Instant::now();
        self.nodes[0].agent.kill();
        let bpffs = self.nodes[0].bpffs.clone();
        self.nodes[0].agent = self.start_agent(&node_name, &bpffs)?;
        // The restarted agent renews its Lease once its BpfNodeState is current.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let at = loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((at, watcher::Event::Apply(l)))) if renewed(&l) > before => break at,
                Ok(Some(_)) => {}
                Ok(None) => bail!("the Lease watch ended"),
                Err(_) => {
                    bail!("the restarted agent of {node_name} did not report within {TIMEOUT:?}")
                }
            }
        };
        let state = states.get(&node_name).await?;
        let pinned: BTreeSet<&str> = state
            .status
            .iter()
            .flat_map(|st| &st.objects)
            .filter(|e| e.phase == ObjectPhase::Pinned)
            .map(|e| e.name.as_str())
            .collect();
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        if !wanted.is_subset(&pinned) {
            bail!(
                "the restarted agent of {node_name} renewed its Lease with {} of {} objects Pinned",
                wanted.intersection(&pinned).count(),
                wanted.len()
            );
        }
        task.abort();
        f.restart_ms.push(ms(at - killed));
        let ids_after: Vec<_> = names
            .iter()
            .flat_map(|o| self.nodes[0].program_ids(o))
            .collect();
        let reloads = ids_before
            .iter()
            .zip(&ids_after)
            .filter(|(a, b)| a != b)
            .count();
        f.restart_reloads.push(reloads as f64);
        if let Some((rss, _)) = memory_mib(self.nodes[0].agent.pid()) {
            f.restarted_rss.push(rss);
        }
        Ok(())
    }

    /// One object selecting 3 nodes (fewer if the bench has fewer), applied alone: create
    /// response -> Ready on them, `SINGLE_RUNS` times, each deleted (and gone) before the next.
    pub async fn single(&mut self, res: &mut Results) -> Result<()> {
        const SINGLE: &str = "bpfpin-bench-single";
        const SINGLE_RUNS: usize = 11;
        let n = self.nodes.len().min(3);
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        for node in &self.nodes[..n] {
            nodes
                .patch(
                    &node.name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"labels": {SINGLE: "yes"}}})),
                )
                .await?;
        }
        let objects_api: Api<BpfObject> = Api::all(self.client.clone());
        let (mut rx, task) = spawn_watch(
            objects_api.clone(),
            watcher::Config::default().labels(&format!("{LABEL}=yes")),
        );
        wait_init(&mut rx).await?;
        let mut lat = Vec::new();
        for i in 0..SINGLE_RUNS {
            let name = format!("bench-single-{i}");
            let mut body = object_json(&name, &self.bytecode)?;
            body.spec.node_selector = Some(serde_json::from_value(
                serde_json::json!({"matchLabels": {SINGLE: "yes"}}),
            )?);
            objects_api.create(&PostParams::default(), &body).await?;
            let created = Instant::now();
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            let at = loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((at, watcher::Event::Apply(o))))
                        if o.name_any() == name && all_ready(&o, n) =>
                    {
                        break at;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("the BpfObject watch ended"),
                    Err(_) => bail!("{name} was not Ready on {n} nodes within {TIMEOUT:?}"),
                }
            };
            lat.push(ms(at.saturating_duration_since(created)));
            objects_api.delete(&name, &DeleteParams::default()).await?;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((_, watcher::Event::Delete(o)))) if o.name_any() == name => break,
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("the BpfObject watch ended"),
                    Err(_) => bail!("{name} was not deleted within {TIMEOUT:?}"),
                }
            }
        }
        task.abort();
        let mut f = Figure::default();
        f.push(percentile(&lat, 50.0));
        let mut max = Figure::default();
        max.push(percentile(&lat, 100.0));
        let sec = "cluster: one object alone (create response -> Ready on 3 nodes, 11 times)";
        res.add(
            sec,
            format!("single object on {n} nodes: ready p50 (ms)"),
            Some("single_ready_p50_ms"),
            f,
            "<= 150",
            0,
        );
        res.add(sec, "single object: ready max (ms)", None, max, "", 0);
        Ok(())
    }

    pub async fn scenario(&mut self, res: &mut Results) -> Result<()> {
        self.setup().await?;
        self.single(res).await?;
        let foreign = foreign_processes(&self.ours());
        if !foreign.is_empty() {
            res.notes.push(format!(
                "other bpfpin processes were running on this machine (API write counts and timings may include their load): {}",
                foreign.join(" ")
            ));
        }
        let mut f = ClusterFigures::default();
        for r in 0..self.args.runs {
            let started = Instant::now();
            self.one_run(r, &mut f).await?;
            eprintln!(
                "bench: cluster run {}/{} done in {:.1} s (ready p99 {:.0} ms, delete p99 {:.0} ms, restart {:.0} ms)",
                r + 1,
                self.args.runs,
                started.elapsed().as_secs_f64(),
                f.ready_p99.values.last().copied().unwrap_or(f64::NAN),
                f.delete_p99.values.last().copied().unwrap_or(f64::NAN),
                f.restart_ms.values.last().copied().unwrap_or(f64::NAN),
            );
        }
        let sec = "cluster: convergence (all objects created at once; create response -> Ready on all nodes)";
        res.add(
            sec,
            "spread of the create responses (ms)",
            None,
            f.create_spread,
            "",
            0,
        );
        res.add(
            sec,
            "ready p50 (ms)",
            Some("ready_p50_ms"),
            f.ready_p50,
            "",
            0,
        );
        res.add(
            sec,
            "ready p99 (ms)",
            Some("ready_p99_ms"),
            f.ready_p99,
            "<= 2000",
            0,
        );
        res.add(sec, "ready max (ms)", None, f.ready_max, "", 0);
        let sec = "cluster: deletion (delete response -> gone and unpinned on every node)";
        res.add(
            sec,
            "delete p50 (ms)",
            Some("delete_p50_ms"),
            f.delete_p50,
            "",
            0,
        );
        res.add(
            sec,
            "delete p99 (ms)",
            Some("delete_p99_ms"),
            f.delete_p99,
            "<= 2000",
            0,
        );
        let sec = "cluster: footprint";
        res.add(
            sec,
            "agent RSS, highest VmHWM of all agents, all pinned (MiB)",
            Some("agent_rss_mib"),
            f.agent_hwm,
            "<= 24",
            1,
        );
        res.add(
            sec,
            "agent RSS, highest VmRSS of all agents, all pinned (MiB)",
            None,
            f.agent_rss,
            "",
            1,
        );
        res.add(
            sec,
            "restarted agent VmRSS after adopting (MiB)",
            None,
            f.restarted_rss,
            "",
            1,
        );
        res.add(
            sec,
            "operator VmRSS at the end of a run (MiB)",
            Some("operator_rss_mib"),
            f.operator_rss,
            "<= 48",
            1,
        );
        res.add(sec, "operator VmHWM (MiB)", None, f.operator_hwm, "", 1);
        res.add(
            sec,
            "BpfNodeState as served, all objects (bytes)",
            Some("node_state_bytes"),
            f.state_bytes,
            "",
            0,
        );
        res.add(
            sec,
            "heartbeat Lease as served: what a heartbeat rewrites (bytes)",
            Some("heartbeat_bytes"),
            f.heartbeat_bytes,
            "",
            0,
        );
        res.add(
            sec,
            "bytes per NodeObjectState entry (JSON)",
            Some("entry_bytes"),
            f.entry_bytes,
            "",
            0,
        );
        res.add(
            sec,
            "BpfObject as served, with status (bytes)",
            None,
            f.object_bytes,
            "",
            0,
        );
        let sec = "cluster: agent restart (SIGKILL, all pinned -> heartbeat Lease renewed, state all Pinned)";
        res.add(
            sec,
            "restart -> ready (ms)",
            Some("restart_ready_ms"),
            f.restart_ms,
            "<= 1000",
            0,
        );
        res.add(
            sec,
            "programs reloaded (kernel id changed)",
            Some("restart_reloads"),
            f.restart_reloads,
            "0",
            0,
        );
        let sec = "cluster: API writes to reach Ready (apiserver_request_total, bpfobjects + bpfnodestates)";
        res.add(
            sec,
            "writes per object per node",
            Some("api_writes_per_object_node"),
            f.writes_per_on,
            "<= 2",
            3,
        );
        res.add(sec, "writes in total", None, f.writes_total, "", 0);
        for (k, fig) in f.writes_by {
            let mut fig = fig;
            while fig.values.len() < self.args.runs {
                fig.push(0.0);
            }
            res.add(sec, format!("  {k}"), None, fig, "", 0);
        }
        let sec = "cluster: API writes during deletion (delete calls -> all gone; listed only)";
        for (k, fig) in f.delete_writes_by {
            let mut fig = fig;
            while fig.values.len() < self.args.runs {
                fig.push(0.0);
            }
            res.add(sec, format!("  {k}"), None, fig, "", 0);
        }
        Ok(())
    }
}
