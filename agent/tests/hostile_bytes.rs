//! Hostile bytes and attach targets: every file the agent reads and every attach target it opens,
//! tried with what a careless or hostile user could put there (a FIFO, a device, a directory, a
//! 400 MB file, a symlink swapped under the agent, an ELF with 100,000 programs or a lying symbol
//! table, a fake tracefs, a FIFO as cgroup or uprobe target).
//!
//! Each case runs `bpfpin-agent local --once` on a fresh bpffs with a good object already pinned
//! beside the bad one, and asserts the exact outcome: the bad object's reason and message (naming
//! the object and the path), the exit status, nothing of the bad object pinned, the good object's
//! pins, program id and map contents unchanged, and the agent's peak memory (VmHWM) and time.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use bpfpin_agent::bytecode::path as bytecode_path;
use bpfpin_agent::error::Reason;
use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");

/// Peak memory the agent may reach in a pass with one hostile object. It reads and parses at most
/// 32 MiB of bytecode; without the bounds the 400 MB file took 806 MiB and the 10,000-program ELF
/// more than 4 GiB.
const MAX_PEAK_KIB: i64 = 160 * 1024;

/// A pass that takes longer is taken as hung (a pass here takes a few seconds, most of it the
/// debug build loading programs; a FIFO used to block it forever).
const MAX_PASS: Duration = Duration::from_secs(60);

/// How one agent run ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// The process's peak resident set (`ru_maxrss`, the VmHWM at exit), KiB.
    peak_kib: i64,
    elapsed: Duration,
}

impl Run {
    fn text(&self) -> String {
        format!(
            "exit {:?} after {:?}, peak {} KiB\nstdout:\n{}\nstderr:\n{}",
            self.code, self.elapsed, self.peak_kib, self.stdout, self.stderr
        )
    }
}

/// Forks and execs its arguments, waits, and writes the child's peak RSS (`ru_maxrss`, KiB) to
/// `$PEAK_FILE`. The test cannot measure the agent itself: a child forked from the (large) test
/// process starts with the test's RSS as its high-water mark.
const PEAK: &str = r#"
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, ru = os.wait4(pid, 0)
open(os.environ["PEAK_FILE"], "w").write(str(ru.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)
"#;

/// Runs `argv` to its end (killing it after [`MAX_PASS`], which fails the test) and measures it.
fn run(argv: Vec<std::ffi::OsString>) -> Run {
    use std::os::unix::process::CommandExt;
    let peak_file = tempfile::NamedTempFile::new().expect("tempfile");
    let start = Instant::now();
    let mut child = Command::new("python3")
        .args(["-c", PEAK])
        .args(&argv)
        .env("PEAK_FILE", peak_file.path())
        .env("RUST_LOG", "warn")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (hack/deps installs it) measures the agent");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > MAX_PASS {
            hung = true;
            let group = i32::try_from(child.id()).expect("pid");
            // SAFETY: the process group of our own child.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.code(),
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
        peak_kib: std::fs::read_to_string(peak_file.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(-1),
        elapsed: start.elapsed(),
    };
    assert!(
        !hung,
        "the agent hung: killed after {MAX_PASS:?}\n{}",
        run.text()
    );
    eprintln!(
        "agent pass: exit {:?}, {:?}, peak {} KiB",
        run.code, run.elapsed, run.peak_kib
    );
    run
}

fn manifest(name: &str, spec: &str) -> String {
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().expect("utf8")).expect("cstring");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn write_u64(path: &Path, value: u64) {
    let data = MapData::from_pin(path).expect("open map");
    let mut map = Map::from_map_data(data).expect("map");
    let mut array: Array<_, u64> = Array::try_from(&mut map).expect("array of u64");
    array.set(0, value, 0).expect("write index 0");
}

/// What the good object looks like from outside.
#[derive(Debug, PartialEq, Eq)]
struct Good {
    program_id: u32,
    packets: u64,
    pins: Vec<String>,
    shared: Vec<String>,
}

/// A fresh bpffs and manifests folder with the good object pinned (and a value in its shared map).
struct Scene {
    fs: Bpffs,
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let fs = Bpffs::new();
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["counter", "kinds"] {
            std::fs::copy(bpf_object(name), dir.path().join(format!("{name}.bpf.o")))
                .expect("copy");
        }
        std::fs::write(dir.path().join("good.yaml"), manifest("good", COUNTER)).expect("write");
        let scene = Self { fs, dir };
        let first = scene.once(&[]);
        assert_eq!(first.code, Some(0), "{}", first.text());
        write_u64(&scene.fs.root().join("shared/team/packets"), 4242);
        scene
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn bad(&self, spec: &str) {
        std::fs::write(self.path("bad.yaml"), manifest("bad", spec)).expect("write");
    }

    fn good(&self) -> Good {
        let root = self.fs.root();
        Good {
            program_id: prog_id(&root.join("good/progs/count_getpid")),
            packets: read_u64(&root.join("shared/team/packets")),
            pins: tree(&root.join("good")),
            shared: tree(&root.join("shared")),
        }
    }

    fn command(&self, wrapper: &[&str], extra: &[&str]) -> Vec<std::ffi::OsString> {
        let mut argv: Vec<std::ffi::OsString> = wrapper.iter().map(Into::into).collect();
        argv.extend([AGENT, "local", "--once", "--manifests"].map(Into::into));
        argv.push(self.dir.path().into());
        argv.push("--bpffs".into());
        argv.push(self.fs.path().into());
        argv.extend(extra.iter().map(Into::into));
        argv
    }

    fn once(&self, extra: &[&str]) -> Run {
        run(self.command(&[], extra))
    }

    /// Runs a pass with the bad object beside the good one and checks the outcome: exit status 1,
    /// the one line `bad: FAILED <reason>: <message>` containing `message`, nothing of `bad`
    /// pinned, the good object as it was, and the bounds.
    fn fails_alone(&self, wrapper: &[&str], extra: &[&str], reason: &str, message: &str) -> Run {
        let before = self.good();
        let run = run(self.command(wrapper, extra));
        assert_eq!(run.code, Some(1), "{}", run.text());
        assert!(run.peak_kib > 0, "no peak measured\n{}", run.text());
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with("bad: FAILED"))
            .unwrap_or_else(|| panic!("no failure reported for bad\n{}", run.text()));
        assert!(
            line.starts_with(&format!("bad: FAILED {reason}: ")),
            "reason {reason} expected: {line}"
        );
        assert!(line.contains(message), "{message:?} expected in: {line}");
        assert!(
            run.stdout.contains("good: pinned (unchanged)"),
            "{}",
            run.text()
        );
        let root = self.fs.root();
        assert!(!root.join("bad").exists(), "nothing of bad is visible");
        assert!(
            tree(&root.join("_versions/bad")).is_empty(),
            "nothing aside"
        );
        assert!(tree(&root.join("_staging")).is_empty(), "nothing staged");
        assert_eq!(self.good(), before, "the good object is untouched");
        assert!(
            run.peak_kib < MAX_PEAK_KIB,
            "peak memory {} KiB >= {MAX_PEAK_KIB} KiB",
            run.peak_kib
        );
        run
    }
}

#[test]
fn a_fifo_as_bytecode_fails_that_object_at_once() {
    let s = Scene::new();
    mkfifo(&s.path("bad.bpf.o"));
    s.bad("bytecode: {path: bad.bpf.o}\nprograms: [{name: count_getpid}]");
    let fifo = s.path("bad.bpf.o");
    s.fails_alone(
        &[],
        &[],
        "BytecodeUnavailable",
        &format!("bytecode {}: is a FIFO, not a regular file", fifo.display()),
    );
}

#[test]
fn a_symlink_to_a_fifo_as_bytecode_names_both_paths() {
    let s = Scene::new();
    mkfifo(&s.path("pipe"));
    std::os::unix::fs::symlink("pipe", s.path("bad.bpf.o")).expect("symlink");
    s.bad("bytecode: {path: bad.bpf.o}\nprograms: [{name: count_getpid}]");
    let real = std::fs::canonicalize(s.path("pipe")).expect("canonicalize");
    s.fails_alone(
        &[],
        &[],
        "BytecodeUnavailable",
        &format!(
            "bytecode {}: is a FIFO (resolves to {}), not a regular file",
            s.path("bad.bpf.o").display(),
            real.display()
        ),
    );
}

#[test]
fn a_directory_as_bytecode_fails_that_object() {
    let s = Scene::new();
    std::fs::create_dir(s.path("bad.bpf.o")).expect("mkdir");
    s.bad("bytecode: {path: bad.bpf.o}\nprograms: [{name: count_getpid}]");
    s.fails_alone(
        &[],
        &[],
        "BytecodeUnavailable",
        &format!(
            "bytecode {}: is a directory, not a regular file",
            s.path("bad.bpf.o").display()
        ),
    );
}

#[test]
fn a_device_as_bytecode_is_never_opened_for_reading() {
    let s = Scene::new();
    s.bad("bytecode: {path: /dev/zero}\nprograms: [{name: count_getpid}]");
    s.fails_alone(
        &[],
        &["--bytecode-dir", "/dev"],
        "BytecodeUnavailable",
        "bytecode /dev/zero: is a character device, not a regular file",
    );
}

#[test]
fn a_400_mb_bytecode_file_is_refused_without_being_read() {
    let s = Scene::new();
    let big = std::fs::File::create(s.path("bad.bpf.o")).expect("create");
    big.set_len(400 << 20).expect("a sparse 400 MB file");
    s.bad("bytecode: {path: bad.bpf.o}\nprograms: [{name: count_getpid}]");
    let run = s.fails_alone(
        &[],
        &[],
        "BytecodeUnavailable",
        &format!(
            "bytecode {}: is 419430400 bytes, larger than the 32 MiB limit for bytecode",
            s.path("bad.bpf.o").display()
        ),
    );
    // It was read whole before (806 MiB): now it is not read at all.
    assert!(run.peak_kib < 100 * 1024, "{}", run.text());
}

#[test]
fn a_symlink_swapped_during_reads_never_loads_the_file_outside() {
    let allowed = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let inside_file = allowed.path().join("inside.o");
    let secret = outside.path().join("secret.o");
    std::fs::write(&inside_file, b"inside").expect("write");
    std::fs::write(&secret, b"outside").expect("write");
    let dirs = vec![std::fs::canonicalize(allowed.path()).expect("canonicalize")];
    let link = dirs[0].join("link.o");
    std::os::unix::fs::symlink(&inside_file, &link).expect("symlink");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, link, dir) = (stop.clone(), link.clone(), dirs[0].clone());
        let (inside_file, secret) = (inside_file.clone(), secret.clone());
        std::thread::spawn(move || {
            let tmp = dir.join("tmp.o");
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for target in [&secret, &inside_file] {
                    let _ = std::fs::remove_file(&tmp);
                    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
                    std::fs::rename(&tmp, &link).expect("rename over the link");
                    flips += 1;
                }
            }
            flips
        })
    };
    let (mut read, mut refused) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) || read == 0 || refused == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no race seen");
        match bytecode_path::read_file(Path::new("link.o"), &dirs[0], &dirs) {
            Ok(bytes) => {
                assert_eq!(bytes, b"inside", "read a file outside the allowed folder");
                read += 1;
            }
            Err(e) => {
                assert_eq!(e.reason, Reason::BytecodePathNotAllowed, "{e}");
                assert!(e.message.contains("secret.o"), "{e}");
                refused += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().expect("flipper");
    eprintln!("{read} reads of the inside file, {refused} refusals, {flips} swaps");
}

#[test]
fn a_crafted_elf_with_50000_programs_loads_only_the_one_named() {
    let s = Scene::new();
    std::fs::write(s.path("big.bpf.o"), elf::many_programs(50_000)).expect("write");
    std::fs::write(
        s.path("big.yaml"),
        manifest(
            "big",
            "bytecode: {path: big.bpf.o}\nprograms: [{name: prog_37777}]",
        ),
    )
    .expect("write");
    let before = s.good();
    let run = s.once(&[]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert!(run.stdout.contains("big: pinned at"), "{}", run.text());
    assert_eq!(tree(&s.fs.root().join("big/progs")), ["prog_37777"]);
    assert_eq!(s.good(), before);
    assert!(run.peak_kib < MAX_PEAK_KIB, "{}", run.text());
}

/// An object clang builds from `n` generated XDP functions in one section, with BTF: a func_info
/// and line_info entry for each function (aya-obj copied the whole section's entries for every
/// function: quadratic memory).
fn clang_many(n: usize) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut c = String::from("#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n");
    for i in 0..n {
        c.push_str(&format!(
            "SEC(\"xdp\") int prog_{i}(struct xdp_md *ctx) {{ return XDP_PASS; }}\n"
        ));
    }
    c.push_str("char LICENSE[] SEC(\"license\") = \"GPL\";\n");
    let src = dir.join(format!("many{n}.bpf.c"));
    std::fs::write(&src, c).expect("write");
    let out = dir.join(format!("many{n}.bpf.o"));
    compile(&src, &out);
    out
}

#[test]
fn a_clang_built_elf_with_3000_programs_loads_only_the_one_named() {
    let s = Scene::new();
    std::fs::copy(clang_many(3000), s.path("big.bpf.o")).expect("copy");
    std::fs::write(
        s.path("big.yaml"),
        manifest(
            "big",
            "bytecode: {path: big.bpf.o}\nprograms: [{name: prog_2999}]",
        ),
    )
    .expect("write");
    let before = s.good();
    let run = s.once(&[]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert_eq!(tree(&s.fs.root().join("big/progs")), ["prog_2999"]);
    assert_eq!(s.good(), before);
    assert!(run.peak_kib < MAX_PEAK_KIB, "{}", run.text());
}

#[test]
fn a_missing_program_in_an_elf_with_50000_programs_lists_a_few() {
    let s = Scene::new();
    std::fs::write(s.path("bad.bpf.o"), elf::many_programs(50_000)).expect("write");
    s.bad("bytecode: {path: bad.bpf.o}\nprograms: [{name: nope}]");
    let run = s.fails_alone(
        &[],
        &[],
        "ProgramNotFound",
        "program nope is not in the ELF object (it has: prog_0, prog_1, prog_10, prog_100, prog_1000, prog_10000",
    );
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("bad: FAILED"))
        .expect("line");
    assert!(line.ends_with(" and 49980 more)"), "{line}");
}

#[test]
fn an_elf_with_more_than_65536_symbols_is_refused_before_it_is_parsed() {
    let s = Scene::new();
    std::fs::write(s.path("bad.bpf.o"), elf::many_programs(70_000)).expect("write");
    s.bad("bytecode: {path: bad.bpf.o}\nprograms: [{name: prog_0}]");
    s.fails_alone(
        &[],
        &[],
        "InvalidElf",
        "the bytecode is not a valid eBPF ELF object: the object has 70000 symbols, more than the limit of 65536",
    );
}

#[test]
fn an_elf_whose_symbol_runs_past_its_section_is_invalid() {
    let s = Scene::new();
    std::fs::write(
        s.path("bad.bpf.o"),
        elf::symbol_past_its_section(4, 1 << 40),
    )
    .expect("write");
    s.bad("bytecode: {path: bad.bpf.o}\nprograms: [{name: prog_0}]");
    s.fails_alone(
        &[],
        &[],
        "InvalidElf",
        "the bytecode is not a valid eBPF ELF object: invalid symbol, index `4` name: prog_3",
    );
}

/// `unshare` into a private mount namespace where `/sys/kernel/tracing` is a plain tmpfs whose
/// tracepoint `id` is a FIFO, then the agent.
const FAKE_TRACEFS: [&str; 6] = [
    "unshare",
    "--mount",
    "--propagation=private",
    "--",
    "sh",
    "-c",
];

#[test]
fn a_fifo_as_tracepoint_id_on_a_fake_tracefs_fails_at_once() {
    let s = Scene::new();
    s.bad(
        "bytecode: {path: counter.bpf.o}\nmaps: [{name: counts}]\nprograms:\n- name: count_getpid\n  attach: {tracepoint: {category: syscalls, name: sys_enter_getpid}}",
    );
    let events = "/sys/kernel/tracing/events/syscalls/sys_enter_getpid";
    let script = format!(
        "mount -t tmpfs none /sys/kernel/tracing && mkdir -p {events} && mkfifo {events}/id && exec \"$0\" \"$@\""
    );
    let mut wrapper = FAKE_TRACEFS.to_vec();
    wrapper.push(&script);
    s.fails_alone(
        &wrapper,
        &[],
        "AttachFailed",
        &format!(
            "attaching program count_getpid to tracepoint syscalls/sys_enter_getpid: {events}/id is not on tracefs (filesystem magic 0x1021994); /sys/kernel/tracing is not a tracefs mount"
        ),
    );
}

fn cgroup_spec(cgroup: &Path) -> String {
    format!(
        "bytecode: {{path: kinds.bpf.o}}\nmaps: [{{name: hits}}]\nprograms:\n- name: cgroup_skb_count\n  attach: {{cgroupSkb: {{cgroup: {}, direction: Egress}}}}",
        cgroup.display()
    )
}

#[test]
fn a_fifo_as_cgroup_fails_at_once() {
    let s = Scene::new();
    let fifo = s.path("cgroup");
    mkfifo(&fifo);
    s.bad(&cgroup_spec(&fifo));
    s.fails_alone(
        &[],
        &[],
        "AttachFailed",
        &format!(
            "attaching program cgroup_skb_count to cgroup_skb egress on {0}: cgroup {0} is a FIFO, not a cgroup v2 directory",
            fifo.display()
        ),
    );
}

#[test]
fn a_directory_that_is_not_a_cgroup2_fails() {
    let s = Scene::new();
    let dir = s.path("not-a-cgroup");
    std::fs::create_dir(&dir).expect("mkdir");
    s.bad(&cgroup_spec(&dir));
    s.fails_alone(
        &[],
        &[],
        "AttachFailed",
        &format!(
            "cgroup {} is not on a cgroup v2 filesystem (filesystem magic",
            dir.display()
        ),
    );
}

#[test]
fn a_fifo_as_uprobe_target_fails_at_once() {
    let s = Scene::new();
    let fifo = s.path("target");
    mkfifo(&fifo);
    s.bad(&format!(
        "bytecode: {{path: kinds.bpf.o}}\nmaps: [{{name: hits}}]\nprograms:\n- name: uprobe_count\n  attach: {{uprobe: {{target: {}, symbol: main}}}}",
        fifo.display()
    ));
    s.fails_alone(
        &[],
        &[],
        "AttachFailed",
        &format!(
            "attaching program uprobe_count to uprobe on {0}:main: uprobe target {0} is a FIFO, not a regular file",
            fifo.display()
        ),
    );
}
