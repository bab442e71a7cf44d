//! Pod-scoped attachment (`networkNamespaces`) against the real kernel: network namespaces
//! bind-mounted under a runtime-like directory (`ip netns add` puts them in /run/netns, as
//! containerd does), found by IP, entered, attached in, pinned, and unpinned when the pod goes.
//! Needs root; run inside `unshare --mount --net` with a private /run/netns (see the common brief).

mod common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bpfpin_agent::cluster::pods::{PodAttacher, PodEntry};
use bpfpin_agent::{DesiredObject, Reconciler};
use common::{Bpffs, Veth};

fn network_object() -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/network/network.bpf.c");
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let out = out_dir.join("network.bpf.o");
    common::compile(&src, &out);
    std::fs::read(out).expect("read object")
}

fn desired(name: &str, yaml: &str) -> DesiredObject {
    DesiredObject {
        name: name.to_owned(),
        uid: None,
        generation: 1,
        spec: common::spec(yaml),
        bytecode: Ok(network_object()),
    }
}

fn pod(name: &str, uid: &str, app: &str, ip: &str) -> (String, PodEntry) {
    (
        format!("web/{name}"),
        PodEntry {
            namespace: "web".into(),
            name: name.into(),
            uid: uid.into(),
            labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
            ip: Some(ip.parse().expect("ip")),
            ..Default::default()
        },
    )
}

/// The sum over CPUs of the per-CPU `packets` value at `key`.
fn packets(map: &Path, key: u32) -> u64 {
    let data = aya::maps::MapData::from_pin(map).expect("open packets");
    let map = aya::maps::Map::from_map_data(data).expect("map");
    let array: aya::maps::PerCpuArray<_, u64> = map.try_into().expect("per-CPU array");
    array.get(&key, 0).expect("read").iter().sum()
}

fn ping(ip: &str) {
    let out = Command::new("ping")
        .args(["-q", "-c", "3", "-i", "0.05", "-W", "1", ip])
        .output()
        .expect("ping");
    assert!(out.status.success(), "ping {ip}: {out:?}");
}

/// `ip -d link show` of the interface inside a named netns.
fn link_show(netns: &str, iface: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", netns, "-d", "link", "show", "dev", iface])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spec(iface: &str) -> String {
    format!(
        r#"
bytecode: {{path: network.bpf.o}}
programs:
- name: xdp_count
  attach:
    xdp:
      mode: Skb
      networkNamespaces: {{namespace: web, podSelector: {{matchLabels: {{app: web}}}}, interfaces: [{iface}]}}
- name: tc_count
  attach:
    tc:
      direction: Egress
      networkNamespaces: {{namespace: web, podSelector: {{matchLabels: {{app: web}}}}, interfaces: [{iface}]}}
"#
    )
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn xdp_and_tcx_attach_in_matching_pods_only_and_leave_with_the_pod() {
    let fs = Bpffs::new();
    // Two "pods": a network namespace each (under /run/netns, like the runtime's), with a veth
    // to this namespace. The matching pod's interface inside is bpfpin51p, the other's bpfpin52p.
    let web = Veth::new(51);
    let other = Veth::new(52);
    let netns_dir = PathBuf::from("/run/netns");
    let iface = "bpfpin51p";

    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let obj = desired("pod-xdp", &spec(iface));
    let report = reconciler.reconcile(std::slice::from_ref(&obj), &BTreeSet::new());
    assert!(
        report.objects[0].is_ready(),
        "pinned: {:?}",
        report.objects[0].error
    );
    // Nothing attached on the host: the interfaces are inside pods.
    assert!(
        report.objects[0]
            .pinned
            .as_ref()
            .expect("pinned")
            .links
            .is_empty()
    );

    let root = fs.root();
    let mut attacher = PodAttacher::new(&root, &netns_dir);
    let pods = BTreeMap::from([
        pod("web-1", "0a1b-uid-web", "web", "10.201.51.2"),
        pod("other-1", "0a1b-uid-other", "other", "10.201.52.2"),
    ]);
    let step = attacher.sync(std::slice::from_ref(&obj), &report, &pods);
    let state = &step.objects["pod-xdp"];
    assert_eq!(
        (state.matched, state.attached, state.failures.len()),
        (1, 1, 0),
        "{state:?}"
    );
    let obj_dir = root.join("pod-xdp");
    let xdp_link = obj_dir.join("links/xdp_count/xdp-pod-0a1b-uid-web-bpfpin51p");
    let tc_link = obj_dir.join("links/tc_count/tc-egress-pod-0a1b-uid-web-bpfpin51p");
    assert!(
        xdp_link.exists(),
        "{:?}",
        files(&obj_dir.join("links/xdp_count"))
    );
    assert!(tc_link.exists());
    assert_eq!(
        files(&obj_dir.join("links/xdp_count")),
        BTreeSet::from(["xdp-pod-0a1b-uid-web-bpfpin51p".to_owned()]),
        "the other pod has no link"
    );
    assert_eq!(step.links["pod-xdp"].len(), 2, "{:?}", step.links);
    assert!(
        link_show(&web.netns, iface).contains("xdpgeneric"),
        "{}",
        link_show(&web.netns, iface)
    );
    assert!(
        !link_show(&other.netns, "bpfpin52p").contains("xdp"),
        "{}",
        link_show(&other.netns, "bpfpin52p")
    );

    // The programs run inside the pod: pings into it count at XDP, its replies at tcx egress.
    let map = obj_dir.join("maps/packets");
    let (xdp0, tc0) = (packets(&map, 0), packets(&map, 1));
    ping("10.201.51.2");
    assert!(packets(&map, 0) >= xdp0 + 3, "xdp counted");
    assert!(packets(&map, 1) >= tc0 + 3, "tc egress counted");
    // Pings into the other pod are not counted. The web pod's XDP counts every packet it gets,
    // and a neighbour probe (ARP) may reach it meanwhile: the three echo requests would add 3.
    let xdp1 = packets(&map, 0);
    ping("10.201.52.2");
    assert!(
        packets(&map, 0) < xdp1 + 3,
        "the other pod runs nothing: {xdp1} -> {}",
        packets(&map, 0)
    );

    // A steady pass changes nothing (same link, same program on the interface).
    let id = aya::programs::links::PinnedLink::from_pin(&xdp_link).is_ok();
    assert!(id);
    let step = attacher.sync(std::slice::from_ref(&obj), &report, &pods);
    assert_eq!(step.objects["pod-xdp"].attached, 1);

    // A restarted agent (a new attacher) adopts the pins instead of attaching again.
    let mut restarted = PodAttacher::new(&root, &netns_dir);
    let step = restarted.sync(std::slice::from_ref(&obj), &report, &pods);
    assert_eq!(
        (
            step.objects["pod-xdp"].attached,
            step.objects["pod-xdp"].failures.len()
        ),
        (1, 0),
        "{:?}",
        step.objects["pod-xdp"]
    );

    // The pod goes: its links are unpinned and the program leaves its interface.
    let gone = BTreeMap::from([pod("other-1", "0a1b-uid-other", "other", "10.201.52.2")]);
    let step = restarted.sync(std::slice::from_ref(&obj), &report, &gone);
    assert_eq!(
        (
            step.objects["pod-xdp"].matched,
            step.objects["pod-xdp"].attached
        ),
        (0, 0)
    );
    assert!(!xdp_link.exists() && !tc_link.exists());
    for _ in 0..50 {
        if !link_show(&web.netns, iface).contains("xdp") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !link_show(&web.netns, iface).contains("xdp"),
        "detached: {}",
        link_show(&web.netns, iface)
    );
}

#[test]
fn a_missing_interface_or_namespace_names_the_pod_and_interface() {
    let fs = Bpffs::new();
    let _web = Veth::new(53);
    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let obj = desired("pod-bad", &spec("nope0"));
    let report = reconciler.reconcile(std::slice::from_ref(&obj), &BTreeSet::new());
    assert!(report.objects[0].is_ready());
    let mut attacher = PodAttacher::new(&fs.root(), Path::new("/run/netns"));
    let pods = BTreeMap::from([
        pod("web-1", "uid-1", "web", "10.201.53.2"),
        // No namespace holds this IP.
        pod("web-2", "uid-2", "web", "10.201.99.9"),
    ]);
    let step = attacher.sync(std::slice::from_ref(&obj), &report, &pods);
    let state = &step.objects["pod-bad"];
    assert_eq!((state.matched, state.attached), (2, 0), "{state:?}");
    assert!(step.retry);
    let f = state
        .failures
        .iter()
        .find(|f| f.pod == "web/web-1" && f.program == "xdp_count")
        .expect("web-1's failure");
    assert_eq!(
        (f.interface.as_str(), f.reason.as_str()),
        ("nope0", "AttachFailed")
    );
    assert!(
        f.message.contains("attaching XDP on interface nope0"),
        "{}",
        f.message
    );
    let f = state
        .failures
        .iter()
        .find(|f| f.pod == "web/web-2")
        .expect("web-2's failure");
    assert_eq!(
        f.message,
        "no network namespace in /run/netns has the pod's IP 10.201.99.9"
    );
    // Nothing was pinned for them.
    assert!(files(&fs.root().join("pod-bad/links/xdp_count")).is_empty());
}

#[test]
fn a_pod_whose_network_namespace_was_re_created_is_attached_again() {
    use bpfpin_agent::pin::netns::is_attached;
    let fs = Bpffs::new();
    let web = Veth::new(54);
    let iface = "bpfpin54p";
    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let obj = desired("pod-re", &spec(iface));
    let report = reconciler.reconcile(std::slice::from_ref(&obj), &BTreeSet::new());
    assert!(report.objects[0].is_ready());
    let root = fs.root();
    let netns_dir = Path::new("/run/netns");
    let pods = BTreeMap::from([pod("web-1", "uid-re", "web", "10.201.54.2")]);
    let mut attacher = PodAttacher::new(&root, netns_dir);
    let step = attacher.sync(std::slice::from_ref(&obj), &report, &pods);
    assert_eq!(
        step.objects["pod-re"].attached, 1,
        "{:?}",
        step.objects["pod-re"]
    );
    let xdp_link = root.join("pod-re/links/xdp_count/xdp-pod-uid-re-bpfpin54p");
    let tc_link = root.join("pod-re/links/tc_count/tc-egress-pod-uid-re-bpfpin54p");
    assert!(is_attached(&xdp_link) && is_attached(&tc_link));

    // The sandbox is re-created: a new namespace and interface, the same pod and IP. The kernel
    // detached the links with the old interface; their pins stay until the agent looks.
    drop(web);
    let web = Veth::new(54);
    let mut detached = false;
    for _ in 0..50 {
        detached = !is_attached(&xdp_link) && !is_attached(&tc_link);
        if detached {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(detached, "the old links report interface 0");
    assert!(xdp_link.exists());

    // A restarted agent (which knows no namespace inode) sees it from the links themselves.
    let mut restarted = PodAttacher::new(&root, netns_dir);
    let step = restarted.sync(std::slice::from_ref(&obj), &report, &pods);
    assert_eq!(
        (
            step.objects["pod-re"].attached,
            step.objects["pod-re"].failures.len()
        ),
        (1, 0),
        "{:?}",
        step.objects["pod-re"]
    );
    assert!(is_attached(&xdp_link) && is_attached(&tc_link));
    assert!(
        link_show(&web.netns, iface).contains("xdpgeneric"),
        "{}",
        link_show(&web.netns, iface)
    );
    let map = root.join("pod-re/maps/packets");
    let (xdp0, tc0) = (packets(&map, 0), packets(&map, 1));
    ping("10.201.54.2");
    assert!(
        packets(&map, 0) >= xdp0 + 3,
        "xdp counts in the new namespace"
    );
    assert!(
        packets(&map, 1) >= tc0 + 3,
        "tc egress counts in the new namespace"
    );
}

#[test]
fn interface_patterns_follow_the_interfaces_of_the_pod() {
    let fs = Bpffs::new();
    let web = Veth::new(55);
    let spec = r#"
bytecode: {path: network.bpf.o}
programs:
- name: xdp_count
  attach:
    xdp:
      mode: Skb
      networkNamespaces: {namespace: web, podSelector: {matchLabels: {app: web}}, interfaces: ["/^bpfpin55[a-z]$/"]}
"#;
    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let obj = desired("pod-pattern", spec);
    let report = reconciler.reconcile(std::slice::from_ref(&obj), &BTreeSet::new());
    assert!(
        report.objects[0].is_ready(),
        "{:?}",
        report.objects[0].error
    );
    let root = fs.root();
    let dir = root.join("pod-pattern/links/xdp_count");
    let pods = BTreeMap::from([pod("web-1", "uid-pat", "web", "10.201.55.2")]);
    let mut attacher = PodAttacher::new(&root, Path::new("/run/netns"));
    let step = attacher.sync(std::slice::from_ref(&obj), &report, &pods);
    assert_eq!(step.objects["pod-pattern"].attached, 1);
    assert!(step.rescan, "a pattern asks for another look");
    // lo does not match; the veth end does.
    assert_eq!(
        files(&dir),
        BTreeSet::from(["xdp-pod-uid-pat-bpfpin55p".to_owned()])
    );
    let map = root.join("pod-pattern/maps/packets");
    let xdp0 = packets(&map, 0);
    ping("10.201.55.2");
    assert!(packets(&map, 0) >= xdp0 + 3, "xdp counted");

    // An interface that appears in the pod later and matches is attached at the next step...
    let ip = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(["-n", &web.netns])
            .args(args)
            .status()
            .expect("ip")
            .success();
        assert!(ok, "ip -n {} {args:?}", web.netns);
    };
    // (A veth pair inside the pod: this kernel has no dummy driver.)
    ip(&[
        "link",
        "add",
        "bpfpin55d",
        "type",
        "veth",
        "peer",
        "name",
        "other55",
    ]);
    ip(&["link", "set", "bpfpin55d", "up"]);
    let step = attacher.sync(std::slice::from_ref(&obj), &report, &pods);
    assert_eq!(step.objects["pod-pattern"].failures.len(), 0);
    assert_eq!(
        files(&dir),
        BTreeSet::from([
            "xdp-pod-uid-pat-bpfpin55d".to_owned(),
            "xdp-pod-uid-pat-bpfpin55p".to_owned()
        ])
    );
    assert!(
        link_show(&web.netns, "bpfpin55d").contains("xdpgeneric"),
        "{}",
        link_show(&web.netns, "bpfpin55d")
    );
    assert!(!link_show(&web.netns, "other55").contains("xdp"));

    // ...and one that goes loses its pin (deleting one end of the pair deletes both).
    ip(&["link", "del", "bpfpin55d"]);
    let step = attacher.sync(std::slice::from_ref(&obj), &report, &pods);
    assert_eq!(step.objects["pod-pattern"].attached, 1);
    assert_eq!(
        files(&dir),
        BTreeSet::from(["xdp-pod-uid-pat-bpfpin55p".to_owned()])
    );
}
