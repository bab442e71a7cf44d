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
