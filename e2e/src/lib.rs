//! The end-to-end harness: a real control plane (`e2e/scripts/cluster up`, started by `e2e/run`), the
//! operator as a process, and simulated nodes — a `Node` object, a private bpffs mount and a real
//! `bpfpin-agent cluster` process each. The checks in `tests/` use it; the kind path
//! (`e2e/kind/run`) runs the same scenarios against DaemonSet pods.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bpfpin_crds::heartbeat::lease_name;
use bpfpin_crds::{BpfNodeState, BpfObject, NodeObjectState};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};

/// Where the operator and the simulated nodes' agents keep their Leases (`--lease-namespace`).
pub const LEASE_NAMESPACE: &str = "kube-system";

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo puts the debug binaries (`$CARGO_TARGET_DIR/debug`).
pub fn target_debug() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("debug")
}

fn binary(name: &str) -> PathBuf {
    let path = target_debug().join(name);
    assert!(
        path.exists(),
        "{} is missing: e2e/run builds it (cargo build -p bpfpin-agent -p bpfpin-operator)",
        path.display()
    );
    path
}

/// Shared by every check of a test binary.
pub struct Env {
    /// An admin client.
    pub client: Client,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Compiled BPF objects the agents may read (`--bytecode-dir`).
    pub bytecode_dir: tempfile::TempDir,
    /// The agents' download caches (`--cache-dir`), one folder per node, so that a node pinning
    /// a url or an image has fetched it itself (not from the host's /var/lib/bpfpin/cache).
    pub cache_dir: tempfile::TempDir,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Env {
    /// Connects to the control plane named by `KUBECONFIG` and compiles the test objects.
    pub async fn new() -> Result<Self> {
        let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").context(
            "KUBECONFIG is not set: run the e2e suite through e2e/run (it starts the control plane)",
        )?);
        let client = Client::try_default()
            .await
            .context("connecting to the API server")?;
        let bytecode_dir = tempfile::tempdir()?;
        for (name, src) in [
            ("counter", repo().join("examples/counter/counter.bpf.c")),
            ("rejected", repo().join("agent/tests/bpf/rejected.bpf.c")),
        ] {
            compile_bpf(&src, &bytecode_dir.path().join(format!("{name}.bpf.o")))?;
        }
        Ok(Self {
            client,
            kubeconfig,
            bytecode_dir,
            cache_dir: tempfile::tempdir()?,
        })
    }

    /// The path of a compiled test object, as agents see it.
    pub fn object_path(&self, name: &str) -> String {
        self.bytecode_dir
            .path()
            .join(format!("{name}.bpf.o"))
            .display()
            .to_string()
    }

    /// Starts the operator (leader election on; `--stale-after` as given).
    pub fn operator(&self, stale_after: &str) -> Result<Proc> {
        let log = log_path("operator");
        let child = Command::new(binary("bpfpin-operator"))
            .args([
                "--stale-after",
                stale_after,
                "--metrics-addr",
                "127.0.0.1:0",
                "--debounce",
                "100ms",
                "--lease-namespace",
                LEASE_NAMESPACE,
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting bpfpin-operator")?;
        Ok(Proc::new("operator", child, log))
    }

    /// `N` simulated nodes `<group>-1` … `<group>-N`, each labelled `e2e-group=<group>`.
    pub async fn nodes<const N: usize>(&self, group: &str) -> Result<[SimNode; N]> {
        let mut nodes = Vec::with_capacity(N);
        for i in 1..=N {
            let name = format!("{group}-{i}");
            nodes.push(self.node(&name, &[("e2e-group", group)]).await?);
        }
        Ok(nodes
            .try_into()
            .unwrap_or_else(|_| unreachable!("{N} nodes were added")))
    }

    /// Adds a simulated node with these labels (plus `bpfpin-e2e=<group>`) and starts its agent.
    pub async fn node(&self, name: &str, labels: &[(&str, &str)]) -> Result<SimNode> {
        let mut all: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        all.push("bpfpin-e2e=true".into());
        let mut node = SimNode {
            name: name.to_owned(),
            bpffs: add_node(&self.kubeconfig, name, &all.join(","))?,
            agent: None,
            kubeconfig: self.kubeconfig.clone(),
            bytecode_dir: self.bytecode_dir.path().to_path_buf(),
            cache_dir: self.cache_dir.path().join(name),
        };
        node.start_agent()?;
        Ok(node)
    }

    /// `kubectl` with the admin kubeconfig; returns (success, stdout+stderr).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        let out = child.wait_with_output().expect("kubectl output");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `kubectl` that must succeed: its output, or a panic with the command and kubectl's words.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.kubectl(args, stdin);
        assert!(ok, "kubectl {}: {out}", args.join(" "));
        out
    }

    /// `kubectl apply -f -` of a manifest; panics with kubectl's words when refused.
    pub fn apply(&self, manifest: &str) {
        let (ok, out) = self.kubectl(&["apply", "-f", "-"], Some(manifest));
        assert!(ok, "kubectl apply refused:\n{out}\n{manifest}");
    }

    /// The BpfObject API.
    pub fn objects(&self) -> Api<BpfObject> {
        Api::all(self.client.clone())
    }

    /// The BpfNodeState API.
    pub fn node_states(&self) -> Api<BpfNodeState> {
        Api::all(self.client.clone())
    }

    /// Waits until the object satisfies `cond` (a watch, not a poll).
    pub async fn wait_object(
        &self,
        name: &str,
        what: &str,
        cond: impl Fn(&BpfObject) -> bool,
    ) -> Result<BpfObject> {
        let fut = await_condition(self.objects(), name, move |o: Option<&BpfObject>| {
            o.is_some_and(&cond)
        });
        match tokio::time::timeout(WAIT, fut).await {
            Ok(Ok(Some(o))) => Ok(o),
            Ok(Ok(None)) => bail!("{name} disappeared while waiting for {what}"),
            Ok(Err(e)) => bail!("watching {name}: {e}"),
            Err(_) => {
                let now = self.objects().get_opt(name).await.ok().flatten();
                bail!(
                    "timed out after {WAIT:?} waiting for bpfobject/{name} to be {what}; status: {}",
                    serde_json::to_string_pretty(&now.and_then(|o| o.status)).unwrap_or_default()
                )
            }
        }
    }

    /// Waits until the object is gone (its finalizer released).
    pub async fn wait_gone(&self, name: &str) -> Result<()> {
        let fut = await_condition(self.objects(), name, |o: Option<&BpfObject>| o.is_none());
        match tokio::time::timeout(WAIT, fut).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => bail!("watching {name}: {e}"),
            Err(_) => bail!("timed out after {WAIT:?} waiting for bpfobject/{name} to be deleted"),
        }
    }

    /// When `node`'s agent last renewed its heartbeat Lease (None: no Lease yet).
    pub async fn heartbeat(&self, node: &str) -> Result<Option<Timestamp>> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        Ok(leases
            .get_opt(&lease_name(node))
            .await?
            .and_then(|l| l.spec?.renew_time)
            .map(|t| t.0))
    }

    /// Waits until `node`'s agent renews its heartbeat Lease later than `after`: the agent lives
    /// and its `BpfNodeState` is current (an agent renews only after writing it).
    pub async fn wait_heartbeat_after(&self, node: &str, after: Option<Timestamp>) -> Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let name = lease_name(node);
        let fut = await_condition(leases, &name, move |l: Option<&Lease>| {
            let renewed = l
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
                .map(|t| t.0);
            renewed.is_some() && renewed > after
        });
        match tokio::time::timeout(WAIT, fut).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => bail!("watching Lease {name}: {e}"),
            Err(_) => bail!(
                "timed out after {WAIT:?} waiting for {node}'s agent to renew Lease {LEASE_NAMESPACE}/{name}"
            ),
        }
    }

    /// Waits until a node's state satisfies `cond`.
    pub async fn wait_node_state(
        &self,
        node: &str,
        what: &str,
        cond: impl Fn(&BpfNodeState) -> bool,
    ) -> Result<BpfNodeState> {
        let fut = await_condition(self.node_states(), node, move |o: Option<&BpfNodeState>| {
            o.is_some_and(&cond)
        });
        match tokio::time::timeout(WAIT, fut).await {
            Ok(Ok(Some(s))) => Ok(s),
            Ok(Ok(None)) => bail!("bpfnodestate/{node} disappeared while waiting for {what}"),
            Ok(Err(e)) => bail!("watching bpfnodestate/{node}: {e}"),
            Err(_) => bail!("timed out after {WAIT:?} waiting for bpfnodestate/{node}: {what}"),
        }
    }

    /// Sets (or with `None` removes) a label of a node.
    pub async fn label_node(&self, node: &str, key: &str, value: Option<&str>) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({"metadata": {"labels": {key: value}}});
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Deletes an object (the finalizer then holds it until nodes have unpinned).
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.objects()
            .delete(name, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

/// Compiles a BPF C source with clang (`-target bpf`).
pub fn compile_bpf(src: &Path, out: &Path) -> Result<()> {
    let status = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(src)
        .arg("-o")
        .arg(out)
        .status()
        .context("running clang (hack/deps installs it)")?;
    if !status.success() {
        bail!("clang failed on {}", src.display());
    }
    Ok(())
}

/// `e2e/scripts/cluster node add NAME --labels LABELS`; returns the node's bpffs mount point.
pub fn add_node(kubeconfig: &Path, name: &str, labels: &str) -> Result<PathBuf> {
    let out = Command::new(repo().join("e2e/scripts/cluster"))
        .args(["node", "add", name, "--labels", labels])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("BPFPIN_AGENT")
        .output()
        .context("running e2e/scripts/cluster node add")?;
    if !out.status.success() {
        bail!(
            "e2e/scripts/cluster node add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .context("node add printed no mount point")
}

/// `e2e/scripts/cluster node remove NAME`: deletes the Node and unmounts its bpffs.
pub fn remove_node(kubeconfig: &Path, name: &str) {
    let _ = Command::new(repo().join("e2e/scripts/cluster"))
        .args(["node", "remove", name])
        .env("KUBECONFIG", kubeconfig)
        .output();
}

/// The arguments of a simulated node's `bpfpin-agent cluster` (after any global flag).
pub fn agent_args(node: &str, bpffs: &Path, bytecode_dir: &Path, cache_dir: &Path) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    [
        "cluster",
        "--node-name",
        node,
        "--bpffs",
        &path(bpffs),
        "--bytecode-dir",
        &path(bytecode_dir),
        "--cache-dir",
        &path(cache_dir),
        "--heartbeat-interval",
        "2s",
        "--metrics-addr",
        "none",
        "--lease-namespace",
        LEASE_NAMESPACE,
    ]
    .map(String::from)
    .to_vec()
}

/// A `BpfObject` manifest for the tests: `spec` is YAML nested under `spec:`.
pub fn manifest(name: &str, spec: &str) -> String {
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

/// The status of condition `type_` of an object, with its reason and message.
pub fn condition(o: &BpfObject, type_: &str) -> Option<(String, String, String)> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// True when `Ready` is `status` at the object's current generation.
pub fn ready_is(o: &BpfObject, status: &str) -> bool {
    let current = o
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some_and(|g| Some(g) == o.metadata.generation);
    current && condition(o, "Ready").is_some_and(|(s, _, _)| s == status)
}

/// The entry of `object` in a node state.
pub fn entry<'a>(state: &'a BpfNodeState, object: &str) -> Option<&'a NodeObjectState> {
    state
        .status
        .as_ref()?
        .objects
        .iter()
        .find(|o| o.name == object)
}

/// A child process killed on drop (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
}

/// SIGTERM, then SIGKILL when `child` has not exited 10 s later; reaps it either way.
pub fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Proc {
    /// Takes over a spawned child; `log` is where its output goes (may be empty).
    pub fn new(name: impl Into<String>, child: Child, log: PathBuf) -> Self {
        Self {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    /// Its pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }

    /// The last lines of its log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() && !self.log.as_os_str().is_empty() {
            eprintln!("stopping {} (log: {})", self.name, self.log.display());
        }
        self.stop();
    }
}

fn log_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("BPFPIN_E2E_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("bpfpin-e2e-logs"));
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("{name}.log"))
}

/// A simulated node: its `Node` object, its private bpffs, its agent.
#[derive(Debug)]
pub struct SimNode {
    /// The node's name.
    pub name: String,
    /// Its bpffs mount point.
    pub bpffs: PathBuf,
    /// Its agent, while running.
    pub agent: Option<Proc>,
    kubeconfig: PathBuf,
    bytecode_dir: PathBuf,
    cache_dir: PathBuf,
}

impl SimNode {
    /// `<bpffs>/bpfpin`.
    pub fn root(&self) -> PathBuf {
        self.bpffs.join("bpfpin")
    }

    /// Whether `<root>/<object>/progs/<program>` is pinned.
    pub fn has_program(&self, object: &str, program: &str) -> bool {
        self.root()
            .join(object)
            .join("progs")
            .join(program)
            .exists()
    }

    /// Whether anything of the object is under the root.
    pub fn has_object(&self, object: &str) -> bool {
        std::fs::symlink_metadata(self.root().join(object)).is_ok()
            || self.root().join("_versions").join(object).exists()
    }

    /// Starts (or restarts) the agent.
    pub fn start_agent(&mut self) -> Result<()> {
        let log = log_path(&format!("agent-{}", self.name));
        let child = Command::new(binary("bpfpin-agent"))
            .args(agent_args(
                &self.name,
                &self.bpffs,
                &self.bytecode_dir,
                &self.cache_dir,
            ))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?,
            )
            .spawn()
            .context("starting bpfpin-agent")?;
        self.agent = Some(Proc::new(format!("agent of {}", self.name), child, log));
        Ok(())
    }

    /// Kernel program id of a pinned program (via bpftool).
    pub fn program_id(&self, object: &str, program: &str) -> Option<u32> {
        program_id(&self.root().join(object).join("progs").join(program)).ok()
    }

    /// Stops the agent, deletes the Node and unmounts the bpffs (`e2e/scripts/cluster node remove`).
    pub fn remove(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
        remove_node(&self.kubeconfig, &self.name);
        self.name.clear();
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            self.remove();
        }
    }
}

/// `bpftool -j ARGS PATH`, as JSON.
pub fn bpftool(args: &[&str], path: &Path) -> Result<serde_json::Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .arg(path)
        .output()
        .context("running bpftool (hack/deps installs it)")?;
    if !out.status.success() {
        bail!(
            "bpftool {} {}: {}",
            args.join(" "),
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("bpftool printed no JSON")
}

/// The kernel id of the program pinned at `path`.
pub fn program_id(path: &Path) -> Result<u32> {
    let v = bpftool(&["prog", "show", "pinned"], path)?;
    v.get("id")
        .and_then(serde_json::Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .with_context(|| format!("bpftool prog show pinned {}: no id in {v}", path.display()))
}

/// Program ids a node state reports for an object.
pub fn reported_ids(state: &BpfNodeState, object: &str) -> Vec<(String, u32)> {
    entry(state, object)
        .map(|e| e.programs.iter().map(|p| (p.name.clone(), p.id)).collect())
        .unwrap_or_default()
}

/// The object's name (for messages).
pub fn name_of(o: &BpfObject) -> String {
    o.name_any()
}
