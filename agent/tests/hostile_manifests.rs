//! Hostile and careless manifests in local mode, run as a user runs the agent (`local --once` or
//! watching), each on a fresh bpffs beside a good object: the exact message naming the object or
//! file, the exit status, nothing of the bad input pinned, the good object's program id and map
//! contents unchanged, and the agent's peak memory and time bounded (hang and bomb guards, not
//! performance figures).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");

/// Peak RSS an agent may reach on any hostile manifest (it needs ~16 MiB).
const MAX_RSS_KIB: i64 = 128 * 1024;
/// ru_maxrss includes the forked test process (~200 MiB) but never misses a peak: the 1 GiB of
/// the YAML error loop shows there even if polling missed it.
const MAX_RU_MAXRSS_KIB: i64 = 512 * 1024;
/// Longest an agent may take on any hostile manifest before the test calls it hung.
const MAX_TIME: Duration = Duration::from_secs(20);

/// The good object's spec: `packets` is private and nothing writes it, so a marker written there
/// proves the map (and its contents) survived.
const SPEC: &str = r#"
bytecode: {path: counter.bpf.o}
maps:
- name: counts
- name: packets
programs:
- name: count_getpid
  attach: {tracepoint: {category: syscalls, name: sys_enter_getpid}}
- name: tail_target
"#;

fn manifest(name: &str, spec: &str) -> String {
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

fn write_marker(map: &Path, value: u64) {
    let data = MapData::from_pin(map).unwrap_or_else(|e| panic!("{}: {e}", map.display()));
    let mut array: Array<_, u64> =
        Array::try_from(Map::from_map_data(data).expect("map")).expect("array");
    array.set(0, value, 0).expect("write the marker");
}

/// One finished agent process.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    /// Peak resident memory (VmHWM, polled every 5 ms while it ran), KiB.
    max_rss_kib: i64,
    /// ru_maxrss of wait4: never misses a peak, but counts the test process forked before exec.
    ru_maxrss_kib: i64,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}, peak RSS {} KiB (ru_maxrss {} KiB)\nstdout:\n{}\nstderr:\n{}",
            self.code, self.elapsed, self.max_rss_kib, self.ru_maxrss_kib, self.stdout, self.stderr
        )
    }
}

/// Collects a pipe in the background, until its end (joined by `Agent::wait`).
fn drain(
    mut pipe: impl Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (out, reader)
}

/// A running agent with its output collected.
struct Agent {
    pid: i32,
    start: Instant,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The threads reading stdout and stderr: joined once the agent exited, so a run holds all
    /// it printed.
    readers: Vec<std::thread::JoinHandle<()>>,
    /// The highest VmHWM seen while it ran (sampled whenever the test looks at the agent: a
    /// watch-mode agent may exit on SIGTERM before `wait` polls it once).
    hwm_kib: std::cell::Cell<i64>,
}

/// The peak resident memory of a running process (VmHWM), KiB.
fn vm_hwm_kib(pid: i32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Agent {
    fn spawn(manifests: &Path, fs: &Bpffs, once: bool, extra: &[&str]) -> Self {
        let cache = fs.path().with_extension("cache");
        let mut cmd = Command::new(AGENT);
        cmd.arg("local");
        if once {
            cmd.arg("--once");
        }
        #[expect(
            clippy::zombie_processes,
            reason = "reaped by wait4 in Agent::wait, which also reads its rusage"
        )]
        let mut child = cmd
            .arg("--manifests")
            .arg(manifests)
            .arg("--bpffs")
            .arg(fs.path())
            .arg("--cache-dir")
            .arg(&cache)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the agent");
        let (stdout, out_reader) = drain(child.stdout.take().expect("stdout"));
        let (stderr, err_reader) = drain(child.stderr.take().expect("stderr"));
        Self {
            pid: child.id() as i32,
            start: Instant::now(),
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            hwm_kib: std::cell::Cell::new(0),
        }
    }

    fn sample(&self) {
        if let Some(kib) = vm_hwm_kib(self.pid) {
            self.hwm_kib.set(self.hwm_kib.get().max(kib));
        }
    }

    fn stderr(&self) -> String {
        self.sample();
        self.stderr.lock().expect("lock").clone()
    }

    fn signal(&self, sig: i32) {
        self.sample();
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Waits for the exit (reaping it with wait4 for its peak RSS); kills it and fails the test
    /// after `limit`.
    fn wait(mut self, limit: Duration) -> Run {
        loop {
            let mut status = 0;
            // SAFETY: a zeroed rusage is a valid out-parameter.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: our child's pid, valid pointers.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            if r != self.pid {
                self.sample();
            }
            if r == self.pid {
                // The pipes end when the agent exited: read everything it printed.
                for reader in self.readers.drain(..) {
                    reader.join().expect("the pipe reader panicked");
                }
                return Run {
                    code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
                    stdout: self.stdout.lock().expect("lock").clone(),
                    stderr: self.stderr.lock().expect("lock").clone(),
                    elapsed: self.start.elapsed(),
                    max_rss_kib: self.hwm_kib.get(),
                    ru_maxrss_kib: usage.ru_maxrss,
                };
            }
            if self.start.elapsed() > limit {
                self.signal(libc::SIGKILL);
                panic!(
                    "the agent hung: killed after {limit:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A fresh bpffs and manifests folder with the good objects pinned and their markers written.
struct Scene {
    fs: Bpffs,
    dir: tempfile::TempDir,
    /// Per good object: its program id and marker.
    good: Vec<(String, u32, u64)>,
}

impl Scene {
    /// `good` is pinned from `good.yaml`, every other name from `<name>.yaml`.
    fn new(objects: &[&str]) -> Self {
        let fs = Bpffs::new();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(bpf_object("counter"), dir.path().join("counter.bpf.o")).expect("copy");
        for name in objects {
            std::fs::write(
                dir.path().join(format!("{name}.yaml")),
                manifest(name, SPEC),
            )
            .expect("write");
        }
        let run = Agent::spawn(dir.path(), &fs, true, &[]).wait(MAX_TIME);
        assert_eq!(run.code, Some(0), "{run}");
        let mut good = Vec::new();
        for (i, name) in objects.iter().enumerate() {
            let marker = 0x600d_0000 + i as u64;
            write_marker(&fs.root().join(name).join("maps/packets"), marker);
            let id = prog_id(&fs.root().join(name).join("progs/count_getpid"));
            good.push((name.to_string(), id, marker));
        }
        Self { fs, dir, good }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn once(&self) -> Run {
        self.once_in(self.dir.path())
    }

    fn once_in(&self, manifests: &Path) -> Run {
        Agent::spawn(manifests, &self.fs, true, &[]).wait(MAX_TIME)
    }

    /// Every good object is pinned with the same program and map contents, and still counts.
    fn assert_untouched(&self, run: &Run) {
        for (name, id, marker) in &self.good {
            let obj = self.fs.root().join(name);
            assert_eq!(
                prog_id(&obj.join("progs/count_getpid")),
                *id,
                "{name} was reloaded\n{run}"
            );
            assert_eq!(
                read_u64(&obj.join("maps/packets")),
                *marker,
                "{name}'s map lost its contents\n{run}"
            );
            let before = read_u64(&obj.join("maps/counts"));
            getpid_n(3);
            assert!(
                read_u64(&obj.join("maps/counts")) >= before + 3,
                "{name} is no longer attached\n{run}"
            );
        }
    }

    /// Nothing of `name` is pinned anywhere under the root.
    fn assert_absent(&self, name: &str, run: &Run) {
        let root = self.fs.root();
        for p in [root.join(name), root.join("_versions").join(name)] {
            assert!(
                std::fs::symlink_metadata(&p).is_err(),
                "{} exists\n{run}",
                p.display()
            );
        }
        assert!(
            tree(&root.join("_staging")).is_empty(),
            "staging left over\n{run}"
        );
    }
}

fn assert_bounded(run: &Run) {
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} KiB\n{run}",
        run.max_rss_kib
    );
    // A refusal can be over before the first VmHWM sample (CI saw one exit after 88 µs), and a
    // zombie has no memory map left to read: then ru_maxrss alone bounds the peak (it never
    // misses one, below). A run long enough to grow is sampled.
    assert!(
        run.max_rss_kib > 0 || run.elapsed < Duration::from_millis(50),
        "no RSS sample of a run of {:?}\n{run}",
        run.elapsed
    );
    assert!(run.ru_maxrss_kib < MAX_RU_MAXRSS_KIB, "{run}");
    assert!(run.elapsed < MAX_TIME, "{run}");
}

/// Asserts that `--once` failed (exit 1) with each of `lines` on stderr, bounded.
fn assert_failed_with(run: &Run, lines: &[String]) {
    assert_eq!(run.code, Some(1), "{run}");
    for line in lines {
        assert!(
            run.stderr.lines().any(|l| l == line),
            "missing line {line:?}\n{run}"
        );
    }
    assert_bounded(run);
}

// ---- A typo unpins nothing: a broken file keeps the objects it held. ----

/// `victim.yaml` held `victim`; it is broken by `bad`; a new agent process (a first pass, which
/// knows nothing of the file) keeps `victim` exactly as it is and names the file.
fn broken_file_keeps_its_object(bad: &[u8], error_line: impl Fn(&Path) -> String) {
    let scene = Scene::new(&["good", "victim"]);
    let file = scene.file("victim.yaml");
    std::fs::write(&file, bad).expect("write");
    let run = scene.once();
    assert_failed_with(
        &run,
        &[
            error_line(&file),
            format!(
                "{}: keeps victim as pinned until it is fixed",
                file.display()
            ),
        ],
    );
    scene.assert_untouched(&run);
    // Fixed again: nothing reloads.
    std::fs::write(&file, manifest("victim", SPEC)).expect("write");
    let run = scene.once();
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains("victim: pinned (unchanged)")
            || run.stdout.contains("victim: pinned at"),
        "{run}"
    );
    scene.assert_untouched(&run);
}

#[test]
fn a_non_utf8_byte_keeps_the_object_of_that_file() {
    let mut bad = manifest("victim", SPEC).into_bytes();
    bad[70] = 0xff;
    let line = bad[..70].iter().filter(|b| **b == b'\n').count() + 1;
    broken_file_keeps_its_object(&bad, |f| {
        format!(
            "{}: FAILED InvalidManifest: is not UTF-8: invalid byte 0xff at offset 70 (line {line})",
            f.display()
        )
    });
}

#[test]
fn kind_bpfobjects_keeps_the_object_of_that_file() {
    let bad = manifest("victim", SPEC).replace("kind: BpfObject", "kind: BpfObjects");
    broken_file_keeps_its_object(bad.as_bytes(), |f| {
        format!(
            "victim: FAILED InvalidManifest: {}: document 1: kind \"BpfObjects\" is not a kind; did you mean \"BpfObject\"?",
            f.display()
        )
    });
}

#[test]
fn a_typo_that_also_changes_the_name_keeps_the_object_after_a_restart() {
    // The first pass of a new process cannot know victim.yaml held `victim`: it keeps every
    // pinned object that no valid manifest claims.
    let bad = manifest("victm", SPEC).replace("kind: BpfObject", "kind: BpfObjects");
    broken_file_keeps_its_object(bad.as_bytes(), |f| {
        format!(
            "victm: FAILED InvalidManifest: {}: document 1: kind \"BpfObjects\" is not a kind; did you mean \"BpfObject\"?",
            f.display()
        )
    });
}

#[test]
fn metadata_nmae_keeps_the_object_of_that_file() {
    let bad = manifest("victim", SPEC).replace("  name: victim", "  nmae: victim");
    broken_file_keeps_its_object(bad.as_bytes(), |f| {
        format!(
            "{}: FAILED InvalidManifest: document 1: unknown field \"metadata.nmae\"",
            f.display()
        )
    });
}

#[test]
fn a_yaml_syntax_error_keeps_the_object_and_memory_stays_bounded() {
    // This drove the agent past 1 GiB: serde_yaml yields the error forever.
    let bad = "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {name: victim}\nspec: {a: b: c}\n";
    broken_file_keeps_its_object(bad.as_bytes(), |f| {
        format!(
            "{}: FAILED InvalidManifest: document 1: not YAML: did not find expected ',' or '}}' at line 4 column 12, while parsing a flow mapping at line 4 column 7",
            f.display()
        )
    });
}

#[test]
fn a_dangling_symlink_keeps_the_object_of_that_file() {
    let scene = Scene::new(&["good", "victim"]);
    let file = scene.file("victim.yaml");
    std::fs::remove_file(&file).expect("rm");
    std::os::unix::fs::symlink("/nonexistent/victim.yaml", &file).expect("symlink");
    let run = scene.once();
    assert_failed_with(
        &run,
        &[
            format!(
                "{}: FAILED InvalidManifest: cannot open: No such file or directory (os error 2)",
                file.display()
            ),
            format!(
                "{}: keeps victim as pinned until it is fixed",
                file.display()
            ),
        ],
    );
    scene.assert_untouched(&run);
}

#[test]
fn a_missing_manifests_folder_keeps_every_pin() {
    let scene = Scene::new(&["good", "victim"]);
    let missing = scene.dir.path().join("gone");
    let run = scene.once_in(&missing);
    assert_failed_with(
        &run,
        &[format!(
            "{}: FAILED InvalidManifest: cannot read the manifests folder: No such file or directory (os error 2); every pinned object is kept as it is",
            missing.display()
        )],
    );
    scene.assert_untouched(&run);
    // A file where the folder should be: the same.
    let file = scene.file("victim.yaml");
    let run = scene.once_in(&file);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr
            .contains("cannot read the manifests folder: Not a directory"),
        "{run}"
    );
    scene.assert_untouched(&run);
}

#[test]
fn too_many_files_keep_every_pin() {
    let scene = Scene::new(&["good"]);
    for i in 0..1001 {
        std::fs::write(scene.file(&format!("x{i:04}.yaml")), "").expect("write");
    }
    let run = scene.once();
    assert_failed_with(
        &run,
        &[format!(
            "{}: FAILED InvalidManifest: holds more than 1000 manifest files; every pinned object is kept as it is",
            scene.dir.path().display()
        )],
    );
    scene.assert_untouched(&run);
}

// ---- Typos are refused, as strictly as `kubectl apply --validate=strict`. ----

/// `bad.yaml` defines a new object `bad` beside `good`: refused with `line`, nothing of it pinned.
fn refused_beside_good(bad_spec_or_doc: &str, line: impl Fn(&Path) -> String) {
    let scene = Scene::new(&["good"]);
    let file = scene.file("bad.yaml");
    std::fs::write(&file, bad_spec_or_doc).expect("write");
    let run = scene.once();
    assert_failed_with(&run, &[line(&file)]);
    scene.assert_absent("bad", &run);
    scene.assert_untouched(&run);
}

fn bad_line(problem: &str, message: &str) -> impl Fn(&Path) -> String {
    let (problem, message) = (problem.to_owned(), message.to_owned());
    move |f| {
        format!(
            "bad: FAILED {problem}: {}: document 1: {message}",
            f.display()
        )
    }
}

#[test]
fn an_unknown_spec_field_is_refused_with_its_path() {
    refused_beside_good(
        &manifest("bad", &SPEC.replace("maps:", "mpas:")),
        bad_line("InvalidManifest", "unknown field \"spec.mpas\""),
    );
}

#[test]
fn an_unknown_program_field_is_refused_with_its_path() {
    refused_beside_good(
        &manifest("bad", &SPEC.replace("  attach:", "  atach:")),
        bad_line(
            "InvalidManifest",
            "unknown field \"spec.programs[0].atach\"",
        ),
    );
}

#[test]
fn a_misspelt_sha256_does_not_skip_the_digest_check() {
    let spec = format!("{SPEC}sha265: {}\n", "0".repeat(64));
    refused_beside_good(
        &manifest("bad", &spec),
        bad_line("InvalidManifest", "unknown field \"spec.sha265\""),
    );
}

#[test]
fn a_bpfobject_of_another_api_version_is_refused() {
    refused_beside_good(
        &manifest("bad", SPEC).replace("bpfpin.io/v1alpha1", "apps/v1"),
        bad_line(
            "InvalidManifest",
            "apiVersion \"apps/v1\" is not \"bpfpin.io/v1alpha1\", the version of kind BpfObject",
        ),
    );
}

#[test]
fn a_kind_in_the_wrong_case_is_refused_not_skipped() {
    refused_beside_good(
        &manifest("bad", SPEC).replace("kind: BpfObject", "kind: bpfobject"),
        bad_line(
            "InvalidManifest",
            "kind \"bpfobject\" is not a kind; did you mean \"BpfObject\"?",
        ),
    );
}

#[test]
fn a_tracepoint_category_that_is_a_path_is_refused() {
    refused_beside_good(
        &manifest(
            "bad",
            &SPEC.replace("category: syscalls", "category: ../../.."),
        ),
        bad_line(
            "InvalidSpec",
            "spec.programs[0].attach.tracepoint.category \"../../..\": must be letters, digits and '_'",
        ),
    );
}

#[test]
fn an_object_named_like_the_layout_is_refused_and_touches_nothing() {
    // `shared` holds the shared maps: refusing it must not make the sweep remove it.
    let scene = Scene::new(&["good"]);
    let file = scene.file("bad.yaml");
    std::fs::write(&file, manifest("shared", SPEC)).expect("write");
    let run = scene.once();
    assert_failed_with(
        &run,
        &[format!(
            "shared: FAILED InvalidSpec: {}: document 1: metadata.name \"shared\": is reserved: <root>/shared holds maps shared between objects",
            file.display()
        )],
    );
    scene.assert_untouched(&run);
    assert!(scene.fs.root().join("shared").is_dir(), "{run}");
}

// ---- Memory and hangs: every manifest is bounded. ----

#[test]
fn a_hundred_thousand_nested_brackets_are_refused_quickly() {
    let scene = Scene::new(&["good"]);
    let file = scene.file("bad.yaml");
    std::fs::write(&file, format!("spec: {}", "[".repeat(100_000))).expect("write");
    let run = scene.once();
    assert_failed_with(
        &run,
        &[format!(
            "{}: FAILED InvalidManifest: has 100000 '[' and '{{' characters, more than the 2048 allowed (deeply nested flow YAML is slow to parse); use block style or split the file",
            file.display()
        )],
    );
    scene.assert_untouched(&run);
}

#[test]
fn an_alias_bomb_is_refused_in_bounded_memory() {
    let scene = Scene::new(&["good"]);
    let file = scene.file("bad.yaml");
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for i in 1..10u8 {
        let (me, prev) = ((b'a' + i) as char, (b'a' + i - 1) as char);
        let refs = vec![format!("*{prev}"); 10].join(",");
        bomb.push_str(&format!("{me}: &{me} [{refs}]\n"));
    }
    std::fs::write(&file, bomb).expect("write");
    let run = scene.once();
    assert_failed_with(
        &run,
        &[format!(
            "{}: FAILED InvalidManifest: document 1: not YAML: repetition limit exceeded",
            file.display()
        )],
    );
    scene.assert_untouched(&run);
}

#[test]
fn a_fifo_named_like_a_manifest_does_not_hang_the_agent() {
    let scene = Scene::new(&["good"]);
    let file = scene.file("x.yaml");
    let c = std::ffi::CString::new(file.to_str().expect("utf-8")).expect("path");
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let run = scene.once();
    assert_failed_with(
        &run,
        &[format!(
            "{}: FAILED InvalidManifest: is not a regular file (a FIFO)",
            file.display()
        )],
    );
    scene.assert_untouched(&run);
}

#[test]
fn a_symlink_to_a_device_is_not_read() {
    let scene = Scene::new(&["good"]);
    let file = scene.file("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &file).expect("symlink");
    let run = scene.once();
    assert_failed_with(
        &run,
        &[format!(
            "{}: FAILED InvalidManifest: is not a regular file (a device)",
            file.display()
        )],
    );
    scene.assert_untouched(&run);
}

#[test]
fn a_file_over_the_size_limit_is_not_read() {
    let scene = Scene::new(&["good"]);
    let file = scene.file("big.yaml");
    let mut f = std::fs::File::create(&file).expect("create");
    let line = format!("# {}\n", "x".repeat(1021));
    for _ in 0..2048 {
        f.write_all(line.as_bytes()).expect("write");
    }
    drop(f);
    let run = scene.once();
    assert_failed_with(
        &run,
        &[format!(
            "{}: FAILED InvalidManifest: is 2097152 bytes, larger than 1572864 bytes (the most one object may have in etcd); split it",
            file.display()
        )],
    );
    scene.assert_untouched(&run);
}

#[test]
fn too_many_documents_are_refused() {
    let scene = Scene::new(&["good"]);
    let file = scene.file("many.yaml");
    std::fs::write(&file, "---\na: 1\n".repeat(1001)).expect("write");
    let run = scene.once();
    assert_failed_with(
        &run,
        &[format!(
            "{}: FAILED InvalidManifest: has more than 1000 YAML documents; split it",
            file.display()
        )],
    );
    scene.assert_untouched(&run);
}

// ---- Watch mode. ----

fn wait_for(what: &str, agent: &Agent, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > MAX_TIME {
            agent.signal(libc::SIGKILL);
            panic!("timed out waiting for {what}\nstderr:\n{}", agent.stderr());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn watching_survives_rm_rf_of_the_folder_and_notices_it_coming_back() {
    let scene = Scene::new(&["good", "victim"]);
    let agent = Agent::spawn(scene.dir.path(), &scene.fs, false, &[]);
    let root = scene.fs.root();
    // The first pass adopts both (nothing to report on stderr at warn level).
    std::thread::sleep(Duration::from_millis(500));

    // A typo in a watched file: kept as it is (the memory of what the file held).
    let victim = scene.file("victim.yaml");
    std::fs::write(
        &victim,
        manifest("victim", SPEC).replace("  name: victim", "  nmae: victim"),
    )
    .expect("write");
    wait_for("the typo to be reported", &agent, || {
        agent.stderr().contains(&format!(
            "{}: keeps victim as pinned until it is fixed",
            victim.display()
        ))
    });

    // The whole folder removed: an error, every pin kept.
    let saved = tempfile::tempdir().expect("tempdir");
    std::fs::copy(bpf_object("counter"), saved.path().join("counter.bpf.o")).expect("copy");
    std::fs::remove_dir_all(scene.dir.path()).expect("rm -rf");
    wait_for("the missing folder to be reported", &agent, || {
        agent.stderr().contains("cannot read the manifests folder")
    });
    std::thread::sleep(Duration::from_millis(300));
    let dummy = Run {
        code: None,
        stdout: String::new(),
        stderr: agent.stderr(),
        elapsed: Duration::ZERO,
        max_rss_kib: 0,
        ru_maxrss_kib: 0,
    };
    scene.assert_untouched(&dummy);

    // Created again (complete, by a rename), with a new object and without victim: noticed
    // without a restart.
    std::fs::write(saved.path().join("good.yaml"), manifest("good", SPEC)).expect("write");
    std::fs::write(saved.path().join("later.yaml"), manifest("later", SPEC)).expect("write");
    std::fs::rename(saved.path(), scene.dir.path()).expect("rename into place");
    wait_for("later to be pinned", &agent, || {
        root.join("later/progs/count_getpid").exists()
    });
    wait_for("victim, in no file now, to be unpinned", &agent, || {
        !root.join("victim").exists()
    });
    agent.signal(libc::SIGTERM);
    let run = agent.wait(MAX_TIME);
    assert_eq!(run.code, Some(0), "{run}");
    let good = Scene {
        fs: scene.fs,
        dir: scene.dir,
        good: scene.good.into_iter().filter(|g| g.0 == "good").collect(),
    };
    good.assert_untouched(&run);
    assert_bounded(&run);
}

#[test]
fn watching_a_folder_missing_at_start_keeps_the_pins_until_it_appears() {
    let scene = Scene::new(&["good"]);
    let later = scene.dir.path().join("later");
    let agent = Agent::spawn(&later, &scene.fs, false, &[]);
    wait_for("the missing folder to be reported", &agent, || {
        agent.stderr().contains(&format!(
            "{}: FAILED InvalidManifest: cannot read the manifests folder",
            later.display()
        ))
    });
    // Created complete (by a rename), as a deployment tool would.
    let ready = scene.dir.path().join("ready");
    std::fs::create_dir(&ready).expect("mkdir");
    std::fs::copy(bpf_object("counter"), ready.join("counter.bpf.o")).expect("copy");
    std::fs::write(ready.join("good.yaml"), manifest("good", SPEC)).expect("write");
    std::fs::write(ready.join("new.yaml"), manifest("new", SPEC)).expect("write");
    std::fs::rename(&ready, &later).expect("rename into place");
    let root = scene.fs.root();
    wait_for("new to be pinned", &agent, || {
        root.join("new/progs/count_getpid").exists()
    });
    agent.signal(libc::SIGTERM);
    let run = agent.wait(MAX_TIME);
    assert_eq!(run.code, Some(0), "{run}");
    scene.assert_untouched(&run);
}

/// An HTTP server that takes `delay` to answer 404 to its first request, and says when the
/// request arrived.
fn slow_404(delay: Duration) -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/slow.bpf.o", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok((mut conn, _)) = listener.accept() {
            let _ = tx.send(());
            std::thread::sleep(delay);
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (url, rx)
}

#[test]
fn sigterm_during_the_first_pass_is_a_clean_stop() {
    let scene = Scene::new(&["good"]);
    let (url, arrived) = slow_404(Duration::from_secs(2));
    // `a-slow` sorts before `good`: the first pass is inside its download when SIGTERM comes.
    let spec = format!(
        "bytecode: {{url: '{url}'}}\nsha256: '{}'\nprograms: [{{name: count_getpid}}]",
        "0".repeat(64)
    );
    std::fs::write(scene.file("a-slow.yaml"), manifest("a-slow", &spec)).expect("write");
    let agent = Agent::spawn(scene.dir.path(), &scene.fs, false, &[]);
    arrived
        .recv_timeout(MAX_TIME)
        .expect("the first pass downloads");
    agent.signal(libc::SIGTERM);
    let run = agent.wait(MAX_TIME);
    assert_eq!(run.code, Some(0), "not a clean stop\n{run}");
    assert!(run.stderr.contains("stop requested during a pass"), "{run}");
    scene.assert_untouched(&run);
    scene.assert_absent("a-slow", &run);
}
