//! The host's cgroup v2 mount, for the cgroup_skb tests of the agent and the e2e suite.

use std::path::PathBuf;

/// Where cgroup v2 is mounted (hybrid hosts mount it elsewhere than /sys/fs/cgroup).
pub fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount (the cgroup_skb tests need cgroup v2)")
}

/// Debian's interpreter, started isolated (`-I`: no user site, no `PYTHON*` variables) and without
/// the `site` module (`-S`), for tests that count a process's system calls: a version-manager shim
/// (pyenv's `python3` is a bash script) or a site hook makes socket calls of its own — with `HOME`
/// unset, pyenv's bash asked nscd for the user 32 times and a connect hook counted 35 where the
/// script made 3. Falls back to `python3` on the `PATH` where Debian's is not installed.
pub fn python3() -> String {
    let debian = "/usr/bin/python3";
    let exe = if std::path::Path::new(debian).exists() {
        debian
    } else {
        "python3"
    };
    format!("{exe} -I -S")
}

/// A cgroup v2 directory named after the test (`bpfpin-test-<name>`), removed on drop (after its
/// links are gone).
#[derive(Debug)]
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let path = cgroup2_mount().join(format!("bpfpin-test-{name}"));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("create cgroup");
        TestCgroup(path)
    }

    /// `{<kind>: {cgroup: <this directory>}}`, an attach point of the manifest.
    pub fn attach(&self, kind: &str) -> String {
        format!("{{{kind}: {{cgroup: {}}}}}", self.0.display())
    }

    /// Runs the shell `script` as a process of this cgroup (the shell moves itself in first).
    pub fn run_sh(&self, script: &str) {
        let sh = format!("echo $$ > {}/cgroup.procs && {script}", self.0.display());
        let out = std::process::Command::new("sh")
            .args(["-c", &sh])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script} in {}: {}",
            self.0.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `python3 -c <script>` (see [`python3`]) as a process of this cgroup.
    pub fn run_python(&self, script: &str) {
        let sh = format!(
            "echo $$ > {}/cgroup.procs && exec {} -c \"$0\"",
            self.0.display(),
            python3()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &sh, script])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "python in {}: {}",
            self.0.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A private cgroup2 mount with a kubelet-like tree under `<mount>/bpfpin-<tag>-<pid>` (the
/// kubelet's cgroup root, `root`), for the pod-aware tests: removed, and unmounted, on drop.
#[derive(Debug)]
pub struct KubeletTree {
    mount: tempfile::TempDir,
    /// The kubelet's cgroup root (what the agent's `--cgroup-dir` names).
    pub root: PathBuf,
}

impl KubeletTree {
    pub fn new(tag: &str) -> Self {
        let mount = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(mount.path())
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mount -t cgroup2 on {}", mount.path().display());
        let root = mount
            .path()
            .join(format!("bpfpin-{tag}-{}", std::process::id()));
        let tree = KubeletTree { mount, root };
        tree.remove();
        std::fs::create_dir_all(&tree.root).expect("cgroup root");
        tree
    }

    /// `kubepods/besteffort/pod<uid>` (made again if it exists: a new cgroup id).
    pub fn pod(&self, uid: &str) -> PathBuf {
        let dir = self.root.join(format!("kubepods/besteffort/pod{uid}"));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir_all(&dir).expect("pod cgroup");
        dir
    }

    /// The cgroup of container `id` of pod `uid` (the systemd driver's scope name).
    pub fn container(&self, uid: &str, id: &str) -> PathBuf {
        let dir = self.root.join(format!(
            "kubepods/besteffort/pod{uid}/cri-containerd-{id}.scope"
        ));
        std::fs::create_dir_all(&dir).expect("container cgroup");
        dir
    }

    /// Every directory of the tree, deepest first.
    fn remove(&self) {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&e.path(), out);
                    }
                }
            }
            out.push(dir.to_path_buf());
        }
        let mut dirs = Vec::new();
        walk(&self.root, &mut dirs);
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Drop for KubeletTree {
    fn drop(&mut self) {
        self.remove();
        let _ = std::process::Command::new("umount")
            .arg(self.mount.path())
            .status();
    }
}
