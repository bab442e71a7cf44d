//! The messages of failures that used to say too little: an XDP hook already taken names the
//! interface and its holder (and the bpfpin object, when it is one of ours); a load the kernel
//! refuses without a verifier log says so and gives the errno; a program of the wrong kind names
//! its section and kind (`Tracing` alone does not say tp_btf from fentry); and every reason the
//! status can carry is in the README's table.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use bpfpin_agent::{Action, Reconciler};
use common::*;

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

/// A veth interface (and its peer) in this test's network namespace (the tests run under
/// `unshare --net`), removed on drop.
struct Veth(String);

impl Veth {
    fn new(name: &str) -> Self {
        let _ = Command::new("ip").args(["link", "del", name]).output();
        let peer = format!("{name}p");
        for args in [
            vec!["link", "add", name, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", name, "up"],
            vec!["link", "set", &peer, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self(name.to_owned())
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

fn xdp_spec(interface: &str) -> String {
    format!(
        "bytecode: {{path: messages.bpf.o}}\nprograms:\n- name: pass_all\n  attach: {{xdp: {{interfaces: [{interface}]}}}}\n"
    )
}

fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool (Debian's)");
    assert!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_taken_xdp_hook_names_the_interface_and_the_foreign_holder() {
    let fs = Bpffs::new();
    let dev = Veth::new("glbmsg0");
    // Another tool attaches first, through netlink, as `ip link` and xdp-loader do.
    let foreign = fs.path().join("foreign");
    bpftool(&[
        "prog",
        "load",
        bpf_object("messages").to_str().expect("utf-8"),
        foreign.to_str().expect("utf-8"),
        "type",
        "xdp",
    ]);
    let id = prog_id(&foreign);
    bpftool(&[
        "net",
        "attach",
        "xdpgeneric",
        "pinned",
        foreign.to_str().expect("utf-8"),
        "dev",
        &dev.0,
    ]);

    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired("late", &xdp_spec(&dev.0), "messages")], &none());
    let obj = &report.objects[0];
    assert_eq!(obj.action, Action::Failed);
    let err = obj.error.as_ref().expect("an error");
    assert_eq!(err.reason.as_str(), "AttachFailed", "{err:?}");
    let want = format!(
        "attaching program pass_all to XDP on interface glbmsg0: the interface already runs XDP program id {id} (pass_all, generic mode), not one of bpfpin's objects"
    );
    assert!(
        err.message.starts_with(&want),
        "{}\nwanted: {want}",
        err.message
    );
    assert!(
        err.message.contains("File exists (os error 17)"),
        "the kernel's errno stays: {}",
        err.message
    );
    assert!(!fs.root().join("late").exists(), "nothing pinned");
}

#[test]
fn a_taken_xdp_hook_names_the_bpfpin_object_that_holds_it() {
    let fs = Bpffs::new();
    let dev = Veth::new("glbmsg1");
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let first = r.reconcile(&[desired("first", &xdp_spec(&dev.0), "messages")], &none());
    assert!(
        first.objects[0].error.is_none(),
        "{:?}",
        first.objects[0].error
    );
    let id = prog_id(&fs.root().join("first/progs/pass_all"));

    let report = r.reconcile(
        &[
            desired("first", &xdp_spec(&dev.0), "messages"),
            desired("second", &xdp_spec(&dev.0), "messages"),
        ],
        &none(),
    );
    let second = report
        .objects
        .iter()
        .find(|o| o.name == "second")
        .expect("second");
    let err = second.error.as_ref().expect("second fails");
    let want = format!("the interface already runs XDP program id {id} (pass_all, ");
    assert!(err.message.contains(&want), "{}", err.message);
    assert!(
        err.message
            .contains("which is program pass_all of bpfpin object first; detach that program, or share the interface (attach.xdp.priority on every program there)"),
        "{}",
        err.message
    );
    let first = report
        .objects
        .iter()
        .find(|o| o.name == "first")
        .expect("first");
    assert_eq!(first.action, Action::Unchanged, "the holder is untouched");
}

#[test]
fn a_load_refused_without_a_verifier_log_says_so() {
    let fs = Bpffs::new();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let spec = "bytecode: {path: kinds.bpf.o}\nprograms:\n- name: fentry_count\n  attach: {fentry: {function: do_unlinkat}}\n";
    let report = r.reconcile(&[desired("fe", spec, "kinds")], &none());
    let Some(err) = &report.objects[0].error else {
        eprintln!(
            "SKIPPED: this kernel loads fentry programs, so it gives no refusal without a log to check (hack/vm-test's kernel does too)"
        );
        return;
    };
    assert_eq!(err.reason.as_str(), "LoadFailed", "{err:?}");
    assert!(
        err.message.starts_with(
            "the kernel refused to load program fentry_count and gave no verifier log: Operation not permitted (os error 1)"
        ),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("(the kernel refused the fentry/fexit program: BPF trampolines are disabled or restricted on this node)"),
        "{}",
        err.message
    );
    for bad in ["log tail", "Verifier output", "verifier rejected"] {
        assert!(!err.message.contains(bad), "{bad:?} in {}", err.message);
    }
}

#[test]
fn a_program_of_the_wrong_kind_names_its_section_and_kind() {
    let fs = Bpffs::new();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let spec = "bytecode: {path: messages_tp_btf.bpf.o}\nprograms:\n- name: on_switch\n  attach: {tracepoint: {category: sched, name: sched_switch}}\n";
    let report = r.reconcile(&[desired("wrong", spec, "messages_tp_btf")], &none());
    let err = report.objects[0].error.as_ref().expect("refused");
    assert_eq!(err.reason.as_str(), "AttachFailed", "{err:?}");
    assert_eq!(
        err.message,
        "program on_switch has type Tracing/tp_btf (section `tp_btf/sched_switch`); attaching it to tracepoint-sched-sched_switch needs a tracepoint program (SEC(\"tracepoint/...\"))"
    );
}

/// Every variant of `Reason` (`Reason::ALL` comes from the same list as the enum, so a new one
/// must be documented too) has a row in the README's reasons table.
#[test]
fn every_reason_is_in_the_readme_table() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let variants: Vec<&str> = bpfpin_crds::reason::Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert!(variants.len() >= 19, "{variants:?}");
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let table = readme
        .split_once("### Reasons")
        .expect("a README section `### Reasons`")
        .1;
    for v in variants {
        assert!(
            table.contains(&format!("\n| `{v}` |")),
            "reason {v} has no row in the README's reasons table"
        );
    }
}

/// aya's own message of a refused load (what the XDP dispatcher's errors quote) says when the
/// kernel gave no verifier log, instead of `Verifier output: ` and nothing.
#[test]
fn an_empty_verifier_log_is_never_printed_as_empty_output() {
    let fs = Bpffs::new();
    let dev = Veth::new("glbmsg2");
    let spec = format!(
        "bytecode: {{path: messages.bpf.o}}\nprograms:\n- name: pass_all\n  attach: {{xdp: {{interfaces: [{}], priority: 10}}}}\n",
        dev.0
    );
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired("sharing", &spec, "messages")], &none());
    let Some(err) = &report.objects[0].error else {
        eprintln!(
            "SKIPPED: this kernel loads freplace programs, so the dispatcher gives no refusal to check"
        );
        return;
    };
    eprintln!("{err}");
    assert!(err.message.contains("the kernel refuses freplace"), "{err}");
    assert!(
        err.message.contains("The kernel gave no verifier log"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("Verifier output"), "{}", err.message);
}
