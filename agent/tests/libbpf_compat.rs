//! libbpf compatibility: programs written in libbpf's conventions (section names, CO-RE reads,
//! BTF-defined maps, globals) and the BPF objects Debian ships load through the agent wherever
//! `bpftool prog loadall` loads them on this kernel, and fail with a reason that names the program
//! where it does not.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use bpfpin_agent::{DesiredObject, Reconciler};
use common::*;

/// Compiles `agent/tests/bpf/compat/<name>.bpf.c` once per test binary.
fn compat_object(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/bpf/compat/{name}.bpf.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf-compat");
    let out = dir.join(format!("compat-{name}.bpf.o"));
    let mut built = BUILT.get_or_init(Default::default).lock().expect("lock");
    if !built.contains(name) {
        std::fs::create_dir_all(&dir).expect("mkdir");
        compile(&src, &out);
        built.insert(name.to_owned());
    }
    out
}

fn desired_from(name: &str, spec_yaml: &str, object: &Path) -> DesiredObject {
    DesiredObject {
        name: name.to_owned(),
        uid: None,
        generation: 1,
        spec: spec(spec_yaml),
        bytecode: Ok(std::fs::read(object).expect("read object")),
    }
}

/// One `struct seen` of syscall_args.bpf.c.
#[derive(Debug)]
struct Seen {
    path: String,
    flags: u64,
    mode: u64,
    hits: u64,
}

fn read_seen(map: &Path, slot: u32) -> Seen {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(map).unwrap_or_else(|e| panic!("{}: {e}", map.display()));
    let array: Array<_, [u8; 88]> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array of struct seen");
    let v = array.get(&slot, 0).expect("read slot");
    let u64_at = |o: usize| u64::from_ne_bytes(v[o..o + 8].try_into().expect("8 bytes"));
    let end = v[..64].iter().position(|&b| b == 0).unwrap_or(64);
    Seen {
        path: String::from_utf8_lossy(&v[..end]).into_owned(),
        flags: u64_at(64),
        mode: u64_at(72),
        hits: u64_at(80),
    }
}

/// aya-rs/aya#1662: `ctx->args[1]` of `struct syscall_trace_enter` (a flexible array member) is
/// relocated, whether read directly with `preserve_access_index` (access string 0:2:1), through
/// `BPF_CORE_READ`, or through a local definition whose layout differs from the kernel's (0:0:1:
/// args at offset 0 locally, 16 in the kernel). Each program records the openat(2) the test makes,
/// and the recorded path, flags and mode are the ones passed, so each read the right argument.
#[test]
fn core_reads_syscall_tracepoint_args() {
    const MAGIC_MODE: u64 = 0o1537;
    let fs = Bpffs::new();
    let object = compat_object("syscall_args");
    let yaml = "bytecode: {path: syscall_args.bpf.o}\nprograms:\n\
        - name: openat_direct\n  attach: {tracepoint: {category: syscalls, name: sys_enter_openat}}\n\
        - name: openat_core_read\n  attach: {tracepoint: {category: syscalls, name: sys_enter_openat}}\n\
        - name: openat_minimal\n  attach: {tracepoint: {category: syscalls, name: sys_enter_openat}}\n";
    let mut r = Reconciler::new(fs.path()).expect("reconciler");
    let report = r.reconcile(
        &[desired_from("core-args", yaml, &object)],
        &BTreeSet::new(),
    );
    let obj = &report.objects[0];
    assert!(obj.error.is_none(), "core-args: {:?}", obj.error);
    assert_eq!(obj.pinned.as_ref().expect("pinned").links.len(), 3);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("core-{}", std::process::id()));
    let c_path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).expect("path");
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC;
    // SAFETY: a valid NUL-terminated path; the returned descriptor is closed below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            flags,
            MAGIC_MODE as libc::c_uint,
        )
    };
    assert!(fd >= 0, "openat {}", file.display());
    // SAFETY: fd is ours.
    unsafe { libc::close(fd as libc::c_int) };

    let map = fs.root().join("core-args/maps/seen");
    for (slot, program) in ["openat_direct", "openat_core_read", "openat_minimal"]
        .iter()
        .enumerate()
    {
        let seen = read_seen(&map, slot as u32);
        assert!(seen.hits >= 1, "{program} did not see the openat: {seen:?}");
        assert_eq!(seen.path, file.display().to_string(), "{program}: args[1]");
        assert_eq!(seen.flags, flags as u64, "{program}: args[2]");
        assert_eq!(seen.mode, MAGIC_MODE, "{program}: args[3]");
    }
}
