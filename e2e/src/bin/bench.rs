//! `e2e/scripts/bench`: bpfpin's benchmark. Convergence, deletion, footprint, restart and API load on the
//! local control plane with simulated nodes (real agents on private bpffs mounts), and the
//! local-mode figures (GC rate, load overhead against bpftool, cold `--once`), each with min,
//! median and max over several runs and its baseline side by side. The last line of stdout is
//! `bench: key=value ...`. Run it through `e2e/scripts/bench` (it builds the release binaries and brings
//! the control plane up); see docs/performance.md for the definitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bpfpin_agent::cluster::heartbeat::lease_name;
use bpfpin_agent::{DesiredObject, Reconciler};
use bpfpin_crds::{BpfNodeState, BpfObject, BpfObjectSpec, ObjectPhase};
use bpfpin_e2e::Proc;
use bpfpin_e2e::{LEASE_NAMESPACE, ready_is, repo};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

/// Label on the bench's Nodes (selected by the objects) and on its BpfObjects.
const LABEL: &str = "bpfpin-bench";
/// Prefix of the simulated node names.
const NODE_PREFIX: &str = "bench-";
/// The programs of the scale test's objects (examples/counter/counter.bpf.c), no attachments.
const COUNTER_PROGRAMS: [&str; 3] = ["count_getpid", "count_packets", "tail_target"];
/// How long any wait of the cluster scenario may take.
const TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// Arguments

#[derive(Debug, Clone)]
struct Args {
    nodes: usize,
    objects: usize,
    runs: usize,
    smoke: bool,
    /// Only the local-mode figures (no control plane needed).
    local_only: bool,
    /// Runs of the local micro benchmarks (load ratio, cold --once): at least 10.
    micro_runs: usize,
    /// Objects of the GC figure (100 by definition).
    gc_objects: usize,
    logs: PathBuf,
    /// `--fleet N`: the fleet bench with N simulated nodes instead (fleet.rs).
    fleet: Option<usize>,
    /// `--procs N`: simulated-agent processes of the fleet bench.
    procs: Option<usize>,
    /// `--load-ms X`: the stand-in's time per load (default: the measured median of a real one).
    load_ms: Option<f64>,
    /// `--steady-s X`: how long the fleet bench observes the steady state (default 65 s).
    steady_s: Option<f64>,
    /// `--heartbeat-s X`: the simulated agents' heartbeat interval (default 30 s, the agent's).
    heartbeat_s: Option<f64>,
}

fn usage() -> ! {
    eprintln!(
        "usage: e2e/scripts/bench [--nodes N] [--objects N] [--runs N] [--micro-runs N] [--smoke] [--local-only]\n\
         \x20      e2e/scripts/bench --fleet N [--objects M] [--procs P] [--load-ms X] [--steady-s S] [--heartbeat-s S] [--smoke]\n\
         defaults: 10 nodes, 100 objects, 3 runs; --smoke: 2 nodes, 5 objects, 3 runs; --fleet: 100 objects"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut nodes = None;
    let mut objects = None;
    let mut runs = None;
    let mut micro = None;
    let mut smoke = false;
    let mut local_only = false;
    let (mut fleet, mut procs, mut load_ms, mut steady_s, mut heartbeat_s) =
        (None, None, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let num = |it: &mut dyn Iterator<Item = String>| -> usize {
            match it.next().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n > 0 => n,
                _ => usage(),
            }
        };
        match a.as_str() {
            "--nodes" => nodes = Some(num(&mut it)),
            "--objects" => objects = Some(num(&mut it)),
            "--runs" => runs = Some(num(&mut it)),
            "--micro-runs" => micro = Some(num(&mut it)),
            "--smoke" => smoke = true,
            "--local-only" => local_only = true,
            "--fleet" => fleet = Some(num(&mut it)),
            "--procs" => procs = Some(num(&mut it)),
            "--load-ms" | "--steady-s" | "--heartbeat-s" => {
                let v = match it.next().and_then(|v| v.parse::<f64>().ok()) {
                    Some(v) if v >= 0.0 => v,
                    _ => usage(),
                };
                match a.as_str() {
                    "--load-ms" => load_ms = Some(v),
                    "--steady-s" => steady_s = Some(v),
                    _ => heartbeat_s = Some(v),
                }
            }
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let (dn, dobj, druns) = if smoke { (2, 5, 3) } else { (10, 100, 3) };
    let runs = runs.unwrap_or(druns);
    Args {
        nodes: nodes.unwrap_or(dn),
        objects: objects.unwrap_or(dobj),
        runs,
        smoke,
        local_only,
        micro_runs: micro.unwrap_or(if smoke { 10 } else { 15 }).max(10),
        gc_objects: 100,
        logs: std::env::var_os("BPFPIN_BENCH_LOGS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/bpfpin-bench-logs")),
        fleet,
        procs,
        load_ms,
        steady_s,
        heartbeat_s,
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// One figure: a value per run.
#[derive(Debug, Default, Clone)]
struct Figure {
    values: Vec<f64>,
}

impl Figure {
    fn push(&mut self, v: f64) {
        self.values.push(v);
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// Nearest-rank percentile of a sample.
fn percentile(sample: &[f64], p: f64) -> f64 {
    if sample.is_empty() {
        return f64::NAN;
    }
    let mut v = sample.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A row of the table, in print order.
#[derive(Debug)]
struct Row {
    section: &'static str,
    name: String,
    key: Option<&'static str>,
    figure: Figure,
    target: &'static str,
    decimals: usize,
}

#[derive(Debug, Default)]
struct Results {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Results {
    fn add(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        key: Option<&'static str>,
        figure: Figure,
        target: &'static str,
        decimals: usize,
    ) {
        self.rows.push(Row {
            section,
            name: name.into(),
            key,
            figure,
            target,
            decimals,
        });
    }

    fn print(&self, args: &Args, elapsed: Duration) {
        let head = format!(
            "bpfpin benchmark: {} nodes, {} objects, {} cluster runs, {} local runs{} ({:.0} s)",
            args.nodes,
            args.objects,
            args.runs,
            args.micro_runs,
            if args.smoke { ", smoke" } else { "" },
            elapsed.as_secs_f64()
        );
        self.print_with(
            &head,
            &format!("bench: nodes={} objects={}", args.nodes, args.objects),
            &[],
        );
    }

    /// The table under `head`, then one line `line key=value ...`: the keys in `order` first
    /// (every one of them, NaN if not measured), then the other keys in row order.
    fn print_with(&self, head: &str, line: &str, order: &[&'static str]) {
        println!();
        println!("{head}");
        let mut section = "";
        println!(
            "{:<58} {:>10} {:>10} {:>10}  {:<10} key",
            "figure", "median", "min", "max", "target"
        );
        for r in &self.rows {
            if r.section != section {
                section = r.section;
                println!("-- {section}");
            }
            let f = |v: f64| format!("{v:.*}", r.decimals);
            println!(
                "{:<58} {:>10} {:>10} {:>10}  {:<10} {}",
                r.name,
                f(r.figure.median()),
                f(r.figure.min()),
                f(r.figure.max()),
                r.target,
                r.key.unwrap_or("")
            );
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        let mut line = line.to_owned();
        let mut seen = BTreeSet::new();
        let value = |r: &Row| {
            let v = r.figure.median();
            let digits = if r.decimals == 0 && v.fract() == 0.0 {
                0
            } else {
                r.decimals.max(1)
            };
            format!("{v:.digits$}")
        };
        for k in order {
            seen.insert(*k);
            match self.rows.iter().find(|r| r.key == Some(k)) {
                Some(r) => line.push_str(&format!(" {k}={}", value(r))),
                None => line.push_str(&format!(" {k}=NaN")),
            }
        }
        for r in &self.rows {
            if let Some(k) = r.key
                && seen.insert(k)
            {
                line.push_str(&format!(" {k}={}", value(r)));
            }
        }
        println!("{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers: processes, bpffs, kernel program ids

/// Extra arguments from an environment variable (split on whitespace), e.g.
/// `BPFPIN_BENCH_OPERATOR_ARGS="--debounce 100ms"` to measure a setting.
fn extra_args(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        // e2e/scripts/bench sets it: `release` for real figures, `debug` for the smoke run in e2e/run.
        .join(std::env::var("BPFPIN_BENCH_PROFILE").unwrap_or_else(|_| "release".into()))
}

fn binary(name: &str) -> Result<PathBuf> {
    let p = target_dir().join(name);
    if !p.exists() {
        bail!(
            "{} is missing: e2e/scripts/bench builds it (cargo build --release -p bpfpin-agent -p bpfpin-operator)",
            p.display()
        );
    }
    Ok(p)
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mount_bpffs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(dir))?;
    Ok(())
}

fn umount(dir: &Path) {
    let _ = Command::new("umount")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Pins (files) under a directory, not following symlinks.
fn count_pins(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => n += count_pins(&e.path()),
            Ok(t) if t.is_file() => n += 1,
            _ => {}
        }
    }
    n
}

/// `(VmRSS, VmHWM)` of a process in MiB.
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Kernel id of the program pinned at `path` (BPF_OBJ_GET + BPF_OBJ_GET_INFO_BY_FD).
fn pinned_prog_id(path: &Path) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // union bpf_attr, BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags, path_fd.
    let mut attr = [0u8; 128];
    attr[..8].copy_from_slice(&(cpath.as_ptr() as u64).to_ne_bytes());
    // SAFETY: attr is a zeroed bpf_attr-sized buffer whose pathname points to a live C string.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return None;
    }
    let fd = fd as i32;
    // struct bpf_prog_info starts with type (u32), id (u32).
    let mut info = [0u32; 2];
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(std::mem::size_of_val(&info) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: attr holds the fd, the buffer length and a pointer to `info`, which outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    // SAFETY: fd was returned by BPF_OBJ_GET above and is closed once.
    unsafe { libc::close(fd) };
    (rc == 0).then_some(info[1])
}

fn compile(src: &Path, out: &Path) -> Result<()> {
    bpfpin_e2e::compile_bpf(src, out)
}

// ---------------------------------------------------------------------------------------------
// Local-mode figures: GC rate, load overhead against bpftool, cold --once

fn spec_yaml(name: &str, bytecode: &Path, programs: &[String], selector: bool) -> String {
    let progs: String = programs
        .iter()
        .map(|p| format!("  - name: {p}\n"))
        .collect();
    let sel = if selector {
        format!("  nodeSelector: {{matchLabels: {{{LABEL}: \"yes\"}}}}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata:\n  name: {name}\nspec:\n{sel}  bytecode: {{path: {}}}\n  programs:\n{progs}",
        bytecode.display()
    )
}

fn many_programs() -> Vec<String> {
    (0..24).map(|i| format!("prog_{i}")).collect()
}

fn counter_programs() -> Vec<String> {
    COUNTER_PROGRAMS.iter().map(|s| (*s).to_owned()).collect()
}

struct Local<'a> {
    args: &'a Args,
    work: PathBuf,
    bytecode: PathBuf,
    agent: PathBuf,
}

impl Local<'_> {
    fn once(&self, manifests: &Path, bpffs: &Path) -> Result<Duration> {
        let started = Instant::now();
        let status = Command::new(&self.agent)
            .args(["local", "--once", "--manifests"])
            .arg(manifests)
            .arg("--bpffs")
            .arg(bpffs)
            .arg("--bytecode-dir")
            .arg(&self.bytecode)
            .arg("--cache-dir")
            .arg(self.work.join("cache"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let took = started.elapsed();
        if !status.success() {
            bail!(
                "bpfpin-agent local --once --manifests {} failed ({status})",
                manifests.display()
            );
        }
        Ok(took)
    }

    /// `bpftool prog loadall many.bpf.o <dir>/progs pinmaps <dir>/maps`, wall time.
    fn bpftool(&self, dir: &Path) -> Result<Duration> {
        let obj = self.bytecode.join("many.bpf.o");
        std::fs::create_dir_all(dir)?;
        let started = Instant::now();
        let out = Command::new("bpftool")
            .args(["prog", "loadall"])
            .arg(&obj)
            .arg(dir.join("progs"))
            .arg("pinmaps")
            .arg(dir.join("maps"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "bpftool prog loadall {} {}/progs pinmaps {}/maps failed ({}): {}",
                obj.display(),
                dir.display(),
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    }

    fn gc(&self, res: &mut Results) -> Result<()> {
        let mut rate = Figure::default();
        let mut pass = Figure::default();
        let mut pins = Figure::default();
        let mut load = Figure::default();
        for r in 0..self.args.runs {
            let dir = self.work.join(format!("gc-{r}"));
            let bpffs = dir.join("bpffs");
            let manifests = dir.join("manifests");
            std::fs::create_dir_all(&manifests)?;
            mount_bpffs(&bpffs)?;
            let result = (|| -> Result<()> {
                let docs: Vec<String> = (0..self.args.gc_objects)
                    .map(|i| {
                        spec_yaml(
                            &format!("gc-{i:03}"),
                            &self.bytecode.join("counter.bpf.o"),
                            &counter_programs(),
                            false,
                        )
                    })
                    .collect();
                let file = manifests.join("objects.yaml");
                std::fs::write(&file, docs.join("---\n"))?;
                load.push(ms(self.once(&manifests, &bpffs)?));
                let before = count_pins(&bpffs.join("bpfpin"));
                std::fs::remove_file(&file)?;
                let took = self.once(&manifests, &bpffs)?;
                let after = count_pins(&bpffs.join("bpfpin"));
                if after != 0 || before == 0 {
                    bail!("GC pass left {after} of {before} pins");
                }
                pins.push(before as f64);
                pass.push(ms(took));
                rate.push((before - after) as f64 / took.as_secs_f64());
                Ok(())
            })();
            umount(&bpffs);
            result?;
        }
        let sec =
            "local mode: garbage collection (counter.bpf.o x 100, 3 programs, no attachments)";
        res.add(
            sec,
            format!(
                "pin {} objects, --once, whole process (ms)",
                self.args.gc_objects
            ),
            None,
            load,
            "",
            0,
        );
        res.add(sec, "pins under the root before GC", None, pins, "", 0);
        res.add(sec, "GC --once, whole process (ms)", None, pass, "", 1);
        res.add(
            sec,
            "GC rate (pins unlinked / s)",
            Some("gc_pins_per_s"),
            rate,
            ">= 5000",
            0,
        );
        Ok(())
    }

    fn load(&self, res: &mut Results) -> Result<()> {
        let bpffs = self.work.join("load-bpffs");
        mount_bpffs(&bpffs)?;
        let result = self.load_inner(res, &bpffs);
        umount(&bpffs);
        result
    }

    fn load_inner(&self, res: &mut Results, bpffs: &Path) -> Result<()> {
        let spec: BpfObjectSpec = {
            let yaml = spec_yaml(
                "many",
                &self.bytecode.join("many.bpf.o"),
                &many_programs(),
                false,
            );
            let obj: BpfObject = serde_yaml::from_str(&yaml)?;
            obj.spec
        };
        let started = Instant::now();
        let mut reconciler = Reconciler::new(bpffs).map_err(|e| anyhow::anyhow!("{e}"))?;
        let new_ms = ms(started.elapsed());
        let none = BTreeSet::new();
        let mut agent = Figure::default();
        let mut tool = Figure::default();
        let mut ratio = Figure::default();
        let mut cold = Figure::default();
        let mut cold_tool = Figure::default();
        let manifests = self.work.join("cold-manifests");
        std::fs::create_dir_all(&manifests)?;
        let empty = self.work.join("idle-manifests");
        std::fs::create_dir_all(&empty)?;
        let mut idle = Figure::default();
        std::fs::write(
            manifests.join("many.yaml"),
            spec_yaml(
                "many",
                &self.bytecode.join("many.bpf.o"),
                &many_programs(),
                false,
            ),
        )?;
        for i in 0..self.args.micro_runs {
            // Interleaved, order alternating, so drift hits both sides alike.
            let mut a = 0.0;
            let mut b = 0.0;
            for side in [i % 2, 1 - i % 2] {
                if side == 0 {
                    let started = Instant::now();
                    let bytes = std::fs::read(self.bytecode.join("many.bpf.o"));
                    let obj = DesiredObject {
                        name: "many".into(),
                        uid: None,
                        generation: 1,
                        spec: spec.clone(),
                        bytecode: bytes.map_err(|e| {
                            bpfpin_agent::error::ObjectError::new(
                                bpfpin_agent::error::Reason::BytecodeUnavailable,
                                e.to_string(),
                            )
                        }),
                    };
                    let report = reconciler.reconcile(std::slice::from_ref(&obj), &none);
                    a = ms(started.elapsed());
                    let r = &report.objects[0];
                    if let Some(e) = &r.error {
                        bail!("reconcile of many.bpf.o failed: {e}");
                    }
                    if r.pinned.as_ref().map(|p| p.programs.len()) != Some(24) {
                        bail!("reconcile of many.bpf.o pinned {:?}", r.pinned);
                    }
                    // Untimed: unpin it again, so the next run is a new object.
                    let gone = reconciler.reconcile(&[], &none);
                    if gone.removed.len() != 1 {
                        bail!("the object was not unpinned between runs");
                    }
                } else {
                    let dir = bpffs.join(format!("bpftool-{i}"));
                    b = ms(self.bpftool(&dir)?);
                    if count_pins(&dir) != 25 {
                        bail!(
                            "bpftool pinned {} files, not 24 programs + 1 map",
                            count_pins(&dir)
                        );
                    }
                    std::fs::remove_dir_all(&dir)?;
                }
            }
            agent.push(a);
            tool.push(b);
            ratio.push(a / b);

            // Cold: a whole `--once` process on a fresh bpffs, and bpftool on a fresh bpffs.
            let fresh = self.work.join(format!("cold-{i}"));
            mount_bpffs(&fresh)?;
            let r = self.once(&manifests, &fresh);
            umount(&fresh);
            cold.push(ms(r?));
            let fresh = self.work.join(format!("cold-tool-{i}"));
            mount_bpffs(&fresh)?;
            let r = self.bpftool(&fresh.join("many"));
            umount(&fresh);
            cold_tool.push(ms(r?));

            // Idle: a whole `--once` process with nothing to do (no manifests) on a fresh bpffs.
            let fresh = self.work.join(format!("idle-{i}"));
            mount_bpffs(&fresh)?;
            let r = self.once(&empty, &fresh);
            umount(&fresh);
            idle.push(ms(r?));
        }
        let mut cold_ratio = Figure::default();
        cold_ratio.push(cold.median() / cold_tool.median());
        let sec = "load overhead: many.bpf.o (24 programs, 1 map, no attachments)";
        let mut f = Figure::default();
        f.push(new_ms);
        res.add(
            sec,
            "Reconciler::new (mount check + kernel BTF parse) (ms)",
            None,
            f,
            "",
            1,
        );
        let mut r = Figure::default();
        r.push(agent.median() / tool.median());
        res.add(
            sec,
            "running agent: reconcile() of a new object (ms)",
            Some("load_agent_ms"),
            agent,
            "",
            1,
        );
        res.add(
            sec,
            "baseline: bpftool prog loadall ... pinmaps (ms)",
            Some("load_bpftool_ms"),
            tool,
            "",
            1,
        );
        res.add(
            sec,
            "load_ratio = median(agent) / median(bpftool)",
            Some("load_ratio"),
            r,
            "<= 1.25",
            2,
        );
        res.add(sec, "per-run ratio agent/bpftool", None, ratio, "", 2);
        res.add(
            sec,
            "cold: bpfpin-agent local --once, fresh bpffs (ms)",
            Some("cold_once_ms"),
            cold,
            "<= 60",
            1,
        );
        res.add(
            sec,
            "baseline: bpftool loadall, fresh bpffs (ms)",
            None,
            cold_tool,
            "",
            1,
        );
        res.add(
            sec,
            "cold_ratio = median(cold --once) / median(cold bpftool)",
            Some("cold_ratio"),
            cold_ratio,
            "<= 1.25",
            2,
        );
        res.add(
            sec,
            "idle: bpfpin-agent local --once, no manifests, fresh bpffs (ms)",
            Some("idle_once_ms"),
            idle,
            "<= 1.5",
            1,
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster scenario

/// A simulated node of the bench: Node object + private bpffs (`e2e/scripts/cluster node add`) + agent.
struct BenchNode {
    name: String,
    bpffs: PathBuf,
    agent: Proc,
}

impl BenchNode {
    fn root(&self) -> PathBuf {
        self.bpffs.join("bpfpin")
    }
    fn has_object(&self, object: &str) -> bool {
        std::fs::symlink_metadata(self.root().join(object)).is_ok()
            || self.root().join("_versions").join(object).exists()
    }
    fn program_ids(&self, object: &str) -> Vec<(String, Option<u32>)> {
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

struct Cluster<'a> {
    args: &'a Args,
    client: Client,
    kubeconfig: PathBuf,
    bytecode: PathBuf,
    agent_bin: PathBuf,
    operator: Option<Proc>,
    nodes: Vec<BenchNode>,
}

/// Events of a watch, stamped with the instant they arrived.
type Stamped<K> = (Instant, watcher::Event<K>);

/// Watches `$api` with `$config`; events go to a channel, stamped on arrival.
macro_rules! spawn_watch {
    ($api:expr, $config:expr $(,)?) => {{
        let (tx, rx) = mpsc::unbounded_channel();
        let (api, config) = ($api, $config);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config));
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(ev) => {
                        if tx.send((Instant::now(), ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("bench: watch error (retrying): {e}"),
                }
            }
        });
        (rx, task)
    }};
}

async fn wait_init<K>(rx: &mut mpsc::UnboundedReceiver<Stamped<K>>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_, watcher::Event::InitDone))) => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => bail!("watch ended"),
            Err(_) => bail!("timed out waiting for the watch's initial list"),
        }
    }
}

/// API server write requests on bpfpin's resources, by (resource, subresource, verb).
type Writes = BTreeMap<(String, String, String), f64>;

fn scrape_writes(kubeconfig: &Path) -> Result<Writes> {
    let text = run(Command::new("kubectl")
        .args(["get", "--raw", "/metrics"])
        .env("KUBECONFIG", kubeconfig))?;
    let mut out = Writes::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let resource = label("resource");
        let verb = label("verb");
        if !["bpfobjects", "bpfnodestates", "events"].contains(&resource.as_str())
            || ![
                "POST",
                "PUT",
                "PATCH",
                "APPLY",
                "DELETE",
                "DELETECOLLECTION",
            ]
            .contains(&verb.as_str())
        {
            continue;
        }
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry((resource, label("subresource"), verb))
            .or_default() += v;
    }
    Ok(out)
}

fn diff_writes(before: &Writes, after: &Writes) -> Writes {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Other bpfpin processes on this machine (another test using the same control plane).
fn foreign_processes(ours: &BTreeSet<u32>) -> Vec<String> {
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

fn object_json(name: &str, bytecode: &Path) -> Result<BpfObject> {
    let programs: Vec<serde_json::Value> = COUNTER_PROGRAMS
        .iter()
        .map(|p| serde_json::json!({"name": p}))
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "bpfpin.io/v1alpha1",
        "kind": "BpfObject",
        "metadata": {"name": name, "labels": {LABEL: "yes"}},
        "spec": {
            "nodeSelector": {"matchLabels": {LABEL: "yes"}},
            "bytecode": {"path": bytecode.join("counter.bpf.o").display().to_string()},
            "programs": programs,
        }
    }))?)
}

fn all_ready(o: &BpfObject, nodes: usize) -> bool {
    ready_is(o, "True")
        && o.status
            .as_ref()
            .and_then(|s| s.nodes.as_ref())
            .is_some_and(|n| n.selected as usize == nodes && n.ready as usize == nodes)
}

/// Per-run measurements of the cluster scenario.
#[derive(Debug, Default)]
struct ClusterFigures {
    ready_p50: Figure,
    ready_p99: Figure,
    ready_max: Figure,
    create_spread: Figure,
    delete_p50: Figure,
    delete_p99: Figure,
    agent_rss: Figure,
    agent_hwm: Figure,
    operator_rss: Figure,
    operator_hwm: Figure,
    restart_ms: Figure,
    restart_reloads: Figure,
    restarted_rss: Figure,
    writes_per_on: Figure,
    writes_total: Figure,
    writes_by: BTreeMap<String, Figure>,
    write_runs: usize,
    delete_writes_by: BTreeMap<String, Figure>,
    state_bytes: Figure,
    heartbeat_bytes: Figure,
    entry_bytes: Figure,
    object_bytes: Figure,
}

impl Cluster<'_> {
    fn log(&self, name: &str) -> Result<std::fs::File> {
        std::fs::create_dir_all(&self.args.logs)?;
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.args.logs.join(format!("{name}.log")))?)
    }

    fn start_agent(&self, name: &str, bpffs: &Path) -> Result<Proc> {
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
            .stderr(self.log(&format!("agent-{name}"))?)
            .spawn()
            .context("starting bpfpin-agent")?;
        Ok(Proc::new("agent", child, PathBuf::new()))
    }

    /// Removes what an interrupted earlier run left: bench objects and bench nodes.
    async fn clean_leftovers(&self) -> Result<()> {
        let objects: Api<BpfObject> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("{LABEL}=yes"));
        let left = objects.list_metadata(&lp).await?;
        for o in &left.items {
            let name = o.name_any();
            let _ = objects.delete(&name, &DeleteParams::default()).await;
            // No operator runs yet to release the finalizer: drop it.
            let _ = objects
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
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

    async fn setup(&mut self) -> Result<()> {
        self.clean_leftovers().await?;
        let setup_started = Timestamp::now();
        let op = Command::new(binary("bpfpin-operator")?)
            .args(["--no-leader-election", "--metrics-addr", "127.0.0.1:0"])
            .args(extra_args("BPFPIN_BENCH_OPERATOR_ARGS"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            // The operator logs to stdout.
            .stdout(self.log("operator")?)
            .stderr(self.log("operator")?)
            .spawn()
            .context("starting bpfpin-operator")?;
        self.operator = Some(Proc::new("operator", op, PathBuf::new()));
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

    async fn teardown(&mut self) {
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

    fn ours(&self) -> BTreeSet<u32> {
        let mut s: BTreeSet<u32> = self.nodes.iter().map(|n| n.agent.pid()).collect();
        if let Some(op) = &self.operator {
            s.insert(op.pid());
        }
        s
    }

    async fn one_run(&mut self, r: usize, f: &mut ClusterFigures) -> Result<()> {
        let n_nodes = self.nodes.len();
        let objects_api: Api<BpfObject> = Api::all(self.client.clone());
        let names: Vec<String> = (0..self.args.objects)
            .map(|i| format!("bench-r{r}-{i:03}"))
            .collect();
        let (mut rx, watch_task) = spawn_watch!(
            objects_api.clone(),
            watcher::Config::default().labels(&format!("{LABEL}=yes")),
        );
        wait_init(&mut rx).await?;

        // --- create all at once, wait until every object is Ready on every node
        let before = scrape_writes(&self.kubeconfig)?;
        let mut created: HashMap<String, Instant> = HashMap::new();
        let first_sent = Instant::now();
        let bodies: Vec<BpfObject> = names
            .iter()
            .map(|n| object_json(n, &self.bytecode))
            .collect::<Result<_>>()?;
        let results: Vec<(String, kube::Result<BpfObject>, Instant)> =
            futures::stream::iter(bodies.into_iter().map(|body| {
                let api = objects_api.clone();
                async move {
                    let name = body.name_any();
                    let res = api.create(&PostParams::default(), &body).await;
                    (name, res, Instant::now())
                }
            }))
            .buffer_unordered(self.args.objects)
            .collect()
            .await;
        let mut last_created = first_sent;
        for (name, res, at) in results {
            res.with_context(|| format!("creating {name}"))?;
            last_created = last_created.max(at);
            created.insert(name, at);
        }
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
        let lat: Vec<f64> = names
            .iter()
            .map(|n| ms(ready[n].saturating_duration_since(created[n])))
            .collect();
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
        let mut deleted: HashMap<String, Instant> = HashMap::new();
        let results: Vec<(String, kube::Result<()>, Instant)> =
            futures::stream::iter(names.iter().cloned().map(|name| {
                let api = objects_api.clone();
                async move {
                    let res = api
                        .delete(&name, &DeleteParams::default())
                        .await
                        .map(|_| ());
                    (name, res, Instant::now())
                }
            }))
            .buffer_unordered(self.args.objects)
            .collect()
            .await;
        for (name, res, at) in results {
            res.with_context(|| format!("deleting {name}"))?;
            deleted.insert(name, at);
        }
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
        let lat: Vec<f64> = names
            .iter()
            .map(|n| ms(done[n].saturating_duration_since(deleted[n])))
            .collect();
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

    async fn restart(&mut self, names: &[String], f: &mut ClusterFigures) -> Result<()> {
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
        let (mut rx, task) = spawn_watch!(
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
    async fn single(&mut self, res: &mut Results) -> Result<()> {
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
        let (mut rx, task) = spawn_watch!(
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

    async fn scenario(&mut self, res: &mut Results) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------

// Beside this file, not in src/bin/ itself, where cargo would take them for binaries.
#[path = "bench/fleet.rs"]
mod fleet;
#[path = "bench/sim.rs"]
mod sim;

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("__fleet-agents") {
        // A simulated-agent process of the fleet bench (sim.rs), started by the bench itself.
        return match sim::SimArgs::parse(&argv[2..]).and_then(sim::main) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench __fleet-agents: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(bench(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench(args: &Args) -> Result<()> {
    let started = Instant::now();
    let work = tempfile::Builder::new().prefix("bpfpin-bench-").tempdir()?;
    let bytecode = work.path().join("bytecode");
    std::fs::create_dir_all(&bytecode)?;
    compile(
        &repo().join("examples/counter/counter.bpf.c"),
        &bytecode.join("counter.bpf.o"),
    )?;
    compile(
        &repo().join("agent/tests/bpf/many.bpf.c"),
        &bytecode.join("many.bpf.o"),
    )?;
    let _ = std::fs::remove_dir_all(&args.logs);
    std::fs::create_dir_all(&args.logs)?;
    if let Some(nodes) = args.fleet {
        let fa = fleet::FleetArgs {
            nodes,
            objects: args.objects,
            procs: args
                .procs
                .unwrap_or(if nodes >= 1000 { 2 } else { 1 })
                .min(nodes),
            load: args.load_ms.map(|v| Duration::from_secs_f64(v / 1000.0)),
            heartbeat: Duration::from_secs_f64(args.heartbeat_s.unwrap_or(if args.smoke {
                2.0
            } else {
                30.0
            })),
            steady: Duration::from_secs_f64(args.steady_s.unwrap_or(if args.smoke {
                5.0
            } else {
                65.0
            })),
        };
        return fleet::bench(args, fa, work.path(), &bytecode).await;
    }
    let mut res = Results::default();

    // Local figures first, while the machine is quiet.
    let local = Local {
        args,
        work: work.path().to_path_buf(),
        bytecode: bytecode.clone(),
        agent: binary("bpfpin-agent")?,
    };
    eprintln!(
        "bench: local mode: load overhead and cold --once ({} runs)",
        args.micro_runs
    );
    let mut local_res = Results::default();
    local.load(&mut local_res)?;
    eprintln!(
        "bench: local mode: GC ({} runs of {} objects)",
        args.runs, args.gc_objects
    );
    local.gc(&mut local_res)?;

    if args.local_only {
        local_res.print(args, started.elapsed());
        return Ok(());
    }
    eprintln!(
        "bench: cluster: {} nodes, {} objects, {} runs",
        args.nodes, args.objects, args.runs
    );
    let kubeconfig = PathBuf::from(
        std::env::var_os("KUBECONFIG")
            .context("KUBECONFIG is not set: run through e2e/scripts/bench")?,
    );
    let client = Client::try_default()
        .await
        .context("connecting to the API server")?;
    let mut cluster = Cluster {
        args,
        client,
        kubeconfig,
        bytecode: bytecode.clone(),
        agent_bin: binary("bpfpin-agent")?,
        operator: None,
        nodes: Vec::new(),
    };
    let outcome = cluster.scenario(&mut res).await;
    cluster.teardown().await;
    outcome?;
    res.rows.extend(local_res.rows);
    res.notes.extend(local_res.notes);
    res.notes.push(format!(
        "logs of the operator and agents: {}",
        args.logs.display()
    ));
    res.print(args, started.elapsed());
    Ok(())
}
