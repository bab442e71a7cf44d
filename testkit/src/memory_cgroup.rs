//! A memory cgroup with a limit, for the map-memory checks of the agent's tests and the e2e suite.

use std::path::{Path, PathBuf};

/// A memory cgroup of its own below this process's (v1 where the memory controller is there, as
/// on hybrid hosts, else v2), with a limit; removed on drop.
#[derive(Debug)]
pub struct MemoryCgroup {
    /// Its directory.
    pub dir: PathBuf,
    v1: bool,
}

impl MemoryCgroup {
    pub fn new(name: &str, limit: u64) -> Self {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let v1 = cgroups.lines().find_map(|l| {
            let f: Vec<&str> = l.splitn(3, ':').collect();
            f[1].split(',')
                .any(|c| c == "memory")
                .then(|| f[2].to_owned())
        });
        let (dir, v1) = match v1 {
            Some(p) => (
                Path::new("/sys/fs/cgroup/memory")
                    .join(p.trim_start_matches('/'))
                    .join(name),
                true,
            ),
            None => {
                let p = cgroups
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .expect("a cgroup v2 path");
                let parent = crate::cgroup::cgroup2_mount().join(p.trim_start_matches('/'));
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
                (parent.join(name), false)
            }
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let file = if v1 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        std::fs::write(dir.join(file), limit.to_string()).expect("set the memory limit");
        Self { dir, v1 }
    }

    pub fn usage(&self) -> u64 {
        let file = if self.v1 {
            "memory.usage_in_bytes"
        } else {
            "memory.current"
        };
        std::fs::read_to_string(self.dir.join(file))
            .expect("usage")
            .trim()
            .parse()
            .expect("a number")
    }

    /// How many processes of the cgroup the OOM killer killed.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        std::fs::read_to_string(self.dir.join(file))
            .expect("oom counters")
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map_or(0, |n| n.trim().parse().expect("a number"))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Freed maps leave the cgroup a little later (RCU): try for a while.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
