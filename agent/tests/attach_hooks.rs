//! Issue 13's hook kinds: `tpBtf`, `lsm`, `ksyscall`/`kretsyscall`, `netfilter`, the unix-socket
//! cgroup hooks, and the load-only program types (`syscall`, `action`, `lwt_*`). Each test pins
//! through the `Reconciler`, drops it, makes the events happen and reads the program's counter:
//! the pinned link runs the program, and the counts are exact (the programs of hooks.bpf.c count
//! only this test thread's calls, the test's file, the test's port).
//!
//! Kinds this host's kernel refuses (lsm and tp_btf trampolines, kprobes for ksyscall) check the
//! agent's error and print SKIPPED here; `hack/vm-test` runs them in a VM whose kernel has them,
//! with `BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1`, where a skip is a failure.
//!
//! Run as root: `cargo test -p bpfpin-agent --test attach_hooks`. The netfilter test makes its
//! own network namespace (for its thread).

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use bpfpin_agent::Reconciler;
use bpfpin_agent::error::ObjectError;
use cgroup::TestCgroup as Cgroup;
use common::*;

// The indices of hits[] in hooks.bpf.c.
const TP_BTF: u32 = 0;
const LSM_OPEN: u32 = 1;
const LSM_DENIED: u32 = 2;
const KSYSCALL: u32 = 3;
const KRETSYSCALL: u32 = 4;
const NF_DROPPED: u32 = 5;
const NF_PASSED: u32 = 6;
const CONNECT_UNIX: u32 = 7;
const SENDMSG_UNIX: u32 = 8;
const RECVMSG_UNIX: u32 = 9;
const GETPEERNAME_UNIX: u32 = 10;
const GETSOCKNAME_UNIX: u32 = 11;
const SYSCALL_RUN: u32 = 12;
const ACTION_RUN: u32 = 13;

fn hits(fs: &Bpffs, object: &str, kind: u32) -> u64 {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(fs.root().join(object).join("maps/hits")).expect("hits map");
    let array: Array<_, u64> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
    array.get(&kind, 0).expect("read")
}

/// `BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1` (hack/vm-test's VM): a kind this kernel lacks fails.
fn require_all_attach_kinds() -> bool {
    std::env::var("BPFPIN_REQUIRE_ALL_ATTACH_KINDS").is_ok_and(|v| v == "1")
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A spec of hooks.bpf.o: `globals` as `(name, little-endian bytes)`, programs as `(program,
/// attach YAML or None)`.
fn spec_of(globals: &[(&str, Vec<u8>)], programs: &[(&str, Option<&str>)]) -> String {
    let mut s = "bytecode: {path: hooks.bpf.o}\n".to_owned();
    if !globals.is_empty() {
        s.push_str("globalData:\n");
        for (name, bytes) in globals {
            s.push_str(&format!("  {name}: {}\n", b64(bytes)));
        }
    }
    s.push_str("programs:\n");
    for (p, a) in programs {
        s.push_str(&format!("- name: {p}\n"));
        if let Some(a) = a {
            s.push_str(&format!("  attach: {a}\n"));
        }
    }
    s
}

/// The globals that make the programs count this thread.
fn this_thread() -> Vec<(&'static str, Vec<u8>)> {
    vec![("target_tid", gettid().to_le_bytes().to_vec())]
}

/// Pins one object; `Ok` holds its link paths (relative to the object's directory, sorted).
fn try_pin(
    fs: &Bpffs,
    object: &str,
    globals: &[(&str, Vec<u8>)],
    programs: &[(&str, Option<&str>)],
) -> Result<Vec<String>, ObjectError> {
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(
        &[desired(object, &spec_of(globals, programs), "hooks")],
        &BTreeSet::new(),
    );
    let obj = &report.objects[0];
    if let Some(err) = &obj.error {
        assert!(
            !fs.root().join(object).exists(),
            "nothing of a failed object is pinned: {:?}",
            tree(&fs.root())
        );
        return Err(err.clone());
    }
    let dir = fs.root().join(object);
    let mut links: Vec<String> = obj
        .pinned
        .as_ref()
        .expect("pinned")
        .links
        .iter()
        .map(|l| l.strip_prefix(&dir).expect("under").display().to_string())
        .collect();
    links.sort();
    Ok(links)
}

fn pin(
    fs: &Bpffs,
    object: &str,
    globals: &[(&str, Vec<u8>)],
    programs: &[(&str, Option<&str>)],
) -> Vec<String> {
    try_pin(fs, object, globals, programs).unwrap_or_else(|e| panic!("{object}: {e}"))
}

/// A trampoline kind this kernel refuses: the error says so, and outside the VM the test skips.
fn refused_trampoline(kind: &str, err: &ObjectError) {
    assert!(
        !require_all_attach_kinds(),
        "BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1 but {kind} failed: {err}"
    );
    assert!(
        err.message.contains("refused") || err.message.contains("Operation not permitted"),
        "{kind}: {err}"
    );
    eprintln!(
        "SKIPPED {kind} counting: this kernel refuses BPF trampolines ({}); checked the error instead",
        err.message
    );
}

#[test]
fn tp_btf_counts_the_getpids_of_this_thread() {
    let fs = Bpffs::new();
    let links = match try_pin(
        &fs,
        "tpbtf",
        &this_thread(),
        &[("tp_btf_getpid", Some("{tpBtf: {name: sys_enter}}"))],
    ) {
        Ok(links) => links,
        Err(err) => return refused_trampoline("tp_btf", &err),
    };
    assert_eq!(links, ["links/tp_btf_getpid/tpbtf-sys_enter"]);
    getpid_n(20);
    assert_eq!(
        hits(&fs, "tpbtf", TP_BTF),
        20,
        "20 getpid calls of this thread"
    );
    getpid_n(7);
    assert_eq!(hits(&fs, "tpbtf", TP_BTF), 27);
}

#[test]
fn tp_btf_attach_from_the_section() {
    let fs = Bpffs::new();
    match try_pin(
        &fs,
        "tpbtf2",
        &this_thread(),
        &[("tp_btf_getpid", Some("{}"))],
    ) {
        Ok(links) => {
            assert_eq!(links, ["links/tp_btf_getpid/tpbtf-sys_enter"]);
            getpid_n(3);
            assert_eq!(hits(&fs, "tpbtf2", TP_BTF), 3);
        }
        Err(err) => refused_trampoline("tp_btf", &err),
    }
    // A name other than the section's is refused before anything is loaded.
    let err = try_pin(
        &fs,
        "tpbtf3",
        &[],
        &[("tp_btf_getpid", Some("{tpBtf: {name: sched_switch}}"))],
    )
    .expect_err("a contradiction");
    assert_eq!(err.reason.as_str(), "InvalidSpec");
    assert!(
        err.message.contains("tp_btf_getpid")
            && err.message.contains("sched_switch")
            && err.message.contains("tp_btf/sys_enter"),
        "{err}"
    );
}

/// A file in a fresh temporary directory, and its inode number.
fn file_with_inode(dir: &Path, name: &str) -> (PathBuf, u64) {
    let path = dir.join(name);
    std::fs::write(&path, b"x").expect("write");
    let ino = std::fs::metadata(&path).expect("stat").ino();
    (path, ino)
}

#[test]
fn lsm_file_open_counts_and_denies() {
    let fs = Bpffs::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (counted, counted_ino) = file_with_inode(dir.path(), "counted");
    let (denied, denied_ino) = file_with_inode(dir.path(), "denied");
    let mut globals = this_thread();
    globals.push(("target_ino", counted_ino.to_le_bytes().to_vec()));
    globals.push(("deny_ino", denied_ino.to_le_bytes().to_vec()));
    let links = match try_pin(
        &fs,
        "lsm",
        &globals,
        &[("lsm_file_open", Some("{lsm: {hook: file_open}}"))],
    ) {
        Ok(links) => links,
        Err(err) if err.message.contains("without bpf") => {
            assert!(!require_all_attach_kinds(), "{err}");
            eprintln!("SKIPPED lsm counting: the kernel does not run the bpf LSM: {err}");
            return;
        }
        Err(err) => {
            assert!(
                err.message.contains("refused the lsm program"),
                "the refusal says why: {err}"
            );
            return refused_trampoline("lsm", &err);
        }
    };
    assert_eq!(links, ["links/lsm_file_open/lsm-file_open"]);
    for _ in 0..6 {
        std::fs::File::open(&counted).expect("open the counted file");
    }
    let mut refused = 0;
    for _ in 0..4 {
        let e = std::fs::File::open(&denied).expect_err("the LSM denies this file");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        refused += 1;
    }
    let (opens, denials) = (hits(&fs, "lsm", LSM_OPEN), hits(&fs, "lsm", LSM_DENIED));
    eprintln!("lsm/file_open: 6 opens counted {opens}, 4 denied opens counted {denials}");
    assert_eq!((opens, denials, refused), (6, 4, 4));
    // Unpinning the link lifts the denial.
    std::fs::remove_file(fs.root().join("lsm").join(&links[0])).expect("unpin the link");
    std::fs::File::open(&denied).expect("no LSM program any more");
}

/// Whether the kernel offers kprobes (CONFIG_KPROBES: the perf kprobe PMU).
fn kernel_has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
}

#[test]
fn ksyscall_and_kretsyscall_count_getpid() {
    let fs = Bpffs::new();
    let programs = [
        ("ksyscall_getpid", Some("{ksyscall: {syscall: getpid}}")),
        // From the section: kretsyscall/getpid.
        ("kretsyscall_getpid", Some("{}")),
    ];
    if !kernel_has_kprobes() {
        assert!(
            !require_all_attach_kinds(),
            "BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1 but this kernel has no kprobes"
        );
        let err = try_pin(&fs, "ksys", &this_thread(), &programs).expect_err("no kprobes");
        assert_eq!(err.reason.as_str(), "AttachFailed");
        assert!(
            err.message.contains("system call getpid") && err.message.contains("no kprobe"),
            "{err}"
        );
        eprintln!("SKIPPED ksyscall counting: this kernel has no kprobes; checked the error");
        return;
    }
    let links = pin(&fs, "ksys", &this_thread(), &programs);
    assert_eq!(
        links,
        [
            "links/kretsyscall_getpid/ksyscall-getpid",
            "links/ksyscall_getpid/ksyscall-getpid"
        ]
    );
    getpid_n(11);
    let (entries, returns) = (hits(&fs, "ksys", KSYSCALL), hits(&fs, "ksys", KRETSYSCALL));
    eprintln!("11 getpid: ksyscall counted {entries}, kretsyscall {returns}");
    assert_eq!((entries, returns), (11, 11));
}

/// Runs `f` on a new thread in a network namespace of its own (lo up): a netfilter link attaches
/// in the namespace of the thread that makes it.
fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) changes only this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let out = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .expect("ip");
        assert!(out.status.success(), "ip link set lo up: {out:?}");
        f()
    })
    .join()
    .expect("the netns thread")
}

/// Sends `n` UDP datagrams to 127.0.0.1:`port` and returns how many a socket bound there
/// received (waiting 200 ms after the last).
fn udp_round(port: u16, n: usize) -> usize {
    let rx = std::net::UdpSocket::bind(("127.0.0.1", port)).expect("bind");
    rx.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind tx");
    for i in 0..n {
        tx.send_to(&[i as u8], ("127.0.0.1", port)).expect("send");
    }
    let mut got = 0;
    let mut buf = [0u8; 16];
    while rx.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    got
}

#[test]
fn netfilter_drops_udp_to_a_port_in_a_private_netns() {
    let port: u16 = 47_000;
    let (links, dropped, passed, received_dropped, received_passed) = in_private_netns(move || {
        let fs = Bpffs::new();
        let links = pin(
            &fs,
            "nf",
            &[("target_port", port.to_le_bytes().to_vec())],
            &[(
                "nf_drop_port",
                Some("{netfilter: {family: IPv4, hook: LocalIn, priority: -100}}"),
            )],
        );
        // A second BPF program at the same family, hook and priority (another object, another
        // bpffs): the kernel refuses it (EBUSY), and the first keeps running.
        let other = Bpffs::new();
        let taken = try_pin(
            &other,
            "nf-again",
            &[("target_port", port.to_le_bytes().to_vec())],
            &[(
                "nf_drop_port",
                Some("{netfilter: {family: IPv4, hook: LocalIn, priority: -100}}"),
            )],
        )
        .expect_err("the priority is taken");
        assert_eq!(taken.reason.as_str(), "AttachFailed");
        assert!(
            taken.message.contains(
                "attaching program nf_drop_port to netfilter IPv4 LocalIn at priority -100"
            ),
            "{taken}"
        );
        assert!(taken.message.contains("(os error 16)"), "{taken}");
        eprintln!("a second program at the same priority: {taken}");
        let received_dropped = udp_round(port, 5);
        let received_passed = udp_round(port + 1, 3);
        let counts = (hits(&fs, "nf", NF_DROPPED), hits(&fs, "nf", NF_PASSED));
        (links, counts.0, counts.1, received_dropped, received_passed)
    });
    assert_eq!(links, ["links/nf_drop_port/netfilter-ipv4-localin-m100"]);
    eprintln!(
        "netfilter LocalIn: 5 datagrams to {port}: {dropped} dropped, {received_dropped} received; 3 to {}: {passed} counted, {received_passed} received",
        port + 1
    );
    assert_eq!((dropped, received_dropped), (5, 0));
    assert_eq!((passed, received_passed), (3, 3));
}

#[test]
fn netfilter_needs_its_hook_and_a_free_priority() {
    let fs = Bpffs::new();
    // libbpf does not auto-attach netfilter: `attach: {}` says which fields to set.
    let err = try_pin(&fs, "nf1", &[], &[("nf_drop_port", Some("{}"))]).expect_err("no hook");
    assert_eq!(err.reason.as_str(), "InvalidSpec");
    assert!(
        err.message.contains("nf_drop_port") && err.message.contains("netfilter.family"),
        "{err}"
    );
    // The wrong program type for the kind names both.
    let err = try_pin(
        &fs,
        "nf2",
        &[],
        &[(
            "connect_unix",
            Some("{netfilter: {family: IPv6, hook: LocalOut, priority: 1}}"),
        )],
    )
    .expect_err("wrong type");
    assert_eq!(err.reason.as_str(), "AttachFailed");
    assert!(
        err.message.contains("connect_unix") && err.message.contains("SEC(\"netfilter\")"),
        "{err}"
    );
}

/// Unix-socket calls of the cgroup's process: 3 connects, 4 sendto, 2 recvfrom, 1 getpeername,
/// 1 getsockname, all with unix addresses (and no other socket call: strace shows none).
const UNIX_CALLS: &str = r#"
import os, socket, tempfile
d = tempfile.mkdtemp()
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(os.path.join(d, 's'))
srv.listen(8)
keep = []
for _ in range(3):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(os.path.join(d, 's'))
    keep.append(c)
c.getpeername()
srv.getsockname()
rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
rx.bind(os.path.join(d, 'r'))
tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
tx.bind(os.path.join(d, 't'))
for _ in range(4):
    tx.sendto(b'x', os.path.join(d, 'r'))
for _ in range(2):
    rx.recvfrom(16)
# No finalizers: closing a socket object can call getsockname/getpeername (its repr).
os._exit(0)
"#;

#[test]
fn cgroup_unix_socket_hooks_count_each_call() {
    let fs = Bpffs::new();
    let cg = Cgroup::new("unix");
    let at = format!("{{cgroupSockAddr: {{cgroup: {}}}}}", cg.0.display());
    let programs = [
        "connect_unix",
        "sendmsg_unix",
        "recvmsg_unix",
        "getpeername_unix",
        "getsockname_unix",
    ];
    let attach: Vec<(&str, Option<&str>)> =
        programs.iter().map(|p| (*p, Some(at.as_str()))).collect();
    let links = pin(&fs, "unix", &[], &attach);
    assert_eq!(links.len(), 5, "{links:?}");
    cg.run_python(UNIX_CALLS);
    let counts: Vec<u64> = [
        CONNECT_UNIX,
        SENDMSG_UNIX,
        RECVMSG_UNIX,
        GETPEERNAME_UNIX,
        GETSOCKNAME_UNIX,
    ]
    .iter()
    .map(|k| hits(&fs, "unix", *k))
    .collect();
    eprintln!("unix hooks (connect, sendmsg, recvmsg, getpeername, getsockname): {counts:?}");
    assert_eq!(counts, [3, 4, 2, 1, 1]);
    drop(fs);
}

/// `bpf(BPF_OBJ_GET)` of a pinned program, then `bpf(BPF_PROG_TEST_RUN)` with no input: the
/// program's return value.
fn run_pinned_syscall_program(pin: &Path) -> u32 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes()).expect("path");
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: attr is a zeroed bpf_attr with pathname set, as BPF_OBJ_GET (7) reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            7,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    assert!(
        fd >= 0,
        "BPF_OBJ_GET {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    let mut attr = [0u32; 32];
    attr[0] = fd as u32; // test.prog_fd
    // SAFETY: attr is a zeroed bpf_attr with test.prog_fd set (BPF_PROG_TEST_RUN, 10).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            10,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is the descriptor BPF_OBJ_GET returned.
    unsafe { libc::close(fd as i32) };
    assert_eq!(rc, 0, "BPF_PROG_TEST_RUN: {err}");
    attr[1] // test.retval
}

#[test]
fn load_only_program_types_are_pinned_and_a_syscall_program_runs() {
    let fs = Bpffs::new();
    let programs = [
        ("syscall_prog", "BPF_PROG_TYPE_SYSCALL"),
        ("action_prog", "BPF_PROG_TYPE_SCHED_ACT"),
        ("lwt_in_prog", "BPF_PROG_TYPE_LWT_IN"),
        ("lwt_out_prog", "BPF_PROG_TYPE_LWT_OUT"),
        ("lwt_xmit_prog", "BPF_PROG_TYPE_LWT_XMIT"),
        ("lwt_seg6local_prog", "BPF_PROG_TYPE_LWT_SEG6LOCAL"),
    ];
    let specs: Vec<(&str, Option<&str>)> = programs.iter().map(|(p, _)| (*p, None)).collect();
    let links = pin(&fs, "lo", &[], &specs);
    assert!(links.is_empty(), "load-only: no links, {links:?}");
    for (p, kind) in programs {
        let path = fs.root().join("lo/progs").join(p);
        let info = aya::programs::ProgramInfo::from_pin(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(format!("{:?}", info.program_type()), kind, "{p}");
    }
    let pin_path = fs.root().join("lo/progs/syscall_prog");
    for _ in 0..3 {
        assert_eq!(run_pinned_syscall_program(&pin_path), 42);
    }
    assert_eq!(
        hits(&fs, "lo", SYSCALL_RUN),
        3,
        "3 runs of the syscall program"
    );
    // `attach: {}` on a program without an attach point says so.
    let err = try_pin(&fs, "lo2", &[], &[("lwt_xmit_prog", Some("{}"))]).expect_err("no point");
    assert_eq!(err.reason.as_str(), "InvalidSpec");
    assert!(
        err.message.contains("lwt_xmit_prog") && err.message.contains("remove `attach`"),
        "{err}"
    );
}

/// Runs `program` with `args` (directly: busybox's `sh` in hack/vm-test's VM would run its own
/// `tc` applet); `Err` holds its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A load-only `SEC("action")` program runs where something else attaches it: iproute2's `tc`
/// takes the pinned program as the action of a matchall filter on lo's ingress (in a network
/// namespace of its own), and each of 4 pings' echo requests and replies passes it. This host's
/// kernel has no `act_bpf`/`cls_matchall`: there the test checks the pin and prints SKIPPED;
/// `hack/vm-test` runs it with Debian's modules.
#[test]
fn tc_action_runs_a_pinned_action_program() {
    let outcome = in_private_netns(|| {
        let fs = Bpffs::new();
        pin(&fs, "act", &[], &[("action_prog", None)]);
        let pinned = fs.root().join("act/progs/action_prog");
        let pinned = pinned.to_str().expect("a UTF-8 path");
        run("tc", &["qdisc", "add", "dev", "lo", "clsact"])?;
        run(
            "tc",
            &[
                "filter",
                "add",
                "dev",
                "lo",
                "ingress",
                "matchall",
                "action",
                "bpf",
                "object-pinned",
                pinned,
            ],
        )?;
        let before = hits(&fs, "act", ACTION_RUN);
        run("ping", &["-c", "4", "-i", "0.2", "-W", "1", "127.0.0.1"]).expect("ping");
        let ran = hits(&fs, "act", ACTION_RUN) - before;
        run("tc", &["qdisc", "del", "dev", "lo", "clsact"]).expect("tc qdisc del");
        Ok::<u64, String>(ran)
    });
    let ran = match outcome {
        Ok(ran) => ran,
        Err(why) => {
            assert!(
                !require_all_attach_kinds(),
                "BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1 but tc could not attach the action: {why}"
            );
            eprintln!("SKIPPED the tc action run: {why}");
            return;
        }
    };
    eprintln!("4 pings on lo: the pinned tc action ran {ran} times");
    // lo's ingress sees each echo request and each reply.
    assert_eq!(ran, 8);
}

/// An update that reloads a netfilter program (new globals) at the same family, hook and
/// priority: the kernel has one BPF program per priority and no update of a netfilter link, so the
/// new version takes the hook over from the old one. A failed update (a later program of the
/// object cannot attach) puts the old program back on the hook.
#[test]
fn a_netfilter_program_is_updated_in_place_and_a_failed_update_restores_it() {
    let port: u16 = 47_100;
    let outcome = in_private_netns(move || {
        let fs = Bpffs::new();
        let mut r = Reconciler::new(fs.path()).expect("reconciler");
        let nf = (
            "nf_drop_port",
            Some("{netfilter: {family: IPv4, hook: LocalIn, priority: 10}}"),
        );
        let bad = (
            "connect_unix",
            Some("{cgroupSockAddr: {cgroup: /sys/fs/cgroup/bpfpin-no-such-cgroup}}"),
        );
        let v = |p: u16, programs: &[(&str, Option<&str>)]| {
            desired(
                "nfup",
                &spec_of(&[("target_port", p.to_le_bytes().to_vec())], programs),
                "hooks",
            )
        };
        let mut errors = Vec::new();
        let mut drops = Vec::new();
        // v1 drops `port`; v2 drops `port + 10`; v3 (drops `port + 20`) fails at its second
        // program, and v2 must keep dropping.
        for (p, programs) in [
            (port, vec![nf]),
            (port + 10, vec![nf]),
            (port + 20, vec![nf, bad]),
        ] {
            let report = r.reconcile(&[v(p, &programs)], &BTreeSet::new());
            errors.push(report.objects[0].error.clone());
            drops.push([
                5 - udp_round(port, 5),
                5 - udp_round(port + 10, 5),
                5 - udp_round(port + 20, 5),
            ]);
        }
        (errors, drops)
    });
    let (errors, drops) = outcome;
    eprintln!("datagrams dropped of 5 to each port, after v1, v2, v3 (failed): {drops:?}");
    assert!(errors[0].is_none() && errors[1].is_none(), "{errors:?}");
    let failed = errors[2].as_ref().expect("v3 fails");
    assert_eq!(failed.reason.as_str(), "AttachFailed", "{failed}");
    assert!(failed.message.contains("connect_unix"), "{failed}");
    assert_eq!(drops, [[5, 0, 0], [0, 5, 0], [0, 5, 0]]);
}
