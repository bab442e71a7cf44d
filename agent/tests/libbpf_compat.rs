//! libbpf compatibility: programs written in libbpf's conventions (section names, CO-RE reads,
//! BTF-defined maps, globals) and the BPF objects Debian ships load through the agent wherever
//! `bpftool prog loadall` loads them on this kernel, and fail with a reason that names the program
//! where it does not.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bpfpin_agent::{DesiredObject, Reconciler};
use common::*;

/// Compiles `agent/tests/bpf/compat/<name>.bpf.c` once per test binary.
fn compat_object(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/bpf/compat/{name}.bpf.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf-compat");
    let out = dir.join(format!("compat-{name}.bpf.o"));
    let mut built = BUILT.get_or_init(Default::default).lock().expect("lock");
    if !built.contains(name) {
        std::fs::create_dir_all(&dir).expect("mkdir");
        compile(&src, &out);
        built.insert(name.to_owned());
    }
    out
}

fn desired_from(name: &str, spec_yaml: &str, object: &Path) -> DesiredObject {
    DesiredObject {
        name: name.to_owned(),
        uid: None,
        generation: 1,
        spec: spec(spec_yaml),
        bytecode: Ok(std::fs::read(object).expect("read object")),
    }
}

/// One `struct seen` of syscall_args.bpf.c.
#[derive(Debug)]
struct Seen {
    path: String,
    flags: u64,
    mode: u64,
    hits: u64,
}

fn read_seen(map: &Path, slot: u32) -> Seen {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(map).unwrap_or_else(|e| panic!("{}: {e}", map.display()));
    let array: Array<_, [u8; 88]> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array of struct seen");
    let v = array.get(&slot, 0).expect("read slot");
    let u64_at = |o: usize| u64::from_ne_bytes(v[o..o + 8].try_into().expect("8 bytes"));
    let end = v[..64].iter().position(|&b| b == 0).unwrap_or(64);
    Seen {
        path: String::from_utf8_lossy(&v[..end]).into_owned(),
        flags: u64_at(64),
        mode: u64_at(72),
        hits: u64_at(80),
    }
}

/// aya-rs/aya#1662: `ctx->args[1]` of `struct syscall_trace_enter` (a flexible array member) is
/// relocated, whether read directly with `preserve_access_index` (access string 0:2:1), through
/// `BPF_CORE_READ`, or through a local definition whose layout differs from the kernel's (0:0:1:
/// args at offset 0 locally, 16 in the kernel). Each program records the openat(2) the test makes,
/// and the recorded path, flags and mode are the ones passed, so each read the right argument.
#[test]
fn core_reads_syscall_tracepoint_args() {
    const MAGIC_MODE: u64 = 0o1537;
    let fs = Bpffs::new();
    let object = compat_object("syscall_args");
    let yaml = "bytecode: {path: syscall_args.bpf.o}\nprograms:\n\
        - name: openat_direct\n  attach: {tracepoint: {category: syscalls, name: sys_enter_openat}}\n\
        - name: openat_core_read\n  attach: {tracepoint: {category: syscalls, name: sys_enter_openat}}\n\
        - name: openat_minimal\n  attach: {tracepoint: {category: syscalls, name: sys_enter_openat}}\n";
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(
        &[desired_from("core-args", yaml, &object)],
        &BTreeSet::new(),
    );
    let obj = &report.objects[0];
    assert!(obj.error.is_none(), "core-args: {:?}", obj.error);
    assert_eq!(obj.pinned.as_ref().expect("pinned").links.len(), 3);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("core-{}", std::process::id()));
    let c_path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).expect("path");
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC;
    // SAFETY: a valid NUL-terminated path; the returned descriptor is closed below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            flags,
            MAGIC_MODE as libc::c_uint,
        )
    };
    assert!(fd >= 0, "openat {}", file.display());
    // SAFETY: fd is ours.
    unsafe { libc::close(fd as libc::c_int) };

    let map = fs.root().join("core-args/maps/seen");
    for (slot, program) in ["openat_direct", "openat_core_read", "openat_minimal"]
        .iter()
        .enumerate()
    {
        let seen = read_seen(&map, slot as u32);
        assert!(seen.hits >= 1, "{program} did not see the openat: {seen:?}");
        assert_eq!(seen.path, file.display().to_string(), "{program}: args[1]");
        assert_eq!(seen.flags, flags as u64, "{program}: args[2]");
        assert_eq!(seen.mode, MAGIC_MODE, "{program}: args[3]");
    }
}

/// What `bpftool prog loadall` (the reference: libbpf on this kernel) did with an object.
#[derive(Debug)]
enum Bpftool {
    Loaded,
    /// The section name is newer than the libbpf bpftool is built with (Debian 12: libbpf 1.1,
    /// which knows no `tcx/*`, `netkit/*`, `tc/ingress`, ...): it says nothing about the kernel.
    UnknownSection,
    Refused(String),
}

/// Runs `bpftool prog loadall` in a mount namespace of its own whose `/sys/fs/bpf` is a fresh
/// bpffs: libbpf pins `LIBBPF_PIN_BY_NAME` maps there, and nothing outlives the command.
fn bpftool_loadall(object: &Path) -> Bpftool {
    require_root();
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -t bpf bpf /sys/fs/bpf && exec bpftool prog loadall "$0" /sys/fs/bpf/progs"#)
        .arg(object)
        .output()
        .expect("bpftool (hack/deps installs it) is the reference loader");
    if out.status.success() {
        return Bpftool::Loaded;
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("failed to guess program type")
        || stderr.contains("missing BPF prog type")
        || stderr.contains("unrecognized ELF section name")
    {
        return Bpftool::UnknownSection;
    }
    // libbpf's own line about the refusal (`libbpf: prog 'x': failed to load: -1`), else the last.
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let why = lines
        .iter()
        .rev()
        .find(|l| l.contains("libbpf: prog") && l.contains("failed"))
        .or_else(|| lines.iter().rev().find(|l| l.contains("failed")))
        .or(lines.last())
        .copied()
        .unwrap_or_default();
    Bpftool::Refused(why.trim().to_owned())
}

/// One row of the outcome table.
struct Row {
    object: String,
    bpftool: Bpftool,
    /// `None`: every listed program pinned.
    bpfpin: Option<bpfpin_agent::error::ObjectError>,
}

/// Pins every program of `object` (or those given) through the agent's reconcile, each without
/// an attachment unless `attach` gives one, into a private bpffs; returns the error, if any, after
/// checking that a failed object left nothing pinned and a pinned one pinned every program.
fn bpfpin_pin_all(
    name: &str,
    object: &Path,
    attach: &dyn Fn(&str) -> Option<String>,
) -> Option<bpfpin_agent::error::ObjectError> {
    let bytes = std::fs::read(object).expect("read object");
    let parsed = aya_obj::Object::parse(&bytes).expect("aya-obj parses the object");
    let mut programs: Vec<_> = parsed.programs.iter().collect();
    programs.sort_by(|a, b| a.0.cmp(b.0));
    assert!(!programs.is_empty(), "{name}: no programs");
    let mut yaml = format!("bytecode: {{path: {name}.o}}\nprograms:\n");
    for (prog, _) in &programs {
        yaml.push_str(&format!("- name: {prog}\n"));
        if let Some(a) = attach(prog) {
            yaml.push_str(&format!("  attach: {a}\n"));
        }
    }
    let fs = Bpffs::new();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired_from(name, &yaml, object)], &BTreeSet::new());
    let obj = &report.objects[0];
    match &obj.error {
        Some(_) => assert!(
            !fs.root().join(name).exists(),
            "{name}: a failed object pins nothing"
        ),
        None => {
            for (prog, _) in &programs {
                let pin = fs.root().join(name).join("progs").join(prog);
                assert!(pin.exists(), "{name}: {} is not pinned", pin.display());
            }
        }
    }
    obj.error.clone()
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}\n| object | bpftool prog loadall | bpfpin |\n|---|---|---|");
    for r in rows {
        let bpftool = match &r.bpftool {
            Bpftool::Loaded => "loads".to_owned(),
            Bpftool::UnknownSection => "section unknown to its libbpf 1.1".to_owned(),
            Bpftool::Refused(why) => format!("refused: {why}"),
        };
        let bpfpin = match &r.bpfpin {
            None => "pins every program".to_owned(),
            Some(e) => format!(
                "{:?}: {}",
                e.reason,
                e.message.lines().next().unwrap_or_default()
            ),
        };
        println!("| {} | {bpftool} | {bpfpin} |", r.object);
    }
}

/// Sections whose programs bpftool loads on this kernel but bpfpin knowingly cannot yet (aya 0.14
/// has no program type for them, or the agent cannot load the type without an attach target): each
/// must fail with `Unsupported` and a message naming the program. A section that starts to pin
/// fails the test, so this list stays true (and the README's table with it).
const KNOWN_GAPS: &[&str] = &[
    "raw_tp.w/sys_enter",
    "raw_tracepoint.w/sys_enter",
    "kprobe.multi/do_unlinkat",
    "kretprobe.multi/do_unlinkat",
    "tp.s/syscalls/sys_enter_openat",
    "uprobe.multi",
    "raw_tp.s/sys_enter",
    "fentry.multi/do_unlinkat",
];

/// The sections of libbpf's table swept one per object (so that bpftool, which loads all or
/// nothing, is compared program by program), with the attach target each names on this kernel.
const SECTIONS: &[&str] = &[
    "socket",
    "sk_reuseport",
    "sk_reuseport/migrate",
    "kprobe/do_unlinkat",
    "kretprobe/do_unlinkat",
    "uprobe",
    "uretprobe",
    "uprobe.s",
    "ksyscall/openat",
    "kretsyscall/openat",
    "usdt",
    "kprobe.multi/do_unlinkat",
    "kretprobe.multi/do_unlinkat",
    "uprobe.multi",
    "tc",
    "classifier",
    "tc/ingress",
    "tc/egress",
    "tcx/ingress",
    "tcx/egress",
    "netkit/primary",
    "netkit/peer",
    "action",
    "tracepoint/syscalls/sys_enter_openat",
    "tp/syscalls/sys_enter_openat",
    "tp.s/syscalls/sys_enter_openat",
    "raw_tp/sys_enter",
    "raw_tracepoint/sys_enter",
    "raw_tp.w/sys_enter",
    "raw_tracepoint.w/sys_enter",
    "raw_tp.s/sys_enter",
    "tp_btf/sched_switch",
    "tp_btf.s/sched_switch",
    // Without the attach target libbpf reads from the section: refused by both.
    "tp_btf",
    "iter",
    "fentry/do_unlinkat",
    "fexit/do_unlinkat",
    "fentry.s/do_unlinkat",
    "fmod_ret/do_unlinkat",
    "fentry.multi/do_unlinkat",
    "freplace/handler",
    "lsm/file_open",
    "lsm.s/file_open",
    "lsm_cgroup/socket_bind",
    "iter/task",
    "iter.s/task",
    "syscall",
    "xdp",
    "xdp.frags",
    "xdp/devmap",
    "xdp/cpumap",
    "xdp.frags/devmap",
    "xdp.frags/cpumap",
    "perf_event",
    "lwt_in",
    "lwt_xmit",
    "sockops",
    "sk_skb/stream_parser",
    "sk_skb/stream_verdict",
    "sk_skb/verdict",
    "sk_msg",
    "lirc_mode2",
    "flow_dissector",
    "cgroup_skb/ingress",
    "cgroup_skb/egress",
    "cgroup/skb",
    "cgroup/sock_create",
    "cgroup/sock_release",
    "cgroup/sock",
    "cgroup/post_bind4",
    "cgroup/post_bind6",
    "cgroup/bind4",
    "cgroup/bind6",
    "cgroup/connect4",
    "cgroup/connect6",
    "cgroup/connect_unix",
    "cgroup/sendmsg4",
    "cgroup/sendmsg6",
    "cgroup/recvmsg4",
    "cgroup/recvmsg6",
    "cgroup/getpeername4",
    "cgroup/getpeername6",
    "cgroup/getsockname4",
    "cgroup/getsockname6",
    "cgroup/sysctl",
    "cgroup/getsockopt",
    "cgroup/setsockopt",
    "cgroup/dev",
    "sk_lookup",
    "netfilter",
    "struct_ops/test_1",
    "struct_ops.s/test_1",
    "nonsense",
];

/// The one program of each swept object (`SEC` and `RET` are substituted): the smallest body
/// each program type's verifier accepts. Written here, not as a file per section, because only the section
/// name differs.
const ONE_PROGRAM: &str = r#"// SPDX-License-Identifier: GPL-2.0
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("@SEC@")
int prog(void *ctx)
{
	return @RET@;
}

char LICENSE[] SEC("license") = "GPL";
"#;

/// The fentry/fexit attach a manifest must give (the agent loads those programs against it).
fn tracing_attach(section: &str) -> Option<String> {
    let (kind, function) = section.split_once('/')?;
    match kind {
        "fentry" | "fentry.s" => Some(format!("{{fentry: {{function: {function}}}}}")),
        "fexit" | "fexit.s" => Some(format!("{{fexit: {{function: {function}}}}}")),
        _ => None,
    }
}

/// Every section name of libbpf's table, one program per object: bpfpin pins it wherever
/// `bpftool prog loadall` loads it on this kernel (except the `KNOWN_GAPS`, refused as
/// `Unsupported` with the program and section named), and fails with a reason naming the program
/// wherever bpftool refuses it.
#[test]
fn every_libbpf_section_name() {
    require_root();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf-compat-sections");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (i, section) in SECTIONS.iter().enumerate() {
        let src = dir.join(format!("section-{i}.bpf.c"));
        // recvmsg/getpeername/getsockname hooks must return 1; everything else accepts 0.
        let ret = ["recvmsg", "getpeername", "getsockname"]
            .iter()
            .any(|h| section.contains(h));
        let source = ONE_PROGRAM
            .replace("@SEC@", section)
            .replace("@RET@", if ret { "1" } else { "0" });
        std::fs::write(&src, source).expect("write source");
        let object = dir.join(format!("section-{i}.bpf.o"));
        compile(&src, &object);
        let bpftool = bpftool_loadall(&object);
        let name = format!("sec-{i}");
        let bpfpin = bpfpin_pin_all(&name, &object, &|_| tracing_attach(section));
        let gap = KNOWN_GAPS.contains(section);
        match (&bpftool, &bpfpin) {
            (Bpftool::Loaded, None) if !gap => {}
            (Bpftool::Loaded, None) => {
                failures.push(format!("{section}: pins now: take it off KNOWN_GAPS"));
            }
            (Bpftool::Loaded, Some(e)) if gap => {
                if e.reason != bpfpin_agent::error::Reason::Unsupported
                    || !e.message.contains("prog")
                    || (e.message.contains("section") && !e.message.contains(section))
                {
                    failures.push(format!("{section}: a known gap, but {e:?}"));
                }
            }
            (Bpftool::Loaded, Some(e)) => {
                failures.push(format!("{section}: bpftool loads it, bpfpin: {e:?}"));
            }
            (Bpftool::UnknownSection, _) => {}
            (Bpftool::Refused(_), None) => {
                failures.push(format!("{section}: bpftool refuses it, bpfpin pinned it"));
            }
            (Bpftool::Refused(_), Some(e)) => {
                if !e.message.contains("prog") {
                    failures.push(format!("{section}: the error names no program: {e:?}"));
                }
            }
        }
        rows.push(Row {
            object: format!("`SEC(\"{section}\")`"),
            bpftool,
            bpfpin,
        });
    }
    print_table("libbpf section names on this kernel", &rows);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Compares one object's outcomes: bpftool loads it ⇒ bpfpin pins every program; bpftool refuses
/// it ⇒ bpfpin fails with a reason that names a program (or the object's ELF); a section newer
/// than bpftool's libbpf says nothing, and bpfpin's outcome is only shown.
fn compare(name: &str, object: &Path, failures: &mut Vec<String>) -> Row {
    let bpftool = bpftool_loadall(object);
    let bpfpin = bpfpin_pin_all(name, object, &|_| None);
    match (&bpftool, &bpfpin) {
        (Bpftool::Loaded, Some(e)) => {
            failures.push(format!("{name}: bpftool loads it, bpfpin: {e:?}"))
        }
        (Bpftool::Refused(why), None) => failures.push(format!(
            "{name}: bpftool refuses it ({why}), bpfpin pinned it"
        )),
        (Bpftool::Refused(_), Some(e)) if e.message.trim().is_empty() => {
            failures.push(format!("{name}: an empty error: {e:?}"))
        }
        _ => {}
    }
    Row {
        object: name.to_owned(),
        bpftool,
        bpfpin,
    }
}

/// Programs written in the conventions of libbpf-bootstrap, bcc's libbpf-tools, xdp-tutorial,
/// cilium/ebpf and bpfman examples and the sockmap tutorials (our own small programs, compiled
/// here): each pins every program wherever bpftool loads it.
#[test]
fn libbpf_style_corpus() {
    require_root();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for name in [
        "bootstrap_style",
        "libbpf_tools_style",
        "xdp_tutorial_style",
        "cilium_style",
        "bpfman_style",
        "sockmap_style",
        "kconfig_extern",
    ] {
        let object = compat_object(name);
        let row = compare(&name.replace('_', "-"), &object, &mut failures);
        // Every style pins: a corpus bpfpin refuses proves nothing (kconfig_extern too: its
        // `.kconfig` extern is resolved by the patched aya-obj).
        assert!(row.bpfpin.is_none(), "{name}: {:?}", row.bpfpin);
        rows.push(row);
    }
    print_table("libbpf-style programs", &rows);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The BPF objects Debian's xdp-tools package ships (`/usr/lib/<arch>/bpf/*.o`): the same outcome
/// as bpftool's on this kernel.
#[test]
fn debian_xdp_tools_objects() {
    require_root();
    let dir = PathBuf::from(format!("/usr/lib/{}/bpf", multiarch()));
    let mut objects: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (hack/deps installs xdp-tools, whose objects these are)",
                dir.display()
            )
        })
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    objects.sort();
    assert!(!objects.is_empty(), "no objects in {}", dir.display());
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for object in &objects {
        let stem = object.file_stem().expect("stem").to_string_lossy();
        let name: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        rows.push(compare(&name, object, &mut failures));
    }
    print_table("Debian xdp-tools objects", &rows);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        rows.iter()
            .any(|r| matches!(r.bpftool, Bpftool::Loaded) && r.bpfpin.is_none()),
        "at least one shipped object loads and pins"
    );
}

/// A program that is not in `spec.programs` is ignored whatever its section: one libbpf name aya
/// cannot load (`kprobe.multi`), one nobody knows, next to the listed `tc` program, which pins. Listed,
/// the same program fails the object as `Unsupported`, naming it and its section, pinning nothing.
#[test]
fn unlisted_programs_are_ignored_whatever_their_section() {
    let fs = Bpffs::new();
    let object = compat_object("unlisted");
    let listed = "bytecode: {path: unlisted.bpf.o}\nprograms:\n- name: wanted\n";
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(
        &[desired_from("unlisted", listed, &object)],
        &BTreeSet::new(),
    );
    assert!(
        report.objects[0].error.is_none(),
        "{:?}",
        report.objects[0].error
    );
    assert!(fs.root().join("unlisted/progs/wanted").exists());
    assert!(!fs.root().join("unlisted/progs/run_me").exists());

    let fs = Bpffs::new();
    let both = "bytecode: {path: unlisted.bpf.o}\nprograms:\n- name: wanted\n- name: run_me\n";
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired_from("both", both, &object)], &BTreeSet::new());
    let err = report.objects[0]
        .error
        .clone()
        .expect("run_me cannot be loaded");
    assert_eq!(err.reason, bpfpin_agent::error::Reason::Unsupported);
    assert!(
        err.message
            .contains("program run_me (section `kprobe.multi/do_unlinkat`) cannot be loaded: aya 0.14 has no kprobe.multi program"),
        "{}",
        err.message
    );
    assert!(!fs.root().join("both").exists(), "nothing of it is pinned");
}
