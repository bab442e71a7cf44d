//! Uprobes in containers (`containers` on `uprobe`) against the real kernel: a fake kubelet tree
//! in a private cgroup2 mount (`kubepods/besteffort/pod<uid>/cri-containerd-<id>.scope`), a
//! "container" that is a real process of that cgroup chrooted into a private root directory
//! holding its own copy of the probed binary, and the programs' exact counts. Needs root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use bpfpin_agent::cluster::pods::{PodAttacher, PodEntry};
use bpfpin_agent::{DesiredObject, Reconciler};
use common::Bpffs;

/// `hits[]` indexes of kinds.bpf.c.
const UPROBE: u32 = 3;
const URETPROBE: u32 = 4;

const WEB: &str = "0a1b2c3d-2222-4222-8333-000000000001";
const ID1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const ID2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const SIDECAR: &str = "3333333333333333333333333333333333333333333333333333333333333333";

use common::cgroup::KubeletTree as Tree;

/// tests/bpf/uprobe_target.c linked statically (it runs chrooted, with no libc in its root).
fn static_target() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("uprobe_target_static");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpf/uprobe_target.c");
            let ok = Command::new("cc")
                .args(["-O2", "-static", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .expect("cc")
                .success();
            assert!(ok, "building {} statically", src.display());
            out
        })
        .clone()
}

/// A container's root directory: its own copy of the target at `/app/server` (another file
/// than the node's), and `/app/escape`, a symlink that would reach the node's copy if it were
/// resolved from the node's root.
fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("rootfs");
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir app");
    std::fs::copy(static_target(), app.join("server")).expect("copy the target");
    let up = "/..".repeat(8);
    std::os::unix::fs::symlink(
        format!("{up}{}", static_target().display()),
        app.join("escape"),
    )
    .expect("symlink");
    dir
}

/// A container's process: `/app/server 5 wait` in `cgroup`, chrooted into `root`, waiting on
/// its stdin before its five calls.
fn start_in(cgroup: &Path, root: &Path) -> Child {
    let sh = format!(
        "echo $$ > {}/cgroup.procs && exec chroot {} /app/server 5 wait",
        cgroup.display(),
        root.display()
    );
    let child = Command::new("sh")
        .args(["-c", &sh])
        .stdin(Stdio::piped())
        .spawn()
        .expect("start the container's process");
    // Started when it is in the cgroup and its root is the container's.
    let pid = child.id();
    let ready = (0..250).any(|_| {
        let in_cgroup = std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .is_ok_and(|p| p.lines().any(|l| l.trim() == pid.to_string()));
        let rooted = std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == root);
        if !(in_cgroup && rooted) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        in_cgroup && rooted
    });
    assert!(ready, "the process {pid} runs in {}", cgroup.display());
    child
}

/// Lets the process make its five calls and waits for it.
fn finish(mut child: Child) {
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    assert!(child.wait().expect("wait").success());
}

fn hits(fs: &Bpffs, object: &str, kind: u32) -> u64 {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(fs.root().join(object).join("maps/hits")).expect("hits map");
    let array: Array<_, u64> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
    array.get(&kind, 0).expect("read")
}

fn link_id(p: &Path) -> u32 {
    aya::programs::links::FdLink::from(
        aya::programs::links::PinnedLink::from_pin(p).expect("pinned link"),
    )
    .info()
    .expect("link info")
    .id()
}

fn web_pod(containers: &[(&str, &str)]) -> BTreeMap<String, PodEntry> {
    BTreeMap::from([(
        "web/web-1".to_owned(),
        PodEntry {
            namespace: "web".into(),
            name: "web-1".into(),
            uid: WEB.into(),
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            ip: Some("10.1.0.2".parse().expect("ip")),
            containers: containers
                .iter()
                .map(|(n, id)| ((*n).to_owned(), (*id).to_owned()))
                .collect(),
            ..Default::default()
        },
    )])
}

/// A uprobe and a uretprobe on `/app/server` in the `app` container of every `app: web` pod.
const SPEC: &str = r#"
bytecode: {path: kinds.bpf.o}
programs:
- name: uprobe_count
  attach:
    uprobe:
      target: /app/server
      symbol: bpfpin_probe_me
      containers: {namespace: web, podSelector: {matchLabels: {app: web}}, containerNames: [app]}
- name: uretprobe_count
  attach:
    uprobe:
      target: /app/server
      symbol: bpfpin_probe_me
      containers: {namespace: web, containerNames: [app]}
"#;

/// `/app/escape` inside the container: resolved inside its root, it names no file.
const ESCAPE_SPEC: &str = r#"
bytecode: {path: kinds.bpf.o}
programs:
- name: uprobe_count
  attach:
    uprobe:
      target: /app/escape
      symbol: bpfpin_probe_me
      containers: {namespace: web}
"#;

#[test]
fn uprobes_attach_to_the_containers_copy_and_follow_restarts_and_deletes() {
    let fs = Bpffs::new();
    let tree = Tree::new("ctr-follow");
    let root = rootfs();
    let cgroup = tree.container(WEB, ID1);

    let objs: Vec<DesiredObject> = vec![common::desired("ctr-up", SPEC, "kinds")];
    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let report = reconciler.reconcile(&objs, &BTreeSet::new());
    let o = &report.objects[0];
    assert!(o.is_ready(), "{:?}", o.error);
    // Nothing on the node: the target is the containers' (the node has no /app/server).
    assert!(o.pinned.as_ref().expect("pinned").links.is_empty());
    assert!(!Path::new("/app/server").exists());

    let process = start_in(&cgroup, root.path());
    let bpffs = fs.root();
    let mut attacher =
        PodAttacher::new(&bpffs, Path::new("/run/netns")).with_cgroup_dir(&tree.root);
    // The sidecar is not selected (containerNames: [app]) and has no cgroup: not looked at.
    let pods = web_pod(&[("app", ID1), ("sidecar", SIDECAR)]);
    let started = std::time::Instant::now();
    let step = attacher.sync(&objs, &report, &pods);
    eprintln!(
        "containers: step that found the container's process and attached two uprobes: {} us",
        started.elapsed().as_micros()
    );
    let s = &step.objects["ctr-up"];
    assert_eq!(
        (s.matched, s.attached, s.waiting, s.failures.len()),
        (1, 1, 0, 0),
        "{s:?}"
    );
    let up_link = bpffs.join(format!("ctr-up/links/uprobe_count/uprobe-pod-{WEB}-app"));
    let ret_link = bpffs.join(format!("ctr-up/links/uretprobe_count/uprobe-pod-{WEB}-app"));
    assert!(up_link.exists() && ret_link.exists());
    assert_eq!(
        step.links["ctr-up"],
        vec![
            up_link.display().to_string(),
            ret_link.display().to_string()
        ]
    );

    // The container's copy fires, exactly: five calls, five entries, five returns.
    finish(process);
    assert_eq!(hits(&fs, "ctr-up", UPROBE), 5);
    assert_eq!(hits(&fs, "ctr-up", URETPROBE), 5);
    // The node's copy of the same binary is another file: not probed.
    let ok = Command::new(static_target())
        .arg("3")
        .status()
        .expect("run the node's copy")
        .success();
    assert!(ok);
    assert_eq!(hits(&fs, "ctr-up", UPROBE), 5);

    // A steady step and a restarted agent keep the link.
    let before = link_id(&up_link);
    let step = attacher.sync(&objs, &report, &pods);
    assert_eq!(step.objects["ctr-up"].attached, 1);
    assert_eq!(link_id(&up_link), before);
    let mut restarted =
        PodAttacher::new(&bpffs, Path::new("/run/netns")).with_cgroup_dir(&tree.root);
    let step = restarted.sync(&objs, &report, &pods);
    assert_eq!(step.objects["ctr-up"].attached, 1);
    assert_eq!(link_id(&up_link), before, "adopted, not attached again");

    // The container restarts (a new ID, a new cgroup, a new process from a new copy of the
    // file): attached again, on the new file.
    let root2 = rootfs();
    let cgroup2 = tree.container(WEB, ID2);
    let process = start_in(&cgroup2, root2.path());
    let pods = web_pod(&[("app", ID2), ("sidecar", SIDECAR)]);
    let step = restarted.sync(&objs, &report, &pods);
    assert_eq!(
        step.objects["ctr-up"].attached, 1,
        "{:?}",
        step.objects["ctr-up"]
    );
    assert_ne!(link_id(&up_link), before, "a new link");
    finish(process);
    assert_eq!(hits(&fs, "ctr-up", UPROBE), 10);
    assert_eq!(hits(&fs, "ctr-up", URETPROBE), 10);

    // The container stops (no running container selected): the pod waits, its link goes.
    let step = restarted.sync(&objs, &report, &web_pod(&[("sidecar", SIDECAR)]));
    let s = &step.objects["ctr-up"];
    assert_eq!((s.matched, s.attached, s.waiting), (0, 0, 2), "{s:?}");
    assert!(!up_link.exists() && !ret_link.exists());

    // Back, then the pod is deleted: its links are unpinned.
    let process = start_in(&cgroup2, root2.path());
    let step = restarted.sync(&objs, &report, &pods);
    assert_eq!(step.objects["ctr-up"].attached, 1);
    let step = restarted.sync(&objs, &report, &BTreeMap::new());
    let s = &step.objects["ctr-up"];
    assert_eq!((s.matched, s.attached), (0, 0));
    assert!(!up_link.exists() && !ret_link.exists());
    // (The kernel releases an unpinned link shortly after its last reference.)
    std::thread::sleep(std::time::Duration::from_millis(200));
    finish(process);
    assert_eq!(hits(&fs, "ctr-up", UPROBE), 10, "detached");
}

#[test]
fn a_symlink_out_of_the_container_and_a_missing_process_fail_naming_pod_and_container() {
    let fs = Bpffs::new();
    let tree = Tree::new("ctr-escape");
    let root = rootfs();
    let cgroup = tree.container(WEB, ID1);
    let objs = vec![common::desired("ctr-esc", ESCAPE_SPEC, "kinds")];
    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let report = reconciler.reconcile(&objs, &BTreeSet::new());
    assert!(
        report.objects[0].is_ready(),
        "{:?}",
        report.objects[0].error
    );
    let bpffs = fs.root();
    let mut attacher =
        PodAttacher::new(&bpffs, Path::new("/run/netns")).with_cgroup_dir(&tree.root);

    // No process in the container's cgroup yet.
    let pods = web_pod(&[("app", ID1)]);
    let step = attacher.sync(&objs, &report, &pods);
    let s = &step.objects["ctr-esc"];
    assert_eq!(
        (s.matched, s.attached, s.failures.len()),
        (1, 0, 1),
        "{s:?}"
    );
    assert!(step.retry);
    let f = &s.failures[0];
    assert_eq!(
        (
            f.pod.as_str(),
            f.program.as_str(),
            f.container.as_str(),
            f.reason.as_str()
        ),
        ("web/web-1", "uprobe_count", "app", "AttachFailed")
    );
    assert_eq!(
        f.message,
        format!("no process in the container's cgroup {}", cgroup.display())
    );

    // With a process: `/app/escape` points at the node's copy through `/../..`; resolved in
    // the container's root it is `<root>/<node path>`, which does not exist.
    let process = start_in(&cgroup, root.path());
    let pid = process.id();
    let step = attacher.sync(&objs, &report, &pods);
    let s = &step.objects["ctr-esc"];
    assert_eq!(
        (s.matched, s.attached, s.failures.len()),
        (1, 0, 1),
        "{s:?}"
    );
    assert_eq!(
        s.failures[0].message,
        format!(
            "uprobe target /app/escape inside the container's root /proc/{pid}/root: No such file or directory (os error 2)"
        )
    );
    assert!(
        !bpffs
            .join(format!("ctr-esc/links/uprobe_count/uprobe-pod-{WEB}-app"))
            .exists()
    );
    // A container ID with no cgroup under the pod's.
    let step = attacher.sync(&objs, &report, &web_pod(&[("app", ID2)]));
    let f = &step.objects["ctr-esc"].failures[0];
    assert!(
        f.message
            .starts_with(&format!("no cgroup of container {ID2} under ")),
        "{f:?}"
    );
    finish(process);
}

/// The README's example (`# example: container-uprobe` in "Pod-aware attachment").
fn readme_example() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "# example: container-uprobe")
        .skip(1)
        .take_while(|l| *l != "# end: container-uprobe")
        .collect();
    assert!(
        !block.is_empty(),
        "the README has the container-uprobe example"
    );
    block.join("\n")
}

#[test]
fn the_readme_example_retargeted_counts_the_calls_in_its_container() {
    let object: serde_yaml::Value = serde_yaml::from_str(&readme_example()).expect("YAML");
    let name = object["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    // As e2e/scripts/real-node.d/containers.bash does: the test's binary instead of bash.
    let spec = serde_yaml::to_string(&object["spec"])
        .expect("spec")
        .replace("target: /bin/bash", "target: /app/server")
        .replace("symbol: readline", "symbol: bpfpin_probe_me");
    let spec = common::spec(&spec);
    assert_eq!(spec.validate(&name), Ok(()));
    let fs = Bpffs::new();
    let tree = Tree::new("ctr-readme");
    let root = rootfs();
    let cgroup = tree.container(WEB, ID1);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/uprobe/uprobe.bpf.c");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf");
    std::fs::create_dir_all(&out).expect("mkdir");
    let out = out.join("uprobe.bpf.o");
    common::compile(&src, &out);
    let obj = DesiredObject {
        name: name.clone(),
        uid: None,
        generation: 1,
        spec,
        bytecode: Ok(std::fs::read(&out).expect("object")),
    };
    let mut reconciler = Reconciler::new(fs.path()).expect("reconciler");
    let report = reconciler.reconcile(std::slice::from_ref(&obj), &BTreeSet::new());
    assert!(
        report.objects[0].is_ready(),
        "{:?}",
        report.objects[0].error
    );
    let process = start_in(&cgroup, root.path());
    let mut attacher =
        PodAttacher::new(&fs.root(), Path::new("/run/netns")).with_cgroup_dir(&tree.root);
    // The example selects the `shell` container of `app: web` pods of namespace `web`.
    let step = attacher.sync(
        std::slice::from_ref(&obj),
        &report,
        &web_pod(&[("shell", ID1)]),
    );
    let s = &step.objects[&name];
    assert_eq!(
        (s.matched, s.attached, s.failures.len()),
        (1, 1, 0),
        "{s:?}"
    );
    assert!(
        fs.root()
            .join(format!(
                "{name}/links/count_readline/uprobe-pod-{WEB}-shell"
            ))
            .exists()
    );
    finish(process);
    let calls = {
        use aya::maps::{Array, Map, MapData};
        let data = MapData::from_pin(fs.root().join(&name).join("maps/calls")).expect("map");
        let array: Array<_, u64> =
            Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
        array.get(&0, 0).expect("read")
    };
    assert_eq!(calls, 5);
}
