//! Internal maps (`.bss`, `.data`, `.rodata`) on a real private bpffs: pinned under `globals/`,
//! readable with bpftool, and reused by the next version while their layout and `.rodata` values
//! stay the same, so the program keeps its id and the counters keep counting.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use aya::maps::MapInfo;
use base64::Engine as _;
use bpfpin_agent::{Action, DesiredObject, Reconciler};
use common::*;

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

/// This thread's id: the object counts only this thread's getpid calls, so counts are exact while
/// other tests (and other processes) call getpid too.
fn tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The counter, attached, with `unrelated` listed (and attached when `with_unrelated`), counting
/// this thread by `step`.
fn counter(object: &str, step: u64, with_unrelated: bool) -> DesiredObject {
    let unrelated = if with_unrelated {
        "- name: unrelated\n  attach: {tracepoint: {category: syscalls, name: sys_enter_getppid}}\n"
    } else {
        ""
    };
    let yaml = format!(
        "bytecode: {{path: {object}.bpf.o}}\nglobalData: {{TID: {}, STEP: {}}}\nprograms:\n- name: count_calls\n  attach: {{tracepoint: {{category: syscalls, name: sys_enter_getpid}}}}\n{unrelated}",
        b64(&tid().to_ne_bytes()),
        b64(&step.to_ne_bytes()),
    );
    desired("glob", &yaml, object)
}

/// The u64 at byte `offset` of a one-entry internal map (its only value is the whole section).
fn read_global(pin: &Path, offset: usize) -> u64 {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin)
        .output()
        .expect("bpftool (Debian's, hack/deps installs it) reads the pinned map");
    assert!(
        out.status.success(),
        "bpftool map dump pinned {}: {}",
        pin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    // Without `-p`, bpftool gives the raw bytes as hex strings ("0x2a"), key and value.
    let value: Vec<u8> = dump[0]["value"]
        .as_array()
        .unwrap_or_else(|| panic!("a value in {dump}"))
        .iter()
        .map(|b| {
            let s = b.as_str().expect("a hex byte");
            u8::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex")
        })
        .collect();
    u64::from_ne_bytes(value[offset..offset + 8].try_into().expect("8 bytes"))
}

fn map_id(pin: &Path) -> u32 {
    MapInfo::from_pin(pin)
        .unwrap_or_else(|e| panic!("{}: {e}", pin.display()))
        .id()
}

fn pass(r: &mut Reconciler, want: &DesiredObject) -> Action {
    let report = r.reconcile(std::slice::from_ref(want), &none());
    let obj = &report.objects[0];
    assert!(obj.error.is_none(), "{:?}", obj.error);
    obj.action
}

#[test]
fn a_global_counter_is_readable_with_bpftool_through_its_pin() {
    let fs = Bpffs::new();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[counter("global_counter", 1, true)], &none());
    let pinned = report.objects[0].pinned.clone().expect("pinned");
    let obj = fs.root().join("glob");
    for name in ["bss", "data", "rodata"] {
        assert!(
            pinned.maps.contains(&obj.join("globals").join(name)),
            "{name} in {:?}",
            pinned.maps
        );
    }
    let files = tree(&obj.join("globals"));
    assert_eq!(
        files,
        [
            "_layout/bss",
            "_layout/data",
            "_layout/rodata",
            "bss",
            "data",
            "rodata"
        ]
    );
    let bss = obj.join("globals/bss");
    assert_eq!(read_global(&bss, 0), 0);
    getpid_n(25);
    assert_eq!(read_global(&bss, 0), 25, "calls (.bss) counts this thread");
    assert_eq!(
        read_global(&obj.join("globals/data"), 0),
        125,
        "total (.data) starts at its initial value"
    );
    // .rodata holds TID then STEP (8-aligned), as globalData set them.
    assert_eq!(read_global(&obj.join("globals/rodata"), 8), 1);
}

#[test]
fn an_unrelated_spec_change_keeps_the_program_id_and_the_counters() {
    let fs = Bpffs::new();
    let obj = fs.root().join("glob");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    assert_eq!(
        pass(&mut r, &counter("global_counter", 1, true)),
        Action::Created
    );
    let id = prog_id(&obj.join("progs/count_calls"));
    let maps: Vec<u32> = ["bss", "data", "rodata"]
        .iter()
        .map(|m| map_id(&obj.join("globals").join(m)))
        .collect();
    getpid_n(40);

    // The other program leaves the spec: a new version, but nothing of count_calls changed.
    assert_eq!(
        pass(&mut r, &counter("global_counter", 1, false)),
        Action::Updated
    );
    assert!(!obj.join("progs/unrelated").exists());
    assert_eq!(
        prog_id(&obj.join("progs/count_calls")),
        id,
        "the program is kept, not reloaded"
    );
    let after: Vec<u32> = ["bss", "data", "rodata"]
        .iter()
        .map(|m| map_id(&obj.join("globals").join(m)))
        .collect();
    assert_eq!(after, maps, "the same internal maps");
    assert_eq!(read_global(&obj.join("globals/bss"), 0), 40, "calls kept");
    getpid_n(2);
    assert_eq!(
        read_global(&obj.join("globals/bss"), 0),
        42,
        "and the link still counts"
    );
    assert_eq!(read_global(&obj.join("globals/data"), 0), 142);
}

#[test]
fn a_restart_adopts_the_program_and_its_counters() {
    let fs = Bpffs::new();
    let obj = fs.root().join("glob");
    let want = counter("global_counter", 1, true);
    let id = {
        let mut r = Reconciler::new(fs.path()).expect("reconciler");
        assert_eq!(pass(&mut r, &want), Action::Created);
        getpid_n(7);
        prog_id(&obj.join("progs/count_calls"))
    }; // the agent is gone
    let bss = map_id(&obj.join("globals/bss"));

    let mut r = Reconciler::new(fs.path()).expect("a restarted reconciler");
    assert_eq!(pass(&mut r, &want), Action::Adopted);
    assert_eq!(prog_id(&obj.join("progs/count_calls")), id);
    assert_eq!(map_id(&obj.join("globals/bss")), bss);
    getpid_n(3);
    assert_eq!(read_global(&obj.join("globals/bss"), 0), 10);

    // An update after the restart still hands the maps over (their records are read back).
    assert_eq!(
        pass(&mut r, &counter("global_counter", 1, false)),
        Action::Updated
    );
    assert_eq!(prog_id(&obj.join("progs/count_calls")), id);
    assert_eq!(read_global(&obj.join("globals/bss"), 0), 10);
}

#[test]
fn a_changed_constant_makes_a_fresh_rodata_and_reloads_the_program() {
    let fs = Bpffs::new();
    let obj = fs.root().join("glob");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    pass(&mut r, &counter("global_counter", 1, true));
    let id = prog_id(&obj.join("progs/count_calls"));
    let rodata = map_id(&obj.join("globals/rodata"));
    let bss = map_id(&obj.join("globals/bss"));
    getpid_n(5);

    assert_eq!(
        pass(&mut r, &counter("global_counter", 3, true)),
        Action::Updated
    );
    assert_ne!(
        map_id(&obj.join("globals/rodata")),
        rodata,
        "a fresh .rodata"
    );
    assert_eq!(read_global(&obj.join("globals/rodata"), 8), 3);
    assert_ne!(
        prog_id(&obj.join("progs/count_calls")),
        id,
        "the program is reloaded with it"
    );
    // .bss kept its layout: the new program counts on from the old count, by 3 (once the old
    // program, which counts by 1 into the same .bss, is gone).
    assert_eq!(map_id(&obj.join("globals/bss")), bss);
    wait_unloaded(id);
    getpid_n(2);
    assert_eq!(read_global(&obj.join("globals/bss"), 0), 5 + 2 * 3);
}

#[test]
fn a_changed_layout_makes_a_fresh_bss() {
    let fs = Bpffs::new();
    let obj = fs.root().join("glob");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    pass(&mut r, &counter("global_counter", 1, true));
    let bss = map_id(&obj.join("globals/bss"));
    let data = map_id(&obj.join("globals/data"));
    let rodata = map_id(&obj.join("globals/rodata"));
    let old = prog_id(&obj.join("progs/count_calls"));
    getpid_n(9);

    // v2 puts `first` in front of `calls`: reusing the old .bss would read `calls` as `first`.
    pass(&mut r, &counter("global_counter_v2", 1, true));
    // The old program counts into the kept .data until the kernel has released its link.
    wait_unloaded(old);
    assert_ne!(map_id(&obj.join("globals/bss")), bss, "a fresh .bss");
    getpid_n(1);
    assert_eq!(read_global(&obj.join("globals/bss"), 0), 1, "first");
    assert_eq!(
        read_global(&obj.join("globals/bss"), 8),
        1,
        "calls restarts"
    );
    // .data and .rodata did not change their layout or values: kept, with their contents.
    assert_eq!(map_id(&obj.join("globals/data")), data);
    assert_eq!(map_id(&obj.join("globals/rodata")), rodata);
    assert_eq!(read_global(&obj.join("globals/data"), 0), 110);
}

#[test]
fn an_upgraded_agent_pins_the_internal_maps_of_an_older_version_without_reloading() {
    let fs = Bpffs::new();
    let obj = fs.root().join("glob");
    let want = counter("global_counter", 1, true);
    let id = {
        let mut r = Reconciler::new(fs.path()).expect("reconciler");
        assert_eq!(pass(&mut r, &want), Action::Created);
        getpid_n(6);
        prog_id(&obj.join("progs/count_calls"))
    };
    // What an agent from before internal maps were pinned left: no globals/ at all.
    std::fs::remove_dir_all(obj.join("globals")).expect("unpin globals/");

    let mut r = Reconciler::new(fs.path()).expect("the upgraded agent");
    assert_eq!(pass(&mut r, &want), Action::Adopted, "adopted, not rebuilt");
    assert_eq!(prog_id(&obj.join("progs/count_calls")), id);
    getpid_n(1);
    assert_eq!(
        read_global(&obj.join("globals/bss"), 0),
        7,
        "the pin is the program's own map"
    );
    // And the next update hands it over like any other.
    assert_eq!(
        pass(&mut r, &counter("global_counter", 1, false)),
        Action::Updated
    );
    assert_eq!(prog_id(&obj.join("progs/count_calls")), id);
    assert_eq!(read_global(&obj.join("globals/bss"), 0), 7);
}
