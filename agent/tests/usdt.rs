//! The usdt attach kind: programs written with libbpf's <bpf/usdt.bpf.h> (usdt.bpf.c) attached
//! at the USDT probes of a test target (usdt_target.c, usdt_guarded.c, usdt_lib.c, built here
//! with gcc and <sys/sdt.h>). Each program adds what BPF_USDT read to `stats`; the tests compare
//! that with the arguments the target passed, exactly.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bpfpin_agent::Reconciler;
use common::*;

// Slots of `stats` (usdt.bpf.c).
const ARGS_COUNT: u32 = 0;
const ARGS_SUM0: u32 = 1;
const ARGS_SUM1: u32 = 2;
const ARGS_SUM2: u32 = 3;
const ARGS_SUM3: u32 = 4;
const ARGS_ARGC: u32 = 5;
const ARGS_NEGATIVE: u32 = 6;
const DEREF_COUNT: u32 = 8;
const DEREF_SUM0: u32 = 9;
const DEREF_SUM1: u32 = 10;
const GUARDED_COUNT: u32 = 16;
const GUARDED_SUM: u32 = 17;
const LIB_COUNT: u32 = 24;
const LIB_SUM0: u32 = 25;
const LIB_SUM1: u32 = 26;
const AUTO_COUNT: u32 = 32;

/// A private copy of the target and its library, built for one test: a uprobe on a file counts
/// every process that runs it, so tests running at once must not share one.
struct Target {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    lib: PathBuf,
}

impl Target {
    fn build() -> Target {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpf");
        let lib = dir.path().join("libbpfpin_usdt.so");
        let bin = dir.path().join("usdt_target");
        let gcc = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("gcc").args(args).output().expect("gcc");
            assert!(
                out.status.success(),
                "gcc {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        gcc(&[
            "-O2".as_ref(),
            "-shared".as_ref(),
            "-fPIC".as_ref(),
            "-o".as_ref(),
            lib.as_os_str(),
            src.join("usdt_lib.c").as_os_str(),
        ]);
        gcc(&[
            "-O2".as_ref(),
            "-o".as_ref(),
            bin.as_os_str(),
            src.join("usdt_target.c").as_os_str(),
            src.join("usdt_guarded.c").as_os_str(),
            "-L".as_ref(),
            dir.path().as_os_str(),
            "-lbpfpin_usdt".as_ref(),
            "-Wl,-rpath,$ORIGIN".as_ref(),
        ]);
        Target {
            _dir: dir,
            bin,
            lib,
        }
    }

    /// Runs the target with `n`; returns how often its guarded probe fired (its own count).
    fn run(&self, n: u32) -> u32 {
        let out = Command::new(&self.bin)
            .arg(n.to_string())
            .output()
            .expect("run usdt_target");
        assert!(out.status.success(), "usdt_target {n}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .strip_prefix("guarded ")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("usdt_target printed {text:?}"))
    }
}

fn stat(fs: &Bpffs, object: &str, slot: u32) -> i64 {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(fs.root().join(object).join("maps/stats")).expect("stats map");
    let array: Array<_, u64> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
    array.get(&slot, 0).expect("read") as i64
}

fn usdt(target: &Path, provider: &str, name: &str) -> String {
    format!(
        "{{usdt: {{target: {}, provider: {provider}, name: {name}}}}}",
        target.display()
    )
}

fn spec(programs: &[(&str, String)]) -> String {
    let mut s = String::from("bytecode: {path: usdt.bpf.o}\nprograms:\n");
    for (p, attach) in programs {
        s.push_str(&format!("- name: {p}\n  attach: {attach}\n"));
    }
    s
}

fn pin(fs: &Bpffs, object: &str, programs: &[(&str, String)]) -> Vec<PathBuf> {
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(
        &[desired(object, &spec(programs), "usdt")],
        &BTreeSet::new(),
    );
    let obj = &report.objects[0];
    assert!(obj.error.is_none(), "{}: {:?}", obj.name, obj.error);
    obj.pinned.as_ref().expect("pinned").links.clone()
}

#[test]
fn arguments_of_every_form_at_every_site_and_in_a_shared_library() {
    let fs = Bpffs::new();
    let t = Target::build();
    let links = pin(
        &fs,
        "u",
        &[
            ("on_args", usdt(&t.bin, "bpfpin", "args")),
            ("on_deref", usdt(&t.bin, "bpfpin", "deref")),
            ("on_lib", usdt(&t.lib, "bpfpinlib", "call")),
        ],
    );
    let link = |p: &str, l: &str| fs.root().join(format!("u/links/{p}/{l}"));
    assert_eq!(
        links,
        vec![
            link("on_args", "usdt-usdt_target-bpfpin-args-0"),
            link("on_args", "usdt-usdt_target-bpfpin-args-1"),
            link("on_args", "usdt-usdt_target-bpfpin-args-2"),
            link("on_deref", "usdt-usdt_target-bpfpin-deref-0"),
            // bpffs names have no dots: `.` is encoded.
            link("on_lib", "usdt-libbpfpin_usdt%2Eso-bpfpinlib-call-0"),
        ]
    );
    assert_eq!(t.run(5), 0, "no probe set the guarded probe's semaphore");

    // bpfpin:args fires twice per loop turn (i = 1..5) and once after the loop.
    assert_eq!(stat(&fs, "u", ARGS_COUNT), 11);
    // a: i, i + 100, then 1000 (a 32-bit register, and a constant).
    assert_eq!(stat(&fs, "u", ARGS_SUM0), 15 + 515 + 1000);
    // b: -1000 * i, i, 0 (64-bit registers).
    assert_eq!(stat(&fs, "u", ARGS_SUM1), -15_000 + 15);
    // c: (short)(i - 10), the constant -1, 0: sign-extended from 16 bits.
    assert_eq!(stat(&fs, "u", ARGS_SUM2), (15 - 50) - 5);
    assert_eq!(stat(&fs, "u", ARGS_NEGATIVE), 10);
    // d: the constant 42 at every site; and bpf_usdt_arg_cnt() is 4 there.
    assert_eq!(stat(&fs, "u", ARGS_SUM3), 42 * 11);
    assert_eq!(stat(&fs, "u", ARGS_ARGC), 4 * 11);
    // bpfpin:deref: stack slots through %rbp: 3 * i and i << 33.
    assert_eq!(stat(&fs, "u", DEREF_COUNT), 5);
    assert_eq!(stat(&fs, "u", DEREF_SUM0), 45);
    assert_eq!(stat(&fs, "u", DEREF_SUM1), 15 << 33);
    // bpfpinlib:call in the shared library: i and 7 * i.
    assert_eq!(stat(&fs, "u", LIB_COUNT), 5);
    assert_eq!(stat(&fs, "u", LIB_SUM0), 15);
    assert_eq!(stat(&fs, "u", LIB_SUM1), 105);
    // Nothing else ran.
    assert_eq!(stat(&fs, "u", GUARDED_COUNT), 0);

    // Unpinning the object detaches every site.
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[], &BTreeSet::new());
    assert!(report.objects.iter().all(|o| o.error.is_none()));
    assert!(!fs.root().join("u").exists());
}

#[test]
fn a_semaphore_guarded_probe_fires_only_while_attached() {
    let fs = Bpffs::new();
    let t = Target::build();
    assert_eq!(t.run(4), 0, "the semaphore is 0 without a probe");
    let links = pin(
        &fs,
        "g",
        &[("on_guarded", usdt(&t.bin, "bpfpin", "guarded"))],
    );
    assert_eq!(
        links,
        vec![
            fs.root()
                .join("g/links/on_guarded/usdt-usdt_target-bpfpin-guarded-0")
        ]
    );
    // The kernel set the semaphore (the uprobe's reference counter) in the new process.
    assert_eq!(t.run(4), 4);
    assert_eq!(stat(&fs, "g", GUARDED_COUNT), 4);
    assert_eq!(stat(&fs, "g", GUARDED_SUM), 1 + 2 + 3 + 4);
    // Detached: the semaphore is 0 again in new processes, once the kernel has released the
    // uprobe (the last reference to a link goes asynchronously).
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    r.reconcile(&[], &BTreeSet::new());
    assert!(!fs.root().join("g").exists());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while t.run(1) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the semaphore is still set 5 s after the probe's link was unpinned"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Pins one object and returns its error (the spec is expected to fail).
fn pin_err(fs: &Bpffs, programs: &[(&str, String)]) -> bpfpin_agent::error::ObjectError {
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired("x", &spec(programs), "usdt")], &BTreeSet::new());
    assert!(
        !fs.root().join("x").exists(),
        "nothing of a failed object is pinned"
    );
    report.objects[0].error.clone().expect("an error")
}

#[test]
fn a_probe_the_target_does_not_have_fails_naming_it_and_pins_nothing() {
    let fs = Bpffs::new();
    let t = Target::build();
    // The first program attaches fine; the second names a probe the file lacks.
    let err = pin_err(
        &fs,
        &[
            ("on_args", usdt(&t.bin, "bpfpin", "args")),
            ("on_deref", usdt(&t.bin, "bpfpin", "nope")),
        ],
    );
    assert_eq!(err.reason.as_str(), "AttachFailed");
    let msg = err.message.as_str();
    assert!(msg.contains("program on_deref"), "{msg}");
    assert!(
        msg.contains(&format!(
            "{} has no USDT probe bpfpin:nope (its probes: bpfpin:args, bpfpin:deref, bpfpin:guarded)",
            t.bin.display()
        )),
        "{msg}"
    );

    let err = pin_err(&fs, &[("on_lib", usdt(&t.lib, "nosuch", "call"))]);
    assert!(
        err.message.contains("has no USDT probe nosuch:call"),
        "{err}"
    );

    // A file without notes, and a missing file.
    let plain = Path::new(env!("CARGO_TARGET_TMPDIR")).join("usdt_no_notes");
    std::fs::write(&plain, b"\x7fELF not really").expect("write");
    let err = pin_err(&fs, &[("on_args", usdt(&plain, "bpfpin", "args"))]);
    assert!(err.message.contains("program on_args"), "{err}");
    assert!(err.message.contains("not an x86-64 ELF64 file"), "{err}");
    let err = pin_err(
        &fs,
        &[("on_args", usdt(Path::new("/nonexistent/usdt"), "p", "n"))],
    );
    assert!(err.message.contains("/nonexistent/usdt"), "{err}");
    assert_eq!(err.reason.as_str(), "AttachFailed");
}

#[test]
fn usdt_links_survive_the_reconciler_and_count_each_site() {
    let fs = Bpffs::new();
    let t = Target::build();
    {
        pin(&fs, "s", &[("on_args", usdt(&t.bin, "bpfpin", "args"))]);
    }
    // The reconciler that attached the probes is gone; the pinned links still run.
    t.run(3);
    assert_eq!(stat(&fs, "s", ARGS_COUNT), 7);
    // A second pass adopts the pinned version (every site's link is there) and changes nothing.
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let before = tree(&fs.root());
    let report = r.reconcile(
        &[desired(
            "s",
            &spec(&[("on_args", usdt(&t.bin, "bpfpin", "args"))]),
            "usdt",
        )],
        &BTreeSet::new(),
    );
    assert!(
        report.objects[0].error.is_none(),
        "{:?}",
        report.objects[0].error
    );
    assert_eq!(tree(&fs.root()), before);
    t.run(1);
    assert_eq!(stat(&fs, "s", ARGS_COUNT), 7 + 3);
}

#[test]
fn a_usdt_section_naming_the_probe_attaches_with_attach_empty() {
    let fs = Bpffs::new();
    let t = Target::build();
    // usdt.bpf.c with USDT_AUTO_TARGET: SEC("usdt/<this target>:bpfpin:deref").
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("usdt_auto.bpf.c");
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpf/usdt.bpf.c");
    std::fs::write(
        &src,
        format!(
            "#define USDT_AUTO_TARGET \"{}\"\n#include \"{}\"\n",
            t.bin.display(),
            real.display()
        ),
    )
    .expect("write");
    let out = dir.path().join("usdt_auto.bpf.o");
    compile(&src, &out);
    let mut obj = desired("a", &spec(&[("auto_deref", "{}".into())]), "usdt");
    obj.bytecode = Ok(std::fs::read(&out).expect("read"));
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[obj], &BTreeSet::new());
    let o = &report.objects[0];
    assert!(o.error.is_none(), "{:?}", o.error);
    assert_eq!(
        o.pinned.as_ref().expect("pinned").links,
        vec![
            fs.root()
                .join("a/links/auto_deref/usdt-usdt_target-bpfpin-deref-0")
        ]
    );
    t.run(6);
    assert_eq!(stat(&fs, "a", AUTO_COUNT), 6);
    assert_eq!(stat(&fs, "a", DEREF_COUNT), 0, "on_deref is not attached");
}

#[test]
fn a_usdt_probe_scoped_to_one_process() {
    use std::io::Write as _;
    let fs = Bpffs::new();
    let t = Target::build();
    // The target waits for a line before it fires its probes: the probe is attached in between.
    let mut child = Command::new(&t.bin)
        .args(["3", "wait"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn usdt_target");
    let pid = child.id();
    let attach = format!(
        "{{usdt: {{target: {}, provider: bpfpin, name: deref, pid: {pid}}}}}",
        t.bin.display()
    );
    let links = pin(&fs, "p", &[("on_deref", attach)]);
    assert_eq!(
        links,
        vec![fs.root().join(format!(
            "p/links/on_deref/usdt-usdt_target-bpfpin-deref-0-pid{pid}"
        ))]
    );
    // Another process running the same file is not counted.
    t.run(5);
    assert_eq!(stat(&fs, "p", DEREF_COUNT), 0);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    assert!(child.wait().expect("wait").success());
    assert_eq!(stat(&fs, "p", DEREF_COUNT), 3);
    assert_eq!(stat(&fs, "p", DEREF_SUM0), 3 * (1 + 2 + 3));
}
