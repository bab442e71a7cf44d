//! A hostile or careless hand on the managed root: object names that are internal directories or
//! other objects' paths, pin paths that are the parent or child of another object's shared map,
//! directories swapped for symlinks while the sweep runs, a root someone else owns, maps too big
//! for the agent's memory cgroup. Each case runs on a fresh bpffs beside a good object whose maps
//! hold data, and asserts the exact outcome: the reason naming the object, nothing of the bad one
//! pinned, the good one's pins, program ids and map contents unchanged.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use bpfpin_agent::{Action, DesiredObject, PassReport, Reconciler};
use common::memory_cgroup::MemoryCgroup;
use common::*;

fn set_u64(path: &Path, value: u64) {
    let map = Map::from_map_data(MapData::from_pin(path).expect("open map")).expect("map");
    let mut array: Array<_, u64> = Array::try_from(map).expect("array of u64");
    array.set(0, value, 0).expect("write index 0");
}

fn set_hash(path: &Path, key: u32, value: u64) {
    let map = Map::from_map_data(MapData::from_pin(path).expect("open map")).expect("map");
    let mut hash: BpfHashMap<_, u32, u64> = BpfHashMap::try_from(map).expect("hash u32 -> u64");
    hash.insert(key, value, 0).expect("insert");
}

fn get_hash(path: &Path, key: u32) -> Option<u64> {
    let map = Map::from_map_data(MapData::from_pin(path).expect("open map")).expect("map");
    let hash: BpfHashMap<_, u32, u64> = BpfHashMap::try_from(map).expect("hash u32 -> u64");
    hash.get(&key, 0).ok()
}

/// Everything of the good object a bad neighbour must not change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// Every entry of the whole bpffs (the managed root and beside it).
    tree: Vec<String>,
    prog_ids: Vec<u32>,
    packets: u64,
    last_pid: Option<u64>,
}

/// A fresh bpffs with the good object pinned (the counter example: `counts` private, `packets`
/// shared at `team/packets`, `last_pid` pinned by name) and data in each of its maps.
struct World {
    fs: Bpffs,
    r: Reconciler,
    good: DesiredObject,
}

impl World {
    fn new() -> Self {
        let fs = Bpffs::new();
        bpfpin_agent::pin::mounts::ensure_tracefs().expect("tracefs");
        let good = desired("good", COUNTER, "counter");
        let mut r = Reconciler::new(fs.path()).expect("reconciler");
        let report = r.reconcile(std::slice::from_ref(&good), &BTreeSet::new());
        assert!(
            report.objects[0].is_ready(),
            "{:?}",
            report.objects[0].error
        );
        let root = fs.root();
        set_u64(&root.join("good/maps/counts"), 4242);
        set_u64(&root.join("shared/team/packets"), 77);
        set_hash(&root.join("shared/last_pid"), 1, 99);
        Self { fs, r, good }
    }

    fn root(&self) -> PathBuf {
        self.fs.root()
    }

    fn snapshot(&self) -> Snapshot {
        let root = self.root();
        Snapshot {
            tree: tree(self.fs.path()),
            prog_ids: ["count_getpid", "tail_target"]
                .iter()
                .map(|p| prog_id(&root.join("good/progs").join(p)))
                .collect(),
            packets: read_u64(&root.join("shared/team/packets")),
            last_pid: get_hash(&root.join("shared/last_pid"), 1),
        }
    }

    /// The private counter was not reset (it holds at least what it held) and its program still
    /// counts (it is attached).
    fn assert_counting(&self, floor: u64) {
        let counts = self.root().join("good/maps/counts");
        let now = read_u64(&counts);
        assert!(
            now >= floor,
            "good's counter went from {floor} to {now}: reset"
        );
        getpid_n(5);
        assert!(
            read_u64(&counts) >= now + 5,
            "good's program no longer counts"
        );
    }

    fn pass(&mut self, bad: &DesiredObject) -> PassReport {
        self.r
            .reconcile(&[self.good.clone(), bad.clone()], &BTreeSet::new())
    }
}

fn report_of<'a>(report: &'a PassReport, name: &str) -> &'a bpfpin_agent::ObjectReport {
    report
        .objects
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no report for {name:?}: {report:?}"))
}

/// Runs `bad` beside the good object for two passes, then once more after a restart; checks the
/// bad one failed with `reason` and a message holding each of `needles`, and nothing else moved.
fn refused_alone(bad: DesiredObject, reason: &str, needles: &[&str]) {
    let mut w = World::new();
    let before = w.snapshot();
    for pass in 0..3 {
        if pass == 2 {
            // A restarted agent knows nothing of what is pinned: it must adopt, not sweep.
            w.r = Reconciler::new(w.fs.path()).expect("restart");
        }
        let report = w.pass(&bad);
        let g = report_of(&report, "good");
        assert!(
            matches!(g.action, Action::Unchanged | Action::Adopted),
            "pass {pass}: the good object is untouched: {:?} {:?}",
            g.action,
            g.error
        );
        let b = report_of(&report, &bad.name);
        assert_eq!(b.action, Action::Failed, "pass {pass}");
        assert!(b.pinned.is_none());
        let err = b.error.clone().expect("an error");
        assert_eq!(err.reason.as_str(), reason, "pass {pass}: {err}");
        for needle in needles {
            assert!(
                err.message.contains(needle),
                "pass {pass}: message should contain {needle:?}: {err}"
            );
        }
        assert_eq!(report.removed, Vec::<String>::new(), "pass {pass}");
        assert_eq!(report.unpinned, 0, "pass {pass}: nothing unpinned");
        assert_eq!(w.snapshot(), before, "pass {pass}: nothing of good changed");
        w.assert_counting(4242);
    }
}

#[test]
fn names_that_are_internal_directories_or_other_objects_paths() {
    for name in [
        "shared",
        "_versions",
        "_staging",
        "good/",
        "_versions/good",
        "shared/team",
        "../bpfpin/good",
        "good/../shared",
        "./good",
        ".",
        "..",
        "",
        "Good",
        "good\n",
    ] {
        let mut bad = desired("good", COUNTER, "counter");
        bad.name = name.to_owned();
        refused_alone(
            bad,
            "InvalidSpec",
            &[
                &format!("metadata.name {name:?}"),
                "nothing was pinned or removed",
            ],
        );
    }
}

#[test]
fn a_pin_path_that_is_the_parent_of_another_objects_map() {
    let bad = desired(
        "newcomer",
        &COUNTER.replace("pinPath: team/packets", "pinPath: team"),
        "counter",
    );
    refused_alone(
        bad,
        "MapConflict",
        &[
            "map packets of object newcomer",
            "/bpfpin/shared/team, which is a directory holding the shared map(s)",
            "/bpfpin/shared/team/packets of object good",
        ],
    );
}

#[test]
fn a_pin_path_below_another_objects_map() {
    let bad = desired(
        "newcomer",
        &COUNTER.replace("pinPath: team/packets", "pinPath: team/packets/mine"),
        "counter",
    );
    refused_alone(
        bad,
        "MapConflict",
        &[
            "map packets of object newcomer would be pinned at",
            "/bpfpin/shared/team/packets/mine, below",
            "/bpfpin/shared/team/packets, where object good has a map pinned",
        ],
    );
}

#[test]
fn a_pin_path_below_a_map_pinned_by_name() {
    let bad = desired(
        "newcomer",
        &COUNTER.replace("pinPath: team/packets", "pinPath: last_pid/x"),
        "counter",
    );
    refused_alone(
        bad,
        "MapConflict",
        &[
            "map packets of object newcomer",
            "/bpfpin/shared/last_pid, where object good has a map pinned",
        ],
    );
}

#[test]
fn parent_and_child_pin_paths_in_one_pass() {
    // Two new objects at once: the first (by name) is pinned, the second refused, and the next
    // pass keeps it so.
    let fs = Bpffs::new();
    let root = fs.root();
    let a = desired(
        "a-parent",
        &COUNTER.replace("pinPath: team/packets", "pinPath: demo"),
        "counter",
    );
    let b = desired(
        "b-child",
        &COUNTER.replace("pinPath: team/packets", "pinPath: demo/packets"),
        "counter",
    );
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    for pass in 0..2 {
        let report = r.reconcile(&[a.clone(), b.clone()], &BTreeSet::new());
        assert!(report_of(&report, "a-parent").is_ready(), "pass {pass}");
        let err = report_of(&report, "b-child")
            .error
            .clone()
            .expect("refused");
        assert_eq!(err.reason.as_str(), "MapConflict", "{err}");
        assert!(
            err.message.contains("below") && err.message.contains("object a-parent"),
            "{err}"
        );
        if pass == 0 {
            set_u64(&root.join("shared/demo"), 5);
        }
        assert_eq!(read_u64(&root.join("shared/demo")), 5);
        assert!(!root.join("b-child").exists());
        assert!(tree(&root.join("_versions/b-child")).is_empty());
    }
}

/// `renameat2(RENAME_EXCHANGE)`: swaps two names atomically.
fn exchange(a: &Path, b: &Path) -> bool {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .is_ok()
}

/// Busy-waits about `micros` microseconds (a sleep would take far longer).
fn spin(micros: u64) {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_micros(micros) {
        std::hint::spin_loop();
    }
}

#[test]
fn directories_swapped_for_symlinks_during_the_sweep_never_lead_outside() {
    let mut w = World::new();
    let before = w.snapshot();
    let root = w.root();
    let outside = tempfile::tempdir().expect("tempdir");
    let canaries = [
        outside.path().join("canary"),
        outside.path().join("sub/canary"),
    ];
    std::fs::create_dir(outside.path().join("sub")).expect("mkdir");
    for c in &canaries {
        std::fs::write(c, b"root's data").expect("write canary");
    }
    // Entries the sweep removes (nobody wants them), each swapped again and again with a
    // symlink to the outside folder that lies on the same bpffs, beside the root.
    let targets: Vec<(PathBuf, PathBuf)> = ["junk", "shared/junk", "_versions/junk"]
        .iter()
        .enumerate()
        .map(|(i, t)| (root.join(t), w.fs.path().join(format!("swap{i}"))))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let recreated = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (stop, swaps, recreated) = (stop.clone(), swaps.clone(), recreated.clone());
        let outside = outside.path().to_path_buf();
        let targets = targets.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (target, spare) in &targets {
                    if std::fs::create_dir(target).is_ok() {
                        recreated.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = std::fs::create_dir(target.join("sub"));
                    if !std::fs::symlink_metadata(spare).is_ok_and(|m| m.file_type().is_symlink()) {
                        let _ = std::fs::remove_dir_all(spare);
                        let _ = std::os::unix::fs::symlink(&outside, spare);
                    }
                    if exchange(spare, target) {
                        swaps.fetch_add(1, Ordering::Relaxed);
                        // Long enough for a walk to lstat, then open what is now a symlink.
                        spin(20);
                        exchange(spare, target);
                        spin(20);
                    }
                }
            }
        })
    };
    let passes = 2000;
    let mut unpinned = 0;
    for pass in 0..passes {
        let report =
            w.r.reconcile(std::slice::from_ref(&w.good), &BTreeSet::new());
        unpinned += report.unpinned;
        assert!(report.objects[0].is_ready(), "pass {pass}");
        for c in &canaries {
            assert!(
                c.exists(),
                "pass {pass}: {} outside the root was removed",
                c.display()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("swapper");
    let (swaps, recreated) = (
        swaps.load(Ordering::Relaxed),
        recreated.load(Ordering::Relaxed),
    );
    assert!(
        swaps > 100 && recreated > 100,
        "the race ran: {swaps} swaps, {recreated} directories swept and re-created"
    );
    assert_eq!(
        unpinned, 0,
        "nothing but directories and symlinks was swept"
    );
    for path in targets.iter().flat_map(|(t, s)| [t, s]) {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(path).expect("rm symlink");
        } else if path.exists() {
            std::fs::remove_dir_all(path).expect("rm dir");
        }
    }
    w.r.reconcile(std::slice::from_ref(&w.good), &BTreeSet::new());
    assert_eq!(w.snapshot(), before, "the good object is as it was");
    w.assert_counting(4242);
    eprintln!("{passes} passes, {swaps} swaps, {recreated} swept directories: canaries intact");
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).expect("chown");
}

#[test]
fn a_root_owned_by_another_user_is_refused() {
    let fs = Bpffs::new();
    let root = fs.root();
    std::fs::create_dir(&root).expect("mkdir");
    chown(&root, 65534);
    let err = Reconciler::new(fs.path()).expect_err("refused").to_string();
    assert!(
        err.contains(&format!("the managed root {}", root.display()))
            && err.contains("is owned by uid 65534, not by the agent's uid 0")
            && err.contains("another user created it and could swap its entries for symlinks"),
        "{err}"
    );
    assert!(tree(&root).is_empty(), "nothing created in it");
    assert_eq!(std::fs::read_dir(&root).expect("ls").count(), 0);
}

#[test]
fn a_root_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    for mode in [0o1777, 0o777, 0o770] {
        let fs = Bpffs::new();
        let root = fs.root();
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::set_permissions(&root, PermissionsExt::from_mode(mode)).expect("chmod");
        let err = Reconciler::new(fs.path()).expect_err("refused").to_string();
        assert!(
            err.contains(&format!(
                "has mode {mode:o}: it is writable by group or others, who could swap its entries for symlinks; chmod it to 700"
            )),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&root).expect("ls").count(), 0);
    }
}

#[test]
fn a_root_that_is_a_symlink_is_refused() {
    let fs = Bpffs::new();
    std::fs::create_dir(fs.path().join("elsewhere")).expect("mkdir");
    std::os::unix::fs::symlink("elsewhere", fs.root()).expect("symlink");
    let err = Reconciler::new(fs.path()).expect_err("refused").to_string();
    assert!(err.contains("is not a directory (a symlink?)"), "{err}");
    assert_eq!(
        std::fs::read_dir(fs.path().join("elsewhere"))
            .expect("ls")
            .count(),
        0
    );
}

#[test]
fn the_agent_refuses_a_foreign_root_at_start_in_both_modes() {
    let fs = Bpffs::new();
    let root = fs.root();
    std::fs::create_dir(&root).expect("mkdir");
    chown(&root, 65534);
    let manifests = tempfile::tempdir().expect("tempdir");
    // Cluster mode checks the root before it connects to any API server (none is here).
    for mode in [
        vec![
            "local",
            "--once",
            "--manifests",
            manifests.path().to_str().expect("utf-8"),
        ],
        vec![
            "cluster",
            "--node-name",
            "hostile-root",
            "--metrics-addr",
            "none",
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bpfpin-agent"))
            .args(&mode)
            .arg("--bpffs")
            .arg(fs.path())
            .arg("--cache-dir")
            .arg(manifests.path().join("cache"))
            .env("KUBECONFIG", manifests.path().join("no-such-kubeconfig"))
            .output()
            .expect("run the agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the managed root {} is owned by uid 65534, not by the agent's uid 0",
                root.display()
            )),
            "{mode:?}: {stderr}"
        );
        assert_eq!(std::fs::read_dir(&root).expect("ls").count(), 0);
    }
}

#[test]
fn internal_directories_swapped_for_symlinks_are_replaced_not_followed() {
    let mut w = World::new();
    let before = w.snapshot();
    let root = w.root();
    let outside = tempfile::tempdir().expect("tempdir");
    let canary = outside.path().join("canary");
    std::fs::create_dir(outside.path().join("team")).expect("mkdir");
    std::fs::write(&canary, b"root's data").expect("write");
    // The staging folder, an unknown entry, a version folder and a folder among the shared maps
    // are symlinks to a folder outside the root.
    std::fs::remove_dir(root.join("_staging")).expect("rmdir");
    for link in [
        "_staging",
        "evil",
        "_versions/evil",
        "shared/evil",
        "shared/team/evil",
    ] {
        std::os::unix::fs::symlink(outside.path(), root.join(link)).expect("symlink");
    }
    for pass in 0..2 {
        let report =
            w.r.reconcile(std::slice::from_ref(&w.good), &BTreeSet::new());
        assert!(report.objects[0].is_ready(), "pass {pass}");
        assert_eq!(report.unpinned, 0, "pass {pass}");
        assert!(canary.exists() && outside.path().join("team").exists());
        assert!(
            std::fs::symlink_metadata(root.join("_staging")).is_ok_and(|m| m.is_dir()),
            "_staging is a directory again"
        );
        assert_eq!(w.snapshot(), before, "pass {pass}");
        w.assert_counting(4242);
    }
    // A new object whose pinPath passes through a symlinked folder is refused, never pinned
    // outside; the sweep unlinks the symlink, and the next pass pins it in a real folder.
    std::os::unix::fs::symlink(outside.path(), root.join("shared/elsewhere")).expect("symlink");
    let other = desired(
        "other",
        &COUNTER.replace("pinPath: team/packets", "pinPath: elsewhere/packets"),
        "counter",
    );
    let report =
        w.r.reconcile(&[w.good.clone(), other.clone()], &BTreeSet::new());
    let err = report_of(&report, "other").error.clone().expect("refused");
    assert_eq!(err.reason.as_str(), "InvalidSpec", "{err}");
    assert!(
        err.message
            .contains("shared/elsewhere/packets passes through a symlink"),
        "{err}"
    );
    assert!(!root.join("other").exists());
    let report = w.r.reconcile(&[w.good.clone(), other], &BTreeSet::new());
    let o = report_of(&report, "other");
    assert!(o.is_ready(), "{:?}", o.error);
    assert!(root.join("shared/elsewhere/packets").exists());
    assert!(std::fs::symlink_metadata(root.join("shared/elsewhere")).is_ok_and(|m| m.is_dir()));
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("ls").count(),
        2,
        "nothing created outside"
    );
}

#[test]
fn a_bpffs_the_agent_mounts_is_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("bpf");
    let r = Reconciler::new(&mnt).expect("mounts bpffs");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let line = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(mnt.to_str().expect("utf-8")))
        .unwrap_or_else(|| panic!("{} is not mounted", mnt.display()))
        .to_owned();
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(&mnt)
        .status();
    drop(r);
    let opts: Vec<&str> = line
        .split_whitespace()
        .nth(5)
        .expect("mount options")
        .split(',')
        .collect();
    for want in ["nosuid", "nodev", "noexec"] {
        assert!(opts.contains(&want), "{want} in {line}");
    }
    assert!(
        line.contains(" - bpf ") && line.contains("mode=700"),
        "{line}"
    );
}

#[test]
fn the_root_and_internal_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let root = w.root();
    for dir in [
        root.clone(),
        root.join("_versions"),
        root.join("_versions/good"),
        root.join("_staging"),
        root.join("shared"),
        root.join("shared/team"),
    ] {
        let mode = std::fs::symlink_metadata(&dir)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o700, "{}", dir.display());
    }
}

fn manifest(name: &str, counts_max_entries: u64) -> String {
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata:\n  name: {name}\nspec:\n  bytecode:\n    path: counter.bpf.o\n  maps:\n  - name: counts\n    maxEntries: {counts_max_entries}\n  - name: packets\n    pinPath: team/packets\n  programs:\n  - name: count_getpid\n    attach:\n      tracepoint: {{category: syscalls, name: sys_enter_getpid}}\n"
    )
}

#[test]
fn maps_that_would_not_fit_the_agents_memory_cgroup_are_refused_before_the_oom_killer() {
    const LIMIT: u64 = 128 << 20;
    // 5M u64 slots: about 38 MiB each, charged to the agent's cgroup for as long as pinned.
    const ENTRIES: u64 = 5_000_000;
    let fs = Bpffs::new();
    let manifests = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        bpf_object("counter"),
        manifests.path().join("counter.bpf.o"),
    )
    .expect("copy");
    std::fs::write(manifests.path().join("a-good.yaml"), manifest("a-good", 4)).expect("write");
    let bigs: Vec<String> = (1..=4).map(|i| format!("big-{i}")).collect();
    for b in &bigs {
        std::fs::write(
            manifests.path().join(format!("{b}.yaml")),
            manifest(b, ENTRIES),
        )
        .expect("write");
    }
    // And one that alone is far bigger than the limit: 400 MiB.
    std::fs::write(
        manifests.path().join("huge.yaml"),
        manifest("huge", 50_000_000),
    )
    .expect("write");
    let cg = MemoryCgroup::new("bpfpin-hostile-root-maps", LIMIT);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
        .arg("sh")
        .arg(&cg.dir)
        .arg(env!("CARGO_BIN_EXE_bpfpin-agent"))
        .args(["local", "--once", "--manifests"])
        .arg(manifests.path())
        .arg("--bpffs")
        .arg(fs.path())
        .arg("--cache-dir")
        .arg(manifests.path().join("cache"))
        .output()
        .expect("run the agent");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the agent ends its pass (not killed) and reports failures: {stdout}\n{stderr}"
    );
    assert_eq!(cg.oom_kills(), 0, "the OOM killer never acted");
    let root = fs.root();
    assert!(stdout.contains("a-good: pinned at"), "{stdout}\n{stderr}");
    let refused = |name: &str| {
        stderr
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "{name}: FAILED InsufficientMemory: object {name}: its new maps need about "
                ))
            })
            .map(str::to_owned)
    };
    // Pinned while they fit, then refused: the cgroup fills object by object.
    let pinned: Vec<&String> = bigs.iter().filter(|b| root.join(b).exists()).collect();
    assert!(
        !pinned.is_empty() && pinned.len() < bigs.len(),
        "{stdout}\n{stderr}"
    );
    for (i, b) in bigs.iter().enumerate() {
        if i < pinned.len() {
            assert_eq!(pinned[i], b, "{stdout}\n{stderr}");
            assert!(stdout.contains(&format!("{b}: pinned at")), "{stdout}");
            continue;
        }
        let line = refused(b).unwrap_or_else(|| panic!("{b} refused: {stderr}"));
        assert!(
            line.contains("need about 38.2 MiB (counts 38.2 MiB")
                && line.contains(&format!("the agent's memory cgroup {}", cg.dir.display()))
                && line.contains("limit 128.0 MiB")
                && line.contains("16.0 MiB kept for the agent")
                && line.contains("raise the agent's memory limit or lower spec.maps[].maxEntries"),
            "{line}"
        );
        assert!(!root.join(b).exists() && tree(&root.join("_versions").join(b)).is_empty());
    }
    let huge = refused("huge").unwrap_or_else(|| panic!("huge refused: {stderr}"));
    assert!(huge.contains("need about 381.5 MiB"), "{huge}");
    eprintln!("{huge}");
    assert!(!root.join("huge").exists());
    // The charge of the pinned maps stays with the cgroup after the agent has exited.
    let usage = cg.usage();
    let pinned_bytes = pinned.len() as u64 * ENTRIES * 8;
    assert!(
        usage >= pinned_bytes,
        "{} pinned maps of {ENTRIES} u64 still charged: usage {usage}",
        pinned.len()
    );
    eprintln!(
        "{} of {} objects of {ENTRIES} u64 pinned under a {LIMIT}-byte limit, the rest refused; {usage} bytes still charged after the agent exited",
        pinned.len(),
        bigs.len()
    );
    drop(fs);
}

/// The kernel's own figure for a map (`memlock` in its fdinfo).
fn kernel_memlock(path: &Path) -> u64 {
    use std::os::fd::{AsFd, AsRawFd};
    let data = MapData::from_pin(path).expect("open map");
    let fd = data.fd().as_fd().as_raw_fd();
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .expect("fdinfo")
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .expect("memlock in fdinfo")
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn the_estimate_covers_what_the_kernel_allocates() {
    let fs = Bpffs::new();
    let spec_yaml = COUNTER.replace(
        "- name: counts\n",
        "- name: counts\n  maxEntries: 1000000\n",
    );
    let obj = desired("sized", &spec_yaml, "counter");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(std::slice::from_ref(&obj), &BTreeSet::new());
    assert!(
        report.objects[0].is_ready(),
        "{:?}",
        report.objects[0].error
    );
    let root = fs.root();
    let elf = aya_obj::Object::parse(&bytes("counter")).expect("elf");
    let estimates = bpfpin_agent::pin::map_memory::estimate(&obj.spec, &elf, |_| true);
    let of = |name: &str| {
        estimates
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} in {estimates:?}"))
            .bytes
    };
    for (name, pin) in [
        ("counts", root.join("sized/maps/counts")),
        ("packets", root.join("shared/team/packets")),
        ("last_pid", root.join("shared/last_pid")),
    ] {
        let kernel = kernel_memlock(&pin);
        let ours = of(name);
        eprintln!("{name}: kernel {kernel} bytes, estimate {ours} bytes");
        assert!(
            ours >= kernel && ours <= kernel + kernel / 4 + 8192,
            "{name}: estimate {ours} vs the kernel's {kernel}"
        );
    }
    // The pass reports them, each shared map once.
    let total: u64 = estimates.iter().map(|e| e.bytes).sum();
    assert_eq!(report.map_memory, total);
}
