//! Pod-scoped cgroup attachment (`pods` on the cgroup hooks) against the real kernel: a fake
//! kubelet tree (`<cgroup root>/kubepods/besteffort/pod<uid>`, the cgroupfs driver's layout) in a
//! private cgroup2 mount, processes put into the pods' cgroups, and the programs' exact counts.
//! Needs root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use bpfpin_agent::cluster::pods::{PodAttacher, PodEntry};
use bpfpin_agent::pin::pod_cgroup;
use bpfpin_agent::{DesiredObject, Reconciler};
use common::Bpffs;

/// `hits[]` indexes of the test programs.
const CGROUP_SKB: u32 = 7; // kinds.bpf.c
const CONNECT4: u32 = 2; // attach_more.bpf.c
const SOCK_CREATE: u32 = 12; // attach_more.bpf.c

const WEB: &str = "0a1b2c3d-1111-4222-8333-000000000001";
const OTHER: &str = "0a1b2c3d-1111-4222-8333-000000000002";

use common::cgroup::KubeletTree as Tree;

/// Runs `sh -c <script>` as a process of `cgroup`.
fn run_in(cgroup: &Path, script: &str) {
    let sh = format!("echo $$ > {}/cgroup.procs && {script}", cgroup.display());
    let out = Command::new("sh").args(["-c", &sh]).output().expect("sh");
    assert!(
        out.status.success(),
        "{script} in {}: {out:?}",
        cgroup.display()
    );
}

/// Three echo requests to the loopback: three packets out of the ping's socket.
fn ping_in(cgroup: &Path) {
    run_in(cgroup, "exec ping -4 -q -c 3 -i 0.05 127.0.0.1 >/dev/null");
}

/// Two sockets made, one of them connected (UDP: no packet sent).
fn sockets_in(cgroup: &Path) {
    run_in(
        cgroup,
        &format!(
            "exec {} -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect((\"127.0.0.1\", 9)); socket.socket(socket.AF_INET, socket.SOCK_STREAM)'",
            common::cgroup::python3()
        ),
    );
}

fn hits(fs: &Bpffs, object: &str, kind: u32) -> u64 {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(fs.root().join(object).join("maps/hits")).expect("hits map");
    let array: Array<_, u64> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
    array.get(&kind, 0).expect("read")
}

fn pod(name: &str, uid: &str, app: &str, ip: Option<&str>) -> (String, PodEntry) {
    (
        format!("web/{name}"),
        PodEntry {
            namespace: "web".into(),
            name: name.into(),
            uid: uid.into(),
            labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
            ip: ip.map(|ip| ip.parse().expect("ip")),
            ..Default::default()
        },
    )
}

/// The README's example: cgroup_skb egress on every `app: web` pod of namespace `web`.
const SKB_SPEC: &str = r#"
bytecode: {path: kinds.bpf.o}
programs:
- name: cgroup_skb_count
  attach:
    cgroupSkb:
      direction: Egress
      pods: {namespace: web, podSelector: {matchLabels: {app: web}}}
"#;

/// Hooks whose programs are opened from their pins with the section's attach type
/// (sock_create, connect4).
const SOCK_SPEC: &str = r#"
bytecode: {path: attach_more.bpf.o}
programs:
- name: sock_create_count
  attach:
    cgroupSock:
      pods: {namespace: web, podSelector: {matchLabels: {app: web}}}
- name: connect4_count
  attach:
    cgroupSockAddr:
      pods: {namespace: web, podSelector: {matchLabels: {app: web}}}
"#;

fn desired() -> Vec<DesiredObject> {
    vec![
        common::desired("pod-skb", SKB_SPEC, "kinds"),
        common::desired("pod-sock", SOCK_SPEC, "attach_more"),
    ]
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

/// Waits (up to 1 s) until `f` holds: a link whose last pin goes is released by the kernel
/// shortly after.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..50 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

#[test]
fn cgroup_hooks_attach_to_matching_pods_cgroups_and_follow_them() {
    let fs = Bpffs::new();
    let tree = Tree::new("podcg-follow");
    let web = tree.pod(WEB);
    let other = tree.pod(OTHER);

    let objs = desired();
    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let report = reconciler.reconcile(&objs, &BTreeSet::new());
    for o in &report.objects {
        assert!(o.is_ready(), "{}: {:?}", o.name, o.error);
        // Nothing on the node: the cgroups are the pods'.
        assert!(o.pinned.as_ref().expect("pinned").links.is_empty());
    }

    let root = fs.root();
    let mut attacher = PodAttacher::new(&root, Path::new("/run/netns")).with_cgroup_dir(&tree.root);
    let pods = BTreeMap::from([
        pod("web-1", WEB, "web", Some("10.1.0.2")),
        pod("other-1", OTHER, "other", Some("10.1.0.3")),
    ]);
    let step = attacher.sync(&objs, &report, &pods);
    for name in ["pod-skb", "pod-sock"] {
        let s = &step.objects[name];
        assert_eq!(
            (s.matched, s.attached, s.failures.len()),
            (1, 1, 0),
            "{name}: {s:?}"
        );
    }
    let skb_link = root.join(format!(
        "pod-skb/links/cgroup_skb_count/cgroupskb-egress-pod-{WEB}"
    ));
    let sock_link = root.join(format!(
        "pod-sock/links/sock_create_count/cgroupsock-pod-{WEB}"
    ));
    assert_eq!(
        files(&root.join("pod-skb/links/cgroup_skb_count")),
        BTreeSet::from([format!("cgroupskb-egress-pod-{WEB}")]),
        "one link, for the matching pod only"
    );
    assert!(sock_link.exists());
    assert!(
        root.join(format!(
            "pod-sock/links/connect4_count/cgroupsockaddr-pod-{WEB}"
        ))
        .exists()
    );
    assert_eq!(
        step.links["pod-skb"],
        vec![format!(
            "{}/pod-skb/links/cgroup_skb_count/cgroupskb-egress-pod-{WEB}",
            root.display()
        )]
    );

    // The programs run for the pod's processes, exactly: three echo requests, two sockets.
    sockets_in(&web);
    assert_eq!(hits(&fs, "pod-sock", SOCK_CREATE), 2);
    assert_eq!(hits(&fs, "pod-sock", CONNECT4), 1);
    ping_in(&web);
    assert_eq!(hits(&fs, "pod-skb", CGROUP_SKB), 3);
    // (ping makes sockets too, and connects a UDP probe socket to pick its source address.)
    let sockets = hits(&fs, "pod-sock", SOCK_CREATE);
    let connects = hits(&fs, "pod-sock", CONNECT4);
    // The other pod's processes (and the test's own) are not counted.
    ping_in(&other);
    sockets_in(&other);
    assert_eq!(hits(&fs, "pod-skb", CGROUP_SKB), 3);
    assert_eq!(hits(&fs, "pod-sock", SOCK_CREATE), sockets);
    assert_eq!(hits(&fs, "pod-sock", CONNECT4), connects);

    // A steady pass and a restarted agent keep the same links.
    let id = |p: &Path| {
        aya::programs::links::FdLink::from(
            aya::programs::links::PinnedLink::from_pin(p).expect("pinned link"),
        )
        .info()
        .expect("link info")
        .id()
    };
    let before = id(&skb_link);
    let step = attacher.sync(&objs, &report, &pods);
    assert_eq!(step.objects["pod-skb"].attached, 1);
    let mut restarted =
        PodAttacher::new(&root, Path::new("/run/netns")).with_cgroup_dir(&tree.root);
    let step = restarted.sync(&objs, &report, &pods);
    assert_eq!(
        (
            step.objects["pod-skb"].attached,
            step.objects["pod-skb"].failures.len()
        ),
        (1, 0)
    );
    assert_eq!(id(&skb_link), before, "adopted, not attached again");

    // The pod's cgroup is re-created (same pod, new cgroup id): the link that points at the old
    // one is found by its cgroup id and attached again, by the restarted agent too.
    let web = tree.pod(WEB);
    let step = restarted.sync(&objs, &report, &pods);
    assert_eq!(
        step.objects["pod-skb"].attached, 1,
        "{:?}",
        step.objects["pod-skb"]
    );
    assert_ne!(id(&skb_link), before, "a new link");
    ping_in(&web);
    assert_eq!(hits(&fs, "pod-skb", CGROUP_SKB), 6);

    // The pod goes: its links are unpinned and its processes are no longer counted.
    let gone = BTreeMap::from([pod("other-1", OTHER, "other", Some("10.1.0.3"))]);
    let step = restarted.sync(&objs, &report, &gone);
    assert_eq!(
        (
            step.objects["pod-skb"].matched,
            step.objects["pod-skb"].attached
        ),
        (0, 0)
    );
    assert!(!skb_link.exists() && !sock_link.exists());
    // (The kernel releases an unpinned link shortly after: a ping may still count meanwhile.)
    assert!(
        eventually(|| {
            let h = hits(&fs, "pod-skb", CGROUP_SKB);
            ping_in(&web);
            hits(&fs, "pod-skb", CGROUP_SKB) == h
        }),
        "detached: {}",
        hits(&fs, "pod-skb", CGROUP_SKB)
    );
}

#[test]
fn a_pod_without_a_cgroup_waits_or_fails_naming_the_pod() {
    let fs = Bpffs::new();
    let tree = Tree::new("podcg-missing");
    let objs = vec![common::desired("pod-skb", SKB_SPEC, "kinds")];
    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let report = reconciler.reconcile(&objs, &BTreeSet::new());
    assert!(report.objects[0].is_ready());
    let mut attacher =
        PodAttacher::new(&fs.root(), Path::new("/run/netns")).with_cgroup_dir(&tree.root);
    let pods = BTreeMap::from([
        // Running (it has an IP), yet no cgroup of its UID: a failure.
        pod("web-1", WEB, "web", Some("10.1.0.2")),
        // Being made (no IP yet): waiting.
        pod("web-2", OTHER, "web", None),
    ]);
    let step = attacher.sync(&objs, &report, &pods);
    let s = &step.objects["pod-skb"];
    assert_eq!((s.matched, s.attached, s.waiting), (1, 0, 1), "{s:?}");
    assert!(step.retry);
    assert_eq!(s.failures.len(), 1);
    let f = &s.failures[0];
    assert_eq!(
        (
            f.pod.as_str(),
            f.program.as_str(),
            f.interface.as_str(),
            f.reason.as_str()
        ),
        ("web/web-1", "cgroup_skb_count", "", "AttachFailed")
    );
    assert_eq!(
        f.message,
        format!("no cgroup of pod UID {WEB} under {}", tree.root.display())
    );
    assert!(files(&fs.root().join("pod-skb/links/cgroup_skb_count")).is_empty());

    // Its cgroup appears (the kubelet made it): the next step attaches.
    tree.pod(WEB);
    let step = attacher.sync(&objs, &report, &pods);
    let s = &step.objects["pod-skb"];
    assert_eq!((s.matched, s.attached, s.waiting), (1, 1, 1), "{s:?}");
}

#[test]
fn pod_cgroups_are_found_in_the_cgroupfs_and_systemd_layouts() {
    let tree = Tree::new("podcg-layouts");
    let guaranteed = tree.root.join(format!("kubepods/pod{WEB}"));
    let burstable = tree.root.join(format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        OTHER.replace('-', "_")
    ));
    // A container's cgroup below a pod's, and a look-alike outside kubepods: neither counts.
    let container = guaranteed.join("cri-containerd-0123abcd.scope");
    let outside = tree.root.join("system.slice/unrelated/pod0a1b2c3d");
    for d in [&guaranteed, &burstable, &container, &outside] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let found = pod_cgroup::scan(&tree.root);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[WEB].path, guaranteed);
    assert_eq!(found[OTHER].path, burstable);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        found[WEB].id,
        std::fs::metadata(&guaranteed).expect("stat").ino()
    );
}

/// The README's example (`# example: pod-egress` in "Pod-aware attachment").
fn readme_example() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "# example: pod-egress")
        .skip(1)
        .take_while(|l| *l != "# end: pod-egress")
        .collect();
    assert!(!block.is_empty(), "the README has the pod-egress example");
    block.join("\n")
}

#[test]
fn the_readme_example_counts_the_egress_bytes_of_its_pods() {
    let fs = Bpffs::new();
    let tree = Tree::new("podcg-readme");
    let web = tree.pod(WEB);
    let other = tree.pod(OTHER);
    let object: serde_yaml::Value = serde_yaml::from_str(&readme_example()).expect("YAML");
    let name = object["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let spec = serde_yaml::to_string(&object["spec"]).expect("spec");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cgroup-skb/cgroup_skb.bpf.c");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf");
    std::fs::create_dir_all(&out).expect("mkdir");
    let out = out.join("cgroup_skb.bpf.o");
    common::compile(&src, &out);
    let obj = DesiredObject {
        name: name.clone(),
        uid: None,
        generation: 1,
        spec: common::spec(&spec),
        bytecode: Ok(std::fs::read(&out).expect("object")),
    };
    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let report = reconciler.reconcile(std::slice::from_ref(&obj), &BTreeSet::new());
    assert!(
        report.objects[0].is_ready(),
        "{:?}",
        report.objects[0].error
    );
    let mut attacher =
        PodAttacher::new(&fs.root(), Path::new("/run/netns")).with_cgroup_dir(&tree.root);
    let pods = BTreeMap::from([
        pod("web-1", WEB, "web", Some("10.1.0.2")),
        pod("other-1", OTHER, "other", Some("10.1.0.3")),
    ]);
    // The agent's own share of the time from a pod's start to its program attached: one step
    // that finds the pod's cgroup and attaches (the rest is the pod event reaching the agent).
    let started = std::time::Instant::now();
    let step = attacher.sync(std::slice::from_ref(&obj), &report, &pods);
    eprintln!(
        "pod_cgroup: step that found and attached one pod cgroup: {} us",
        started.elapsed().as_micros()
    );
    assert_eq!(step.objects[&name].attached, 1, "{:?}", step.objects[&name]);
    let bytes = || {
        use aya::maps::{Array, Map, MapData};
        let data = MapData::from_pin(fs.root().join(&name).join("maps/bytes_out")).expect("map");
        let array: Array<_, u64> =
            Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
        array.get(&0, 0).expect("read")
    };
    // Three echo requests of 84 bytes (20 IP + 8 ICMP + 56 data) from the web pod; nothing from
    // the other pod.
    ping_in(&other);
    assert_eq!(bytes(), 0);
    ping_in(&web);
    assert_eq!(bytes(), 3 * 84);
}
