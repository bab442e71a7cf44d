//! Shared fixtures of the agent's integration tests: a private bpffs per test, BPF objects
//! compiled from the C sources in the repo, dummy network interfaces.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod elf;
// Shared with the e2e suite: bpfpin-testkit.
#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use bpfpin_testkit::{cgroup, cosign, hostile, memory_cgroup, registry};

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use aya::maps::{Array, Map, MapData};
use bpfpin_agent::DesiredObject;
use bpfpin_crds::BpfObjectSpec;

/// Panics with a reason when the test cannot run here: these tests need root and a kernel with
/// bpffs; they never pass without having run.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the agent's integration tests load BPF programs and mount bpffs: run them as root"
    );
}

/// A fresh private bpffs mounted in a temporary directory, unmounted on drop.
pub struct Bpffs {
    dir: tempfile::TempDir,
}

impl Bpffs {
    pub fn new() -> Self {
        require_root();
        // As the agent's main does at start-up: tracepoint attachments need tracefs, which a
        // freshly booted machine may not have mounted (aya looks for it once per process).
        static TRACEFS: std::sync::Once = std::sync::Once::new();
        TRACEFS.call_once(|| {
            bpfpin_agent::pin::mounts::ensure_tracefs().expect("tracefs for tracepoint tests")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t bpf bpf {} failed",
            dir.path().display()
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("bpfpin")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compiles a BPF C source of the repo (`counter` is the example; others live in
/// agent/tests/bpf/) once per test binary, and returns the object's path.
pub fn bpf_object(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().expect("lock");
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let src = if name == "counter" {
        repo().join("examples/counter/counter.bpf.c")
    } else if name == "tailcall" {
        repo().join("examples/tail-calls/tailcall.bpf.c")
    } else {
        repo().join(format!("agent/tests/bpf/{name}.bpf.c"))
    };
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let out = out_dir.join(format!("{name}.bpf.o"));
    compile(&src, &out);
    built.insert(name.to_owned(), out.clone());
    out
}

/// Compiles a BPF C source with clang (`-target bpf`) into `out`.
///
/// Two environment variables serve `hack/vm-test`, whose VM has no clang, so that these flags stay
/// the only ones: with `BPFPIN_TEST_BPF_EXPORT=<dir>` (on the host) what clang built is also
/// copied into `<dir>`; with `BPFPIN_TEST_BPF_PREBUILT=<dir>` (in the VM) `out` is copied from
/// `<dir>/<file name of out>` and clang is not run.
pub fn compile(src: &Path, out: &Path) {
    let name = out.file_name().expect("an output file name");
    if let Some(dir) = std::env::var_os("BPFPIN_TEST_BPF_PREBUILT") {
        let prebuilt = Path::new(&dir).join(name);
        std::fs::copy(&prebuilt, out).unwrap_or_else(|e| {
            panic!(
                "BPFPIN_TEST_BPF_PREBUILT: copying {} (prebuilt from {}): {e}",
                prebuilt.display(),
                src.display()
            )
        });
        return;
    }
    let arch = multiarch();
    let output = std::process::Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf"])
        .arg(format!("-I/usr/include/{arch}"))
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(out)
        .output()
        .expect("clang is needed to build the test BPF programs (hack/deps installs it)");
    assert!(
        output.status.success(),
        "clang {}: {}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    if let Some(dir) = std::env::var_os("BPFPIN_TEST_BPF_EXPORT") {
        std::fs::create_dir_all(&dir).expect("mkdir BPFPIN_TEST_BPF_EXPORT");
        let exported = Path::new(&dir).join(name);
        std::fs::copy(out, &exported)
            .unwrap_or_else(|e| panic!("BPFPIN_TEST_BPF_EXPORT: {}: {e}", exported.display()));
    }
}

/// The Debian multiarch triplet of this machine (`x86_64-linux-gnu`), where its headers and
/// shipped BPF objects live.
pub fn multiarch() -> String {
    std::process::Command::new("gcc")
        .arg("-dumpmachine")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "x86_64-linux-gnu".into())
}

pub fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(bpf_object(name)).expect("read object")
}

pub fn spec(yaml: &str) -> BpfObjectSpec {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("test spec: {e}\n{yaml}"))
}

pub fn desired(name: &str, spec_yaml: &str, object: &str) -> DesiredObject {
    DesiredObject {
        name: name.to_owned(),
        uid: None,
        generation: 1,
        spec: spec(spec_yaml),
        bytecode: Ok(bytes(object)),
    }
}

/// The counter example with its tracepoint attached, `counts` private, `packets` shared.
pub const COUNTER: &str = r#"
bytecode: {path: counter.bpf.o}
maps:
- name: counts
- name: packets
  pinPath: team/packets
programs:
- name: count_getpid
  attach: {tracepoint: {category: syscalls, name: sys_enter_getpid}}
- name: tail_target
"#;

/// Value 0 of an array map of u64 pinned at `path`.
pub fn read_u64(path: &Path) -> u64 {
    let data =
        MapData::from_pin(path).unwrap_or_else(|e| panic!("open map {}: {e}", path.display()));
    let map = Map::from_map_data(data).expect("map");
    let array: Array<_, u64> = Array::try_from(map).expect("array of u64");
    array.get(&0, 0).expect("read index 0")
}

/// Calls getpid(2) `n` times (the raw syscall: no libc caching).
pub fn getpid_n(n: usize) {
    for _ in 0..n {
        // SAFETY: getpid has no preconditions.
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
}

pub fn prog_id(path: &Path) -> u32 {
    aya::programs::ProgramInfo::from_pin(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .id()
}

/// Waits until the kernel has freed the program `id`. Unlinking a link's last pin releases the
/// link after an RCU grace period and a workqueue run, not in the `unlink` call, so an old
/// program can still run for a moment after the pass that replaced it. A test that counts into a
/// map the new version inherits waits for the old program to be gone first.
pub fn wait_unloaded(id: u32) {
    let start = std::time::Instant::now();
    let deadline = start + std::time::Duration::from_secs(10);
    while aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .any(|p| p.id() == id)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "program {id} is still loaded 10 s after its last pin was unlinked"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    eprintln!(
        "program {id} was unloaded {:?} after the pass",
        start.elapsed()
    );
}

/// Every file under `dir`, relative, sorted (symlinks listed, not followed).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).expect("prefix").display().to_string();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("iproute2 (ip) is needed for the XDP tests")
        .success()
}

/// A veth pair: `host` in this network namespace with 10.201.<n>.1/30, its peer in a network
/// namespace of its own with 10.201.<n>.2/30 (the test's own host). Removed on drop.
pub struct Veth {
    pub host: String,
    pub netns: String,
    pub n: u8,
}

impl Veth {
    pub fn new(n: u8) -> Self {
        let host = format!("bpfpin{n}");
        let peer = format!("bpfpin{n}p");
        let netns = format!("bpfpin-test-{n}");
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &host])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &netns])
            .output();
        let addr = format!("10.201.{n}.1/30");
        let peer_addr = format!("10.201.{n}.2/30");
        let ok = ip(&["netns", "add", &netns])
            && ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])
            && ip(&["link", "set", &peer, "netns", &netns])
            && ip(&["addr", "add", &addr, "dev", &host])
            && ip(&["link", "set", &host, "up"])
            && ip(&["-n", &netns, "addr", "add", &peer_addr, "dev", &peer])
            && ip(&["-n", &netns, "link", "set", &peer, "up"]);
        assert!(ok, "setting up veth {host} <-> {netns}/{peer}");
        Self { host, netns, n }
    }

    /// Pings the host side from the peer namespace `count` times (packets the host side receives).
    pub fn ping_host(&self, count: u32) {
        let target = format!("10.201.{}.1", self.n);
        let _ = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "ping",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.05",
                "-W",
                "1",
                &target,
            ])
            .output()
            .expect("ping (iputils-ping) is needed for the XDP tests");
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// `python3 -m http.server` serving `dir` on 127.0.0.1 (a free port): a real HTTP server for the
/// url and image sources' tests. Killed on drop.
pub struct HttpServer {
    child: std::process::Child,
    pub port: u16,
}

impl HttpServer {
    pub fn serve(dir: &Path) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 (hack/deps installs it) runs the test's HTTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("server banner");
        // "Serving HTTP on 127.0.0.1 port 43123 (http://127.0.0.1:43123/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the port from {line:?}"));
        Self { child, port }
    }

    pub fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
