//! `bpfpin-agent local` as a user runs it: the binary, manifests on disk, exit codes, watching,
//! SIGTERM, and SIGKILL at any moment.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");

fn manifests_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["counter", "many", "rejected"] {
        std::fs::copy(bpf_object(name), dir.path().join(format!("{name}.bpf.o"))).expect("copy");
    }
    dir
}

fn manifest(name: &str, spec: &str) -> String {
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

fn once(manifests: &Path, fs: &Bpffs, extra: &[&str]) -> Output {
    Command::new(AGENT)
        .args(["local", "--once", "--manifests"])
        .arg(manifests)
        .arg("--bpffs")
        .arg(fs.path())
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the agent")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn once_pins_every_object_of_a_multi_document_file_and_exits_0() {
    let fs = Bpffs::new();
    let dir = manifests_dir();
    let docs = format!(
        "{}---\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ignored}}\n",
        manifest("counter", COUNTER),
        manifest(
            "many",
            "bytecode: {path: ./many.bpf.o}\nprograms: [{name: prog_0}, {name: prog_23}]"
        )
    );
    std::fs::write(dir.path().join("objects.yaml"), docs).expect("write");
    let out = once(dir.path(), &fs, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("counter: pinned at"), "{stdout}");
    assert!(stdout.contains("many: pinned at"), "{stdout}");
    assert!(fs.root().join("many/progs/prog_23").exists());

    // Again: nothing changes, same ids.
    let id = prog_id(&fs.root().join("counter/progs/count_getpid"));
    let out = once(dir.path(), &fs, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("counter: pinned (unchanged)"));
    assert_eq!(prog_id(&fs.root().join("counter/progs/count_getpid")), id);
}

#[test]
fn once_exits_non_zero_naming_each_failed_object_and_its_reason() {
    let fs = Bpffs::new();
    let dir = manifests_dir();
    std::fs::write(dir.path().join("good.yaml"), manifest("good", COUNTER)).expect("write");
    std::fs::write(
        dir.path().join("bad.yaml"),
        manifest(
            "bad",
            "bytecode: {path: rejected.bpf.o}\nprograms: [{name: unchecked}]",
        ),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("broken.yaml"),
        "kind: BpfObject\nmetadata: {name: broken}\nspec: {programs: 3}\n",
    )
    .expect("write");
    let out = once(dir.path(), &fs, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad: FAILED VerifierRejected: the verifier rejected program unchecked"),
        "{stderr}"
    );
    assert!(
        stderr.contains("broken: FAILED InvalidManifest"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("good: pinned at"));
    assert!(fs.root().join("good/progs/count_getpid").exists());
    assert!(!fs.root().join("bad").exists());
}

#[test]
fn bytecode_must_resolve_inside_the_allowed_folders() {
    let fs = Bpffs::new();
    let dir = manifests_dir();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let outside: PathBuf = elsewhere.path().join("counter.bpf.o");
    std::fs::copy(bpf_object("counter"), &outside).expect("copy");
    // A symlink inside the manifests folder that points outside does not get around the check.
    std::os::unix::fs::symlink(&outside, dir.path().join("sneaky.bpf.o")).expect("symlink");
    std::fs::write(
        dir.path().join("a.yaml"),
        manifest(
            "abs",
            &COUNTER.replace("counter.bpf.o", &outside.display().to_string()),
        ),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b.yaml"),
        manifest("sneaky", &COUNTER.replace("counter.bpf.o", "sneaky.bpf.o")),
    )
    .expect("write");
    // `..` out of the manifests folder into the other one (siblings in the temp dir).
    let sibling = format!(
        "../{}/counter.bpf.o",
        elsewhere
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
    );
    std::fs::write(
        dir.path().join("c.yaml"),
        manifest("dotdot", &COUNTER.replace("counter.bpf.o", &sibling)),
    )
    .expect("write");

    let out = once(dir.path(), &fs, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("abs: FAILED BytecodePathNotAllowed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sneaky: FAILED BytecodePathNotAllowed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("dotdot: FAILED BytecodePathNotAllowed"),
        "{stderr}"
    );

    // Allowing the folder makes all three work.
    let allow = elsewhere.path().display().to_string();
    let out = once(dir.path(), &fs, &["--bytecode-dir", &allow]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(fs.root().join("abs/progs/count_getpid").exists());
    assert!(fs.root().join("sneaky/progs/count_getpid").exists());
    assert!(fs.root().join("dotdot/progs/count_getpid").exists());
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn watching_follows_edits_and_sigterm_leaves_pins_in_place() {
    let fs = Bpffs::new();
    let dir = manifests_dir();
    let mut child = Command::new(AGENT)
        .args(["local", "--manifests"])
        .arg(dir.path())
        .arg("--bpffs")
        .arg(fs.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn agent");
    let root = fs.root();
    std::fs::write(
        dir.path().join("counter.yaml"),
        manifest("counter", COUNTER),
    )
    .expect("write");
    wait_for("counter to be pinned", || {
        root.join("counter/progs/tail_target").exists()
    });

    std::fs::write(
        dir.path().join("counter.yaml"),
        manifest("counter", &COUNTER.replace("- name: tail_target\n", "")),
    )
    .expect("write");
    wait_for("tail_target to be unpinned", || {
        !root.join("counter/progs/tail_target").exists()
    });
    assert!(root.join("counter/progs/count_getpid").exists());

    // SIGTERM: a clean exit, and the pins stay.
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status:?}");
    assert!(root.join("counter/progs/count_getpid").exists());
    let before = read_u64(&root.join("counter/maps/counts"));
    getpid_n(5);
    assert!(
        read_u64(&root.join("counter/maps/counts")) >= before + 5,
        "still attached after the agent exited"
    );
}

#[test]
fn watching_retries_an_attach_point_that_appears_later() {
    let fs = Bpffs::new();
    let dir = manifests_dir();
    std::fs::copy(bpf_object("kinds"), dir.path().join("kinds.bpf.o")).expect("copy");
    // The cgroup of a workload that has not started yet.
    let cgroup = cgroup::cgroup2_mount().join("bpfpin-local-late");
    let _ = std::fs::remove_dir(&cgroup);
    let spec = format!(
        "bytecode: {{path: kinds.bpf.o}}\nprograms:\n- name: cgroup_skb_count\n  attach: {{cgroupSkb: {{cgroup: {}, direction: Egress}}}}\n",
        cgroup.display()
    );
    std::fs::write(dir.path().join("late.yaml"), manifest("late", &spec)).expect("write");
    let child = Command::new(AGENT)
        .args(["local", "--manifests"])
        .arg(dir.path())
        .arg("--bpffs")
        .arg(fs.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let root = fs.root();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !root.join("late").exists(),
        "nothing pinned without the cgroup"
    );

    // The cgroup appears; nothing in the manifests folder changes: the retry attaches it.
    std::fs::create_dir(&cgroup).expect("create cgroup");
    let appeared = Instant::now();
    wait_for("late to be pinned by a retry", || {
        root.join("late/progs/cgroup_skb_count").exists()
    });
    eprintln!(
        "cgroup created -> pinned by the retry in {} ms",
        appeared.elapsed().as_millis()
    );
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("AttachFailed"), "the first pass failed: {log}");
    assert!(log.contains("retrying"), "{log}");
    // The link pins the cgroup: unpin before removing it.
    std::fs::remove_file(dir.path().join("late.yaml")).expect("rm");
    let _ = once(dir.path(), &fs, &[]);
    let _ = std::fs::remove_dir(&cgroup);
}

#[test]
fn sigkill_at_any_moment_leaves_no_half_object_and_the_next_run_converges() {
    let fs = Bpffs::new();
    let dir = manifests_dir();
    let programs: Vec<String> = (0..24).map(|i| format!("{{name: prog_{i}}}")).collect();
    let many = format!(
        "bytecode: {{path: many.bpf.o}}\nprograms: [{}]",
        programs.join(", ")
    );
    // Eight 24-program objects and the counter: a pass long enough to be cut at many points.
    const MANY: usize = 8;
    let write_many = |spec: &str| {
        for i in 0..MANY {
            std::fs::write(
                dir.path().join(format!("many-{i}.yaml")),
                manifest(&format!("many-{i}"), spec),
            )
            .expect("write");
        }
    };
    write_many(&many);
    std::fs::write(
        dir.path().join("counter.yaml"),
        manifest("counter", COUNTER),
    )
    .expect("write");
    let root = fs.root();

    // How long an uninterrupted cold pass takes here, so the kills land inside passes however
    // fast the machine is: the shorter of two, since one slowed down by the other tests of this
    // binary running beside it would put the kills after the end of most passes.
    let pass = (0..2)
        .map(|_| {
            let scratch = Bpffs::new();
            let started = std::time::Instant::now();
            let out = once(dir.path(), &scratch, &[]);
            let pass = started.elapsed();
            assert!(out.status.success(), "{}", text(&out));
            pass
        })
        .min()
        .expect("two passes");

    // Kill the agent at spread-out moments of a cold apply, then of an update.
    let mut interrupted = 0;
    for round in 0..16u32 {
        if round == 8 {
            // Second half: updates (a new version is built aside while the old one is live).
            write_many(&many.replace("many.bpf.o}", "many.bpf.o}\nmaps: [{name: hits}]"));
        }
        let mut child = Command::new(AGENT)
            .args(["local", "--once", "--manifests"])
            .arg(dir.path())
            .arg("--bpffs")
            .arg(fs.path())
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(pass * (round % 8 + 1) / 10);
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        if status.code().is_none() {
            interrupted += 1;
        }
        // Invariant: an object is either absent or complete.
        let objects = (0..MANY)
            .map(|i| (format!("many-{i}"), 24))
            .chain([("counter".to_string(), 2)]);
        for (object, n) in objects {
            let link = root.join(&object);
            if std::fs::symlink_metadata(&link).is_ok() {
                let progs = tree(&link.join("progs/"));
                assert_eq!(
                    progs.len(),
                    n,
                    "round {round}: {object} is visible but has {progs:?}"
                );
            }
        }
        if round == 7 {
            // Converge before the update rounds.
            let out = once(dir.path(), &fs, &[]);
            assert!(out.status.success(), "{}", text(&out));
        }
    }
    assert!(
        interrupted >= 4,
        "only {interrupted} of 16 runs were interrupted (a pass takes {pass:?}); the test is not exercising crashes"
    );
    eprintln!("{interrupted} of 16 runs killed mid-pass (a pass takes {pass:?})");

    let out = once(dir.path(), &fs, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tree(&root.join("many-0/progs/")).len(), 24);
    // Exactly one version per object, nothing staged: leftovers were swept.
    for object in (0..MANY)
        .map(|i| format!("many-{i}"))
        .chain(["counter".into()])
    {
        let versions = std::fs::read_dir(root.join("_versions").join(&object))
            .expect("versions")
            .count();
        assert_eq!(
            versions, 1,
            "{object} has {versions} versions after convergence"
        );
    }
    assert!(tree(&root.join("_staging")).is_empty());
}

/// `local --once` with `RUST_LOG` set to `rust_log` (unset when `None`), colours off.
fn once_logging(manifests: &Path, fs: &Bpffs, rust_log: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(AGENT);
    cmd.args(["local", "--once", "--manifests"])
        .arg(manifests)
        .arg("--bpffs")
        .arg(fs.path())
        .args(extra)
        .env("NO_COLOR", "1");
    match rust_log {
        Some(filter) => cmd.env("RUST_LOG", filter),
        None => cmd.env_remove("RUST_LOG"),
    };
    cmd.output().expect("run the agent")
}

/// The text-format log lines of `stderr` at `level` (`INFO`, `DEBUG`, ...): the level is a
/// line's second word, after the timestamp.
fn lines_at<'a>(stderr: &'a str, level: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(level))
        .collect()
}

/// Pinned files under `dir` (directories entered, symlinks not counted).
fn pins_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => pins_under(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

#[test]
fn once_logs_at_info_without_rust_log_and_as_rust_log_says_with_it() {
    let fs = Bpffs::new();
    let dir = manifests_dir();
    let yaml = dir.path().join("many.yaml");
    let spec = "bytecode: {path: ./many.bpf.o}\nprograms: [{name: prog_0}, {name: prog_1}]";
    std::fs::write(&yaml, manifest("many", spec)).expect("write");

    // No RUST_LOG: info and above, no debug.
    let out = once_logging(dir.path(), &fs, None, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        lines_at(&stderr, "INFO")
            .iter()
            .any(|l| l.contains("object pinned") && l.contains("object=many")),
        "{}",
        text(&out)
    );
    assert_eq!(
        lines_at(&stderr, "DEBUG"),
        Vec::<&str>::new(),
        "{}",
        text(&out)
    );
    assert!(fs.root().join("many/progs/prog_1").exists());
    // Two programs and the object's one map.
    let pins = pins_under(&fs.root());
    assert_eq!(pins, 3, "{:?}", tree(&fs.root()));

    // RUST_LOG=warn: nothing below warn (the pass has nothing to warn about).
    let out = once_logging(dir.path(), &fs, Some("warn"), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("many: pinned (unchanged)"));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{}", text(&out));

    // An empty RUST_LOG is no RUST_LOG: info, no debug.
    let out = once_logging(dir.path(), &fs, Some(""), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        lines_at(&stderr, "DEBUG"),
        Vec::<&str>::new(),
        "{}",
        text(&out)
    );

    // RUST_LOG=debug: the unpin of every pinned file is a debug line of its own.
    std::fs::remove_file(&yaml).expect("remove");
    let out = once_logging(dir.path(), &fs, Some("debug"), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unpinned: Vec<&str> = lines_at(&stderr, "DEBUG")
        .into_iter()
        .filter(|l| l.contains(": unpinned path="))
        .collect();
    assert_eq!(unpinned.len(), pins, "{}", text(&out));
    assert!(
        lines_at(&stderr, "INFO")
            .iter()
            .any(|l| l.contains("object unpinned") && l.contains("object=many")),
        "{}",
        text(&out)
    );
    assert_eq!(pins_under(&fs.root()), 0, "{:?}", tree(&fs.root()));

    // JSON without RUST_LOG: one object per line, info level, the same events.
    std::fs::write(&yaml, manifest("many", spec)).expect("write");
    let out = once_logging(dir.path(), &fs, None, &["--log-format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events.iter().all(|e| e["level"] == "INFO"),
        "{}",
        text(&out)
    );
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "object pinned" && e["fields"]["object"] == "many"),
        "{}",
        text(&out)
    );
}

#[test]
fn once_with_nothing_to_do_exits_0_and_prints_nothing() {
    let fs = Bpffs::new();
    let empty = tempfile::tempdir().expect("tempdir");
    for rust_log in [None, Some("warn")] {
        let out = once_logging(empty.path(), &fs, rust_log, &[]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{}", text(&out));
        assert!(fs.root().join("_versions").is_dir());
        assert_eq!(pins_under(&fs.root()), 0);
    }
}

/// How the binary is linked decides a one-shot run's start-up (agent/build.rs): a
/// position-independent executable with packed relative relocations (the default, which keeps
/// ASLR), or with `BPFPIN_AGENT_NO_PIE=1` a fixed-address one; either way the dynamic loader has no table of relative relocations to
/// apply (before: 29,533 entries in the release binary, 151,891 in the debug one).
#[test]
fn the_agent_binary_leaves_the_dynamic_loader_no_relocation_table() {
    let out = Command::new("readelf")
        .args(["--file-header", "--dynamic", AGENT])
        .output()
        .expect("readelf (binutils, hack/deps installs it)");
    assert!(out.status.success(), "{}", text(&out));
    let elf = String::from_utf8_lossy(&out.stdout);
    let exec = elf
        .lines()
        .any(|l| l.trim_start().starts_with("Type:") && l.contains("EXEC"));
    assert!(
        exec || elf.contains("(RELR)"),
        "neither non-PIE nor DT_RELR:\n{elf}"
    );
    // The default build is the randomized one.
    if std::env::var_os("BPFPIN_AGENT_NO_PIE").is_none() {
        assert!(!exec, "the agent is not a PIE by default:\n{elf}");
    }
    // What is left: relocations against symbols (the C library's), a few hundred at most.
    let rela_bytes: u64 = elf
        .lines()
        .find(|l| l.contains("(RELASZ)"))
        .and_then(|l| l.split_whitespace().nth(2))
        .map_or(0, |n| n.parse().expect("RELASZ is a number"));
    assert!(rela_bytes < 24 * 1000, "RELASZ {rela_bytes} bytes:\n{elf}");
}
