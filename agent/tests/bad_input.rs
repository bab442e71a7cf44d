//! Bad input fails that object alone, with a reason that names it, leaves none of its pins, and
//! leaves every other object as it was.

mod common;

use std::collections::BTreeSet;

use bpfpin_agent::error::ObjectError;
use bpfpin_agent::{Action, DesiredObject, Reconciler};
use common::*;

/// Pins a good object, then reconciles it beside `bad`; checks the bad one failed with `reason`
/// (and a message containing `needle`), left nothing, and the good one kept its program ids.
fn fails_alone(bad: DesiredObject, reason: &str, needle: &str) -> ObjectError {
    let fs = Bpffs::new();
    let root = fs.root();
    let good = desired("good", COUNTER, "counter");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    r.reconcile(std::slice::from_ref(&good), &BTreeSet::new());
    let id = prog_id(&root.join("good/progs/count_getpid"));
    let shared_before = tree(&root.join("shared"));

    let report = r.reconcile(&[good, bad.clone()], &BTreeSet::new());
    let g = report
        .objects
        .iter()
        .find(|o| o.name == "good")
        .expect("good");
    assert_eq!(g.action, Action::Unchanged, "the good object is untouched");
    let b = report
        .objects
        .iter()
        .find(|o| o.name == bad.name)
        .expect("bad");
    assert_eq!(b.action, Action::Failed);
    let err = b.error.clone().expect("an error");
    assert_eq!(err.reason.as_str(), reason, "{err}");
    assert!(
        err.message.contains(needle),
        "message should contain {needle:?}: {err}"
    );

    assert!(
        !root.join(&bad.name).exists(),
        "nothing of {} is visible",
        bad.name
    );
    assert!(
        tree(&root.join("_versions").join(&bad.name)).is_empty(),
        "nothing of {} is left aside",
        bad.name
    );
    assert_eq!(
        tree(&root.join("shared")),
        shared_before,
        "no shared pin created or lost"
    );
    assert!(tree(&root.join("_staging")).is_empty());
    assert_eq!(prog_id(&root.join("good/progs/count_getpid")), id);
    err
}

#[test]
fn bytes_that_are_not_elf() {
    let mut bad = desired("bad", COUNTER, "counter");
    bad.bytecode = Ok(b"\x7fELF but not really".to_vec());
    fails_alone(bad, "InvalidElf", "not a valid eBPF ELF object");
}

#[test]
fn unreadable_bytecode() {
    let mut bad = desired("bad", COUNTER, "counter");
    bad.bytecode = Err(ObjectError::new(
        bpfpin_agent::error::Reason::BytecodeUnavailable,
        "reading bytecode /nope.o: No such file or directory",
    ));
    fails_alone(bad, "BytecodeUnavailable", "/nope.o");
}

#[test]
fn a_program_not_in_the_elf() {
    let bad = desired("bad", &COUNTER.replace("tail_target", "nope"), "counter");
    let err = fails_alone(
        bad,
        "ProgramNotFound",
        "program nope is not in the ELF object",
    );
    assert!(
        err.message.contains("count_getpid"),
        "lists what the ELF has: {err}"
    );
}

#[test]
fn a_map_not_in_the_elf() {
    let bad = desired(
        "bad",
        &COUNTER.replace("- name: counts", "- name: nomap"),
        "counter",
    );
    fails_alone(bad, "MapNotFound", "map nomap is not in the ELF object");
}

#[test]
fn a_verifier_rejection_carries_the_log_tail() {
    let bad = desired(
        "bad",
        "bytecode: {path: rejected.bpf.o}\nprograms: [{name: fine}, {name: unchecked}]",
        "rejected",
    );
    let err = fails_alone(bad, "VerifierRejected", "unchecked");
    assert!(
        err.message.contains("map_value_or_null") || err.message.contains("invalid mem access"),
        "the verifier's reason is in the message: {err}"
    );
}

#[test]
fn a_digest_mismatch() {
    let spec = format!("sha256: {}\n{COUNTER}", "0".repeat(64));
    let bad = desired("bad", &spec, "counter");
    fails_alone(bad, "DigestMismatch", "spec.sha256 says 0000");
}

#[test]
fn a_matching_digest_is_accepted() {
    let fs = Bpffs::new();
    let digest = bpfpin_agent::pin::desired::sha256_hex(&bytes("counter"));
    let ok = desired("ok", &format!("sha256: {digest}\n{COUNTER}"), "counter");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[ok], &BTreeSet::new());
    assert!(
        report.objects[0].error.is_none(),
        "{:?}",
        report.objects[0].error
    );
}

#[test]
fn a_pin_path_that_escapes_the_root() {
    for (path, needle) in [
        ("../../etc", "'..'"),
        ("/etc/x", "relative"),
        ("a//b", "empty segments"),
    ] {
        let bad = desired("bad", &COUNTER.replace("team/packets", path), "counter");
        let err = fails_alone(bad, "InvalidSpec", needle);
        assert!(
            err.message.contains("spec.maps[1].pinPath"),
            "names the field: {err}"
        );
    }
}

#[test]
fn an_object_name_with_a_dot() {
    let bad = desired("my.counter", COUNTER, "counter");
    fails_alone(bad, "InvalidSpec", "bpffs refuses names with dots");
}

#[test]
fn a_shared_map_with_a_conflicting_definition() {
    // `good` shares team/packets (u64 values); this object wants a map with u32 values there.
    let bad = desired(
        "bad",
        "bytecode: {path: conflict.bpf.o}\nmaps: [{name: counts, pinPath: team/packets}]\nprograms: [{name: count_getppid}]",
        "conflict",
    );
    fails_alone(
        bad,
        "MapConflict",
        "value size 8 (pinned) != 4 (this object)",
    );
}

#[test]
fn global_data_that_does_not_fit() {
    let bad = desired(
        "bad",
        &format!("globalData: {{INCREMENT: AQ==}}\n{COUNTER}"),
        "counter",
    );
    fails_alone(
        bad,
        "InvalidGlobalData",
        "globalData INCREMENT is 1 byte, but INCREMENT in .rodata is a __u64 of 8 bytes",
    );
    let bad = desired(
        "bad",
        &format!("globalData: {{NOPE: AQAAAAAAAAA=}}\n{COUNTER}"),
        "counter",
    );
    fails_alone(
        bad,
        "InvalidGlobalData",
        "declares no global variable NOPE (it has: INCREMENT)",
    );
    let bad = desired(
        "bad",
        &format!("globalData: {{INCREMENT: '***'}}\n{COUNTER}"),
        "counter",
    );
    fails_alone(bad, "InvalidGlobalData", "base64");
}

/// The object's BTF gives each variable's type: an override must be exactly that size, and the
/// error names the type. Without BTF the ELF symbol's size is checked instead.
#[test]
fn global_data_is_checked_against_the_types_in_btf() {
    let spec = |globals: &str| {
        format!(
            "bytecode: {{path: globals.bpf.o}}\nglobalData: {{{globals}}}\nprograms: [{{name: read_globals}}]\n"
        )
    };
    for (globals, needle) in [
        (
            "LIMIT: AQAAAAAAAAA=",
            "LIMIT is 8 bytes, but LIMIT in .rodata is a __u32 of 4 bytes",
        ),
        ("NAME: YnBm", "NAME in .rodata is a char[16] of 16 bytes"),
        (
            "CONFIG: AQ==",
            "CONFIG in .rodata is a config_t of 16 bytes",
        ),
        ("NOPE: AQ==", "(it has: CONFIG, LIMIT, NAME)"),
    ] {
        fails_alone(
            desired("bad", &spec(globals), "globals"),
            "InvalidGlobalData",
            needle,
        );
    }

    // Stripped of its BTF, the object still loads, and aya's symbol-size check still refuses.
    let dir = tempfile::tempdir().expect("tempdir");
    let stripped = dir.path().join("globals.bpf.o");
    let status = std::process::Command::new("llvm-objcopy")
        .args(["--remove-section=.BTF", "--remove-section=.BTF.ext"])
        .arg(bpf_object("globals"))
        .arg(&stripped)
        .status()
        .expect("llvm-objcopy (package llvm; hack/deps installs it)");
    assert!(status.success());
    let stripped = std::fs::read(&stripped).expect("read");
    assert!(
        aya_obj::Object::parse(&stripped)
            .expect("parse")
            .btf
            .is_none()
    );
    let mut bad = desired("bad", &spec("LIMIT: AQAAAAAAAAA="), "globals");
    bad.bytecode = Ok(stripped.clone());
    fails_alone(bad, "InvalidGlobalData", "LIMIT");

    // Overrides of the right size pin, with BTF and without.
    let fs = Bpffs::new();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let good = spec("LIMIT: BwAAAA==, NAME: AAAAAAAAAAAAAAAAAAAAAA==");
    let mut plain = desired("plain", &good, "globals");
    plain.bytecode = Ok(stripped);
    let report = r.reconcile(
        &[desired("typed", &good, "globals"), plain],
        &BTreeSet::new(),
    );
    for o in &report.objects {
        assert!(o.error.is_none(), "{}: {:?}", o.name, o.error);
    }
    assert!(fs.root().join("typed/progs/read_globals").exists());
    assert!(fs.root().join("plain/progs/read_globals").exists());
}

#[test]
fn attaching_a_program_of_the_wrong_type() {
    let spec = r#"
bytecode: {path: counter.bpf.o}
programs:
- name: tail_target
  attach: {tracepoint: {category: syscalls, name: sys_enter_getpid}}
"#;
    fails_alone(
        desired("bad", spec, "counter"),
        "AttachFailed",
        "needs a tracepoint program",
    );
}

#[test]
fn a_tracepoint_that_does_not_exist() {
    let spec = COUNTER.replace("sys_enter_getpid", "sys_enter_nosuchcall");
    fails_alone(
        desired("bad", &spec, "counter"),
        "AttachFailed",
        "syscalls/sys_enter_nosuchcall",
    );
}
