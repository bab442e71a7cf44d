//! Every example under examples/ is pinned as a user would: its C sources compiled, its manifest
//! given to `bpfpin-agent local --once` (with `eth0` replaced by a veth pair the test makes).
//! The examples whose bytecode comes from elsewhere get it as their comments say: `url` from a
//! real HTTP server, `image` from a real registry the folder's Containerfile is pushed to, each
//! serving the object of another example (`counter.bpf.o`), with the manifest's address and
//! digest replaced by the server's. `configMap` is cluster-only: here the agent must refuse it with
//! `UnsupportedSource` (e2e/tests/cluster.rs pins it). Where this kernel cannot run an example's
//! programs (no kprobes, no BPF trampolines), the agent's error must say so, and the test prints
//! `SKIPPED` for that object.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bpfpin_agent::pin::desired::sha256_hex;
use common::registry::Registry;
use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");

/// How many example objects there are, and how many of them must pin on any kernel this test runs
/// on (the others are the configMap one and those needing kprobes or BPF trampolines).
const OBJECTS: usize = 14;
const PINNED_EVERYWHERE: usize = 9;

#[test]
fn every_example_pins() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let veth = Veth::new(3);
    let cgroup2 = cgroup::cgroup2_mount();
    let mut dirs: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples")
        .flatten()
        .map(|e| e.path())
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();

    // Every example's objects, by file name: an example may serve another's object.
    let objects = tempfile::tempdir().expect("tempdir");
    for dir in &dirs {
        for (stem, src) in sources(dir) {
            compile(&src, &objects.path().join(format!("{stem}.bpf.o")));
        }
    }
    let mut sources_of = Sources {
        objects: objects.path().to_owned(),
        http: None,
        registry: None,
    };

    let (mut pinned, mut skipped, mut checked_sizes) = (0, 0, 0);
    for dir in &dirs {
        let work = tempfile::tempdir().expect("tempdir");
        for (stem, _) in sources(dir) {
            let file = format!("{stem}.bpf.o");
            std::fs::copy(objects.path().join(&file), work.path().join(&file)).expect("copy");
        }
        let mut objects_here = Vec::new();
        let mut cluster_only = Vec::new();
        // (object, map, maxEntries) the manifests ask for.
        let mut sizes = Vec::new();
        for entry in std::fs::read_dir(dir).expect("example").flatten() {
            let path = entry.path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            if !name.ends_with(".yaml") {
                continue;
            }
            // The node-specific parts: the interface, and the cgroup v2 mount (hybrid hosts
            // mount it elsewhere than /sys/fs/cgroup).
            let text = std::fs::read_to_string(&path)
                .expect("read")
                .replace("eth0", &veth.host)
                .replace(
                    "cgroup: /sys/fs/cgroup,",
                    &format!("cgroup: {},", cgroup2.display()),
                );
            let mut docs = Vec::new();
            for doc in text.split("\n---\n") {
                let mut v: serde_yaml::Value = serde_yaml::from_str(doc).expect("yaml");
                let object = v["metadata"]["name"].as_str().expect("name").to_owned();
                if v["spec"]["bytecode"].get("configMap").is_some() {
                    cluster_only.push(object.clone());
                }
                for m in v["spec"]["maps"].as_sequence().into_iter().flatten() {
                    if let (Some(map), Some(max)) = (m["name"].as_str(), m["maxEntries"].as_u64()) {
                        sizes.push((object.clone(), map.to_owned(), max));
                    }
                }
                objects_here.push(object);
                if sources_of.provide(dir, &mut v) {
                    docs.push(serde_yaml::to_string(&v).expect("yaml"));
                } else {
                    docs.push(doc.to_owned());
                }
            }
            std::fs::write(work.path().join(&name), docs.join("\n---\n")).expect("write");
        }

        let fs = Bpffs::new();
        let cache = tempfile::tempdir().expect("tempdir");
        let out = Command::new(AGENT)
            .args(["local", "--once", "--manifests"])
            .arg(work.path())
            .arg("--bpffs")
            .arg(fs.path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["--log-format", "json"])
            .env("RUST_LOG", "warn")
            .output()
            .expect("agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let failures = failures(&stderr);
        let example = dir.file_name().expect("name").to_string_lossy();
        for (object, map, max) in &sizes {
            let pin = fs.root().join(object).join("maps").join(map);
            let info = aya::maps::MapInfo::from_pin(&pin)
                .unwrap_or_else(|e| panic!("{} of {example}: {e}", pin.display()));
            assert_eq!(
                u64::from(info.max_entries()),
                *max,
                "maxEntries of {object}/{map} in {example}"
            );
            checked_sizes += 1;
        }
        for object in &objects_here {
            if fs.root().join(object).join("progs").is_dir() {
                assert!(
                    !failures.contains_key(object),
                    "{object} of {example} is pinned and failed: {stderr}"
                );
                pinned += 1;
                continue;
            }
            let failure = failures.get(object).unwrap_or_else(|| {
                panic!("{object} of {example} is neither pinned nor failed: {stderr}")
            });
            let why = if cluster_only.contains(object) {
                assert!(
                    failure.starts_with(
                        "UnsupportedSource: bytecode.configMap is not available in local mode"
                    ),
                    "{object} of {example}: {failure}"
                );
                "bytecode.configMap is cluster-only (UnsupportedSource here; e2e/tests/cluster.rs pins it)"
            } else if let Some(why) = kernel_limitation(failure) {
                why
            } else {
                panic!("example {example}: {object} failed: {failure}\n{stderr}");
            };
            eprintln!("SKIPPED {object} of examples/{example}: {why}; checked the agent's error");
            skipped += 1;
        }
        assert_eq!(
            out.status.success(),
            failures.is_empty(),
            "example {example}: exit status {:?}: {stderr}",
            out.status
        );
    }
    assert!(
        pinned >= PINNED_EVERYWHERE && pinned + skipped >= OBJECTS,
        "only {pinned} example objects were pinned and {skipped} skipped"
    );
    assert!(checked_sizes >= 1, "no example's maxEntries was checked");
}

/// `<stem>.bpf.c` sources of an example folder.
fn sources(dir: &Path) -> Vec<(String, PathBuf)> {
    std::fs::read_dir(dir)
        .expect("example")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".bpf.c")?.to_owned();
            Some((stem, e.path()))
        })
        .collect()
}

/// The `<object>: FAILED <Reason>: <message>` reports of `--once`, as object → `<Reason>:
/// <message>`. A message may go on over several lines (a verifier log), up to the next report or
/// log line (JSON: `{...}`).
fn failures(stderr: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in stderr.lines() {
        let report = line
            .split_once(": FAILED ")
            .filter(|(object, _)| !object.contains(char::is_whitespace));
        if report.is_some() || line.starts_with('{') {
            out.extend(current.take());
        }
        if let Some((object, failure)) = report {
            current = Some((object.to_owned(), failure.to_owned()));
        } else if let Some((_, failure)) = &mut current {
            failure.push('\n');
            failure.push_str(line);
        }
    }
    out.extend(current);
    out
}

/// Why this kernel cannot run the programs, when the failure is the agent saying so.
fn kernel_limitation(failure: &str) -> Option<&'static str> {
    let no_kprobes = !Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    if no_kprobes
        && failure.starts_with("AttachFailed: ")
        && failure.contains("this kernel has no kprobe support")
    {
        return Some("this kernel has no kprobes (CONFIG_KPROBES unset)");
    }
    if failure.contains("the kernel refused the fentry/fexit program") {
        return Some("this kernel refuses BPF trampolines (EPERM at load)");
    }
    if failure.contains("the kernel refuses freplace") {
        return Some("this kernel refuses freplace, which sharing an XDP interface needs");
    }
    None
}

/// The servers of the examples whose bytecode is not a file next to the manifest, started when
/// the first such example needs them.
struct Sources {
    objects: PathBuf,
    http: Option<HttpServer>,
    registry: Option<Registry>,
}

impl Sources {
    /// Points a `url` or `image` source at a server holding the object it names (and `sha256`
    /// at its digest), as the example's comments tell a user to. Whether `doc` changed.
    fn provide(&mut self, dir: &Path, doc: &mut serde_yaml::Value) -> bool {
        let bytecode = &doc["spec"]["bytecode"];
        if let Some(url) = bytecode.get("url").and_then(|u| u.as_str()) {
            let file = url.rsplit('/').next().expect("a file name").to_owned();
            let object = std::fs::read(self.objects.join(&file))
                .unwrap_or_else(|e| panic!("{url}: the examples have no {file}: {e}"));
            let objects = &self.objects;
            let http = self.http.get_or_insert_with(|| HttpServer::serve(objects));
            doc["spec"]["bytecode"]["url"] = http.url(&file).into();
            doc["spec"]["sha256"] = sha256_hex(&object).into();
            return true;
        }
        if let Some(image) = bytecode.get("image").and_then(|i| i.as_str()) {
            // registry/repository:tag, pushed from the folder's Containerfile.
            let (_, repository) = image.split_once('/').expect("registry/repository:tag");
            let (repository, tag) = repository
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("{image}: the example names a tag"));
            let registry = self.registry.get_or_insert_with(|| Registry::start(false));
            let pushed = registry.push_containerfile(
                &dir.join("Containerfile"),
                &self.objects,
                repository,
                tag,
            );
            doc["spec"]["bytecode"]["image"] = pushed.into();
            return true;
        }
        false
    }
}
