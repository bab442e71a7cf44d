//! Issue 13's attach kinds on this host: raw tracepoints, every cgroup hook, sk_lookup, sk_msg and
//! sk_skb on a sockmap of the object, perf events on every CPU and a pinned iterator. Each test
//! pins through the `Reconciler`, drops it, makes the event happen and reads the program's counter
//! (or, for the iterator, its output): the pinned link runs the program. Bad targets fail the
//! object with a message naming the program and the target, and leave nothing pinned.
//!
//! Run as root in private namespaces (the tests make cgroups and a named netns with names taken
//! from the test):
//! `unshare --mount --net -- sh -c 'mkdir -p /run/netns && mount -t tmpfs none /run/netns && ip link set lo up && exec cargo test -p bpfpin-agent --test attach_more'`.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use bpfpin_agent::Reconciler;
use bpfpin_agent::error::ObjectError;
use cgroup::TestCgroup as Cgroup;
use common::*;

// The indices of hits[] in attach_more.bpf.c.
const RAW_TP: u32 = 0;
const SOCKOPS: u32 = 1;
const CONNECT4: u32 = 2;
const CONNECT6: u32 = 3;
const BIND4: u32 = 4;
const BIND6: u32 = 5;
const SENDMSG4: u32 = 6;
const SENDMSG6: u32 = 7;
const RECVMSG4: u32 = 8;
const RECVMSG6: u32 = 9;
const GETPEERNAME4: u32 = 10;
const GETSOCKNAME4: u32 = 11;
const SOCK_CREATE: u32 = 12;
const POST_BIND4: u32 = 13;
const SYSCTL: u32 = 14;
const GETSOCKOPT: u32 = 15;
const SETSOCKOPT: u32 = 16;
const DEVICE: u32 = 17;
const SK_LOOKUP: u32 = 18;
const SK_MSG: u32 = 19;
const SK_SKB: u32 = 20;
const PERF_EVENT: u32 = 21;
const ITER: u32 = 22;

fn hits(fs: &Bpffs, object: &str, kind: u32) -> u64 {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(fs.root().join(object).join("maps/hits")).expect("hits map");
    let array: Array<_, u64> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
    array.get(&kind, 0).expect("read")
}

/// A spec of attach_more.bpf.o with `(program, attach YAML)` entries.
fn spec_of(programs: &[(&str, &str)]) -> String {
    let mut s = "bytecode: {path: attach_more.bpf.o}\nprograms:\n".to_owned();
    for (p, a) in programs {
        s.push_str(&format!("- name: {p}\n  attach: {a}\n"));
    }
    s
}

/// Pins one object and returns its link paths (relative to the object's directory, sorted).
fn pin(fs: &Bpffs, object: &str, programs: &[(&str, &str)]) -> Vec<String> {
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(
        &[desired(object, &spec_of(programs), "attach_more")],
        &BTreeSet::new(),
    );
    let obj = &report.objects[0];
    assert!(obj.error.is_none(), "{}: {:?}", obj.name, obj.error);
    let dir = fs.root().join(object);
    let mut links: Vec<String> = obj
        .pinned
        .as_ref()
        .expect("pinned")
        .links
        .iter()
        .map(|l| {
            l.strip_prefix(&dir)
                .unwrap_or_else(|_| panic!("{} under {}", l.display(), dir.display()))
                .display()
                .to_string()
        })
        .collect();
    links.sort();
    links
}

/// Pins one object that must fail, and returns its error; nothing of it may remain pinned.
fn pin_err(fs: &Bpffs, programs: &[(&str, &str)]) -> ObjectError {
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(
        &[desired("bad", &spec_of(programs), "attach_more")],
        &BTreeSet::new(),
    );
    assert!(
        !fs.root().join("bad").exists(),
        "nothing of a failed object is pinned: {:?}",
        tree(&fs.root())
    );
    report.objects[0].error.clone().expect("an error")
}

#[test]
fn raw_tracepoint_counts_syscalls() {
    let fs = Bpffs::new();
    let links = pin(
        &fs,
        "rawtp",
        &[("raw_tp_count", "{rawTracepoint: {name: sys_enter}}")],
    );
    assert_eq!(links, ["links/raw_tp_count/rawtp-sys_enter"]);
    let before = hits(&fs, "rawtp", RAW_TP);
    getpid_n(100);
    let after = hits(&fs, "rawtp", RAW_TP);
    assert!(
        after >= before + 100,
        "raw_tp/sys_enter counted {before} then {after}"
    );
}

/// What the cgroup's process does: every socket call the sock_addr, sock, sockopt and sock_ops
/// hooks see, a sysctl read and a device open.
const SOCKET_CALLS: &str = r#"
import socket
# TCP over IPv4: bind4, post_bind4, connect4, sock_ops, getpeername4, getsockname4, sockopts.
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
cli.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
cli.connect(srv.getsockname())
cli.getpeername()
cli.getsockname()
conn, _ = srv.accept()
conn.close(); cli.close(); srv.close()
# UDP over IPv4 and IPv6: sendmsg4/6, recvmsg4/6, bind6, connect6.
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    a = socket.socket(family, socket.SOCK_DGRAM)
    a.bind((host, 0))
    b = socket.socket(family, socket.SOCK_DGRAM)
    b.sendto(b"x", a.getsockname())
    a.recvfrom(16)
    b.connect(a.getsockname())
    a.close(); b.close()
open("/proc/sys/kernel/ostype").read()
open("/dev/null", "w").close()
"#;

#[test]
fn every_cgroup_hook_runs_for_the_processes_of_its_cgroup() {
    let fs = Bpffs::new();
    let cg = Cgroup::new("cgroup-hooks");
    let sock_addr = cg.attach("cgroupSockAddr");
    let sock = cg.attach("cgroupSock");
    let sockopt = cg.attach("cgroupSockopt");
    let programs = [
        ("sockops_count", cg.attach("sockOps")),
        ("connect4_count", sock_addr.clone()),
        ("connect6_count", sock_addr.clone()),
        ("bind4_count", sock_addr.clone()),
        ("bind6_count", sock_addr.clone()),
        ("sendmsg4_count", sock_addr.clone()),
        ("sendmsg6_count", sock_addr.clone()),
        ("recvmsg4_count", sock_addr.clone()),
        ("recvmsg6_count", sock_addr.clone()),
        ("getpeername4_count", sock_addr.clone()),
        ("getsockname4_count", sock_addr.clone()),
        ("sock_create_count", sock.clone()),
        ("post_bind4_count", sock.clone()),
        ("sysctl_count", cg.attach("cgroupSysctl")),
        ("getsockopt_count", sockopt.clone()),
        ("setsockopt_count", sockopt.clone()),
        ("device_count", cg.attach("cgroupDevice")),
    ];
    let programs: Vec<(&str, &str)> = programs.iter().map(|(p, a)| (*p, a.as_str())).collect();
    let links = pin(&fs, "cg", &programs);
    assert_eq!(links.len(), programs.len(), "{links:?}");
    let cgroup_part = cg.0.display().to_string();
    let encoded = cgroup_part
        .trim_start_matches('/')
        .replace('.', "%2E")
        .replace('/', "%2F");
    assert!(links.contains(&format!("links/sockops_count/sockops-{encoded}")));
    assert!(links.contains(&format!("links/connect4_count/cgroupsockaddr-{encoded}")));
    assert!(links.contains(&format!("links/sock_create_count/cgroupsock-{encoded}")));
    assert!(links.contains(&format!("links/sysctl_count/cgroupsysctl-{encoded}")));
    assert!(links.contains(&format!("links/getsockopt_count/cgroupsockopt-{encoded}")));
    assert!(links.contains(&format!("links/device_count/cgroupdevice-{encoded}")));

    // Nothing runs for processes outside the cgroup.
    let outside = Command::new("python3")
        .args(["-c", SOCKET_CALLS])
        .status()
        .expect("python3");
    assert!(outside.success());
    for kind in [CONNECT4, BIND4, SOCK_CREATE, SYSCTL, DEVICE] {
        assert_eq!(hits(&fs, "cg", kind), 0, "hits[{kind}] outside the cgroup");
    }

    cg.run_python(SOCKET_CALLS);
    for (kind, what) in [
        (SOCKOPS, "sockops"),
        (CONNECT4, "cgroup/connect4"),
        (CONNECT6, "cgroup/connect6"),
        (BIND4, "cgroup/bind4"),
        (BIND6, "cgroup/bind6"),
        (SENDMSG4, "cgroup/sendmsg4"),
        (SENDMSG6, "cgroup/sendmsg6"),
        (RECVMSG4, "cgroup/recvmsg4"),
        (RECVMSG6, "cgroup/recvmsg6"),
        (GETPEERNAME4, "cgroup/getpeername4"),
        (GETSOCKNAME4, "cgroup/getsockname4"),
        (SOCK_CREATE, "cgroup/sock_create"),
        (POST_BIND4, "cgroup/post_bind4"),
        (SYSCTL, "cgroup/sysctl"),
        (GETSOCKOPT, "cgroup/getsockopt"),
        (SETSOCKOPT, "cgroup/setsockopt"),
        (DEVICE, "cgroup/dev"),
    ] {
        assert!(hits(&fs, "cg", kind) > 0, "{what} did not run");
    }
    drop(fs);
}

#[test]
fn cgroup_targets_and_program_types_are_checked() {
    let fs = Bpffs::new();
    let e = pin_err(
        &fs,
        &[(
            "connect4_count",
            "{cgroupSockAddr: {cgroup: /sys/fs/cgroup/bpfpin-no-such-cgroup}}",
        )],
    );
    assert_eq!(e.reason.as_str(), "AttachFailed", "{e}");
    assert!(
        e.message.contains("connect4_count")
            && e.message.contains("/sys/fs/cgroup/bpfpin-no-such-cgroup"),
        "{e}"
    );
    // A program of another type than the kind takes.
    let cg = Cgroup::new("cgroup-types");
    let e = pin_err(&fs, &[("connect4_count", &cg.attach("sockOps"))]);
    assert_eq!(e.reason.as_str(), "AttachFailed", "{e}");
    assert!(
        e.message.contains("connect4_count") && e.message.contains("sock_ops program"),
        "{e}"
    );
    // A cgroup v1 directory (or any other filesystem) is not a cgroup v2.
    let e = pin_err(&fs, &[("sysctl_count", "{cgroupSysctl: {cgroup: /proc}}")]);
    assert!(e.message.contains("not on a cgroup v2"), "{e}");
}

#[test]
fn sk_lookup_runs_in_the_network_namespace_it_is_attached_to() {
    let fs = Bpffs::new();
    let netns = "bpfpin-test-sklookup";
    let _ = Command::new("ip").args(["netns", "del", netns]).status();
    assert!(
        Command::new("ip")
            .args(["netns", "add", netns])
            .status()
            .expect("ip")
            .success()
    );
    let up = Command::new("ip")
        .args(["-n", netns, "link", "set", "lo", "up"])
        .status()
        .expect("ip");
    assert!(up.success());
    let attach = format!("{{skLookup: {{netns: /run/netns/{netns}}}}}");
    let links = pin(&fs, "lookup", &[("sk_lookup_count", &attach)]);
    assert_eq!(
        links,
        [format!(
            "links/sk_lookup_count/sklookup-run%2Fnetns%2F{netns}"
        )]
    );
    // A TCP connection over this namespace's loopback: the SYN's socket lookup runs the program.
    let script = "import socket\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(1)\nc=socket.create_connection(s.getsockname())\nc.close()";
    let ok = Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", script])
        .status()
        .expect("ip netns exec")
        .success();
    assert!(ok);
    assert!(hits(&fs, "lookup", SK_LOOKUP) > 0, "sk_lookup did not run");

    // Not a namespace file: refused before the kernel is asked, nothing pinned.
    let e = pin_err(
        &fs,
        &[("sk_lookup_count", "{skLookup: {netns: /etc/hostname}}")],
    );
    assert_eq!(e.reason.as_str(), "AttachFailed", "{e}");
    assert!(
        e.message.contains("sk_lookup_count")
            && e.message
                .contains("/etc/hostname is not a network namespace file"),
        "{e}"
    );
    drop(fs);
    let _ = Command::new("ip").args(["netns", "del", netns]).status();
}

#[test]
fn sk_msg_and_sk_skb_run_for_the_sockets_of_the_objects_sockmap() {
    use aya::maps::{Map, MapData, SockMap};
    use std::os::fd::AsRawFd;
    let fs = Bpffs::new();
    let links = pin(
        &fs,
        "sockmap",
        &[
            ("sk_msg_count", "{skMsg: {map: socks}}"),
            ("sk_skb_count", "{skSkb: {map: socks}}"),
        ],
    );
    assert_eq!(
        links,
        [
            "links/sk_msg_count/skmsg-socks",
            "links/sk_skb_count/skskb-socks"
        ]
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let mut client =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let data = MapData::from_pin(fs.root().join("sockmap/maps/socks")).expect("socks");
    let mut socks: SockMap<_> =
        SockMap::try_from(Map::from_map_data(data).expect("map")).expect("sockmap");
    socks.set(0, &client.as_raw_fd(), 0).expect("insert client");
    socks.set(1, &server.as_raw_fd(), 0).expect("insert server");
    client.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"hello", "SK_PASS lets the data through");
    assert!(hits(&fs, "sockmap", SK_MSG) > 0, "sk_msg did not run");
    assert!(hits(&fs, "sockmap", SK_SKB) > 0, "sk_skb did not run");

    // A map the object lacks, and a map that is not a socket map.
    let e = pin_err(&fs, &[("sk_msg_count", "{skMsg: {map: nosuchmap}}")]);
    assert_eq!(e.reason.as_str(), "AttachFailed", "{e}");
    assert!(
        e.message.contains("sk_msg_count") && e.message.contains("the object has no map nosuchmap"),
        "{e}"
    );
    let e = pin_err(&fs, &[("sk_skb_count", "{skSkb: {map: hits}}")]);
    assert!(
        e.message.contains("sk_skb_count")
            && e.message.contains("map hits has type Array, not SockMap"),
        "{e}"
    );
}

/// An update of the object (another program added) keeps the unchanged sk_msg/sk_skb programs and
/// their links: a sockmap takes one program per attach type, so a reloaded copy could not attach
/// to the kept map.
#[test]
fn an_update_keeps_unchanged_sockmap_programs_and_their_links() {
    use aya::maps::{Map, MapData, SockMap};
    use std::os::fd::AsRawFd;
    let fs = Bpffs::new();
    let programs = [
        ("sk_msg_count", "{skMsg: {map: socks}}"),
        ("sk_skb_count", "{skSkb: {map: socks}}"),
    ];
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let first = r.reconcile(
        &[desired("upd", &spec_of(&programs), "attach_more")],
        &BTreeSet::new(),
    );
    assert!(
        first.objects[0].error.is_none(),
        "{:?}",
        first.objects[0].error
    );
    let link = fs.root().join("upd/links/sk_msg_count/skmsg-socks");
    let prog = fs.root().join("upd/progs/sk_msg_count");
    let (link_before, prog_before) = (link_id(&link), prog_id(&prog));
    let more = spec_of(&programs) + "- name: raw_tp_any\n";
    let second = r.reconcile(&[desired("upd", &more, "attach_more")], &BTreeSet::new());
    assert!(
        second.objects[0].error.is_none(),
        "{:?}",
        second.objects[0].error
    );
    assert_ne!(
        first.objects[0].pinned.as_ref().map(|p| &p.version),
        second.objects[0].pinned.as_ref().map(|p| &p.version),
        "a new version"
    );
    assert_eq!(prog_id(&prog), prog_before, "the same program");
    assert_eq!(link_id(&link), link_before, "the same link");
    drop(r);
    // Still running: traffic on sockets of the kept map is seen.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let mut client =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let data = MapData::from_pin(fs.root().join("upd/maps/socks")).expect("socks");
    let mut socks: SockMap<_> =
        SockMap::try_from(Map::from_map_data(data).expect("map")).expect("sockmap");
    socks.set(0, &client.as_raw_fd(), 0).expect("insert client");
    socks.set(1, &server.as_raw_fd(), 0).expect("insert server");
    client.write_all(b"again").expect("write");
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).expect("read");
    assert!(hits(&fs, "upd", SK_MSG) > 0 && hits(&fs, "upd", SK_SKB) > 0);
}

fn link_id(path: &Path) -> u32 {
    let link = aya::programs::links::PinnedLink::from_pin(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    aya::programs::links::FdLink::from(link)
        .info()
        .expect("link info")
        .id()
}

#[test]
fn a_perf_event_has_a_pinned_link_on_every_cpu_and_samples() {
    let fs = Bpffs::new();
    let links = pin(
        &fs,
        "perf",
        &[(
            "perf_event_count",
            "{perfEvent: {event: CpuClock, frequency: 1000}}",
        )],
    );
    let cpus = aya::util::online_cpus().expect("online cpus");
    let want: Vec<String> = {
        let mut w: Vec<String> = cpus
            .iter()
            .map(|c| format!("links/perf_event_count/perfevent-cpuclock-cpu{c}"))
            .collect();
        w.sort();
        w
    };
    assert_eq!(links, want);
    // Keep a CPU busy for a while: the cpu-clock event samples at 1000 Hz.
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(300) {
        x = x.wrapping_mul(31).wrapping_add(1);
    }
    std::hint::black_box(x);
    assert!(
        hits(&fs, "perf", PERF_EVENT) > 10,
        "perf_event counted {}",
        hits(&fs, "perf", PERF_EVENT)
    );
}

#[test]
fn reading_a_pinned_iterator_runs_it() {
    let fs = Bpffs::new();
    let links = pin(&fs, "iter", &[("iter_tasks", "{iter: {}}")]);
    assert_eq!(links, ["links/iter_tasks/iter"]);
    let pin_path = fs.root().join("iter").join(&links[0]);
    let read = |p: &Path| std::fs::read_to_string(p).expect("read the iterator's pin");
    let first = read(&pin_path);
    let tasks = first.lines().filter(|l| *l == "task").count();
    assert!(
        tasks > 1,
        "the iterator printed one line per task: {first:?}"
    );
    assert_eq!(hits(&fs, "iter", ITER), tasks as u64);
    // Each read runs it again.
    let second = read(&pin_path);
    assert!(second.lines().count() > 1);
    assert!(hits(&fs, "iter", ITER) > tasks as u64);
}

#[test]
fn a_missing_raw_tracepoint_is_a_clear_error() {
    let fs = Bpffs::new();
    let e = pin_err(
        &fs,
        &[(
            "raw_tp_any",
            "{rawTracepoint: {name: bpfpin_no_such_tracepoint}}",
        )],
    );
    assert_eq!(e.reason.as_str(), "AttachFailed", "{e}");
    assert!(
        e.message.contains("raw_tp_any")
            && e.message
                .contains("raw tracepoint bpfpin_no_such_tracepoint"),
        "{e}"
    );
}

/// `attach: {}` takes the point from a section that names it; a section that names only the hook
/// says which field to set; an explicit attach that contradicts the section names both, and
/// pins nothing.
#[test]
fn auto_attach_from_the_section() {
    let fs = Bpffs::new();
    let links = pin(&fs, "auto", &[("raw_tp_count", "{}"), ("iter_tasks", "{}")]);
    assert_eq!(
        links,
        [
            "links/iter_tasks/iter",
            "links/raw_tp_count/rawtp-sys_enter"
        ]
    );
    let before = hits(&fs, "auto", RAW_TP);
    getpid_n(50);
    assert!(
        hits(&fs, "auto", RAW_TP) >= before + 50,
        "the derived raw_tp link runs"
    );
    let out = std::fs::read_to_string(fs.root().join("auto/links/iter_tasks/iter")).expect("read");
    assert!(out.starts_with("task\n"), "{out:?}");

    let e = pin_err(&fs, &[("connect4_count", "{}")]);
    assert_eq!(e.reason.as_str(), "InvalidSpec", "{e}");
    assert_eq!(
        e.message,
        "program connect4_count (section `cgroup/connect4`): `attach: {}` takes the attach point from the section, and this section does not name it; set attach.cgroupSockAddr.cgroup"
    );
    let e = pin_err(
        &fs,
        &[("raw_tp_count", "{rawTracepoint: {name: sched_switch}}")],
    );
    assert_eq!(e.reason.as_str(), "InvalidSpec", "{e}");
    assert_eq!(
        e.message,
        "program raw_tp_count: attach.rawTracepoint.name is sched_switch, but its section `raw_tp/sys_enter` names sys_enter; make them agree, or use `attach: {}` to take the section's"
    );
}
