//! The processes chaos kills: agents and operator replicas (children of the driver, restarted by
//! it as a kubelet would), and etcd and kube-apiserver (started by `e2e/scripts/cluster`, found through
//! its pidfiles, restarted with `e2e/scripts/cluster up`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// How a managed process is started.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// An agent or an operator replica the driver runs, kills and restarts.
#[derive(Debug)]
pub struct Managed {
    /// `agent chaos-1`, `operator b`.
    pub name: String,
    spec: Spec,
    /// Its log (appended to across restarts).
    pub log: PathBuf,
    child: Option<Child>,
    /// When it was last started (None while down).
    pub started: Option<Instant>,
    restart_at: Option<Instant>,
    /// SIGKILLs the driver sent it.
    pub kills: u32,
    /// Times it exited without being killed (each one is reported).
    pub self_exits: Vec<String>,
}

impl Managed {
    /// A process not started yet.
    pub fn new(name: String, spec: Spec, log: PathBuf) -> Self {
        Self {
            name,
            spec,
            log,
            child: None,
            started: None,
            restart_at: None,
            kills: 0,
            self_exits: Vec::new(),
        }
    }

    /// Starts it (appending to its log).
    pub fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        self.started = Some(Instant::now());
        self.restart_at = None;
        Ok(())
    }

    /// Whether it runs now.
    pub fn up(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL (as a crash or the OOM killer would); restarted after `delay`.
    pub fn kill(&mut self, delay: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
        }
        self.started = None;
        self.restart_at = Some(Instant::now() + delay);
    }

    /// Notices an exit nobody asked for and restarts what is due; returns a note of an
    /// unexpected exit.
    pub fn supervise(&mut self) -> Result<Option<String>> {
        let mut note = None;
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            let what = format!("{} exited by itself ({status})", self.name);
            self.self_exits.push(what.clone());
            note = Some(what);
            self.child = None;
            self.started = None;
            // A kubelet restarts a crashed container after a back-off; 1 s here.
            self.restart_at = Some(Instant::now() + Duration::from_secs(1));
        }
        if self.child.is_none() && self.restart_at.is_some_and(|t| Instant::now() >= t) {
            self.start()?;
        }
        Ok(note)
    }

    /// Restarts it now if it is down.
    pub fn ensure_up(&mut self) -> Result<()> {
        let _ = self.supervise()?;
        if self.child.is_none() {
            self.start()?;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            bpfpin_e2e::terminate(c);
        }
        self.restart_at = None;
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A control-plane component `e2e/scripts/cluster` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// etcd.
    Etcd,
    /// kube-apiserver.
    ApiServer,
}

impl Component {
    /// Its pidfile's stem under `<state>/run/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::ApiServer => "kube-apiserver",
        }
    }
}

/// The start time (clock ticks since boot) of a pid, field 22 of `/proc/PID/stat`.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) " (comm may hold spaces and parentheses), the state is field 3.
    let rest = &stat[stat.rfind(") ")? + 2..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// SIGKILLs a component through `e2e/scripts/cluster`'s pidfile (`PID STARTTIME`: a reused pid is never
/// signalled). `e2e/scripts/cluster` has no kill command; reading its pidfiles is its documented layout.
pub fn kill_component(state: &Path, c: Component) -> Result<u32> {
    let file = state.join("run").join(format!("{}.pid", c.name()));
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut it = text.split_whitespace();
    let (Some(pid), Some(start)) = (it.next(), it.next()) else {
        bail!("{} holds no `PID STARTTIME`", file.display());
    };
    let pid: u32 = pid
        .parse()
        .with_context(|| format!("pid in {}", file.display()))?;
    if start_time(pid).as_deref() != Some(start) {
        bail!("{} (pid {pid}) is not running", c.name());
    }
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -KILL {pid} ({}) failed", c.name());
    }
    Ok(pid)
}

/// `e2e/scripts/cluster up`: restarts a half-up control plane (data, Nodes, certificates kept).
pub fn cluster_up(repo: &Path) -> Result<()> {
    let out = Command::new(repo.join("e2e/scripts/cluster"))
        .arg("up")
        .stdin(Stdio::null())
        .output()
        .context("running e2e/scripts/cluster up")?;
    if !out.status.success() {
        bail!(
            "e2e/scripts/cluster up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
