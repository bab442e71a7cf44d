//! Every example under examples/ is pinned as a user would: its C sources compiled, its manifest
//! given to `bpfpin-agent local --once` (with `eth0` replaced by a veth pair the test makes).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");

#[test]
fn every_example_pins() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let veth = Veth::new(3);
    let cgroup2 = cgroup2_mount();
    let mut checked = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples")
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        let work = tempfile::tempdir().expect("tempdir");
        let mut objects = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("example").flatten() {
            let path = entry.path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            if let Some(stem) = name.strip_suffix(".bpf.c") {
                compile(&path, &work.path().join(format!("{stem}.bpf.o")));
            } else if name.ends_with(".yaml") {
                // The node-specific parts: the interface, and the cgroup v2 mount (hybrid hosts
                // mount it elsewhere than /sys/fs/cgroup).
                let text = std::fs::read_to_string(&path)
                    .expect("read")
                    .replace("eth0", &veth.host)
                    .replace(
                        "cgroup: /sys/fs/cgroup,",
                        &format!("cgroup: {},", cgroup2.display()),
                    );
                for doc in text.split("\n---\n") {
                    let v: serde_yaml::Value = serde_yaml::from_str(doc).expect("yaml");
                    objects.push(v["metadata"]["name"].as_str().expect("name").to_owned());
                }
                std::fs::write(work.path().join(&name), text).expect("write");
            }
        }
        let fs = Bpffs::new();
        let out = Command::new(AGENT)
            .args(["local", "--once", "--manifests"])
            .arg(work.path())
            .arg("--bpffs")
            .arg(fs.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("agent");
        assert!(
            out.status.success(),
            "example {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for object in &objects {
            assert!(
                fs.root().join(object).join("progs").is_dir(),
                "{object} of {} is pinned",
                dir.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 7, "only {checked} example objects were checked");
}

fn cgroup2_mount() -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount (the cgroup-skb example needs cgroup v2)")
}
