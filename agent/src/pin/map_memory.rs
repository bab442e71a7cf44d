//! Memory of pinned maps. The kernel charges a map's memory to the memory cgroup of the process
//! that creates it, and the charge stays there while the map is pinned, after that process exits:
//! every map the agent creates fills the agent's own cgroup, and a map that does not fit gets the
//! agent OOM-killed (then crash-looping, since the pins keep the charge). So the agent estimates
//! each new object's map memory from the ELF's map definitions (with `spec.maps[].maxEntries`)
//! and refuses an object whose maps would not fit the headroom of its memory cgroup, before the
//! OOM killer acts.

use std::path::{Path, PathBuf};

use bpfpin_crds::BpfObjectSpec;

/// Kept free in the agent's cgroup for the agent itself (parsing the next ELF, the API client):
/// an object is refused if its maps would leave less than this.
pub(crate) const RESERVE: u64 = 16 << 20;

/// A limit at or above this is "no limit" (cgroup v1 writes `PAGE_COUNTER_MAX * page size`).
const UNLIMITED: u64 = 1 << 62;

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// Bytes the kernel allocates (and charges) for one map of this definition, after the kernel's
/// own `map_mem_usage`, rounded up where it rounds: what the map holds when full, since a
/// preallocated map is charged at creation and the others may fill.
pub(crate) fn map_bytes(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
    cpus: u64,
) -> u64 {
    const BPF_F_NO_PREALLOC: u32 = 1;
    const PAGE: u64 = 4096;
    let (key, value, n) = (
        u64::from(key_size),
        u64::from(value_size),
        u64::from(max_entries),
    );
    // Type numbers from `enum bpf_map_type` (linux/bpf.h).
    let body = match map_type {
        // array, prog array, perf event array, cgroup array, array of maps: one slot each (fd
        // arrays hold a pointer per slot).
        2 => n * round8(value),
        3 | 4 | 8 | 12 => n * 8,
        // percpu array: a value per possible CPU per entry, plus a pointer per entry.
        6 => n * (round8(value) * cpus + 8),
        // hash, lru hash, hash of maps (and their percpu forms): buckets (16 bytes, a power of
        // two of them) plus preallocated elements (a 48-byte header, key, value); per-CPU free
        // lists add one element per CPU.
        1 | 5 | 9 | 10 | 13 => {
            let percpu = matches!(map_type, 5 | 10);
            let value_part = if percpu {
                8 + round8(value) * cpus
            } else {
                round8(value)
            };
            let elem = 48 + round8(key) + value_part;
            let buckets = n.next_power_of_two() * 16;
            let extra = if flags & BPF_F_NO_PREALLOC == 0 && matches!(map_type, 1 | 5 | 13) {
                cpus
            } else {
                0
            };
            buckets + (n + extra) * elem
        }
        // lpm trie: a node (40 bytes + prefix data + value) per entry.
        11 => n * (40 + key.saturating_sub(4) + value),
        // stack trace: buckets of (24-byte header + value).
        7 => n.next_power_of_two() * 8 + n * (24 + value),
        // ring buffer and user ring buffer: the data pages (mapped twice, allocated once).
        27 | 31 => n + 2 * PAGE,
        // queue, stack: one slot more than asked.
        22 | 23 => (n + 1) * value,
        // bloom filter: max_entries * value bits, at most.
        30 => n * value,
        // sockmap, devmap, cpumap, xskmap, ...: a pointer-sized slot or a small element each.
        _ => n * (round8(key) + round8(value) + 32),
    };
    // The map struct itself and slack: a page.
    body + PAGE
}

/// One map's estimate, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEstimate {
    /// The map's name in the ELF.
    pub name: String,
    /// Bytes the kernel charges for it when full.
    pub bytes: u64,
}

/// The estimate of every map the ELF defines that `creates` says this load creates (a shared map
/// already pinned, or a private map taken over from the previous version, is not created again),
/// largest first. `maxEntries` of the spec overrides the ELF's.
pub fn estimate(
    spec: &BpfObjectSpec,
    elf: &aya_obj::Object,
    creates: impl Fn(&str) -> bool,
) -> Vec<MapEstimate> {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64).max(1);
    let mut out: Vec<MapEstimate> = elf
        .maps
        .iter()
        .filter(|(name, _)| creates(name))
        .map(|(name, m)| {
            let max = spec
                .maps
                .iter()
                .find(|s| &s.name == name)
                .and_then(|s| s.max_entries)
                .unwrap_or(m.max_entries());
            MapEstimate {
                name: name.clone(),
                bytes: map_bytes(
                    m.map_type(),
                    m.key_size(),
                    m.value_size(),
                    max,
                    m.map_flags(),
                    cpus,
                ),
            }
        })
        .collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    out
}

/// How much memory the agent's memory cgroup (or the tightest of its ancestors) has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headroom {
    /// The cgroup directory whose limit is the tightest.
    pub cgroup: PathBuf,
    /// Its limit (`memory.max`, or v1 `memory.limit_in_bytes`).
    pub limit: u64,
    /// Its usage (`memory.current`, or v1 `memory.usage_in_bytes`).
    pub usage: u64,
}

impl Headroom {
    /// Bytes left before the limit.
    pub fn left(&self) -> u64 {
        self.limit.saturating_sub(self.usage)
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The tightest headroom from `dir` up to `top` (both included), reading `limit_file` and
/// `usage_file` in each; `None` when no level has a limit.
pub(crate) fn headroom_from(
    dir: &Path,
    top: &Path,
    limit_file: &str,
    usage_file: &str,
) -> Option<Headroom> {
    let mut best: Option<Headroom> = None;
    let mut here = Some(dir);
    while let Some(d) = here {
        // `max` (v2) does not parse: no limit at this level.
        if let (Some(limit), Some(usage)) =
            (read_u64(&d.join(limit_file)), read_u64(&d.join(usage_file)))
            && limit < UNLIMITED
        {
            let h = Headroom {
                cgroup: d.to_path_buf(),
                limit,
                usage,
            };
            if best.as_ref().is_none_or(|b| h.left() < b.left()) {
                best = Some(h);
            }
        }
        if d == top || !d.starts_with(top) {
            break;
        }
        here = d.parent();
    }
    best
}

/// Where this process's memory cgroup is: `(its directory, the mount point)` and whether it is v1.
fn memory_cgroup() -> Option<(PathBuf, PathBuf, bool)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The memory controller of v1, if it is mounted there, else the unified hierarchy.
    let v1 = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let (path, v1) = match v1 {
        Some(p) => (p, true),
        None => (cgroups.lines().find_map(|l| l.strip_prefix("0::"))?, false),
    };
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        let (Some(root), Some(mnt), Some(fstype)) = (f.get(3), f.get(4), r.first()) else {
            continue;
        };
        let matches = if v1 {
            *fstype == "cgroup"
                && r.get(2)
                    .is_some_and(|o| o.split(',').any(|o| o == "memory"))
        } else {
            *fstype == "cgroup2"
        };
        if !matches {
            continue;
        }
        // The cgroup path is relative to the hierarchy's root; the mount shows `root` of it.
        let rel = Path::new(path)
            .strip_prefix(root)
            .unwrap_or(Path::new(path));
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        let mnt = PathBuf::from(mnt);
        return Some((mnt.join(rel), mnt, v1));
    }
    None
}

/// The headroom of this process's memory cgroup (v2 `memory.max - memory.current`, v1
/// `memory.limit_in_bytes - memory.usage_in_bytes`, the tightest of it and its ancestors), or
/// `None` when there is no limit or no cgroup to read.
pub(crate) fn headroom() -> Option<Headroom> {
    // A process's cgroup does not change under it: find it once, read its counters each time.
    static WHERE: std::sync::OnceLock<Option<(PathBuf, PathBuf, bool)>> =
        std::sync::OnceLock::new();
    let (dir, top, v1) = WHERE.get_or_init(memory_cgroup).as_ref()?;
    let (dir, top, v1) = (dir.as_path(), top.as_path(), *v1);
    if v1 {
        headroom_from(dir, top, "memory.limit_in_bytes", "memory.usage_in_bytes")
    } else {
        headroom_from(dir, top, "memory.max", "memory.current")
    }
}

/// `12.3 MiB`, or `8.0 KiB` below a MiB.
pub(crate) fn human(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a size for a message")]
    let b = bytes as f64;
    if bytes < 1 << 20 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / f64::from(1u32 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_common_maps() {
        // An array of 1M u64: 8 MiB and a page.
        assert_eq!(map_bytes(2, 4, 8, 1 << 20, 0, 2), (8 << 20) + 4096);
        // Per-CPU: once per CPU, plus the pointers.
        assert_eq!(map_bytes(6, 4, 8, 1024, 0, 4), 1024 * (32 + 8) + 4096);
        // A preallocated hash of 1000 u32 -> u64: 1024 buckets, 1000 + 2 elements of 64 bytes.
        assert_eq!(map_bytes(1, 4, 8, 1000, 0, 2), 1024 * 16 + 1002 * 64 + 4096);
        // A ring buffer of 1 MiB.
        assert_eq!(map_bytes(27, 0, 0, 1 << 20, 0, 2), (1 << 20) + 3 * 4096);
    }

    #[test]
    fn the_tightest_ancestor_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let top = dir.path();
        let child = top.join("a/b");
        std::fs::create_dir_all(&child).expect("mkdir");
        let write = |d: &Path, max: &str, cur: &str| {
            std::fs::write(d.join("memory.max"), max).expect("write");
            std::fs::write(d.join("memory.current"), cur).expect("write");
        };
        write(top, "max\n", "500\n");
        write(&top.join("a"), "1000\n", "900\n");
        write(&child, "4000\n", "100\n");
        let h = headroom_from(&child, top, "memory.max", "memory.current").expect("a limit");
        assert_eq!(
            (h.cgroup.clone(), h.limit, h.usage, h.left()),
            (top.join("a"), 1000, 900, 100)
        );
        write(&top.join("a"), "max\n", "900\n");
        let h = headroom_from(&child, top, "memory.max", "memory.current").expect("a limit");
        assert_eq!(h.left(), 3900);
        write(&child, "9223372036854771712\n", "100\n");
        assert_eq!(
            headroom_from(&child, top, "memory.max", "memory.current"),
            None
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human(1536 << 10), "1.5 MiB");
        assert_eq!(human(8192), "8.0 KiB");
    }
}
