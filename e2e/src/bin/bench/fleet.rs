//! `e2e/scripts/bench --fleet N [--objects M]`: the fleet bench. N `Node` objects (no kubelet, no
//! bpffs), the real release operator, and N simulated agents in a few processes ([`crate::sim`]:
//! the agent's real cluster-mode code with a stand-in for the kernel core). Measures a rollout of M
//! objects selecting every node, the steady state, one node relabelled, an operator restart and
//! the deletion, and ends with the line `bench-fleet: key=value ...`. See docs/performance.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bpfpin_agent::{DesiredObject, Reconciler};
use bpfpin_crds::heartbeat::LEASE_LABEL;
use bpfpin_crds::{BpfNodeState, BpfObject, ObjectPhase};
use bpfpin_e2e::{LEASE_NAMESPACE, Proc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use crate::api::{
    Stamped, WRITE_VERBS, apiserver_metrics, connect, drop_objects, each, samples, spawn_watch,
    wait_init,
};
use crate::args::{Args, FleetArgs};
use crate::counter_object;
use crate::host::{log_file, memory_mib, mount_bpffs, start_operator_with, umount};
use crate::sim::{SimArgs, Stats, Template};
use crate::stats::{Figure, Results, latencies, ms, percentile};

/// Label on the fleet's Nodes and BpfObjects.
const FLEET: &str = "bpfpin-fleet";
/// Prefix of the fleet's node names.
const PREFIX: &str = "fleet-";
/// The label the relabel figure moves node 0 by.
const ZONE: &str = "bpfpin-fleet-zone";
/// How long any wait may take.
const TIMEOUT: Duration = Duration::from_secs(900);
/// Concurrent API requests of the bench's own creates and deletes.
const CONCURRENCY: usize = 100;

fn obj(name: &str, bytecode: &Path, selector: (&str, &str)) -> Result<BpfObject> {
    counter_object(name, bytecode, FLEET, selector)
}

fn ready_on(o: &BpfObject, nodes: usize) -> bool {
    bpfpin_e2e::ready_is(o, "True")
        && o.status
            .as_ref()
            .is_some_and(|s| s.observed_generation == o.metadata.generation)
        && o.status
            .as_ref()
            .and_then(|s| s.nodes.as_ref())
            .is_some_and(|n| n.selected as usize == nodes && n.ready as usize == nodes)
}

/// The real load this stand-in stands for: median time of `Reconciler::reconcile()` of one new
/// counter object on a fresh bpffs, and what it pinned.
fn measure_real_load(work: &Path, bytecode: &Path, runs: usize) -> Result<(Duration, Template)> {
    let bpffs = work.join("fleet-bpffs");
    mount_bpffs(&bpffs)?;
    let result = (|| {
        let mut reconciler = Reconciler::new(&bpffs).map_err(|e| anyhow::anyhow!("{e}"))?;
        let spec = obj("probe", bytecode, (FLEET, "yes"))?.spec;
        let none = BTreeSet::new();
        let mut times = Vec::new();
        let mut template = None;
        for i in 0..runs {
            let name = format!("probe{i}");
            let started = Instant::now();
            let d = DesiredObject {
                name: name.clone(),
                uid: None,
                generation: 1,
                spec: spec.clone(),
                bytecode: std::fs::read(bytecode.join("counter.bpf.o")).map_err(|e| {
                    bpfpin_agent::error::ObjectError::new(
                        bpfpin_agent::error::Reason::BytecodeUnavailable,
                        e.to_string(),
                    )
                }),
            };
            let report = reconciler.reconcile(std::slice::from_ref(&d), &none);
            times.push(started.elapsed());
            let r = report.objects.first().context("no report")?;
            if let Some(e) = &r.error {
                bail!("the probe load failed: {}", e.message);
            }
            if template.is_none() {
                let pinned = r.pinned.as_ref().context("nothing pinned")?;
                template = Some(Template::of(pinned, &name, reconciler.layout().root()));
            }
            reconciler.reconcile(&[], &none);
        }
        times.sort();
        Ok((times[times.len() / 2], template.context("no run")?))
    })();
    umount(&bpffs);
    result
}

/// The simulated-agent processes.
struct Sims {
    children: Vec<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Sims {
    fn stats(&mut self) -> Result<Stats> {
        tokio::task::block_in_place(|| {
            let mut total = Stats::default();
            for (_, stdin, stdout) in &mut self.children {
                writeln!(stdin, "stats")?;
                stdin.flush()?;
                let mut line = String::new();
                stdout.read_line(&mut line)?;
                let s: Stats = serde_json::from_str(&line)
                    .with_context(|| format!("simulated agents answered {line:?}"))?;
                total.add(&s);
            }
            Ok(total)
        })
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(c, _, _)| c.id()).collect()
    }

    fn alive(&mut self) -> bool {
        self.children
            .iter_mut()
            .all(|(c, _, _)| matches!(c.try_wait(), Ok(None)))
    }

    fn stop(&mut self) {
        for (mut c, stdin, _) in self.children.drain(..) {
            drop(stdin);
            for _ in 0..50 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sums of `apiserver_request_body_size_bytes_sum` and request counts for writes, by resource;
/// the BpfObject status writes; and the watch events the API server sent for BpfObjects (to
/// every watcher: the agents, the operator and this bench).
#[derive(Debug, Default, Clone)]
struct ApiBytes {
    bytes: BTreeMap<String, f64>,
    writes: BTreeMap<String, f64>,
    status_writes: f64,
    watch_events: f64,
    watch_bytes: f64,
}

const OURS: [&str; 3] = ["bpfobjects", "bpfnodestates", "leases"];

fn scrape_api(kubeconfig: &Path) -> Result<ApiBytes> {
    let text = apiserver_metrics(kubeconfig)?;
    let mut out = ApiBytes::default();
    for sample in samples(&text) {
        let resource = sample.label("resource");
        if !OURS.contains(&resource.as_str()) {
            continue;
        }
        match sample.metric {
            // The body of every mutating request (the verb label is lowercase here).
            "apiserver_request_body_size_bytes_sum" => {
                *out.bytes.entry(resource).or_default() += sample.value;
            }
            "apiserver_request_total" if WRITE_VERBS.contains(&sample.label("verb").as_str()) => {
                if resource == "bpfobjects" && sample.label("subresource") == "status" {
                    out.status_writes += sample.value;
                }
                *out.writes.entry(resource).or_default() += sample.value;
            }
            "apiserver_watch_events_total" if resource == "bpfobjects" => {
                out.watch_events += sample.value;
            }
            "apiserver_watch_events_sizes_sum" if resource == "bpfobjects" => {
                out.watch_bytes += sample.value;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn sub(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    a.iter()
        .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
        .collect()
}

fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted from after the comm field.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// The pid of a control-plane component from `e2e/scripts/cluster`'s state dir.
fn control_plane_pid(name: &str) -> Option<u32> {
    let state = std::env::var("BPFPIN_E2E_STATE").unwrap_or_else(|_| "/tmp/bpfpin-e2e".into());
    let text =
        std::fs::read_to_string(Path::new(&state).join("run").join(format!("{name}.pid"))).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

struct Fleet<'a> {
    args: &'a Args,
    fa: FleetArgs,
    client: Client,
    kubeconfig: PathBuf,
    bytecode: PathBuf,
    work: PathBuf,
    operator: Option<Proc>,
    sims: Option<Sims>,
    nodes: Vec<String>,
    /// Extra operator flags of this run (the baseline's), and what its logs are called.
    operator_args: Vec<String>,
    log_prefix: &'static str,
}

impl Fleet<'_> {
    fn start_operator(&mut self) -> Result<()> {
        self.operator = Some(start_operator_with(
            &self.kubeconfig,
            &self.args.logs,
            &format!("{}operator", self.log_prefix),
            &self.operator_args,
        )?);
        Ok(())
    }

    fn operator_pid(&self) -> Result<u32> {
        Ok(self.operator.as_ref().context("no operator")?.pid())
    }

    async fn clean_leftovers(&self) -> Result<()> {
        let lp = ListParams::default().labels(&format!("{FLEET}=yes"));
        drop_objects(&self.client, &lp).await?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let left: Vec<String> = nodes
            .list_metadata(&lp)
            .await?
            .items
            .iter()
            .map(|n| n.name_any())
            .collect();
        if !left.is_empty() {
            eprintln!(
                "bench: fleet: removing {} fleet Node objects (and with them their BpfNodeStates and Leases)",
                left.len()
            );
            each(&left, CONCURRENCY, str::to_owned, |n| {
                let nodes = nodes.clone();
                async move {
                    let _ = nodes.delete(&n, &DeleteParams::default()).await;
                    Ok(())
                }
            })
            .await?;
        }
        Ok(())
    }

    async fn setup(&mut self, load: Duration) -> Result<()> {
        self.clean_leftovers().await?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        self.nodes = (0..self.fa.nodes).map(|i| format!("{PREFIX}{i}")).collect();
        let started = Instant::now();
        each(&self.nodes, CONCURRENCY, str::to_owned, |n| {
            let nodes = nodes.clone();
            async move {
                let mut labels = serde_json::json!({FLEET: "yes"});
                if n == format!("{PREFIX}0") {
                    labels[ZONE] = "a".into();
                }
                let node: Node = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": n, "labels": labels},
                }))?;
                nodes.create(&PostParams::default(), &node).await?;
                Ok(())
            }
        })
        .await?;
        eprintln!(
            "bench: fleet: {} Node objects created in {:.1} s",
            self.fa.nodes,
            started.elapsed().as_secs_f64()
        );
        self.start_operator()?;
        let template = self.work.join("fleet-template.json");
        let per = self.fa.nodes.div_ceil(self.fa.procs);
        let setup_started = Timestamp::now();
        let mut children = Vec::new();
        for p in 0..self.fa.procs {
            let (from, to) = (p * per, ((p + 1) * per).min(self.fa.nodes));
            if from >= to {
                break;
            }
            let sim = SimArgs {
                prefix: PREFIX.into(),
                from,
                to,
                load,
                template: template.clone(),
                bytecode_dir: self.bytecode.clone(),
                heartbeat: self.fa.heartbeat,
                lease_namespace: LEASE_NAMESPACE.into(),
            };
            let mut child = Command::new(std::env::current_exe()?)
                .args(sim.to_args())
                .env("KUBECONFIG", &self.kubeconfig)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(log_file(
                    &self.args.logs,
                    &format!("{}agents-{p}", self.log_prefix),
                )?)
                .spawn()
                .context("starting the simulated agents")?;
            let stdin = child.stdin.take().context("stdin")?;
            let stdout = BufReader::new(child.stdout.take().context("stdout")?);
            children.push((child, stdin, stdout));
        }
        self.sims = Some(Sims { children });
        // Every agent has written its (empty) state and renewed its heartbeat Lease.
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let ours: BTreeSet<String> = self
            .nodes
            .iter()
            .map(|n| bpfpin_crds::heartbeat::lease_name(n))
            .collect();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let list = leases
                .list(&ListParams::default().labels(&format!("{LEASE_LABEL}=true")))
                .await?;
            let renewed = list
                .items
                .iter()
                .filter(|l| ours.contains(&l.name_any()))
                .filter(|l| {
                    l.spec
                        .as_ref()
                        .and_then(|s| s.renew_time.as_ref())
                        .is_some_and(|t| t.0 >= setup_started)
                })
                .count();
            if renewed == self.nodes.len() {
                break;
            }
            if !self.sims.as_mut().is_some_and(Sims::alive) {
                bail!(
                    "a simulated-agent process died; logs in {}",
                    self.args.logs.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{renewed} of {} simulated agents reported within {TIMEOUT:?}",
                    self.nodes.len()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!(
            "bench: fleet: {} simulated agents up (heartbeat Leases renewed) {:.1} s after the Nodes",
            self.fa.nodes,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn stats(&mut self) -> Result<Stats> {
        self.sims.as_mut().context("no simulated agents")?.stats()
    }

    /// Waits until the agents have written nothing for `quiet` (their passes and status writes
    /// are done), polling their counters.
    async fn settle(&mut self, quiet: Duration) -> Result<Stats> {
        let mut last = self.stats()?;
        let mut since = Instant::now();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.stats()?;
            if now.writes[..2] != last.writes[..2] || now.loads != last.loads {
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return Ok(now);
            }
            last = now;
            if Instant::now() > deadline {
                bail!("the simulated agents did not settle");
            }
        }
    }

    /// Waits for the watch until `done(object)` holds for every name; returns when each did.
    async fn wait_all(
        rx: &mut mpsc::UnboundedReceiver<Stamped<BpfObject>>,
        names: &[String],
        done: impl Fn(&watcher::Event<BpfObject>) -> Option<String>,
        what: &str,
    ) -> Result<HashMap<String, Instant>> {
        let want: BTreeSet<&String> = names.iter().collect();
        let mut at = HashMap::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while at.len() < names.len() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((t, ev))) => {
                    if let Some(n) = done(&ev)
                        && want.contains(&n)
                    {
                        at.entry(n).or_insert(t);
                    }
                }
                Ok(None) => bail!("the BpfObject watch ended"),
                Err(_) => bail!(
                    "{} of {} objects not {what} after {TIMEOUT:?}",
                    names.len() - at.len(),
                    names.len()
                ),
            }
        }
        Ok(at)
    }

    async fn scenario(&mut self, res: &mut Results, load: Duration) -> Result<()> {
        let n = self.fa.nodes;
        self.setup(load).await?;
        let objects: Api<BpfObject> = Api::all(self.client.clone());
        let (mut rx, watch_task) = spawn_watch(
            objects.clone(),
            watcher::Config::default().labels(&format!("{FLEET}=yes")),
        );
        wait_init(&mut rx).await?;
        let sec =
            "fleet: rollout (all objects created at once; create response -> Ready on all nodes)";

        // --- rollout
        let names: Vec<String> = (0..self.fa.objects)
            .map(|i| format!("fleet-{i:05}"))
            .collect();
        let settled = self.settle(Duration::from_secs(1)).await?;
        let api_before = scrape_api(&self.kubeconfig)?;
        let cpu_before = cpu_seconds(self.operator_pid()?).unwrap_or(0.0);
        let bodies: HashMap<String, BpfObject> = names
            .iter()
            .map(|nm| Ok((nm.clone(), obj(nm, &self.bytecode, (FLEET, "yes"))?)))
            .collect::<Result<_>>()?;
        let bodies = Arc::new(bodies);
        let first = Instant::now();
        let created = each(&names, CONCURRENCY, str::to_owned, |nm| {
            let (api, bodies) = (objects.clone(), bodies.clone());
            async move {
                api.create(&PostParams::default(), &bodies[&nm]).await?;
                Ok(())
            }
        })
        .await?;
        let spread = created
            .values()
            .max()
            .map(|t| ms(*t - first))
            .unwrap_or(0.0);
        let ready = Self::wait_all(
            &mut rx,
            &names,
            |ev| match ev {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) if ready_on(o, n) => {
                    Some(o.name_any())
                }
                _ => None,
            },
            "Ready on every node",
        )
        .await?;
        let all_ready = Instant::now();
        let lat = latencies(&names, &created, &ready);
        let rollout_cpu = cpu_seconds(self.operator_pid()?).unwrap_or(0.0) - cpu_before;
        let after = self.settle(Duration::from_secs(2)).await?;
        let api_after = scrape_api(&self.kubeconfig)?;
        let one = |v: f64| Figure { values: vec![v] };
        res.add(
            sec,
            "spread of the create responses (ms)",
            None,
            one(spread),
            "",
            0,
        );
        res.add(
            sec,
            "ready p50 (ms)",
            Some("ready_p50_ms"),
            one(percentile(&lat, 50.0)),
            "",
            0,
        );
        res.add(
            sec,
            "ready p99 (ms)",
            Some("ready_p99_ms"),
            one(percentile(&lat, 99.0)),
            "<= 10000",
            0,
        );
        res.add(
            sec,
            "ready max (ms)",
            None,
            one(percentile(&lat, 100.0)),
            "",
            0,
        );
        res.add(
            sec,
            "last object Ready, after the first create (s)",
            None,
            one((all_ready - first).as_secs_f64()),
            "",
            1,
        );
        let loads: u64 = names
            .iter()
            .map(|nm| after.loads.get(nm).copied().unwrap_or(0))
            .sum();
        res.add(
            sec,
            "stand-in loads, total (one per object per node)",
            None,
            one(loads as f64),
            "",
            0,
        );
        let bytes = sub(&api_after.bytes, &api_before.bytes);
        let writes = sub(&api_after.writes, &api_before.writes);
        res.add(
            sec,
            "request bytes written during the rollout (bpfobjects, bpfnodestates, leases)",
            Some("rollout_write_bytes"),
            one(total(&bytes)),
            "",
            0,
        );
        for (r, v) in &bytes {
            res.add(sec, format!("  {r} bytes"), None, one(*v), "", 0);
        }
        for (r, v) in &writes {
            res.add(sec, format!("  {r} writes"), None, one(*v), "", 0);
        }
        let per_change =
            (after.object_events - settled.object_events) as f64 / (self.fa.objects * n) as f64;
        res.add(
            sec,
            "BpfObject watch events per agent per object created",
            Some("agent_watch_events_per_change"),
            one(per_change),
            "",
            2,
        );
        res.add(
            sec,
            "BpfObject watch events sent by the API server (all watchers)",
            None,
            one(api_after.watch_events - api_before.watch_events),
            "",
            0,
        );
        res.add(
            sec,
            "BpfObject watch event bytes sent (apiserver_watch_events_sizes_sum)",
            Some("rollout_watch_bytes"),
            one(api_after.watch_bytes - api_before.watch_bytes),
            "",
            0,
        );
        res.add(
            sec,
            "BpfObject status writes per object created",
            Some("status_writes_per_object"),
            one((api_after.status_writes - api_before.status_writes) / self.fa.objects as f64),
            "",
            2,
        );
        res.add(
            sec,
            "  of which changed what a pass reads",
            None,
            one((after.object_changes - settled.object_changes) as f64
                / (self.fa.objects * n) as f64),
            "",
            2,
        );
        res.add(
            sec,
            "BpfObject writes per object created (create, finalizer, status)",
            None,
            one(writes.get("bpfobjects").copied().unwrap_or(0.0) / self.fa.objects as f64),
            "",
            2,
        );
        res.add(
            sec,
            "operator CPU during the rollout (s)",
            None,
            one(rollout_cpu),
            "",
            1,
        );

        // --- footprint
        let sec = "fleet: footprint (all objects Ready on all nodes)";
        let op_pid = self.operator_pid()?;
        let (op_rss, op_hwm) = memory_mib(op_pid).unwrap_or((f64::NAN, f64::NAN));
        res.add(
            sec,
            "operator VmRSS (MiB)",
            Some("operator_rss_mib"),
            one(op_rss),
            "<= 256",
            1,
        );
        res.add(sec, "operator VmHWM (MiB)", None, one(op_hwm), "", 1);
        for (name, key) in [
            ("kube-apiserver", "apiserver_rss_mib"),
            ("etcd", "etcd_rss_mib"),
        ] {
            let rss = control_plane_pid(name)
                .and_then(memory_mib)
                .map_or(f64::NAN, |m| m.0);
            res.add(
                sec,
                format!("{name} VmRSS (MiB)"),
                Some(key),
                one(rss),
                "",
                1,
            );
        }
        let sims = self.sims.as_ref().context("no sims")?.pids();
        let sim_rss: f64 = sims
            .iter()
            .filter_map(|p| memory_mib(*p))
            .map(|m| m.0)
            .sum();
        res.add(
            sec,
            "simulated agents VmRSS, all processes (MiB; not a per-agent figure)",
            None,
            one(sim_rss),
            "",
            1,
        );

        // --- steady state: heartbeats only
        let sec = "fleet: steady state (nothing changes; heartbeat Leases renewed)";
        let before = scrape_api(&self.kubeconfig)?;
        let s_before = self.stats()?;
        let t0 = Instant::now();
        tokio::time::sleep(self.fa.steady).await;
        let before_s = t0.elapsed().as_secs_f64();
        let after_api = scrape_api(&self.kubeconfig)?;
        let s_after = self.stats()?;
        let bytes = sub(&after_api.bytes, &before.bytes);
        res.add(
            sec,
            format!("request bytes written per second, over {before_s:.0} s"),
            Some("steady_write_bytes_per_s"),
            one(total(&bytes) / before_s),
            "<= 200000",
            0,
        );
        for (r, v) in &bytes {
            res.add(
                sec,
                format!("  {r} bytes/s"),
                None,
                one(v / before_s),
                "",
                0,
            );
        }
        res.add(
            sec,
            "heartbeat renewals per second (agents' counters)",
            None,
            one((s_after.writes[2] - s_before.writes[2]) as f64 / before_s),
            "",
            1,
        );
        res.add(
            sec,
            "BpfNodeState writes in the window",
            None,
            one((s_after.writes[1] - s_before.writes[1]) as f64),
            "0",
            0,
        );

        // --- relabel one node: its pins move
        let sec = "fleet: relabel (node 0 moves from zone a to b -> its BpfNodeState has b Pinned, not a)";
        let zones = ["fleet-zone-a".to_owned(), "fleet-zone-b".to_owned()];
        for (z, v) in zones.iter().zip(["a", "b"]) {
            objects
                .create(&PostParams::default(), &obj(z, &self.bytecode, (ZONE, v))?)
                .await?;
        }
        Self::wait_all(
            &mut rx,
            &zones[..1],
            |ev| match ev {
                watcher::Event::Apply(o) if ready_on(o, 1) => Some(o.name_any()),
                _ => None,
            },
            "Ready on node 0",
        )
        .await?;
        let node0 = format!("{PREFIX}0");
        let states: Api<BpfNodeState> = Api::all(self.client.clone());
        let (mut srx, stask) = spawn_watch(
            states.clone(),
            watcher::Config::default().fields(&format!("metadata.name={node0}")),
        );
        wait_init(&mut srx).await?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let t0 = Instant::now();
        nodes
            .patch(
                &node0,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {ZONE: "b"}}})),
            )
            .await?;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let moved = loop {
            match tokio::time::timeout_at(deadline, srx.recv()).await {
                Ok(Some((at, watcher::Event::Apply(s)))) => {
                    let entries = s.status.map(|st| st.objects).unwrap_or_default();
                    let has = |z: &str| {
                        entries
                            .iter()
                            .any(|e| e.name == z && e.phase == ObjectPhase::Pinned)
                    };
                    if has(&zones[1]) && !entries.iter().any(|e| e.name == zones[0]) {
                        break at;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the BpfNodeState watch ended"),
                Err(_) => bail!("node 0's pins did not move within {TIMEOUT:?}"),
            }
        };
        stask.abort();
        res.add(
            sec,
            "relabel -> pins moved (ms)",
            Some("relabel_ms"),
            one(ms(moved - t0)),
            "",
            0,
        );

        // --- operator restart: relist everything, then the first correct status
        let sec = "fleet: operator restart (SIGKILL; an object created meanwhile; start -> it is Ready on all nodes)";
        let cpu_total = cpu_seconds(self.operator_pid()?).unwrap_or(f64::NAN);
        if let Some(mut op) = self.operator.take() {
            op.kill();
        }
        let probe = "fleet-restart".to_owned();
        objects
            .create(
                &PostParams::default(),
                &obj(&probe, &self.bytecode, (FLEET, "yes"))?,
            )
            .await?;
        let deadline = Instant::now() + TIMEOUT;
        while self.stats()?.loads.get(&probe).copied().unwrap_or(0) < n as u64 {
            if Instant::now() > deadline {
                bail!("the simulated agents did not load {probe}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.settle(Duration::from_secs(2)).await?;
        let t0 = Instant::now();
        self.start_operator()?;
        let at = Self::wait_all(
            &mut rx,
            std::slice::from_ref(&probe),
            |ev| match ev {
                watcher::Event::Apply(o) if ready_on(o, n) => Some(o.name_any()),
                _ => None,
            },
            "Ready after the operator restart",
        )
        .await?;
        res.add(
            sec,
            "operator start -> first correct status (ms)",
            Some("operator_restart_ms"),
            one(ms(at[&probe] - t0)),
            "",
            0,
        );
        let restarted = memory_mib(self.operator_pid()?).map_or(f64::NAN, |m| m.0);
        res.add(
            sec,
            "restarted operator VmRSS (MiB)",
            None,
            one(restarted),
            "",
            1,
        );

        // --- delete everything at once
        let sec = "fleet: deletion (delete response -> the watch's Delete event: every agent reported it unpinned)";
        let deleted = each(&names, CONCURRENCY, str::to_owned, |nm| {
            let api = objects.clone();
            async move {
                api.delete(&nm, &DeleteParams::default()).await?;
                Ok(())
            }
        })
        .await?;
        let gone = Self::wait_all(
            &mut rx,
            &names,
            |ev| match ev {
                watcher::Event::Delete(o) => Some(o.name_any()),
                _ => None,
            },
            "deleted",
        )
        .await?;
        let lat = latencies(&names, &deleted, &gone);
        res.add(
            sec,
            "delete p50 (ms)",
            None,
            one(percentile(&lat, 50.0)),
            "",
            0,
        );
        res.add(
            sec,
            "delete p99 (ms)",
            Some("delete_p99_ms"),
            one(percentile(&lat, 99.0)),
            "",
            0,
        );
        watch_task.abort();
        for extra in zones.iter().chain([&probe]) {
            let _ = objects.delete(extra, &DeleteParams::default()).await;
        }
        // The first operator's CPU from its start (Nodes listed, agents joining) to its kill.
        let sec = "fleet: footprint (all objects Ready on all nodes)";
        res.add(
            sec,
            "operator CPU, start -> kill: setup, rollout, steady state, relabel (s)",
            Some("operator_cpu_s"),
            one(cpu_total),
            "",
            1,
        );
        if !self.sims.as_mut().is_some_and(Sims::alive) {
            bail!(
                "a simulated-agent process died; logs in {}",
                self.args.logs.display()
            );
        }
        Ok(())
    }

    async fn teardown(&mut self) {
        let objects: Api<BpfObject> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("{FLEET}=yes"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match objects.list_metadata(&lp).await {
                Ok(l) if l.items.is_empty() => break,
                Ok(l) => {
                    for o in &l.items {
                        let _ = objects
                            .delete(&o.name_any(), &DeleteParams::default())
                            .await;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        if let Some(mut s) = self.sims.take() {
            s.stop();
        }
        if let Some(mut op) = self.operator.take() {
            op.stop();
        }
        // Drops leftover finalizers and the Nodes (their BpfNodeStates and Leases go with them).
        let _ = self.clean_leftovers().await;
    }
}

/// The keys of the `bench-fleet:` line, in order (the interface other tools read), then this
/// bench's own additions.
const KEYS: [&str; 14] = [
    "ready_p50_ms",
    "ready_p99_ms",
    "delete_p99_ms",
    "operator_rss_mib",
    "operator_cpu_s",
    "apiserver_rss_mib",
    "etcd_rss_mib",
    "steady_write_bytes_per_s",
    "rollout_write_bytes",
    "agent_watch_events_per_change",
    "operator_restart_ms",
    "relabel_ms",
    "rollout_watch_bytes",
    "status_writes_per_object",
];

/// The figures `--baseline` compares, and the key of each ratio (change ÷ baseline).
const RATIOS: [(&str, &str); 5] = [
    ("agent_watch_events_per_change", "watch_events_ratio"),
    ("rollout_watch_bytes", "watch_bytes_ratio"),
    ("status_writes_per_object", "status_writes_ratio"),
    ("ready_p50_ms", "ready_p50_ratio"),
    ("ready_p99_ms", "ready_p99_ratio"),
];

/// Runs the fleet bench and prints its table and `bench-fleet:` line; with `--baseline`, the
/// baseline's table and `bench-fleet-baseline:` line first, and the ratios in the last line.
pub async fn bench(args: &Args, fa: FleetArgs, work: &Path, bytecode: &Path) -> Result<()> {
    let started = Instant::now();
    let (measured, template) = measure_real_load(work, bytecode, 9)?;
    std::fs::write(
        work.join("fleet-template.json"),
        serde_json::to_vec(&template)?,
    )?;
    let load = fa.load.unwrap_or(measured);
    eprintln!(
        "bench: fleet: {} simulated nodes, {} objects, {} agent processes, stand-in load {:.2} ms (real load median {:.2} ms)",
        fa.nodes,
        fa.objects,
        fa.procs,
        ms(load),
        ms(measured)
    );
    let baseline = match &fa.baseline {
        Some(flags) => {
            eprintln!(
                "bench: fleet: baseline run, operator flags {:?}",
                flags.join(" ")
            );
            let res = run_once(
                args,
                &fa,
                work,
                bytecode,
                load,
                measured,
                flags,
                "fleet-base-",
            )
            .await?;
            res.print_with(
                &format!(
                    "bpfpin fleet benchmark, baseline (operator flags: {}): {} simulated nodes, {} objects",
                    flags.join(" "),
                    fa.nodes,
                    fa.objects
                ),
                &format!(
                    "bench-fleet-baseline: nodes={} objects={}",
                    fa.nodes, fa.objects
                ),
                &KEYS,
            );
            eprintln!("bench: fleet: the run as built");
            Some(res)
        }
        None => None,
    };
    let mut res = run_once(args, &fa, work, bytecode, load, measured, &[], "fleet-").await?;
    let mut order = KEYS.to_vec();
    if let Some(base) = &baseline {
        let sec = "fleet: against the baseline run (change ÷ baseline, same command, same machine)";
        for (key, ratio) in RATIOS {
            let v = match (res.value(key), base.value(key)) {
                (Some(new), Some(old)) if old > 0.0 => new / old,
                _ => f64::NAN,
            };
            res.add(
                sec,
                format!("{key}: change ÷ baseline"),
                Some(ratio),
                Figure { values: vec![v] },
                "",
                3,
            );
            order.push(ratio);
        }
    }
    res.print_with(
        &format!(
            "bpfpin fleet benchmark: {} simulated nodes, {} objects ({:.0} s)",
            fa.nodes,
            fa.objects,
            started.elapsed().as_secs_f64()
        ),
        &format!("bench-fleet: nodes={} objects={}", fa.nodes, fa.objects),
        &order,
    );
    Ok(())
}

/// One whole scenario with `operator_args` added to the operator's flags.
#[expect(
    clippy::too_many_arguments,
    reason = "the settings of one run, each used once"
)]
async fn run_once(
    args: &Args,
    fa: &FleetArgs,
    work: &Path,
    bytecode: &Path,
    load: Duration,
    measured: Duration,
    operator_args: &[String],
    log_prefix: &'static str,
) -> Result<Results> {
    let (kubeconfig, client) = connect().await?;
    let mut fleet = Fleet {
        args,
        fa: fa.clone(),
        client,
        kubeconfig,
        bytecode: bytecode.to_path_buf(),
        work: work.to_path_buf(),
        operator: None,
        sims: None,
        nodes: Vec::new(),
        operator_args: operator_args.to_vec(),
        log_prefix,
    };
    let mut res = Results::default();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let outcome = fleet.scenario(&mut res, load).await;
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    fleet.teardown().await;
    outcome?;
    let one = |v: f64| Figure { values: vec![v] };
    res.add(
        "fleet: the stand-in",
        "stand-in time per load (ms)",
        None,
        one(ms(load)),
        "",
        2,
    );
    res.add(
        "fleet: the stand-in",
        "real load of the bench object, median of 9 (ms)",
        None,
        one(ms(measured)),
        "",
        2,
    );
    res.notes.push(format!(
        "load average before / after: {} / {} (the machine may be shared: absolute figures depend on it)",
        load_before.trim(),
        load_after.trim()
    ));
    res.notes.push(format!(
        "real: operator, API server, etcd, and each simulated agent's watches, selection, planning, bytecode reads, BpfNodeState and Lease writes (own client each); simulated: the kernel core (a sleep per load), Nodes without kubelets; logs in {}",
        args.logs.display()
    ));
    Ok(res)
}
