//! The kernel capability probe on this machine's kernel, checked against an independent oracle:
//! `bpftool feature probe kernel` (its program type probes and the kernel config it reads). What
//! this kernel refuses must be reported as refused, what it loads as loaded.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use bpfpin_agent::cluster::capabilities;
use bpfpin_crds::{AttachType, ProgramType};

/// `bpftool feature probe kernel`: program type → available, and the `CONFIG_*` lines it printed.
fn bpftool() -> (BTreeMap<String, bool>, BTreeMap<String, String>) {
    let out = Command::new("bpftool")
        .args(["feature", "probe", "kernel"])
        .output()
        .expect("bpftool runs (hack/deps installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut types = BTreeMap::new();
    let mut config = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("eBPF program_type ") {
            let (name, verdict) = rest.split_once(' ').expect("a verdict");
            types.insert(name.to_owned(), verdict == "is available");
        } else if let Some(name) = line.strip_prefix("CONFIG_")
            && let Some((key, value)) = name.split_once(" is ")
        {
            config.insert(format!("CONFIG_{key}"), value.to_owned());
        }
    }
    assert!(types.len() > 20, "bpftool listed its program types: {text}");
    (types, config)
}

#[test]
fn the_probe_reports_what_this_kernel_loads_and_refuses() {
    common::require_root();
    let caps = capabilities::probe();
    let (bpftool_types, config) = bpftool();
    println!("kernel {} btf {}", caps.kernel, caps.btf);

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert_eq!(caps.kernel, release.trim());
    assert_eq!(
        caps.btf,
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
    );

    let mut compared = 0;
    for t in ProgramType::ALL {
        let ours = caps.program_types.contains(&t);
        let Some(&theirs) = bpftool_types.get(t.as_str()) else {
            println!(
                "{:<24} bpfpin {ours:<5} (bpftool does not probe it)",
                t.as_str()
            );
            continue;
        };
        println!("{:<24} bpfpin {ours:<5} bpftool {theirs}", t.as_str());
        compared += 1;
        if matches!(t, ProgramType::Tracing | ProgramType::Lsm) {
            // aya also attaches a trampoline for these, which bpftool does not try: bpfpin may
            // refuse what bpftool loads, never the other way round.
            assert!(
                !ours || theirs,
                "{}: bpfpin says it loads, bpftool refuses it",
                t.as_str()
            );
        } else {
            assert_eq!(ours, theirs, "program type {}", t.as_str());
        }
    }
    assert!(compared >= 30, "compared {compared} program types");

    // Attach types, against the kernel config bpftool read.
    let set = |key: &str| config.get(key).map(|v| v.starts_with("set to y"));
    let attach = |t| caps.attach_types.contains(&t);
    println!(
        "attach types {:?}",
        caps.attach_types
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
    );
    if let Some(kprobes) = set("CONFIG_KPROBE_EVENTS") {
        assert_eq!(
            attach(AttachType::Kprobe),
            kprobes,
            "kprobe vs CONFIG_KPROBE_EVENTS"
        );
    }
    if let Some(uprobes) = set("CONFIG_UPROBE_EVENTS") {
        assert_eq!(
            attach(AttachType::Uprobe),
            uprobes,
            "uprobe vs CONFIG_UPROBE_EVENTS"
        );
    }
    let tracing = caps.program_types.contains(&ProgramType::Tracing);
    assert_eq!(attach(AttachType::Fentry), tracing);
    assert_eq!(attach(AttachType::Fexit), tracing);
    assert_eq!(
        attach(AttachType::Xdp),
        caps.program_types.contains(&ProgramType::Xdp)
    );

    // This machine's kernel (Linux 6.18 in CI, without kprobes or trampolines): the probe must
    // say so rather than let an object fail with a verifier or attach error.
    if caps.kernel.starts_with("6.18.") && set("CONFIG_KPROBE_EVENTS") == Some(false) {
        assert!(!attach(AttachType::Kprobe));
        assert!(!tracing, "tracing programs are refused here");
        assert!(!attach(AttachType::Fentry));
        assert!(attach(AttachType::Tracepoint) && attach(AttachType::Uprobe));
    }
}

#[test]
fn probing_twice_gives_the_same_answer() {
    common::require_root();
    assert_eq!(capabilities::probe(), capabilities::probe());
    assert_eq!(capabilities::probed(), capabilities::probed());
}
