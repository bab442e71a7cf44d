//! `.kconfig` externs (the patched aya-obj/aya, third_party/README.md): an object declaring
//! `extern ... __kconfig` loads, and its program reads the node's kernel configuration
//! (/proc/config.gz, else /boot/config-$(uname -r)) and the LINUX_* values libbpf computes.

mod common;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::Path;

use bpfpin_agent::Reconciler;
use common::*;

const SPEC: &str = r#"
bytecode: {path: kconfig.bpf.o}
programs:
- name: read_kconfig
  attach: {tracepoint: {category: syscalls, name: sys_enter_getpid}}
"#;

/// The kernel's configuration file, as text (what the test compares with).
fn kernel_config() -> String {
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open("/proc/config.gz") {
        flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .expect("gunzip /proc/config.gz");
        return text;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    std::fs::read_to_string(format!("/boot/config-{}", release.trim()))
        .expect("this kernel has neither /proc/config.gz nor /boot/config-<release>")
}

/// `NAME=value` of the configuration, or `n` for `# NAME is not set` and absent options.
fn option<'a>(config: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    config
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or("n")
}

fn slot(fs: &Bpffs, i: u32) -> u64 {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(fs.root().join("k/maps/out")).expect("out map");
    let array: Array<_, u64> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
    array.get(&i, 0).expect("read")
}

#[test]
fn kconfig_externs_read_the_kernel_configuration() {
    let fs = Bpffs::new();
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[desired("k", SPEC, "kconfig")], &BTreeSet::new());
    assert!(
        report.objects[0].error.is_none(),
        "{:?}",
        report.objects[0].error
    );
    // The values live in the read-only internal map `.kconfig`, pinned like `.rodata`.
    assert!(
        fs.root().join("k/globals/kconfig").exists(),
        "{:?}",
        tree(&fs.root().join("k"))
    );
    getpid_n(1);
    let config = kernel_config();
    let tristate = |v: &str| match v {
        "y" => 1,
        "m" => 2,
        _ => 0,
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let nums: Vec<u64> = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().expect("a release number"))
        .collect();
    let code = (nums[0] << 16) | (nums[1] << 8) | nums[2].min(255);
    assert_eq!(
        slot(&fs, 0),
        code,
        "LINUX_KERNEL_VERSION of {}",
        release.trim()
    );
    assert_eq!(slot(&fs, 1), 1, "LINUX_HAS_BPF_COOKIE (Linux 5.15+)");
    assert_eq!(slot(&fs, 2), 1, "CONFIG_BPF_SYSCALL=y");
    assert_eq!(slot(&fs, 3), tristate(option(&config, "CONFIG_BPF_JIT")));
    let number = |name| option(&config, name).parse::<u64>().unwrap_or(0);
    assert_eq!(slot(&fs, 4), number("CONFIG_HZ"));
    assert_eq!(slot(&fs, 5), number("CONFIG_NR_CPUS"));
    assert_ne!(slot(&fs, 5), 0, "CONFIG_NR_CPUS is set in every kernel");
    assert_eq!(slot(&fs, 6), 0, "a weak option no kernel has reads 0");
    assert_eq!(slot(&fs, 7), 1, "one getpid");
    let mut hostname = [slot(&fs, 8).to_le_bytes(), slot(&fs, 9).to_le_bytes()].concat();
    let len = hostname.iter().position(|&b| b == 0).unwrap_or(16);
    hostname.truncate(len);
    let expected = option(&config, "CONFIG_DEFAULT_HOSTNAME").trim_matches('"');
    assert_eq!(String::from_utf8_lossy(&hostname), expected);
}

#[test]
fn a_kconfig_extern_no_kernel_has_fails_the_load_naming_it() {
    let fs = Bpffs::new();
    // kconfig.bpf.c with KCONFIG_STRONG_MISSING: one more extern, not weak.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let src = dir.join("kconfig_strong.bpf.c");
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpf/kconfig.bpf.c");
    std::fs::write(
        &src,
        format!(
            "#define KCONFIG_STRONG_MISSING\n#include \"{}\"\n",
            real.display()
        ),
    )
    .expect("write");
    let out = dir.join("kconfig_strong.bpf.o");
    compile(&src, &out);
    let mut obj = desired("k", SPEC, "kconfig");
    obj.bytecode = Ok(std::fs::read(&out).expect("read"));
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(&[obj], &BTreeSet::new());
    let err = report.objects[0].error.clone().expect("an error");
    assert!(
        err.message.contains(
            "kconfig extern CONFIG_BPFPIN_STRONG_MISSING is not set by this kernel's configuration"
        ),
        "{err}"
    );
    assert!(!fs.root().join("k").exists(), "nothing pinned");
}
