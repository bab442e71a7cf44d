//! This machine: the binaries, child processes, bpffs mounts, /proc figures, kernel program ids.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use bpfpin_e2e::{Proc, repo};

/// Extra arguments from an environment variable (split on whitespace), e.g.
/// `BPFPIN_BENCH_OPERATOR_ARGS="--debounce 100ms"` to measure a setting.
pub fn extra_args(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        // e2e/scripts/bench sets it: `release` for real figures, `debug` for the smoke run in e2e/run.
        .join(std::env::var("BPFPIN_BENCH_PROFILE").unwrap_or_else(|_| "release".into()))
}

pub fn binary(name: &str) -> Result<PathBuf> {
    let p = target_dir().join(name);
    if !p.exists() {
        bail!(
            "{} is missing: e2e/scripts/bench builds it (cargo build --release -p bpfpin-agent -p bpfpin-operator)",
            p.display()
        );
    }
    Ok(p)
}

pub fn run(cmd: &mut Command) -> Result<String> {
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

pub fn mount_bpffs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(dir))?;
    Ok(())
}

pub fn umount(dir: &Path) {
    let _ = Command::new("umount")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Pins (files) under a directory, not following symlinks.
pub fn count_pins(dir: &Path) -> usize {
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
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
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

/// Kernel id of the program pinned at `path`.
pub fn pinned_prog_id(path: &Path) -> Option<u32> {
    aya::programs::ProgramInfo::from_pin(path)
        .ok()
        .map(|info| info.id())
}

pub fn compile(src: &Path, out: &Path) -> Result<()> {
    bpfpin_e2e::compile_bpf(src, out)
}

/// `<logs>/<name>.log`, opened for appending (the directory made if missing).
pub fn log_file(logs: &Path, name: &str) -> Result<std::fs::File> {
    std::fs::create_dir_all(logs)?;
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))?)
}

/// The operator without leader election (`BPFPIN_BENCH_OPERATOR_ARGS` added), logging to
/// `<logs>/<log>.log`.
pub fn start_operator(kubeconfig: &Path, logs: &Path, log: &str) -> Result<Proc> {
    start_operator_with(kubeconfig, logs, log, &[])
}

/// [`start_operator`] with `extra` flags after those of `BPFPIN_BENCH_OPERATOR_ARGS` (the fleet
/// bench's `--baseline`).
pub fn start_operator_with(
    kubeconfig: &Path,
    logs: &Path,
    log: &str,
    extra: &[String],
) -> Result<Proc> {
    let op = Command::new(binary("bpfpin-operator")?)
        .args(["--no-leader-election", "--metrics-addr", "127.0.0.1:0"])
        .args(extra_args("BPFPIN_BENCH_OPERATOR_ARGS"))
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        // The operator logs to stdout.
        .stdout(log_file(logs, log)?)
        .stderr(log_file(logs, log)?)
        .spawn()
        .context("starting bpfpin-operator")?;
    Ok(Proc::new("operator", op, PathBuf::new()))
}
