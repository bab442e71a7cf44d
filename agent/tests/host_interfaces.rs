//! Host interface discovery on `xdp` and `tc`: `/regex/` entries follow the node's interfaces
//! (real veths appear and go), `primaryNodeInterface` is the interface of the default route (in
//! a private network namespace with its own routes), and the rtnetlink listener wakes a pass
//! when a link appears or goes, and (for `primaryNodeInterface`) when a default route is added or
//! deleted.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bpfpin_agent::link_events::{Follow, LinkEvents};
use bpfpin_agent::{Action, Reconciler};
use common::*;

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn link_id(path: &Path) -> u32 {
    use aya::programs::links::{FdLink, PinnedLink};
    let link = PinnedLink::from_pin(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    FdLink::from(link).info().expect("link info").id()
}

fn link_ifindex(path: &Path) -> Option<u32> {
    use aya::programs::links::{FdLink, PinnedLink};
    let link = PinnedLink::from_pin(path).ok()?;
    FdLink::from(link).info().ok()?.ifindex()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {}: {out:?}", args.join(" "));
}

const XDP_PATTERN: &str = r#"
bytecode: {path: counter.bpf.o}
programs:
- name: count_packets
  attach: {xdp: {interfaces: ['/^bpfpin6[1-3]$/'], mode: Skb}}
"#;

const TC_PATTERN: &str = r#"
bytecode: {path: kinds.bpf.o}
programs:
- name: tc_count
  attach: {tc: {interfaces: ['/^bpfpin6[1-3]$/'], direction: Ingress}}
"#;

const NO_MATCH: &str = r#"
bytecode: {path: counter.bpf.o}
programs:
- name: count_packets
  attach: {xdp: {interfaces: ['/^nosuchif[0-9]+$/'], mode: Skb}}
"#;

#[test]
fn a_pattern_attaches_on_interfaces_that_appear_and_unpins_those_that_go() {
    let fs = Bpffs::new();
    let root = fs.root();
    let (a, b) = (Veth::new(61), Veth::new(62));
    let objects = || {
        vec![
            desired("xdp", XDP_PATTERN, "counter"),
            desired("tc", TC_PATTERN, "kinds"),
            desired("none", NO_MATCH, "counter"),
            desired("counter", COUNTER, "counter"),
        ]
    };
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&objects(), &none());
    for o in &report.objects {
        assert!(o.error.is_none(), "{}: {:?}", o.name, o.error);
    }
    let xdp_links = root.join("xdp/links/count_packets");
    let tc_links = root.join("tc/links/tc_count");
    assert_eq!(tree(&xdp_links), ["xdp-bpfpin61", "xdp-bpfpin62"]);
    assert_eq!(
        tree(&tc_links),
        ["tc-ingress-bpfpin61", "tc-ingress-bpfpin62"]
    );
    // A pattern that matches nothing attaches nothing, and is no error.
    assert!(root.join("none/progs/count_packets").exists());
    assert!(tree(&root.join("none/links")).is_empty());
    let xdp_prog = prog_id(&root.join("xdp/progs/count_packets"));
    let tc_prog = prog_id(&root.join("tc/progs/tc_count"));
    let counter_prog = prog_id(&root.join("counter/progs/count_getpid"));
    let on_a = link_id(&xdp_links.join("xdp-bpfpin61"));
    let tc_on_a = link_id(&tc_links.join("tc-ingress-bpfpin61"));
    a.ping_host(3);
    let packets = read_u64(&root.join("xdp/maps/packets"));
    assert!(packets >= 3, "XDP counted {packets} packets on bpfpin61");

    // A third interface: attached at the next pass; nothing else moves.
    let c = Veth::new(63);
    let report = r.reconcile(&objects(), &none());
    let action = |name: &str| {
        let o = report.objects.iter().find(|o| o.name == name).expect(name);
        assert!(o.error.is_none(), "{name}: {:?}", o.error);
        o.action
    };
    assert_eq!(action("xdp"), Action::Updated);
    assert_eq!(action("tc"), Action::Updated);
    assert_eq!(action("none"), Action::Unchanged);
    assert_eq!(action("counter"), Action::Unchanged);
    assert_eq!(
        tree(&xdp_links),
        ["xdp-bpfpin61", "xdp-bpfpin62", "xdp-bpfpin63"]
    );
    assert_eq!(
        tree(&tc_links),
        [
            "tc-ingress-bpfpin61",
            "tc-ingress-bpfpin62",
            "tc-ingress-bpfpin63"
        ]
    );
    assert_eq!(prog_id(&root.join("xdp/progs/count_packets")), xdp_prog);
    assert_eq!(prog_id(&root.join("tc/progs/tc_count")), tc_prog);
    assert_eq!(
        prog_id(&root.join("counter/progs/count_getpid")),
        counter_prog
    );
    assert_eq!(link_id(&xdp_links.join("xdp-bpfpin61")), on_a, "same link");
    assert_eq!(link_id(&tc_links.join("tc-ingress-bpfpin61")), tc_on_a);
    assert!(
        read_u64(&root.join("xdp/maps/packets")) >= packets,
        "the map kept its contents"
    );
    c.ping_host(4);
    let after_c = read_u64(&root.join("xdp/maps/packets"));
    assert!(after_c >= packets + 4, "XDP counts on the new interface");

    // One goes: its pins go at the next pass, the others stay as they are.
    drop(b);
    let report = r.reconcile(&objects(), &none());
    for o in &report.objects {
        assert!(o.error.is_none(), "{}: {:?}", o.name, o.error);
    }
    assert_eq!(tree(&xdp_links), ["xdp-bpfpin61", "xdp-bpfpin63"]);
    assert_eq!(
        tree(&tc_links),
        ["tc-ingress-bpfpin61", "tc-ingress-bpfpin63"]
    );
    let versions = tree(&root.join("_versions/xdp"));
    assert!(
        !versions.iter().any(|p| p.ends_with("xdp-bpfpin62")),
        "no version keeps the gone interface's link: {versions:?}"
    );
    assert_eq!(link_id(&xdp_links.join("xdp-bpfpin61")), on_a);
    assert_eq!(prog_id(&root.join("xdp/progs/count_packets")), xdp_prog);
    a.ping_host(2);
    assert!(read_u64(&root.join("xdp/maps/packets")) >= after_c + 2);

    // Nothing changed: the next pass adopts as it is.
    let report = r.reconcile(&objects(), &none());
    assert!(report.objects.iter().all(|o| o.action == Action::Unchanged));

    // A restarted agent adopts too.
    drop(r);
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&objects(), &none());
    assert!(
        report.objects.iter().all(|o| o.action == Action::Adopted),
        "{:?}",
        report.objects.iter().map(|o| o.action).collect::<Vec<_>>()
    );

    // An interface that goes and comes back under the same name: the kernel detached the link
    // (interface 0); the pass attaches again.
    drop(c);
    let c = Veth::new(63);
    assert_eq!(link_ifindex(&xdp_links.join("xdp-bpfpin63")), Some(0));
    let report = r.reconcile(&objects(), &none());
    assert!(report.objects.iter().all(|o| o.error.is_none()));
    assert_ne!(link_ifindex(&xdp_links.join("xdp-bpfpin63")), Some(0));
    assert_ne!(link_ifindex(&tc_links.join("tc-ingress-bpfpin63")), Some(0));
    let before = read_u64(&root.join("xdp/maps/packets"));
    c.ping_host(3);
    assert!(read_u64(&root.join("xdp/maps/packets")) >= before + 3);
    drop(a);
}

/// Runs `f` on a new thread in a network namespace of its own (lo up).
fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) changes only this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        ip(&["link", "set", "lo", "up"]);
        f()
    })
    .join()
    .expect("the netns thread")
}

/// A veth pair `name` <-> `name`p in this thread's namespace, both up, `addr` on `name` (the
/// kernel here has no dummy driver).
fn veth(name: &str, addr: &str) {
    let peer = format!("{name}p");
    ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
    ip(&["link", "set", &peer, "up"]);
    ip(&["link", "set", name, "up"]);
    ip(&["addr", "add", addr, "dev", name]);
}

#[test]
fn primary_node_interface_is_the_default_routes_and_moves_with_it() {
    let fs = Bpffs::new();
    let path = fs.path().to_path_buf();
    let root = fs.root();
    in_private_netns(move || {
        let spec = r#"
bytecode: {path: counter.bpf.o}
programs:
- name: count_packets
  attach: {xdp: {primaryNodeInterface: true, mode: Skb}}
"#;
        let mut r = Reconciler::new(&path).expect("reconciler");
        // No default route: a clear error naming the program and why.
        veth("pni0", "10.202.0.1/24");
        let report = r.reconcile(&[desired("primary", spec, "counter")], &none());
        let err = report.objects[0].error.as_ref().expect("no default route");
        assert_eq!(err.reason.as_str(), "AttachFailed");
        assert!(
            err.message.contains("count_packets") && err.message.contains("no default route"),
            "{err}"
        );
        assert!(!root.join("primary").exists());

        // Two default routes: the lower metric wins.
        veth("pni1", "10.202.1.1/24");
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.202.1.254",
            "metric",
            "500",
        ]);
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.202.0.254",
            "metric",
            "100",
        ]);
        let report = r.reconcile(&[desired("primary", spec, "counter")], &none());
        assert!(
            report.objects[0].error.is_none(),
            "{:?}",
            report.objects[0].error
        );
        let links = root.join("primary/links/count_packets");
        assert_eq!(tree(&links), ["xdp-pni0"]);
        let prog = prog_id(&root.join("primary/progs/count_packets"));

        // The route moves: so does the link.
        ip(&["route", "del", "default", "via", "10.202.0.254"]);
        let report = r.reconcile(&[desired("primary", spec, "counter")], &none());
        assert_eq!(
            report.objects[0].action,
            Action::Updated,
            "{:?}",
            report.objects[0].error
        );
        assert_eq!(tree(&links), ["xdp-pni1"]);
        assert_eq!(prog_id(&root.join("primary/progs/count_packets")), prog);

        // Only IPv6 has a default route: its interface.
        ip(&["route", "del", "default"]);
        ip(&["-6", "addr", "add", "fd02::1/64", "dev", "pni0", "nodad"]);
        ip(&[
            "-6", "route", "add", "default", "via", "fd02::fe", "dev", "pni0",
        ]);
        let report = r.reconcile(&[desired("primary", spec, "counter")], &none());
        assert!(
            report.objects[0].error.is_none(),
            "{:?}",
            report.objects[0].error
        );
        assert_eq!(tree(&links), ["xdp-pni0"]);
    });
}

#[test]
fn the_link_listener_wakes_when_a_veth_appears_and_goes() {
    require_root();
    // In a namespace of its own: the other tests of this file make veths on the host meanwhile.
    in_private_netns(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let events = LinkEvents::start(Follow::Links, move || {
            let _ = tx.send(Instant::now());
        })
        .expect("rtnetlink socket");
        // Nothing happens: no wake-up (the listener does not poll).
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        let made = Instant::now();
        veth("lev0", "10.203.0.1/24");
        let woke = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a wake-up for the new veth");
        eprintln!(
            "link added -> listener called back in {} µs",
            woke.saturating_duration_since(made).as_micros()
        );
        while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
        // A state change of a known link is no new interface: no wake-up.
        ip(&["link", "set", "lev0", "down"]);
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        // Patterns follow links only: a default route is no event for them.
        ip(&["link", "set", "lev0", "up"]);
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        ip(&["route", "add", "default", "via", "10.203.0.254"]);
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a default route woke a listener that follows links only"
        );
        ip(&["link", "del", "lev0"]);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a wake-up for the deleted veth");
        // Stopped: no more calls.
        drop(events);
        while rx.try_recv().is_ok() {}
        veth("lev1", "10.203.1.1/24");
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    });
}

/// Waits up to `limit` for a call of the listener; how long after `since` it came.
fn called_back(rx: &std::sync::mpsc::Receiver<Instant>, since: Instant, what: &str) -> Duration {
    let woke = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("no call back for {what}"));
    let took = woke.saturating_duration_since(since);
    eprintln!("{what} -> listener called back in {} µs", took.as_micros());
    // The same change may come as more than one message: take them all.
    while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
    took
}

#[test]
fn the_route_listener_wakes_for_default_routes_only() {
    require_root();
    in_private_netns(|| {
        veth("rev0", "10.205.0.1/24");
        veth("rev1", "10.205.1.1/24");
        ip(&["-6", "addr", "add", "fd05::1/64", "dev", "rev0", "nodad"]);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut events = LinkEvents::start(Follow::LinksAndRoutes, move || {
            let _ = tx.send(Instant::now());
        })
        .expect("rtnetlink socket");
        assert_eq!(events.follow(), Follow::LinksAndRoutes);
        // Nothing happens: no call.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        let quiet = |what: &str| {
            assert!(
                rx.recv_timeout(Duration::from_millis(300)).is_err(),
                "{what} called back"
            );
        };
        // Routes that are not default routes: no call.
        ip(&["route", "add", "10.60.0.0/16", "via", "10.205.1.254"]);
        quiet("a prefix route via a gateway");
        ip(&["route", "add", "10.61.0.0/16", "dev", "rev0"]);
        quiet("a prefix route on a link");
        ip(&[
            "-6",
            "route",
            "add",
            "fd06::/64",
            "via",
            "fd05::fe",
            "dev",
            "rev0",
        ]);
        quiet("an IPv6 prefix route");
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.205.1.254",
            "table",
            "100",
        ]);
        quiet("a default route of another table");
        ip(&["addr", "add", "10.205.2.1/24", "dev", "rev1"]);
        quiet("an address (its prefix and local routes)");

        let mut took = Vec::new();
        let t = Instant::now();
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.205.0.254",
            "metric",
            "100",
        ]);
        took.push(called_back(&rx, t, "ip route add default"));
        // Replaced with another metric: the kernel adds the new one (a replace matches on the
        // metric too) ...
        let t = Instant::now();
        ip(&[
            "route",
            "replace",
            "default",
            "via",
            "10.205.1.254",
            "metric",
            "50",
        ]);
        took.push(called_back(
            &rx,
            t,
            "ip route replace default ... metric 50",
        ));
        // ... and one with the same metric replaced in place is a new route too.
        let t = Instant::now();
        ip(&[
            "route",
            "replace",
            "default",
            "via",
            "10.205.0.254",
            "metric",
            "50",
        ]);
        took.push(called_back(
            &rx,
            t,
            "ip route replace default (same metric, other gateway)",
        ));
        let t = Instant::now();
        ip(&[
            "route",
            "del",
            "default",
            "via",
            "10.205.0.254",
            "metric",
            "50",
        ]);
        took.push(called_back(&rx, t, "ip route del default"));
        let t = Instant::now();
        ip(&[
            "-6", "route", "add", "default", "via", "fd05::fe", "dev", "rev0",
        ]);
        took.push(called_back(&rx, t, "ip -6 route add default"));
        let t = Instant::now();
        ip(&[
            "-6", "route", "del", "default", "via", "fd05::fe", "dev", "rev0",
        ]);
        took.push(called_back(&rx, t, "ip -6 route del default"));
        // The kernel drops IPv4 routes without a message when their link is set down: the
        // link's state change calls back instead.
        let t = Instant::now();
        ip(&["link", "set", "rev0", "down"]);
        took.push(called_back(
            &rx,
            t,
            "ip link set down (its default route flushed)",
        ));
        let out = Command::new("ip")
            .args(["route", "show", "default"])
            .output()
            .expect("ip");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("10.205.0.254"),
            "the default route on rev0 is gone: {out:?}"
        );
        let t = Instant::now();
        ip(&["link", "set", "rev0", "up"]);
        took.push(called_back(&rx, t, "ip link set up"));
        // Nor a message when the last IPv4 address of its interface goes: the address's
        // deletion calls back instead (each one: which is the last is not tracked).
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.205.2.254",
            "metric",
            "70",
        ]);
        called_back(&rx, Instant::now(), "ip route add default via 10.205.2.254");
        ip(&["addr", "del", "10.205.1.1/24", "dev", "rev1"]);
        called_back(&rx, Instant::now(), "ip addr del (not the last)");
        let t = Instant::now();
        ip(&["addr", "del", "10.205.2.1/24", "dev", "rev1"]);
        took.push(called_back(
            &rx,
            t,
            "ip addr del of the last address (its default route flushed)",
        ));
        let out = Command::new("ip")
            .args(["route", "show", "default"])
            .output()
            .expect("ip");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("10.205.2.254"),
            "the default route via 10.205.2.254 is gone: {out:?}"
        );
        eprintln!(
            "route listener: {} calls back, slowest {} µs",
            took.len(),
            took.iter().max().map_or(0, Duration::as_micros)
        );

        // Following links only again: a default route is no event; a new link still is.
        events
            .set_follow(Follow::Links)
            .expect("drop the route groups");
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.205.0.254",
            "metric",
            "10",
        ]);
        quiet("a default route, after the route groups were left");
        ip(&["link", "set", "rev1", "down"]);
        quiet("a link set down, links only");
        let t = Instant::now();
        veth("rev2", "10.205.3.1/24");
        called_back(&rx, t, "ip link add, links only");
        // And back: the same socket joins the route groups again.
        events
            .set_follow(Follow::LinksAndRoutes)
            .expect("join the route groups");
        let t = Instant::now();
        ip(&[
            "route",
            "del",
            "default",
            "via",
            "10.205.0.254",
            "metric",
            "10",
        ]);
        called_back(&rx, t, "ip route del default, routes followed again");
        drop(events);
        while rx.try_recv().is_ok() {}
        ip(&["route", "add", "default", "via", "10.205.3.254"]);
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "stopped"
        );
    });
}

/// The README's example (`# example: host-ifaces` in "Host interface discovery").
fn readme_example() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "# example: host-ifaces")
        .skip(1)
        .take_while(|l| *l != "# end: host-ifaces")
        .collect();
    assert!(!block.is_empty(), "the README has the host-ifaces example");
    block.join("\n")
}

#[test]
fn the_readme_example_attaches_on_matching_and_primary_interfaces() {
    let fs = Bpffs::new();
    let path = fs.path().to_path_buf();
    let root = fs.root();
    let object: serde_yaml::Value = serde_yaml::from_str(&readme_example()).expect("YAML");
    let spec = serde_yaml::to_string(&object["spec"]).expect("spec");
    let elf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf/network.bpf.o");
    compile(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/network/network.bpf.c"),
        &elf,
    );
    let bytes = std::fs::read(&elf).expect("network.bpf.o");
    in_private_netns(move || {
        veth("eth7", "10.204.0.1/24");
        veth("eth8", "10.204.1.1/24");
        ip(&["route", "add", "default", "via", "10.204.1.254"]);
        let obj = bpfpin_agent::DesiredObject {
            name: "host-ifaces".into(),
            uid: None,
            generation: 1,
            spec: common::spec(&spec),
            bytecode: Ok(bytes),
        };
        assert_eq!(obj.spec.validate("host-ifaces"), Ok(()));
        let mut r = Reconciler::new(&path).expect("reconciler");
        let report = r.reconcile(&[obj], &none());
        assert!(
            report.objects[0].error.is_none(),
            "{:?}",
            report.objects[0].error
        );
        // The pattern takes eth7 and eth8, not their peers eth7p and eth8p; the primary
        // interface is eth8, the default route's.
        assert_eq!(
            tree(&root.join("host-ifaces/links")),
            [
                "tc_count/tc-egress-eth8",
                "xdp_count/xdp-eth7",
                "xdp_count/xdp-eth8"
            ]
        );
    });
}

/// Entries under `<bpffs>/xdp` (dispatcher directories) and `<bpffs>/xdp/bpfpin-slots` (the slot
/// record) that name interface index `ifindex`.
fn dispatcher_state(bpffs: &Path, ifindex: u32) -> Vec<String> {
    let dirs = [bpffs.join("xdp"), bpffs.join("xdp/bpfpin-slots")];
    let mut out: Vec<String> = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix("dispatch-")
                .unwrap_or(n)
                .split('-')
                .next()
                .is_some_and(|i| i == ifindex.to_string())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_gone_interface_leaves_no_dispatcher_state() {
    let fs = Bpffs::new();
    let root = fs.root();
    let (a, b) = (Veth::new(65), Veth::new(66));
    let spec = "bytecode: {path: xdp_chain.bpf.o}\nprograms:\n- name: count_and_pass\n  attach: {xdp: {interfaces: ['/^bpfpin6[56]$/'], mode: Skb, priority: 10}}\n";
    let objects = || vec![desired("disp", spec, "xdp_chain")];
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&objects(), &none());
    if let Some(e) = &report.objects[0].error {
        // As xdp_dispatcher.rs: a kernel that refuses freplace cannot share an interface.
        assert!(
            e.message.contains("refuses freplace")
                && std::env::var("BPFPIN_REQUIRE_ALL_ATTACH_KINDS").as_deref() != Ok("1"),
            "{e}"
        );
        eprintln!("skipped: {e}");
        return;
    }
    let links = root.join("disp/links/count_and_pass");
    assert_eq!(tree(&links), ["xdp-bpfpin65", "xdp-bpfpin66"]);
    let index = |name: &str| -> u32 {
        std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
            .expect("ifindex")
            .trim()
            .parse()
            .expect("a number")
    };
    let (ia, ib) = (index(&a.host), index(&b.host));
    let state_a = dispatcher_state(fs.path(), ia);
    assert_eq!(
        state_a.len(),
        2,
        "a dispatcher and a slot record: {state_a:?}"
    );
    assert_eq!(dispatcher_state(fs.path(), ib).len(), 2);
    let on_a = link_id(&links.join("xdp-bpfpin65"));

    drop(b);
    let report = r.reconcile(&objects(), &none());
    assert!(
        report.objects[0].error.is_none(),
        "{:?}",
        report.objects[0].error
    );
    assert_eq!(tree(&links), ["xdp-bpfpin65"]);
    assert_eq!(
        dispatcher_state(fs.path(), ib),
        Vec::<String>::new(),
        "the gone interface's dispatcher pins and slot record are gone"
    );
    assert_eq!(
        dispatcher_state(fs.path(), ia),
        state_a,
        "the other interface's are as they were"
    );
    assert_eq!(link_id(&links.join("xdp-bpfpin65")), on_a);
    let before = read_u64(&root.join("disp/maps/hits"));
    a.ping_host(3);
    assert!(read_u64(&root.join("disp/maps/hits")) >= before + 3);
}

/// Waits up to `limit` for `cond`; how long it took.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn local_watch_attaches_on_a_veth_that_appears_and_unpins_one_that_goes() {
    use std::process::Stdio;
    let fs = Bpffs::new();
    let root = fs.root();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(bpf_object("counter"), dir.path().join("counter.bpf.o")).expect("copy");
    std::fs::write(
        dir.path().join("follow.yaml"),
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {name: follow}\nspec:\n  bytecode: {path: counter.bpf.o}\n  programs:\n  - name: count_packets\n    attach: {xdp: {interfaces: ['/^bpfpin67$/'], mode: Skb}}\n",
    )
    .expect("write");
    let _ = Command::new("ip")
        .args(["link", "del", "bpfpin67"])
        .output();
    let child = Command::new(env!("CARGO_BIN_EXE_bpfpin-agent"))
        .args(["local", "--manifests"])
        .arg(dir.path())
        .arg("--bytecode-dir")
        .arg(dir.path())
        .arg("--bpffs")
        .arg(fs.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    wait_for("follow to be pinned", Duration::from_secs(20), || {
        root.join("follow/progs/count_packets").exists()
    });
    let link = root.join("follow/links/count_packets/xdp-bpfpin67");
    assert!(!link.exists());
    // Nothing but the link event wakes the watch: the object failed nothing, so no retry is
    // due, and the manifests do not change. The limit is below the first retry (5 s).
    let made = Instant::now();
    let veth = Veth::new(67);
    wait_for("the new veth's link", Duration::from_secs(4), || {
        link.exists()
    });
    eprintln!(
        "local watch: ip link add (Veth::new) -> link pinned in {} ms",
        made.elapsed().as_millis()
    );
    let deleted = Instant::now();
    drop(veth);
    wait_for("the gone veth's link to go", Duration::from_secs(4), || {
        !link.exists()
    });
    eprintln!(
        "local watch: ip link del -> link unpinned in {} ms",
        deleted.elapsed().as_millis()
    );
    assert!(root.join("follow/progs/count_packets").exists());
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("listening to the kernel's link events"),
        "{log}"
    );
}

#[test]
fn local_watch_moves_the_primary_interfaces_link_with_the_default_route() {
    use std::process::Stdio;
    require_root();
    let fs = Bpffs::new();
    let bpffs = fs.path().to_path_buf();
    let root = fs.root();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(bpf_object("counter"), dir.path().join("counter.bpf.o")).expect("copy");
    // First an object with a pattern only (it matches nothing): the listener follows links only;
    // the primaryNodeInterface object, added next, makes the same socket join the route groups.
    std::fs::write(
        dir.path().join("pattern.yaml"),
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {name: pattern}\nspec:\n  bytecode: {path: counter.bpf.o}\n  programs:\n  - name: count_packets\n    attach: {xdp: {interfaces: ['/^nosuchif[0-9]+$/'], mode: Skb}}\n",
    )
    .expect("write");
    let primary_yaml = dir.path().join("primary.yaml");
    let manifests = dir.path().to_path_buf();
    // The agent runs in the test's private namespace (a child takes its thread's), with its own
    // default routes; the bpffs is the host's mount.
    let log = in_private_netns(move || {
        veth("prt0", "10.206.0.1/24");
        veth("prt1", "10.206.1.1/24");
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.206.0.254",
            "metric",
            "100",
        ]);
        let child = Command::new(env!("CARGO_BIN_EXE_bpfpin-agent"))
            .args(["local", "--manifests"])
            .arg(&manifests)
            .arg("--bytecode-dir")
            .arg(&manifests)
            .arg("--bpffs")
            .arg(&bpffs)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        wait_for("pattern to be pinned", Duration::from_secs(20), || {
            root.join("pattern/progs/count_packets").exists()
        });
        std::fs::write(
            &primary_yaml,
            "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {name: primary}\nspec:\n  bytecode: {path: counter.bpf.o}\n  programs:\n  - name: count_packets\n    attach: {xdp: {primaryNodeInterface: true, mode: Skb}}\n",
        )
        .expect("write");
        let links = root.join("primary/links/count_packets");
        wait_for(
            "primary to be pinned on prt0",
            Duration::from_secs(20),
            || tree(&links) == ["xdp-prt0"],
        );
        let prog = prog_id(&root.join("primary/progs/count_packets"));
        // Let the agent settle (its first pass done, the listener running): the move below is
        // then woken by the route event alone. No interface changes, the manifests do not, and
        // no retry is due (nothing failed); the limit is below the first retry (5 s) anyway.
        std::thread::sleep(Duration::from_millis(500));
        let moved = Instant::now();
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.206.1.254",
            "metric",
            "50",
        ]);
        wait_for("the link to move to prt1", Duration::from_secs(4), || {
            tree(&links) == ["xdp-prt1"]
        });
        eprintln!(
            "local watch: ip route add default (lower metric, other veth) -> link on prt1 in {} ms",
            moved.elapsed().as_millis()
        );
        let back = Instant::now();
        ip(&[
            "route",
            "del",
            "default",
            "via",
            "10.206.1.254",
            "metric",
            "50",
        ]);
        wait_for(
            "the link to move back to prt0",
            Duration::from_secs(4),
            || tree(&links) == ["xdp-prt0"],
        );
        eprintln!(
            "local watch: ip route del default -> link back on prt0 in {} ms",
            back.elapsed().as_millis()
        );
        assert_eq!(
            prog_id(&root.join("primary/progs/count_packets")),
            prog,
            "the program is kept"
        );
        // The object goes: the pattern alone keeps the listener, on links only.
        std::fs::remove_file(&primary_yaml).expect("rm primary.yaml");
        wait_for("primary to go", Duration::from_secs(10), || {
            !root.join("primary").exists()
        });
        // The pass ends (and the listener leaves the route groups) after the unpin.
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().expect("wait");
        String::from_utf8_lossy(&out.stderr).into_owned()
    });
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("the agent logs {what:?}: {log}"))
    };
    let links_only = at("listening to the kernel's link events");
    let first = log[links_only..].lines().next().unwrap_or_default();
    assert!(
        first.contains("(host interface patterns)") && !first.contains("route"),
        "a pattern alone follows links only: {log}"
    );
    let joined = at("listening to default route events too");
    let left = at("stopped listening to route events");
    assert!(links_only < joined && joined < left, "{log}");
    assert!(
        !log.contains("stopped listening to link events"),
        "the pattern object keeps the listener: {log}"
    );
}
