//! Every attach kind: the link is pinned, and the program runs through it (its counter rises when
//! the event happens), after the reconciler that attached it is gone.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bpfpin_agent::Reconciler;
use common::*;

const TC: u32 = 0;
const KPROBE: u32 = 1;
const KRETPROBE: u32 = 2;
const UPROBE: u32 = 3;
const URETPROBE: u32 = 4;
const FENTRY: u32 = 5;
const FEXIT: u32 = 6;
const CGROUP_SKB: u32 = 7;

fn hits(fs: &Bpffs, object: &str, kind: u32) -> u64 {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(fs.root().join(object).join("maps/hits")).expect("hits map");
    let array: Array<_, u64> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
    array.get(&kind, 0).expect("read")
}

fn kinds_spec(program: &str, attach: &str) -> String {
    format!("bytecode: {{path: kinds.bpf.o}}\nprograms:\n- name: {program}\n  attach: {attach}\n")
}

/// Pins one object per `(object, program, attach YAML)` and returns each one's link paths.
fn pin(fs: &Bpffs, objects: &[(&str, &str, &str)]) -> Vec<Vec<PathBuf>> {
    let want: Vec<_> = objects
        .iter()
        .map(|(o, p, a)| desired(o, &kinds_spec(p, a), "kinds"))
        .collect();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&want, &BTreeSet::new());
    report
        .objects
        .iter()
        .map(|obj| {
            assert!(obj.error.is_none(), "{}: {:?}", obj.name, obj.error);
            obj.pinned.as_ref().expect("pinned").links.clone()
        })
        .collect()
}

/// Pins one object and returns its error (the kind is expected to fail).
fn pin_err(fs: &Bpffs, program: &str, attach: &str) -> bpfpin_agent::error::ObjectError {
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(
        &[desired("x", &kinds_spec(program, attach), "kinds")],
        &BTreeSet::new(),
    );
    assert!(
        !fs.root().join("x").exists(),
        "nothing of a failed object is pinned"
    );
    report.objects[0].error.clone().expect("an error")
}

/// Whether the kernel offers kprobes (CONFIG_KPROBES: the perf kprobe PMU).
fn kernel_has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
}

/// `BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1` (hack/vm-test sets it in its VM, whose kernel has kprobes
/// and fentry): a kind this kernel lacks fails its test instead of being skipped.
fn require_all_attach_kinds() -> bool {
    std::env::var("BPFPIN_REQUIRE_ALL_ATTACH_KINDS").is_ok_and(|v| v == "1")
}

fn unlink_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("x");
    std::fs::write(&f, b"x").expect("write");
    std::fs::remove_file(&f).expect("unlink");
}

#[test]
fn kprobe_and_kretprobe() {
    let fs = Bpffs::new();
    let attach = "{kprobe: {function: do_unlinkat}}";
    if !kernel_has_kprobes() {
        assert!(
            !require_all_attach_kinds(),
            "BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1 but this kernel has no kprobes (no /sys/bus/event_source/devices/kprobe)"
        );
        // This kernel is built without CONFIG_KPROBES: the agent must say so, clearly.
        let err = pin_err(&fs, "kprobe_count", attach);
        assert_eq!(err.reason.as_str(), "AttachFailed");
        assert!(err.message.contains("no kprobe support"), "{err}");
        eprintln!(
            "SKIPPED kprobe counting: this kernel has no kprobes (CONFIG_KPROBES unset); checked the error instead"
        );
        return;
    }
    let links = pin(
        &fs,
        &[
            ("kp", "kprobe_count", attach),
            ("krp", "kretprobe_count", attach),
        ],
    );
    assert_eq!(
        links[0],
        vec![fs.root().join("kp/links/kprobe_count/kprobe-do_unlinkat")]
    );
    let (k, kr) = (hits(&fs, "kp", KPROBE), hits(&fs, "krp", KRETPROBE));
    for _ in 0..5 {
        unlink_a_file();
    }
    let (k, kr) = (
        hits(&fs, "kp", KPROBE) - k,
        hits(&fs, "krp", KRETPROBE) - kr,
    );
    eprintln!("5 unlinks: the kprobe counted {k}, the kretprobe {kr}");
    assert!(
        k >= 5 && kr >= 5,
        "kprobe {k}, kretprobe {kr}: each should count 5"
    );
}

#[test]
fn a_kprobe_on_a_missing_function_is_a_clear_error() {
    let fs = Bpffs::new();
    let err = pin_err(
        &fs,
        "kprobe_count",
        "{kprobe: {function: bpfpin_no_such_function}}",
    );
    assert_eq!(err.reason.as_str(), "AttachFailed");
    assert!(
        err.message.contains("kprobe on bpfpin_no_such_function"),
        "{err}"
    );
    eprintln!("the agent's error: {}", err.message);
}

#[test]
fn fentry_and_fexit() {
    let fs = Bpffs::new();
    // An fentry program without its function in the spec cannot even be loaded.
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let spec = "bytecode: {path: kinds.bpf.o}\nprograms: [{name: fentry_count}]\n";
    let report = r.reconcile(&[desired("bare", spec, "kinds")], &BTreeSet::new());
    let err = report.objects[0].error.as_ref().expect("error");
    assert!(
        err.message.contains("must name its kernel function"),
        "{err}"
    );
    drop(r);

    let attach_e = "{fentry: {function: do_unlinkat}}";
    let attach_x = "{fexit: {function: do_unlinkat}}";
    let probe = pin_err_or_links(&fs, attach_e, attach_x);
    let Some(links) = probe else {
        eprintln!(
            "SKIPPED fentry/fexit counting: this kernel refuses tracing programs (EPERM at load); checked the error instead"
        );
        return;
    };
    assert_eq!(
        links[0],
        vec![fs.root().join("fe/links/fentry_count/fentry-do_unlinkat")]
    );
    let (e, x) = (hits(&fs, "fe", FENTRY), hits(&fs, "fx", FEXIT));
    for _ in 0..5 {
        unlink_a_file();
    }
    let (e, x) = (hits(&fs, "fe", FENTRY) - e, hits(&fs, "fx", FEXIT) - x);
    eprintln!("5 unlinks: the fentry program counted {e}, the fexit program {x}");
    assert!(
        e >= 5 && x >= 5,
        "fentry {e}, fexit {x}: each should count 5"
    );
}

/// Pins fentry + fexit; where the kernel refuses tracing programs, checks the error says so.
fn pin_err_or_links(fs: &Bpffs, attach_e: &str, attach_x: &str) -> Option<Vec<Vec<PathBuf>>> {
    let want = [
        desired("fe", &kinds_spec("fentry_count", attach_e), "kinds"),
        desired("fx", &kinds_spec("fexit_count", attach_x), "kinds"),
    ];
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&want, &BTreeSet::new());
    if let Some(err) = &report.objects[0].error {
        assert!(
            !require_all_attach_kinds(),
            "BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1 but fentry/fexit failed: {err}"
        );
        assert!(
            err.message.contains("refused the fentry/fexit program"),
            "{err}"
        );
        return None;
    }
    Some(
        report
            .objects
            .iter()
            .map(|o| o.pinned.as_ref().expect("pinned").links.clone())
            .collect(),
    )
}

/// The uprobe target binary, built once per test binary (tests run in parallel, and a running
/// binary cannot be rewritten).
fn uprobe_target() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("uprobe_target");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpf/uprobe_target.c");
            let ok = Command::new("cc")
                .args(["-O2", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .expect("cc")
                .success();
            assert!(ok, "building {}", src.display());
            out
        })
        .clone()
}

/// Held by each test that runs the uprobe target: a probe attached to the file counts every
/// process that runs it, so two such tests at once would count each other's calls.
static UPROBE_TARGET_RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn uprobe_and_uretprobe_on_a_binary_the_test_builds() {
    let _runs = UPROBE_TARGET_RUNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fs = Bpffs::new();
    let target = uprobe_target();
    let attach = format!(
        "{{uprobe: {{target: {}, symbol: bpfpin_probe_me}}}}",
        target.display()
    );
    let links = pin(
        &fs,
        &[
            ("up", "uprobe_count", &attach),
            ("urp", "uretprobe_count", &attach),
        ],
    );
    assert_eq!(
        links[0],
        vec![
            fs.root()
                .join("up/links/uprobe_count/uprobe-uprobe_target-bpfpin_probe_me")
        ]
    );
    assert!(
        Command::new(&target)
            .arg("7")
            .status()
            .expect("run")
            .success()
    );
    assert_eq!(hits(&fs, "up", UPROBE), 7);
    assert_eq!(hits(&fs, "urp", URETPROBE), 7);
}

/// The file offset of `symbol` in the ELF binary `path` (what a uprobe `offset` without `symbol`
/// means), from `nm` and the program headers of `readelf`.
fn file_offset(path: &Path, symbol: &str) -> u64 {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
    let nm = Command::new("nm").arg(path).output().expect("nm");
    let nm = String::from_utf8_lossy(&nm.stdout);
    let addr = nm
        .lines()
        .find_map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == symbol).then(|| hex(f[0]))
        })
        .unwrap_or_else(|| panic!("{symbol} in nm {}", path.display()));
    let phdrs = Command::new("readelf")
        .args(["-lW"])
        .arg(path)
        .output()
        .expect("readelf");
    let phdrs = String::from_utf8_lossy(&phdrs.stdout);
    phdrs
        .lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .find_map(|l| {
            // LOAD Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align
            let f: Vec<_> = l.split_whitespace().collect();
            let (off, vaddr, filesz) = (hex(f[1]), hex(f[2]), hex(f[4]));
            (vaddr <= addr && addr < vaddr + filesz).then(|| addr - vaddr + off)
        })
        .expect("a LOAD segment holding the symbol")
}

#[test]
fn uprobes_by_file_offset_and_scoped_to_one_process() {
    let _runs = UPROBE_TARGET_RUNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fs = Bpffs::new();
    let target = uprobe_target();
    let offset = file_offset(&target, "bpfpin_probe_me");
    // The process to watch: it waits on stdin before calling the probed function.
    let mut watched = Command::new(&target)
        .args(["5", "wait"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("start the target");
    let pid = watched.id();
    let by_offset = format!(
        "{{uprobe: {{target: {}, offset: {offset}}}}}",
        target.display()
    );
    let one_process = format!(
        "{{uprobe: {{target: {}, symbol: bpfpin_probe_me, pid: {pid}}}}}",
        target.display()
    );
    let links = pin(
        &fs,
        &[
            ("off", "uprobe_count", &by_offset),
            ("pid", "uprobe_count", &one_process),
        ],
    );
    assert_eq!(
        links[0],
        vec![fs.root().join(format!(
            "off/links/uprobe_count/uprobe-uprobe_target-{offset}"
        ))]
    );
    assert_eq!(
        links[1],
        vec![fs.root().join(format!(
            "pid/links/uprobe_count/uprobe-uprobe_target-bpfpin_probe_me-pid{pid}"
        ))]
    );

    // Another process: counted by offset, not by the pid-scoped probe.
    assert!(
        Command::new(&target)
            .arg("3")
            .status()
            .expect("run")
            .success()
    );
    assert_eq!(hits(&fs, "off", UPROBE), 3);
    assert_eq!(
        hits(&fs, "pid", UPROBE),
        0,
        "another process is not counted"
    );

    // The watched process calls 5 times: both count it.
    use std::io::Write as _;
    let mut stdin = watched.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("write");
    drop(stdin);
    assert!(watched.wait().expect("wait").success());
    assert_eq!(hits(&fs, "off", UPROBE), 8);
    assert_eq!(hits(&fs, "pid", UPROBE), 5);
}

#[test]
fn tc_through_tcx_counts_ingress_and_egress_packets() {
    let fs = Bpffs::new();
    let veth = Veth::new(2);
    let attach = format!(
        "{{tc: {{interfaces: [{}], direction: Ingress, order: First}}}}",
        veth.host
    );
    let links = pin(&fs, &[("tc", "tc_count", &attach)]).remove(0);
    assert_eq!(
        links,
        vec![
            fs.root()
                .join(format!("tc/links/tc_count/tc-ingress-{}", veth.host))
        ]
    );
    // Egress on the same interface, in a second object: the ping replies leave through it.
    let egress = format!(
        "{{tc: {{interfaces: [{}], direction: Egress, order: Last}}}}",
        veth.host
    );
    let links = pin(
        &fs,
        &[("tc", "tc_count", &attach), ("tce", "tc_count", &egress)],
    )
    .remove(1);
    assert_eq!(
        links,
        vec![
            fs.root()
                .join(format!("tce/links/tc_count/tc-egress-{}", veth.host))
        ]
    );
    veth.ping_host(3);
    assert!(
        hits(&fs, "tc", TC) >= 3,
        "tc ingress counted {}",
        hits(&fs, "tc", TC)
    );
    assert!(
        hits(&fs, "tce", TC) >= 3,
        "tc egress counted {}",
        hits(&fs, "tce", TC)
    );

    let missing = "{tc: {interfaces: [nosuchif1], direction: Egress}}";
    let spec = format!(
        "bytecode: {{path: kinds.bpf.o}}\nprograms:\n- name: tc_count\n  attach: {missing}\n"
    );
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(
        &[desired("tc", &format!("bytecode: {{path: kinds.bpf.o}}\nprograms:\n- name: tc_count\n  attach: {attach}\n"), "kinds"), desired("tc2", &spec, "kinds")],
        &BTreeSet::new(),
    );
    assert!(report.objects[0].error.is_none());
    let err = report.objects[1].error.as_ref().expect("error");
    assert!(err.message.contains("nosuchif1"), "{err}");
}

#[test]
fn cgroup_skb_counts_egress_of_processes_in_the_cgroup() {
    let fs = Bpffs::new();
    let cgroup = cgroup::cgroup2_mount().join("bpfpin-test-skb");
    let _ = std::fs::remove_dir(&cgroup);
    std::fs::create_dir(&cgroup).expect("create cgroup");
    let attach = format!(
        "{{cgroupSkb: {{cgroup: {}, direction: Egress}}}}",
        cgroup.display()
    );
    let links = pin(&fs, &[("cg", "cgroup_skb_count", &attach)]).remove(0);
    assert_eq!(links.len(), 1);
    assert!(
        links[0]
            .file_name()
            .expect("name")
            .to_string_lossy()
            .starts_with("cgroupskb-egress-")
    );
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec ping -q -c 3 -i 0.05 127.0.0.1",
        cgroup.display()
    );
    let ok = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh")
        .status
        .success();
    assert!(ok, "ping inside the cgroup");
    assert!(
        hits(&fs, "cg", CGROUP_SKB) >= 3,
        "cgroup_skb counted {}",
        hits(&fs, "cg", CGROUP_SKB)
    );
    drop(fs);
    let _ = std::fs::remove_dir(&cgroup);
}
