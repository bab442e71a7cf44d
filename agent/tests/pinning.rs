//! Load, pin, attach, adopt, update and sweep against a real private bpffs on this kernel.

mod common;

use std::collections::BTreeSet;

use bpfpin_agent::{Action, Reconciler};
use common::*;

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

#[test]
fn pins_the_layout_and_the_tracepoint_counts_after_the_agent_is_gone() {
    let fs = Bpffs::new();
    {
        let mut r = Reconciler::new(fs.path()).expect("reconciler");
        let report = r.reconcile(&[desired("counter", COUNTER, "counter")], &none());
        let obj = &report.objects[0];
        assert_eq!(obj.action, Action::Created, "{:?}", obj.error);
        let pinned = obj.pinned.as_ref().expect("pinned");
        assert_eq!(pinned.programs.len(), 2);
        assert_eq!(pinned.links.len(), 1);
    } // the reconciler (and every fd it had) is gone: only pins hold the objects now

    let root = fs.root();
    let files = tree(&root.join("counter/"));
    assert_eq!(
        files,
        vec![
            "globals/_layout/rodata",
            "globals/rodata",
            "links/count_getpid/tracepoint-syscalls-sys_enter_getpid",
            "maps/counts",
            "progs/count_getpid",
            "progs/tail_target",
        ]
    );
    assert!(
        root.join("shared/team/packets").exists(),
        "pinPath map is shared"
    );
    assert!(
        root.join("shared/last_pid").exists(),
        "LIBBPF_PIN_BY_NAME map is shared by name"
    );
    assert!(
        !root.join("counter/maps/packets").exists(),
        "a shared map is not pinned privately"
    );
    assert!(!root.join("counter/maps/.rodata").exists());

    let before = read_u64(&root.join("counter/maps/counts"));
    getpid_n(50);
    let after = read_u64(&root.join("counter/maps/counts"));
    assert!(
        after >= before + 50,
        "the pinned tracepoint link keeps counting: {before} -> {after}"
    );
}

#[test]
fn a_restart_adopts_without_reloading() {
    let fs = Bpffs::new();
    let want = [desired("counter", COUNTER, "counter")];
    let ids = {
        let mut r = Reconciler::new(fs.path()).expect("reconciler");
        r.reconcile(&want, &none()).objects[0]
            .pinned
            .clone()
            .expect("pinned")
            .programs
    };
    let target = std::fs::read_link(fs.root().join("counter")).expect("symlink");

    let mut r = Reconciler::new(fs.path()).expect("second reconciler (a restart)");
    let report = r.reconcile(&want, &none());
    assert_eq!(report.objects[0].action, Action::Adopted);
    assert_eq!(
        report.objects[0].pinned.as_ref().expect("pinned").programs,
        ids,
        "same program ids"
    );
    assert_eq!(report.unpinned, 0);
    assert_eq!(
        std::fs::read_link(fs.root().join("counter")).expect("symlink"),
        target
    );
    assert_eq!(
        prog_id(&fs.root().join("counter/progs/count_getpid")),
        ids[0].1
    );

    // A steady-state pass of the same process does nothing at all.
    let again = r.reconcile(&want, &none());
    assert_eq!(again.objects[0].action, Action::Unchanged);
}

#[test]
fn an_update_swaps_atomically_and_keeps_map_contents() {
    let fs = Bpffs::new();
    let root = fs.root();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    r.reconcile(&[desired("counter", COUNTER, "counter")], &none());
    let old_target = std::fs::read_link(root.join("counter")).expect("symlink");
    let old_id = prog_id(&root.join("counter/progs/count_getpid"));
    let tail_id = prog_id(&root.join("counter/progs/tail_target"));
    getpid_n(10);
    let counted = read_u64(&root.join("counter/maps/counts"));
    assert!(counted >= 10);

    // INCREMENT = 1000 (little-endian u64): a new version of the same object.
    let updated = COUNTER.replace(
        "bytecode: {path: counter.bpf.o}",
        "bytecode: {path: counter.bpf.o}\nglobalData: {INCREMENT: 6AMAAAAAAAA=}",
    );
    let report = r.reconcile(&[desired("counter", &updated, "counter")], &none());
    assert_eq!(
        report.objects[0].action,
        Action::Updated,
        "{:?}",
        report.objects[0].error
    );
    let new_target = std::fs::read_link(root.join("counter")).expect("symlink");
    assert_ne!(old_target, new_target);
    assert!(
        !root.join(&old_target).exists(),
        "the old version is removed after the swap"
    );
    assert_ne!(
        prog_id(&root.join("counter/progs/count_getpid")),
        old_id,
        "the program was reloaded"
    );
    assert_eq!(
        prog_id(&root.join("counter/progs/tail_target")),
        tail_id,
        "a program whose bytecode and maps did not change keeps its id"
    );

    let kept = read_u64(&root.join("counter/maps/counts"));
    assert!(
        kept >= counted,
        "the map kept its contents across the update: {counted} -> {kept}"
    );
    getpid_n(1);
    let now = read_u64(&root.join("counter/maps/counts"));
    assert!(
        now >= kept + 1000,
        "the new version counts with INCREMENT=1000: {kept} -> {now}"
    );
    assert_eq!(
        tree(&root.join("counter/links")),
        vec!["count_getpid/tracepoint-syscalls-sys_enter_getpid"],
        "exactly one link: the old one went with the old version"
    );
}

#[test]
fn a_failed_update_keeps_the_previous_version_running() {
    let fs = Bpffs::new();
    let root = fs.root();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    r.reconcile(&[desired("counter", COUNTER, "counter")], &none());
    let target = std::fs::read_link(root.join("counter")).expect("symlink");
    let id = prog_id(&root.join("counter/progs/count_getpid"));

    let broken = COUNTER.replace("- name: tail_target", "- name: no_such_program");
    let report = r.reconcile(&[desired("counter", &broken, "counter")], &none());
    let obj = &report.objects[0];
    assert_eq!(obj.action, Action::KeptPrevious);
    let err = obj.error.as_ref().expect("error");
    assert_eq!(err.reason.as_str(), "ProgramNotFound");
    assert!(err.message.contains("no_such_program"), "{err}");
    assert!(
        obj.pinned.is_some(),
        "the report still shows what is pinned"
    );
    assert_eq!(
        std::fs::read_link(root.join("counter")).expect("symlink"),
        target
    );
    assert_eq!(prog_id(&root.join("counter/progs/count_getpid")), id);
    assert_eq!(
        tree(&root.join("_versions/counter")).len(),
        tree(&root.join("counter/")).len(),
        "no half version left aside"
    );
    let before = read_u64(&root.join("counter/maps/counts"));
    getpid_n(5);
    assert!(
        read_u64(&root.join("counter/maps/counts")) >= before + 5,
        "still attached"
    );
}

#[test]
fn programs_removed_from_a_spec_and_deleted_objects_are_unpinned() {
    let fs = Bpffs::new();
    let root = fs.root();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    r.reconcile(&[desired("counter", COUNTER, "counter")], &none());
    let id = prog_id(&root.join("counter/progs/count_getpid"));

    let fewer = COUNTER.replace("- name: tail_target\n", "");
    let report = r.reconcile(&[desired("counter", &fewer, "counter")], &none());
    assert_eq!(report.objects[0].action, Action::Updated);
    assert!(!root.join("counter/progs/tail_target").exists());
    assert!(root.join("counter/progs/count_getpid").exists());

    let report = r.reconcile(&[], &none());
    assert_eq!(report.removed, vec!["counter".to_string()]);
    assert!(report.unpinned >= 4, "unpinned {}", report.unpinned);
    assert!(!root.join("counter").exists());
    assert_eq!(
        tree(&root),
        Vec::<String>::new(),
        "nothing left but empty internal directories"
    );

    // With its link and program pins gone the program is unloaded (the kernel frees it
    // asynchronously, so give it a moment).
    let loaded = || {
        aya::programs::loaded_programs()
            .flatten()
            .any(|p| p.id() == id)
    };
    for _ in 0..100 {
        if !loaded() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        !loaded(),
        "program {id} is still loaded after its object was unpinned"
    );
}

#[test]
fn leftovers_and_unknown_entries_are_swept_but_nothing_outside_the_root() {
    let fs = Bpffs::new();
    let root = fs.root();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    r.reconcile(&[desired("counter", COUNTER, "counter")], &none());

    // Leftovers of an interrupted run: a half-built version, a staged symlink, stray entries.
    let half = root.join("_versions/counter/0123456789abcdef-1/progs");
    std::fs::create_dir_all(&half).expect("mkdir");
    aya::programs::ProgramInfo::from_pin(root.join("counter/progs/tail_target")).expect("info");
    std::os::unix::fs::symlink(
        "../_versions/counter/0123456789abcdef-1",
        root.join("_staging/counter"),
    )
    .expect("symlink");
    std::fs::create_dir_all(root.join("stray/dir")).expect("mkdir");
    std::fs::create_dir_all(root.join("_versions/ghost/abc-1")).expect("mkdir");
    // Outside the root: must survive, even when a symlink inside the root points at it.
    std::fs::create_dir_all(fs.path().join("other/keep")).expect("mkdir");
    std::os::unix::fs::symlink(fs.path().join("other"), root.join("evil")).expect("symlink");

    let report = r.reconcile(&[desired("counter", COUNTER, "counter")], &none());
    assert_eq!(report.objects[0].action, Action::Unchanged);
    assert!(!root.join("_versions/counter/0123456789abcdef-1").exists());
    assert!(!root.join("_staging/counter").exists());
    assert!(!root.join("stray").exists());
    assert!(!root.join("evil").exists());
    assert!(!root.join("_versions/ghost").exists());
    assert!(
        fs.path().join("other/keep").is_dir(),
        "nothing outside the managed root is touched"
    );
    assert!(root.join("counter/progs/count_getpid").exists());
}

#[test]
fn a_shared_map_is_one_map_and_lives_until_its_last_user_goes() {
    let fs = Bpffs::new();
    let root = fs.root();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let a = desired("a", COUNTER, "counter");
    let b = desired("b", COUNTER, "counter");
    let report = r.reconcile(&[a.clone(), b.clone()], &none());
    assert!(
        report.objects.iter().all(|o| o.error.is_none()),
        "{report:?}"
    );
    let map_id = |p: &std::path::Path| aya::maps::MapInfo::from_pin(p).expect("map").id();
    let shared_id = map_id(&root.join("shared/team/packets"));
    let prog_maps = |obj: &str| {
        aya::programs::ProgramInfo::from_pin(root.join(obj).join("progs/count_getpid"))
            .expect("prog")
            .map_ids()
            .expect("map ids")
            .unwrap_or_default()
    };
    // Both programs use the one pin-by-name map shared/last_pid.
    let last_pid = map_id(&root.join("shared/last_pid"));
    assert!(prog_maps("a").contains(&last_pid), "a uses shared/last_pid");
    assert!(prog_maps("b").contains(&last_pid), "b uses the same map");
    assert_ne!(
        map_id(&root.join("a/maps/counts")),
        map_id(&root.join("b/maps/counts")),
        "private maps are private"
    );

    r.reconcile(&[b], &none());
    assert!(
        root.join("shared/team/packets").exists(),
        "b still names it"
    );
    assert_eq!(
        map_id(&root.join("shared/team/packets")),
        shared_id,
        "the same map"
    );
    r.reconcile(&[], &none());
    assert!(
        !root.join("shared/team/packets").exists(),
        "the last user is gone"
    );
    assert!(
        !root.join("shared/team").exists(),
        "empty directories go too"
    );
}

#[test]
fn xdp_links_are_pinned_per_interface_and_count_packets() {
    let fs = Bpffs::new();
    // Two interfaces: one pinned link each.
    let (veth, veth2) = (Veth::new(1), Veth::new(5));
    let root = fs.root();
    let spec = format!(
        r#"
bytecode: {{path: counter.bpf.o}}
programs:
- name: count_packets
  attach: {{xdp: {{interfaces: [{}, {}], mode: Skb}}}}
"#,
        veth.host, veth2.host
    );
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired("xdp", &spec, "counter")], &none());
    assert!(
        report.objects[0].error.is_none(),
        "{:?}",
        report.objects[0].error
    );
    let link = root.join(format!("xdp/links/count_packets/xdp-{}", veth.host));
    let link2 = root.join(format!("xdp/links/count_packets/xdp-{}", veth2.host));
    assert_eq!(
        tree(&root.join("xdp/links/count_packets")),
        [format!("xdp-{}", veth.host), format!("xdp-{}", veth2.host)]
    );
    drop(r);
    veth.ping_host(3);
    let packets = read_u64(&root.join("xdp/maps/packets"));
    assert!(
        packets >= 3,
        "XDP counted {packets} packets on {}",
        veth.host
    );
    veth2.ping_host(4);
    let packets2 = read_u64(&root.join("xdp/maps/packets"));
    assert!(
        packets2 >= packets + 4,
        "XDP counted {} packets on {}",
        packets2 - packets,
        veth2.host
    );
    let packets = packets2;

    // An update replaces the program on the same link (an interface has one XDP link).
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let updated = spec.replace(
        "programs:",
        "globalData: {INCREMENT: AgAAAAAAAAA=}\nprograms:",
    );
    let report = r.reconcile(&[desired("xdp", &updated, "counter")], &none());
    assert_eq!(
        report.objects[0].action,
        Action::Updated,
        "{:?}",
        report.objects[0].error
    );
    assert!(link.exists() && link2.exists());
    veth.ping_host(2);
    assert!(
        read_u64(&root.join("xdp/maps/packets")) >= packets + 2,
        "the map was kept and the new program counts"
    );

    // An interface that does not exist fails the object with a clear reason.
    let missing = spec.replace(&format!("[{}, {}]", veth.host, veth2.host), "[nosuchif0]");
    let report = r.reconcile(
        &[
            desired("xdp", &updated, "counter"),
            desired("xdp2", &missing, "counter"),
        ],
        &none(),
    );
    assert!(
        report.objects[0].error.is_none(),
        "the other object is unaffected"
    );
    let err = report.objects[1].error.as_ref().expect("error");
    assert_eq!(err.reason.as_str(), "AttachFailed");
    assert!(err.message.contains("nosuchif0"), "{err}");
    assert!(!root.join("xdp2").exists());
    assert!(!root.join("_versions/xdp2").exists() || tree(&root.join("_versions/xdp2")).is_empty());
}

fn hits_at(root: &std::path::Path, object: &str, i: u32) -> u64 {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(root.join(object).join("maps/hits")).expect("hits");
    let array: Array<_, u64> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
    array.get(&i, 0).expect("read")
}

fn getppid_n(n: usize) {
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

#[test]
fn tail_calls_fill_the_program_array_and_follow_updates() {
    let fs = Bpffs::new();
    let root = fs.root();
    let with = r#"
bytecode: {path: tailcall.bpf.o}
programs:
- name: entry
  attach: {tracepoint: {category: syscalls, name: sys_enter_getppid}}
- name: target
tailCalls: [{map: jumps, index: 0, program: target}]
"#;
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired("tail", with, "tailcall")], &none());
    assert!(
        report.objects[0].error.is_none(),
        "{:?}",
        report.objects[0].error
    );
    drop(r);
    let (fell, jumped) = (hits_at(&root, "tail", 0), hits_at(&root, "tail", 1));
    getppid_n(5);
    assert!(
        hits_at(&root, "tail", 1) >= jumped + 5,
        "the tail call is taken"
    );
    assert_eq!(hits_at(&root, "tail", 0), fell, "entry never falls through");

    // Without tailCalls the slot is cleared (the map is kept, so this proves the clearing).
    let without = with.replace("tailCalls: [{map: jumps, index: 0, program: target}]\n", "");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired("tail", &without, "tailcall")], &none());
    assert_eq!(
        report.objects[0].action,
        Action::Updated,
        "{:?}",
        report.objects[0].error
    );
    let (fell, jumped) = (hits_at(&root, "tail", 0), hits_at(&root, "tail", 1));
    getppid_n(5);
    assert!(
        hits_at(&root, "tail", 0) >= fell + 5,
        "falls through once the slot is empty"
    );
    assert_eq!(hits_at(&root, "tail", 1), jumped);
}

#[test]
fn max_entries_overrides_the_elf() {
    let fs = Bpffs::new();
    let spec = COUNTER.replace("- name: counts\n", "- name: counts\n  maxEntries: 7\n");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired("sized", &spec, "counter")], &none());
    assert!(
        report.objects[0].error.is_none(),
        "{:?}",
        report.objects[0].error
    );
    let info = aya::maps::MapInfo::from_pin(fs.root().join("sized/maps/counts")).expect("map");
    assert_eq!(info.max_entries(), 7);
}

#[test]
fn an_unchanged_attached_program_keeps_its_id_and_its_link_across_an_update() {
    let fs = Bpffs::new();
    let veth = Veth::new(4);
    let root = fs.root();
    let spec = format!(
        "bytecode: {{path: kinds.bpf.o}}\nprograms:\n- name: tc_count\n  attach: {{tc: {{interfaces: [{}], direction: Ingress}}}}\n",
        veth.host
    );
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired("net", &spec, "kinds")], &none());
    assert!(
        report.objects[0].error.is_none(),
        "{:?}",
        report.objects[0].error
    );
    let id = prog_id(&root.join("net/progs/tc_count"));
    let link = root.join(format!("net/links/tc_count/tc-ingress-{}", veth.host));
    let link_id = aya::programs::links::PinnedLink::from_pin(&link)
        .map(aya::programs::links::FdLink::from)
        .expect("link")
        .info()
        .expect("info")
        .id();

    // Add a program: a new version; tc_count is the same program with the same maps.
    let more = format!("{spec}- name: uprobe_count\n");
    let report = r.reconcile(&[desired("net", &more, "kinds")], &none());
    assert_eq!(
        report.objects[0].action,
        Action::Updated,
        "{:?}",
        report.objects[0].error
    );
    assert!(root.join("net/progs/uprobe_count").exists());
    assert_eq!(
        prog_id(&root.join("net/progs/tc_count")),
        id,
        "same program"
    );
    let after = aya::programs::links::PinnedLink::from_pin(&link)
        .map(aya::programs::links::FdLink::from)
        .expect("link")
        .info()
        .expect("info")
        .id();
    assert_eq!(
        after, link_id,
        "the same link moved to the new version: never detached"
    );
    drop(r);
    let before = hits_at(&root, "net", 0);
    veth.ping_host(2);
    assert!(hits_at(&root, "net", 0) >= before + 2, "still counting");
}
