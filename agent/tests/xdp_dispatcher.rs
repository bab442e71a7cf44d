//! Many XDP programs on one interface (README "Many programs on one hook"): bpfpin's dispatcher
//! runs them in priority order and chains on their actions; a rebuild is one link update; a
//! restart adopts; the 11th program and a directly held interface are clear errors.
//!
//! The dispatcher needs freplace (BPF_PROG_TYPE_EXT). Where the kernel refuses it (this project's
//! host kernel: EPERM, as for fentry), the tests check the agent's refusal and that the first
//! program keeps running, and print SKIPPED for the rest; `hack/vm-test` runs them on a kernel
//! that allows freplace with BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1, where a skip is a failure.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bpfpin_agent::{Action, Reconciler};
use common::*;

const REFUSED: &str = "the kernel refuses freplace";

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn require_freplace() -> bool {
    std::env::var("BPFPIN_REQUIRE_ALL_ATTACH_KINDS").is_ok_and(|v| v == "1")
}

/// An object running one program of xdp_chain.bpf.o on `interface`; `extra` goes into
/// `attach.xdp` (e.g. `priority: 10`).
fn object(name: &str, program: &str, interface: &str, extra: &str) -> bpfpin_agent::DesiredObject {
    let sep = if extra.is_empty() { "" } else { ", " };
    let spec = format!(
        "bytecode: {{path: xdp_chain.bpf.o}}\nprograms:\n- name: {program}\n  attach: {{xdp: {{interfaces: [{interface}], mode: Skb{sep}{extra}}}}}\n"
    );
    desired(name, &spec, "xdp_chain")
}

fn hits(fs: &Bpffs, object: &str) -> u64 {
    read_u64(&fs.root().join(object).join("maps/hits"))
}

/// A veth pair whose sides know each other's MAC address: with no ARP, every ping is one packet
/// through the host side's XDP (a dropped ARP would otherwise make the count depend on ARP's
/// retry timers).
fn veth(n: u8) -> Veth {
    let veth = Veth::new(n);
    let mac = |dev: &str, netns: Option<&str>| -> String {
        let mut cmd = Command::new("ip");
        if let Some(ns) = netns {
            cmd.args(["-n", ns]);
        }
        let out = cmd
            .args(["-o", "link", "show", dev])
            .output()
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC address of {dev}: {text}"))
            .to_owned()
    };
    let peer = format!("{}p", veth.host);
    let (host_mac, peer_mac) = (mac(&veth.host, None), mac(&peer, Some(&veth.netns)));
    let host_ip = format!("10.201.{n}.1");
    let peer_ip = format!("10.201.{n}.2");
    let ok = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().expect("ip");
        assert!(status.success(), "ip {args:?}");
    };
    ok(&[
        "-n",
        &veth.netns,
        "neigh",
        "replace",
        &host_ip,
        "lladdr",
        &host_mac,
        "dev",
        &peer,
        "nud",
        "permanent",
    ]);
    ok(&[
        "neigh",
        "replace",
        &peer_ip,
        "lladdr",
        &peer_mac,
        "dev",
        &veth.host,
        "nud",
        "permanent",
    ]);
    veth
}

/// Pings the veth's host side from its peer; whether every reply came back.
fn ping(veth: &Veth, count: u32) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &veth.netns, "ping", "-q", "-c"])
        .arg(count.to_string())
        .args(["-i", "0.05", "-W", "1"])
        .arg(format!("10.201.{}.1", veth.n))
        .output()
        .expect("ping")
        .status
        .success()
}

fn ifindex(name: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .expect("ifindex")
        .trim()
        .parse()
        .expect("a number")
}

/// The interface's dispatcher directories under `<bpffs>/xdp` (one, once a rebuild is done).
fn dispatchers(fs: &Bpffs, veth: &Veth) -> Vec<PathBuf> {
    let prefix = format!("dispatch-{}-", ifindex(&veth.host));
    let mut v: Vec<PathBuf> = std::fs::read_dir(fs.path().join("xdp"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// The ids of the programs in the dispatcher's slots, in slot order.
fn slot_ids(dir: &Path) -> Vec<u32> {
    (0..10)
        .map(|n| dir.join(format!("prog{n}-prog")))
        .take_while(|p| p.exists())
        .map(|p| prog_id(&p))
        .collect()
}

/// `prog<N>-link` and `prog<N>-prog` for `n` slots, as `tree` lists them.
fn slot_pins(n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n)
        .flat_map(|k| [format!("prog{k}-link"), format!("prog{k}-prog")])
        .collect();
    v.sort();
    v
}

/// The dispatcher id a `dispatch-<ifindex>-<id>` directory names.
fn dir_id(dir: &Path) -> u32 {
    let name = dir
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("dispatch-<ifindex>-<id>")
}

/// The XDP program attached to `interface` (0: none), from `ip -d link show`.
fn xdp_prog_id(interface: &str) -> u32 {
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", interface])
        .output()
        .expect("ip link show");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .or_else(|| v[0]["xdp"]["attached"][0]["prog"]["id"].as_u64())
        .unwrap_or(0) as u32
}

/// The entries of bpfpin's record of the programs it put in slots.
fn ledger(fs: &Bpffs) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fs.path().join("xdp/bpfpin-slots"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn ok(report: &bpfpin_agent::PassReport) {
    for o in &report.objects {
        assert!(o.error.is_none(), "{}: {:?}", o.name, o.error);
    }
}

/// Reconciles `objects`; `None` (after checking the refusal) when this kernel refuses freplace.
fn reconcile_or_skip(
    r: &mut Reconciler,
    objects: &[bpfpin_agent::DesiredObject],
    what: &str,
) -> Option<bpfpin_agent::PassReport> {
    let report = r.reconcile(objects, &none());
    let refused = report
        .objects
        .iter()
        .filter_map(|o| o.error.as_ref())
        .find(|e| e.message.contains(REFUSED));
    if let Some(err) = refused {
        assert!(
            !require_freplace(),
            "BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1 but {err}"
        );
        assert_eq!(err.reason.as_str(), "AttachFailed", "{err}");
        eprintln!(
            "SKIPPED {what}: this kernel refuses freplace (EPERM at load); checked the error instead"
        );
        return None;
    }
    ok(&report);
    Some(report)
}

#[test]
fn xdp_programs_run_in_priority_order_and_chain_on_their_actions() {
    let fs = Bpffs::new();
    let veth = veth(41);
    let i = veth.host.as_str();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    // a counts and passes, b counts and drops, c would count and pass: c never sees a packet.
    let a = object("a", "count_and_pass", i, "priority: 10");
    let b = object("b", "count_and_drop", i, "priority: 20");
    let c = object("c", "count_and_pass", i, "priority: 30");
    let Some(_) = reconcile_or_skip(
        &mut r,
        &[a.clone(), b.clone(), c.clone()],
        "dispatcher order",
    ) else {
        return;
    };
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(dirs.len(), 1, "one dispatcher directory: {dirs:?}");
    let order = |objs: &[&str]| -> Vec<u32> {
        objs.iter()
            .map(|o| {
                prog_id(&fs.root().join(o).join(format!(
                    "progs/{}",
                    if *o == "b" {
                        "count_and_drop"
                    } else {
                        "count_and_pass"
                    }
                )))
            })
            .collect()
    };
    assert_eq!(
        slot_ids(&dirs[0]),
        order(&["a", "b", "c"]),
        "slots in priority order"
    );
    for o in ["a", "b", "c"] {
        let links = fs.root().join(o).join(format!(
            "links/{}",
            if o == "b" {
                "count_and_drop"
            } else {
                "count_and_pass"
            }
        ));
        assert_eq!(tree(&links), [format!("xdp-{i}")], "{o}");
    }
    // libxdp's layout: each slot's program and link, and the dispatcher attached through netlink
    // (the interface's XDP program is the dispatcher, with no bpf_link of bpfpin's on it).
    assert_eq!(tree(&dirs[0]), slot_pins(3), "libxdp's pins of three slots");
    assert_eq!(xdp_prog_id(i), dir_id(&dirs[0]), "the dispatcher is on {i}");
    assert!(!ping(&veth, 3), "b drops every packet");
    let (ha, hb) = (hits(&fs, "a"), hits(&fs, "b"));
    assert!(ha >= 3 && hb >= 3, "a saw {ha}, b saw {hb}");
    assert_eq!(hits(&fs, "c"), 0, "c runs after b, which drops");

    // Reorder: b last. c now sees the packets; b still drops them, after c.
    let b_last = object("b", "count_and_drop", i, "priority: 40");
    let report =
        reconcile_or_skip(&mut r, &[a.clone(), b_last, c.clone()], "reorder").expect("ran above");
    let b_report = report
        .objects
        .iter()
        .find(|o| o.name == "b")
        .expect("b reported");
    assert_eq!(b_report.action, Action::Updated);
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(dirs.len(), 1, "the old dispatcher is gone: {dirs:?}");
    assert_eq!(slot_ids(&dirs[0]), order(&["a", "c", "b"]));
    assert!(!ping(&veth, 3));
    assert!(hits(&fs, "c") >= 3, "c runs before b now");

    // proceedOn: Drop lets the chain go on after b's drop; c (last) passes, so pings get through.
    let b_proceeds = object(
        "b",
        "count_and_drop",
        i,
        "priority: 20, proceedOn: [Pass, Drop]",
    );
    reconcile_or_skip(&mut r, &[a.clone(), b_proceeds, c.clone()], "proceedOn").expect("ran above");
    let (ha, hc) = (hits(&fs, "a"), hits(&fs, "c"));
    assert!(
        ping(&veth, 3),
        "b's drop is not the verdict: c runs after it and passes"
    );
    assert!(hits(&fs, "a") >= ha + 3 && hits(&fs, "c") >= hc + 3);

    // Removing b: its slot goes in the same pass (one rebuild), with its pins; a and c keep
    // running, pings pass.
    let b_id = slot_ids(&dispatchers(&fs, &veth)[0])[1];
    let report = r.reconcile(&[a.clone(), c.clone()], &none());
    ok(&report);
    assert!(!fs.root().join("b").exists());
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(tree(&dirs[0]), slot_pins(2), "b's prog<N>-* pins are gone");
    assert_eq!(slot_ids(&dirs[0]), order(&["a", "c"]));
    assert!(
        !ledger(&fs).iter().any(|e| e.contains(&format!("-{b_id}-"))),
        "b's program is no longer recorded as in a slot: {:?}",
        ledger(&fs)
    );
    let (ha, hc) = (hits(&fs, "a"), hits(&fs, "c"));
    assert!(ping(&veth, 3), "nothing drops any more");
    assert!(hits(&fs, "a") >= ha + 3 && hits(&fs, "c") >= hc + 3);

    // With every holder gone the dispatcher leaves the interface: a direct attach works again.
    ok(&r.reconcile(&[], &none()));
    assert_eq!(xdp_prog_id(i), 0, "nothing is attached to {i}");
    assert!(dispatchers(&fs, &veth).is_empty());
    assert!(ledger(&fs).is_empty(), "{:?}", ledger(&fs));
    let d = object("d", "count_and_pass", i, "");
    ok(&r.reconcile(&[d], &none()));
    assert!(ping(&veth, 2));
    assert!(hits(&fs, "d") >= 2, "the direct program runs");
}

#[test]
fn a_restart_adopts_the_xdp_dispatcher_without_a_rebuild() {
    let fs = Bpffs::new();
    let veth = veth(42);
    let i = veth.host.as_str();
    let objs = [
        object("first", "count_and_pass", i, "priority: 1"),
        object("second", "count_and_pass", i, "priority: 2"),
    ];
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let Some(_) = reconcile_or_skip(&mut r, &objs, "restart adoption") else {
        return;
    };
    let before = dispatchers(&fs, &veth);
    let slots = slot_ids(&before[0]);
    drop(r);
    let mut r = Reconciler::new(fs.path()).expect("a restarted agent");
    let report = r.reconcile(&objs, &none());
    ok(&report);
    assert!(
        report.objects.iter().all(|o| o.action == Action::Adopted),
        "{report:?}"
    );
    assert_eq!(dispatchers(&fs, &veth), before, "the same dispatcher");
    assert_eq!(
        slot_ids(&before[0]),
        slots,
        "the same programs in the same slots"
    );
    let (h1, h2) = (hits(&fs, "first"), hits(&fs, "second"));
    assert!(ping(&veth, 2));
    assert!(hits(&fs, "first") >= h1 + 2 && hits(&fs, "second") >= h2 + 2);
}

#[test]
fn the_eleventh_xdp_program_is_refused_naming_the_interface_and_the_holders() {
    let fs = Bpffs::new();
    let veth = veth(43);
    let i = veth.host.as_str();
    let mut objs: Vec<_> = (0..10)
        .map(|n| {
            object(
                &format!("p{n}"),
                "count_and_pass",
                i,
                &format!("priority: {n}"),
            )
        })
        .collect();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let Some(_) = reconcile_or_skip(&mut r, &objs, "eleven programs") else {
        return;
    };
    objs.push(object("p10", "count_and_pass", i, "priority: 10"));
    let report = r.reconcile(&objs, &none());
    let eleventh = report
        .objects
        .iter()
        .find(|o| o.name == "p10")
        .expect("p10 reported");
    let err = eleventh.error.as_ref().expect("the 11th fails");
    assert_eq!(err.reason.as_str(), "AttachFailed");
    assert!(
        err.message
            .contains(&format!("XDP on interface {i} already runs 10 programs"))
            && err.message.contains("program count_and_pass of object p0")
            && err.message.contains("program count_and_pass of object p9")
            && err.message.contains("program count_and_pass cannot join"),
        "{err}"
    );
    assert!(
        report
            .objects
            .iter()
            .filter(|o| o.name != "p10")
            .all(|o| o.error.is_none())
    );
    assert!(
        !fs.root().join("p10").exists(),
        "nothing of the 11th is pinned"
    );
    let h = hits(&fs, "p9");
    assert!(ping(&veth, 2), "the ten keep running");
    assert!(hits(&fs, "p9") >= h + 2);
}

#[test]
fn a_second_xdp_program_on_a_held_interface_fails_clearly_and_the_first_keeps_running() {
    let fs = Bpffs::new();
    let veth = veth(44);
    let i = veth.host.as_str();
    let first = object("first", "count_and_pass", i, "");
    let second = object("second", "count_and_pass", i, "priority: 5");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    ok(&r.reconcile(std::slice::from_ref(&first), &none()));
    let report = r.reconcile(&[first.clone(), second], &none());
    let by_name = |n: &str| {
        report
            .objects
            .iter()
            .find(|o| o.name == n)
            .expect("reported")
    };
    assert!(by_name("first").error.is_none());
    let err = by_name("second").error.as_ref().expect("the second fails");
    assert_eq!(err.reason.as_str(), "AttachFailed");
    let holder = "program count_and_pass of object first";
    eprintln!("the second program's error: {err}");
    if err.message.contains(REFUSED) {
        // This kernel refuses freplace: the error says so, names the interface and the holder.
        assert!(
            !require_freplace(),
            "BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1 but {err}"
        );
        assert!(
            err.message.contains(&format!("XDP on interface {i}"))
                && err
                    .message
                    .contains(&format!("interface {i} is held by {holder}")),
            "{err}"
        );
    } else {
        // freplace works, but the first program holds the interface directly.
        assert!(
            err.message.contains(&format!(
                "XDP on interface {i} is held by {holder}, attached directly"
            )),
            "{err}"
        );
    }
    assert!(
        !fs.root().join("second").exists(),
        "nothing of the second is pinned"
    );
    let h = hits(&fs, "first");
    assert!(ping(&veth, 3), "the first keeps running");
    assert!(hits(&fs, "first") >= h + 3);
}

/// Pings with `size` bytes of payload; whether every reply came back.
fn ping_size(veth: &Veth, count: u32, size: u32) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &veth.netns, "ping", "-q", "-c"])
        .arg(count.to_string())
        .args(["-s", &size.to_string(), "-i", "0.05", "-W", "1"])
        .arg(format!("10.201.{}.1", veth.n))
        .output()
        .expect("ping")
        .status
        .success()
}

#[test]
fn the_two_team_xdp_example_shares_one_interface() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/xdp-many");
    let fs = Bpffs::new();
    let veth = veth(45);
    let object = Path::new(env!("CARGO_TARGET_TMPDIR")).join("two_teams.bpf.o");
    compile(&dir.join("two_teams.bpf.c"), &object);
    let bytes = std::fs::read(&object).expect("object");
    // Embedded: hack/vm-test's VM has the test binary, not the repository.
    let text = include_str!("../../examples/xdp-many/two_teams.yaml").replace("eth0", &veth.host);
    let objects: Vec<bpfpin_agent::DesiredObject> = text
        .split("\n---\n")
        .map(|doc| {
            let v: serde_yaml::Value = serde_yaml::from_str(doc).expect("yaml");
            bpfpin_agent::DesiredObject {
                name: v["metadata"]["name"].as_str().expect("name").to_owned(),
                uid: None,
                generation: 1,
                spec: serde_yaml::from_value(v["spec"].clone()).expect("spec"),
                bytecode: Ok(bytes.clone()),
            }
        })
        .collect();
    assert_eq!(objects.len(), 2, "two objects on one interface");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let Some(_) = reconcile_or_skip(&mut r, &objects, "examples/xdp-many") else {
        return;
    };
    let sampled = |fs: &Bpffs| read_u64(&fs.root().join("sampler/maps/packets"));
    let dropped = |fs: &Bpffs| read_u64(&fs.root().join("firewall/maps/packets"));
    let s = sampled(&fs);
    assert!(ping(&veth, 3), "small pings pass both programs");
    assert!(sampled(&fs) >= s + 3);
    assert_eq!(dropped(&fs), 0);
    let s = sampled(&fs);
    assert!(!ping_size(&veth, 3, 1000), "the firewall drops large ICMP");
    assert!(dropped(&fs) >= 3, "the firewall dropped {}", dropped(&fs));
    assert!(
        sampled(&fs) >= s + 3,
        "the sampler runs first and sees them too"
    );
}

/// `xdp-loader` (Debian's xdp-tools), when installed.
fn xdp_loader() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("xdp-loader"))
        .find(|p| p.is_file())
}

#[test]
fn xdp_loader_status_lists_bpfpins_programs() {
    let fs = Bpffs::new();
    let veth = veth(46);
    let i = veth.host.as_str();
    let objs = [
        object("lead", "count_and_pass", i, "priority: 10"),
        object("tail", "count_and_drop", i, "priority: 20"),
    ];
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let Some(_) = reconcile_or_skip(&mut r, &objs, "xdp-loader status") else {
        return;
    };
    let Some(loader) = xdp_loader() else {
        assert!(
            !require_freplace(),
            "BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1 but xdp-loader is not installed"
        );
        eprintln!("SKIPPED xdp-loader status: xdp-loader (xdp-tools) is not installed");
        return;
    };
    // libxdp looks for dispatchers under $LIBXDP_BPFFS/xdp: the agent's bpffs.
    let out = Command::new(&loader)
        .args(["status", i])
        .env("LIBXDP_BPFFS", fs.path())
        .output()
        .expect("xdp-loader");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("xdp-loader status {i}:\n{text}");
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let main = lines
        .iter()
        .position(|l| l.starts_with(i) && l.contains("xdp_dispatcher"))
        .unwrap_or_else(|| panic!("no dispatcher line for {i}: {text}"));
    let slot = |n: usize| lines.get(main + n).copied().unwrap_or_default();
    let fields = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert!(
        fields(slot(1)).starts_with(&["=>".into(), "10".into(), "count_and_pass".into()]),
        "slot 0: {}",
        slot(1)
    );
    assert!(
        fields(slot(2)).starts_with(&["=>".into(), "20".into(), "count_and_drop".into()]),
        "slot 1: {}",
        slot(2)
    );
    assert!(slot(1).contains("XDP_PASS"), "chain actions: {}", slot(1));
}

/// `BPF_PROG_TEST_RUN`'s part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// Runs an XDP program `repeat` times on `packet` in the kernel: (verdict, mean ns per run).
fn test_run(fd: &aya::programs::ProgramFd, packet: &[u8], repeat: u32) -> (u32, u32) {
    use std::os::fd::{AsFd, AsRawFd};
    let mut attr = TestRun {
        prog_fd: fd.as_fd().as_raw_fd() as u32,
        data_in: packet.as_ptr() as u64,
        data_size_in: packet.len() as u32,
        repeat,
        ..TestRun::default()
    };
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    // SAFETY: attr is a valid, fully initialised prefix of union bpf_attr that outlives the call;
    // data_in points at `packet`, alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRun,
            std::mem::size_of::<TestRun>(),
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    (attr.retval, attr.duration)
}

/// The dispatcher's per-packet cost against the same program attached directly, measured with
/// `BPF_PROG_TEST_RUN` on a 64-byte packet in one run (a benchmark: it prints the ratio and
/// asserts only that both paths ran the program every time).
#[test]
fn xdp_dispatcher_cost_per_packet_against_direct_attach() {
    let fs = Bpffs::new();
    let (v1, v2) = (veth(47), veth(48));
    let objs = [
        object("direct", "count_and_pass", &v1.host, ""),
        object("dispatched", "count_and_pass", &v2.host, "priority: 10"),
    ];
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let Some(_) = reconcile_or_skip(&mut r, &objs, "dispatcher cost") else {
        return;
    };
    let direct =
        aya::programs::ProgramInfo::from_pin(fs.root().join("direct/progs/count_and_pass"))
            .expect("direct program")
            .fd()
            .expect("fd");
    let dispatcher_id: u32 = dispatchers(&fs, &v2)[0]
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit('-').next())
        .and_then(|id| id.parse().ok())
        .expect("dispatch-<ifindex>-<id>");
    let dispatcher = aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == dispatcher_id)
        .expect("the dispatcher is loaded")
        .fd()
        .expect("fd");
    let mut packet = vec![0u8; 64];
    packet[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let (rounds, repeat) = (7, 100_000);
    let (before_d, before_s) = (hits(&fs, "direct"), hits(&fs, "dispatched"));
    let (mut d, mut s) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (verdict, ns) = test_run(&direct, &packet, repeat);
        assert_eq!(verdict, 2, "XDP_PASS");
        d.push(ns);
        let (verdict, ns) = test_run(&dispatcher, &packet, repeat);
        assert_eq!(verdict, 2, "XDP_PASS through the dispatcher");
        s.push(ns);
    }
    let runs = u64::from(rounds * repeat);
    assert!(
        hits(&fs, "direct") >= before_d + runs,
        "the direct program ran every time"
    );
    assert!(
        hits(&fs, "dispatched") >= before_s + runs,
        "the dispatcher ran its slot every time"
    );
    d.sort_unstable();
    s.sort_unstable();
    let (dm, sm) = (d[d.len() / 2], s[s.len() / 2]);
    eprintln!(
        "BPF_PROG_TEST_RUN, 64-byte packet, median of {rounds} x {repeat} runs: direct {dm} ns, through the dispatcher (1 program) {sm} ns, ratio {:.2}",
        f64::from(sm) / f64::from(dm.max(1))
    );
}

/// `ping -f` from the peer: (transmitted, received).
fn flood(netns: &str, target: &str, count: u32) -> (u64, u64) {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ping", "-q", "-f", "-W", "2", "-c"])
        .arg(count.to_string())
        .arg(target)
        .output()
        .expect("ping -f");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let num = |word: &str| -> u64 {
        line.split(',')
            .find(|part| part.contains(word))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{word} in {line}"))
    };
    (num("transmitted"), num("received"))
}

#[test]
fn xdp_rebuilds_under_a_ping_flood_lose_nothing_for_the_untouched_program() {
    let fs = Bpffs::new();
    let veth = veth(49);
    let i = veth.host.clone();
    let keeper = object("keeper", "count_and_pass", &i, "priority: 10");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let Some(_) = reconcile_or_skip(&mut r, std::slice::from_ref(&keeper), "ping flood") else {
        return;
    };
    let before = hits(&fs, "keeper");
    let (netns, target) = (veth.netns.clone(), format!("10.201.{}.1", veth.n));
    let pinger = std::thread::spawn(move || flood(&netns, &target, 6000));
    // Add, reorder (before and after keeper), remove another program while the flood runs: six
    // dispatcher swaps and one removal.
    let mut rebuilds = 0;
    while !pinger.is_finished() && rebuilds < 30 {
        for extra in ["priority: 20", "priority: 5", "priority: 30"] {
            let other = object("other", "count_and_pass", &i, extra);
            ok(&r.reconcile(&[keeper.clone(), other], &none()));
            rebuilds += 1;
        }
        ok(&r.reconcile(std::slice::from_ref(&keeper), &none()));
    }
    let (sent, received) = pinger.join().expect("ping thread");
    eprintln!("ping -f: {sent} sent, {received} received across {rebuilds} dispatcher rebuilds");
    assert!(rebuilds >= 3, "the flood ended before a rebuild");
    assert_eq!(sent, received, "no packet lost during the rebuilds");
    let seen = hits(&fs, "keeper") - before;
    assert!(
        seen >= sent,
        "keeper saw {seen} packets of {sent}: it ran for every packet through every rebuild"
    );
}

/// An object running `count_tc` on tcx ingress of `interface` with `extra` in `attach.tc`.
fn tc_object(name: &str, interface: &str, extra: &str) -> bpfpin_agent::DesiredObject {
    let spec = format!(
        "bytecode: {{path: xdp_chain.bpf.o}}\nprograms:\n- name: count_tc\n  attach: {{tc: {{interfaces: [{interface}], direction: Ingress, {extra}}}}}\n"
    );
    desired(name, &spec, "xdp_chain")
}

/// The tcx ingress programs of `interface`, in the kernel's order.
fn tcx_order(interface: &str) -> Vec<u32> {
    let (_, programs) =
        aya::programs::SchedClassifier::query_tcx(interface, aya::programs::TcAttachType::Ingress)
            .expect("query tcx");
    programs.iter().map(|p| p.id()).collect()
}

#[test]
fn tcx_priorities_place_programs_before_and_after_each_other() {
    let fs = Bpffs::new();
    let veth = veth(50);
    let i = veth.host.as_str();
    let id = |o: &str| prog_id(&fs.root().join(o).join("progs/count_tc"));
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    // Created in the order 30, 10, 20, and one without priority (order: Last) in between.
    let mut objs = vec![
        tc_object("t30", i, "priority: 30"),
        tc_object("t10", i, "priority: 10"),
    ];
    ok(&r.reconcile(&objs, &none()));
    objs.push(tc_object("plain", i, "order: Last"));
    ok(&r.reconcile(&objs, &none()));
    objs.push(tc_object("t20", i, "priority: 20"));
    ok(&r.reconcile(&objs, &none()));
    let order = tcx_order(i);
    let pos = |o: &str| {
        order
            .iter()
            .position(|p| *p == id(o))
            .unwrap_or_else(|| panic!("{o} not attached: {order:?}"))
    };
    assert!(
        pos("t10") < pos("t20") && pos("t20") < pos("t30"),
        "{order:?}"
    );
    assert_eq!(
        tree(&fs.root().join("t20/links/count_tc")),
        [format!("prio0020-tc-ingress-{i}")],
        "the link's name holds its priority"
    );
    // Every program ran on each packet (count_tc returns TCX_NEXT).
    let before: Vec<u64> = ["t10", "t20", "t30", "plain"]
        .iter()
        .map(|o| hits(&fs, o))
        .collect();
    assert!(ping(&veth, 2));
    for (o, b) in ["t10", "t20", "t30", "plain"].iter().zip(before) {
        assert!(hits(&fs, o) >= b + 2, "{o} ran");
    }

    // A new priority moves the program: t30 first now.
    objs[0] = tc_object("t30", i, "priority: 5");
    let report = r.reconcile(&objs, &none());
    ok(&report);
    let order = tcx_order(i);
    let pos = |o: &str| order.iter().position(|p| *p == id(o)).expect("attached");
    assert!(
        pos("t30") < pos("t10") && pos("t10") < pos("t20"),
        "{order:?}"
    );
    assert_eq!(order.len(), 4, "the old link of t30 is gone: {order:?}");
}

/// Runs `xdp-loader` with libxdp's state in the test's bpffs; its output when it fails.
fn run_loader(loader: &Path, fs: &Bpffs, args: &[&str]) -> Result<String, String> {
    let out = Command::new(loader)
        .args(args)
        .env("LIBXDP_BPFFS", fs.path())
        .output()
        .expect("xdp-loader");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("xdp-loader {args:?}: {text}"))
    }
}

/// `xdp-loader load` of xdp_chain's `count_and_pass` in skb mode with a priority.
fn loader_load(
    loader: &Path,
    fs: &Bpffs,
    interface: &str,
    priority: u32,
) -> Result<String, String> {
    let object = bpf_object("xdp_chain");
    let prio = priority.to_string();
    run_loader(
        loader,
        fs,
        &[
            "load",
            "-m",
            "skb",
            "-P",
            &prio,
            "-n",
            "count_and_pass",
            interface,
            object.to_str().expect("a path"),
        ],
    )
}

/// What the program `id` has counted in its `hits` map (a program xdp-loader loaded, whose map
/// is pinned nowhere).
fn prog_hits(id: u32) -> u64 {
    let info = aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .unwrap_or_else(|| panic!("program {id} is not loaded"));
    for map_id in info.map_ids().expect("map ids").unwrap_or_default() {
        let data = aya::maps::MapData::from_id(map_id).expect("map");
        if data.info().expect("map info").name_as_str() == Some("hits") {
            let array: aya::maps::Array<_, u64> =
                aya::maps::Array::try_from(aya::maps::Map::from_map_data(data).expect("map"))
                    .expect("an array");
            return array.get(&0, 0).expect("hits[0]");
        }
    }
    panic!("program {id} has no hits map")
}

/// xdp-loader, or (outside the VM) None after saying why the test skips.
fn loader_or_skip(what: &str) -> Option<PathBuf> {
    let loader = xdp_loader();
    if loader.is_none() {
        assert!(
            !require_freplace(),
            "BPFPIN_REQUIRE_ALL_ATTACH_KINDS=1 but xdp-loader is not installed"
        );
        eprintln!("SKIPPED {what}: xdp-loader (xdp-tools) is not installed");
    }
    loader
}

/// (a) bpfpin first: `xdp-loader load` builds libxdp's dispatcher with bpfpin's program in it,
/// bpfpin's next rebuild keeps xdp-loader's program, a restart adopts, and `xdp-loader unload`
/// still works. Traffic proves each side runs at each step.
#[test]
fn xdp_loader_loads_beside_bpfpins_programs_and_both_keep_running() {
    let fs = Bpffs::new();
    let veth = veth(52);
    let i = veth.host.as_str();
    let lead = object("lead", "count_and_pass", i, "priority: 10");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let Some(_) = reconcile_or_skip(
        &mut r,
        std::slice::from_ref(&lead),
        "xdp-loader beside bpfpin",
    ) else {
        return;
    };
    let Some(loader) = loader_or_skip("xdp-loader beside bpfpin") else {
        return;
    };
    let lead_id = prog_id(&fs.root().join("lead/progs/count_and_pass"));
    let said = loader_load(&loader, &fs, i, 20);
    assert!(said.is_ok(), "{said:?}");
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(
        dirs.len(),
        1,
        "libxdp replaced bpfpin's dispatcher: {dirs:?}"
    );
    let ids = slot_ids(&dirs[0]);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(
        ids[0], lead_id,
        "bpfpin's program is in libxdp's dispatcher, first"
    );
    let theirs = ids[1];
    assert_eq!(
        xdp_prog_id(i),
        dir_id(&dirs[0]),
        "libxdp's dispatcher is on {i}"
    );
    let (hl, ht) = (hits(&fs, "lead"), prog_hits(theirs));
    assert!(ping(&veth, 3));
    assert!(
        hits(&fs, "lead") >= hl + 3,
        "bpfpin's program runs in libxdp's dispatcher"
    );
    assert!(prog_hits(theirs) >= ht + 3, "xdp-loader's program runs");

    // bpfpin rebuilds (a second object after both) and keeps xdp-loader's program in its place.
    let tail = object("tail", "count_and_pass", i, "priority: 30");
    ok(&r.reconcile(&[lead.clone(), tail.clone()], &none()));
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let tail_id = prog_id(&fs.root().join("tail/progs/count_and_pass"));
    assert_eq!(slot_ids(&dirs[0]), [lead_id, theirs, tail_id]);
    assert_eq!(
        tree(&dirs[0]),
        slot_pins(3),
        "libxdp's layout for all three"
    );
    let (hl, ht, htail) = (hits(&fs, "lead"), prog_hits(theirs), hits(&fs, "tail"));
    assert!(ping(&veth, 3));
    assert!(hits(&fs, "lead") >= hl + 3 && hits(&fs, "tail") >= htail + 3);
    assert!(
        prog_hits(theirs) >= ht + 3,
        "xdp-loader's program runs in bpfpin's dispatcher"
    );
    let status = run_loader(&loader, &fs, &["status", i]).expect("xdp-loader status");
    eprintln!("xdp-loader status {i}:\n{status}");
    assert_eq!(status.matches("count_and_pass").count(), 3, "{status}");

    // A restart adopts the dispatcher as it is.
    drop(r);
    let mut r = Reconciler::new(fs.path()).expect("a restarted agent");
    let report = r.reconcile(&[lead.clone(), tail.clone()], &none());
    ok(&report);
    assert!(
        report.objects.iter().all(|o| o.action == Action::Adopted),
        "{report:?}"
    );
    assert_eq!(dispatchers(&fs, &veth), dirs, "no rebuild");

    // xdp-loader can still take its program out; bpfpin's keep running.
    let said = run_loader(&loader, &fs, &["unload", i, "-i", &theirs.to_string()]);
    assert!(said.is_ok(), "{said:?}");
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(slot_ids(&dirs[0]), [lead_id, tail_id]);
    let (hl, htail) = (hits(&fs, "lead"), hits(&fs, "tail"));
    assert!(ping(&veth, 2));
    assert!(hits(&fs, "lead") >= hl + 2 && hits(&fs, "tail") >= htail + 2);
    // bpfpin's pass after libxdp's rebuild changes nothing.
    ok(&r.reconcile(&[lead.clone(), tail.clone()], &none()));
    assert_eq!(dispatchers(&fs, &veth), dirs, "no rebuild");

    ok(&r.reconcile(&[], &none()));
    assert_eq!(xdp_prog_id(i), 0, "nothing is left on {i}");
    assert!(dispatchers(&fs, &veth).is_empty());
}

/// (b) xdp-loader first: bpfpin's dispatcher keeps xdp-loader's program (from its `prog<N>-prog`
/// pin), through bpfpin's rebuilds, and `xdp-loader unload` of it later still works.
#[test]
fn a_program_xdp_loader_attached_first_keeps_running_beside_bpfpins() {
    let fs = Bpffs::new();
    let veth = veth(51);
    let i = veth.host.as_str();
    let Some(loader) = loader_or_skip("bpfpin beside xdp-loader") else {
        return;
    };
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    // Where the kernel refuses freplace libxdp cannot build its dispatcher either.
    if let Err(said) = loader_load(&loader, &fs, i, 50) {
        assert!(!require_freplace(), "{said}");
        eprintln!("SKIPPED bpfpin beside xdp-loader: {said}");
        return;
    }
    let late = object("late", "count_and_pass", i, "priority: 10");
    let Some(_) = reconcile_or_skip(
        &mut r,
        std::slice::from_ref(&late),
        "bpfpin beside xdp-loader",
    ) else {
        return;
    };
    let late_id = prog_id(&fs.root().join("late/progs/count_and_pass"));
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let ids = slot_ids(&dirs[0]);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], late_id, "priority 10 runs before xdp-loader's 50");
    let theirs = ids[1];
    let (hl, ht) = (hits(&fs, "late"), prog_hits(theirs));
    assert!(ping(&veth, 3));
    assert!(hits(&fs, "late") >= hl + 3, "bpfpin's program runs");
    assert!(
        prog_hits(theirs) >= ht + 3,
        "xdp-loader's program keeps running"
    );

    // A rebuild of bpfpin's (another object) keeps it.
    let more = object("more", "count_and_pass", i, "priority: 60");
    ok(&r.reconcile(&[late.clone(), more.clone()], &none()));
    let dirs = dispatchers(&fs, &veth);
    let more_id = prog_id(&fs.root().join("more/progs/count_and_pass"));
    assert_eq!(slot_ids(&dirs[0]), [late_id, theirs, more_id]);
    let ht = prog_hits(theirs);
    assert!(ping(&veth, 2));
    assert!(
        prog_hits(theirs) >= ht + 2,
        "xdp-loader's program runs after the rebuild"
    );

    // bpfpin removing one of its own keeps xdp-loader's program too.
    ok(&r.reconcile(std::slice::from_ref(&late), &none()));
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(slot_ids(&dirs[0]), [late_id, theirs]);
    assert_eq!(tree(&dirs[0]), slot_pins(2));

    let said = run_loader(&loader, &fs, &["unload", i, "-i", &theirs.to_string()]);
    assert!(said.is_ok(), "{said:?}");
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(
        slot_ids(&dirs[0]),
        [late_id],
        "xdp-loader took its program out"
    );
    let hl = hits(&fs, "late");
    assert!(ping(&veth, 2));
    assert!(
        hits(&fs, "late") >= hl + 2,
        "bpfpin's program keeps running"
    );
    ok(&r.reconcile(&[], &none()));
    assert_eq!(xdp_prog_id(i), 0, "nothing is left on {i}");
}

/// An update that fails after its program took the slot (its second interface does not exist)
/// is rolled back: the old program is back in its slot, in its place, within the same pass, and
/// nothing of the failed version stays in the dispatcher.
#[test]
fn a_failed_xdp_update_keeps_the_old_program_in_its_slot() {
    let fs = Bpffs::new();
    let veth = veth(53);
    let i = veth.host.as_str();
    let keep = object("keep", "count_and_pass", i, "priority: 10");
    let upd = object("upd", "count_and_pass", i, "priority: 20");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let Some(_) = reconcile_or_skip(&mut r, &[keep.clone(), upd.clone()], "failed update") else {
        return;
    };
    let keep_id = prog_id(&fs.root().join("keep/progs/count_and_pass"));
    let old_id = prog_id(&fs.root().join("upd/progs/count_and_pass"));
    let broken = object(
        "upd",
        "count_and_pass",
        &format!("{i}, nosuchxdp0"),
        "priority: 5",
    );
    let report = r.reconcile(&[keep.clone(), broken], &none());
    let failed = report
        .objects
        .iter()
        .find(|o| o.name == "upd")
        .expect("reported");
    let err = failed.error.as_ref().expect("the update fails");
    assert_eq!(err.reason.as_str(), "AttachFailed", "{err}");
    assert!(
        err.message.contains("nosuchxdp0: no such interface"),
        "{err}"
    );
    assert_eq!(
        prog_id(&fs.root().join("upd/progs/count_and_pass")),
        old_id,
        "the old version stays current"
    );
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(
        slot_ids(&dirs[0]),
        [keep_id, old_id],
        "the old program, in its old place"
    );
    assert_eq!(tree(&dirs[0]), slot_pins(2));
    let (hk, hu) = (hits(&fs, "keep"), hits(&fs, "upd"));
    assert!(ping(&veth, 3));
    assert!(hits(&fs, "keep") >= hk + 3 && hits(&fs, "upd") >= hu + 3);
    // The next good update takes the slot.
    let good = object("upd", "count_and_pass", i, "priority: 5");
    ok(&r.reconcile(&[keep.clone(), good], &none()));
    let new_id = prog_id(&fs.root().join("upd/progs/count_and_pass"));
    assert_ne!(new_id, old_id);
    assert_eq!(slot_ids(&dispatchers(&fs, &veth)[0]), [new_id, keep_id]);
}

/// A program of another type with `attach.xdp.priority` is not loaded as an extension of the
/// dispatcher: the error says its type is wrong for XDP (not that freplace failed), and nothing of
/// it is pinned.
#[test]
fn a_non_xdp_program_with_a_priority_is_refused_for_its_type() {
    let fs = Bpffs::new();
    let object = desired(
        "wrongtype",
        "bytecode: {path: counter.bpf.o}\nprograms:\n- name: count_getpid\n  attach: {xdp: {interfaces: [lo], priority: 20}}\n",
        "counter",
    );
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(std::slice::from_ref(&object), &none());
    let err = report.objects[0].error.as_ref().expect("it fails");
    assert_eq!(err.reason.as_str(), "AttachFailed");
    assert!(
        err.message
            .contains("program count_getpid has type TracePoint")
            && err.message.contains("needs an XDP program"),
        "{err}"
    );
    assert!(!fs.root().join("wrongtype").exists(), "nothing is pinned");
}

/// Rebuilds by hand the layout an earlier bpfpin left: the interface's dispatcher attached
/// through a bpf_link that the holder pins as `dispatcher-xdp-<interface>`, its slot link pinned
/// only in the holder's version directory, `prog<N>-prog` alone in the dispatcher's directory,
/// and no record of bpfpin's slots. Returns the dispatcher's id.
fn make_link_held_dispatcher(fs: &Bpffs, veth: &Veth, object: &str, priority: u32) -> u32 {
    use aya::programs::links::FdLink;
    use bpfpin_agent::pin::xdp_dispatcher::{DISPATCHER_OBJECT, Share, config_for, mask_of};
    let i = veth.host.as_str();
    let links = fs.root().join(object).join("links/count_and_pass");
    let prog = fs.root().join(object).join("progs/count_and_pass");
    let share = Share {
        priority,
        chain_mask: mask_of(&[]) | (1 << 2),
    };
    let mut ebpf = aya::EbpfLoader::new()
        .override_global("conf", &config_for(&[share]), true)
        .load(DISPATCHER_OBJECT)
        .expect("load the dispatcher object");
    let xdp: &mut aya::programs::Xdp = ebpf
        .program_mut("xdp_dispatcher")
        .expect("entry")
        .try_into()
        .expect("xdp");
    xdp.load().expect("load the dispatcher");
    let id = xdp.info().expect("info").id();
    // Off with bpfpin's netlink dispatcher, on with a link, as before.
    let off = Command::new("ip")
        .args(["link", "set", "dev", i, "xdpgeneric", "off"])
        .status()
        .expect("ip");
    assert!(off.success());
    let link_id = xdp
        .attach(i, aya::programs::XdpMode::Skb)
        .expect("attach through a bpf_link");
    let link = FdLink::try_from(xdp.take_link(link_id).expect("link")).expect("an fd link");
    link.pin(links.join(format!("dispatcher-xdp-{i}")))
        .expect("pin the XDP link");
    let mut ext = aya::programs::Extension::from_pin(&prog).expect("the slot program");
    let fd = xdp.fd().expect("fd").try_clone().expect("fd");
    let slot = ext.attach_to_program(&fd, "prog0").expect("slot 0");
    let slot = FdLink::from(ext.take_link(slot).expect("slot link"));
    std::fs::remove_file(links.join(format!("xdp-{i}"))).expect("old slot link pin");
    slot.pin(links.join(format!("xdp-{i}")))
        .expect("pin the slot link");
    for d in dispatchers(fs, veth) {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            std::fs::remove_file(e.path()).expect("unpin");
        }
        std::fs::remove_dir(&d).expect("rmdir");
    }
    for e in std::fs::read_dir(fs.path().join("xdp/bpfpin-slots"))
        .into_iter()
        .flatten()
        .flatten()
    {
        std::fs::remove_file(e.path()).expect("unpin");
    }
    let dir = fs.path().join(format!("xdp/dispatch-{}-{id}", ifindex(i)));
    std::fs::create_dir(&dir).expect("mkdir");
    ext.pin(dir.join("prog0-prog")).expect("pin prog0-prog");
    id
}

/// A dispatcher an earlier bpfpin attached through a bpf_link is adopted as it is (no rebuild),
/// rebuilt with link updates when a program joins or leaves (the kernel refuses to replace a link
/// through netlink, and detaching it first would drop packets), and leaves the interface with its
/// last holder.
#[test]
fn an_xdp_dispatcher_an_earlier_bpfpin_attached_by_link_is_adopted() {
    let fs = Bpffs::new();
    let veth = veth(54);
    let i = veth.host.as_str();
    let old = object("old", "count_and_pass", i, "priority: 10");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let Some(_) = reconcile_or_skip(&mut r, std::slice::from_ref(&old), "link-held dispatcher")
    else {
        return;
    };
    drop(r);
    let id = make_link_held_dispatcher(&fs, &veth, "old", 10);
    assert_eq!(xdp_prog_id(i), id);
    let h = hits(&fs, "old");
    assert!(ping(&veth, 2));
    assert!(hits(&fs, "old") >= h + 2, "the hand-made layout runs");

    let mut r = Reconciler::new(fs.path()).expect("a restarted agent");
    let report = r.reconcile(std::slice::from_ref(&old), &none());
    ok(&report);
    assert_eq!(report.objects[0].action, Action::Adopted);
    assert_eq!(xdp_prog_id(i), id, "adopted, not replaced");
    assert_eq!(dispatchers(&fs, &veth).len(), 1);

    // A program joins: one link update; the new holder pins the interface's link too.
    let new = object("new", "count_and_pass", i, "priority: 20");
    ok(&r.reconcile(&[old.clone(), new.clone()], &none()));
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(
        xdp_prog_id(i),
        dir_id(&dirs[0]),
        "the link now runs the new dispatcher"
    );
    let old_id = prog_id(&fs.root().join("old/progs/count_and_pass"));
    let new_id = prog_id(&fs.root().join("new/progs/count_and_pass"));
    assert_eq!(slot_ids(&dirs[0]), [old_id, new_id]);
    assert_eq!(
        tree(&dirs[0]),
        slot_pins(2),
        "libxdp's full layout from now on"
    );
    assert_eq!(
        tree(&fs.root().join("new/links/count_and_pass")),
        [format!("dispatcher-xdp-{i}"), format!("xdp-{i}")]
    );
    let (ho, hn) = (hits(&fs, "old"), hits(&fs, "new"));
    assert!(ping(&veth, 2));
    assert!(hits(&fs, "old") >= ho + 2 && hits(&fs, "new") >= hn + 2);

    // The first holder leaves: its slot goes in the same pass; the link stays with the second.
    ok(&r.reconcile(std::slice::from_ref(&new), &none()));
    let dirs = dispatchers(&fs, &veth);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert_eq!(slot_ids(&dirs[0]), [new_id]);
    assert_eq!(tree(&dirs[0]), slot_pins(1));
    let hn = hits(&fs, "new");
    assert!(ping(&veth, 2));
    assert!(hits(&fs, "new") >= hn + 2);

    // The last leaves: the link goes with its pins (the kernel frees it after an RCU grace
    // period), and a later pass removes the directory and the record.
    let mut passes = 0;
    loop {
        ok(&r.reconcile(&[], &none()));
        passes += 1;
        if xdp_prog_id(i) == 0 && dispatchers(&fs, &veth).is_empty() && ledger(&fs).is_empty() {
            break;
        }
        assert!(passes < 40, "the dispatcher is still on {i} or pinned");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
