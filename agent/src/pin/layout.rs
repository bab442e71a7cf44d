//! The pin layout under the managed root: a public contract, documented in the README.
//!
//! ```text
//! <bpffs>/bpfpin/                          the managed root
//!   <object> -> _versions/<object>/<ver>   a symlink, swapped by one rename on update
//!   _versions/<object>/<ver>/maps/<map>
//!   _versions/<object>/<ver>/progs/<program>
//!   _versions/<object>/<ver>/links/<program>/<attachment>
//!   _staging/                              symlinks being swapped in (swept at start)
//!   shared/<pinPath>                       maps shared between objects, pin-by-name maps
//! ```
//! Users read `<root>/<object>/maps/<map>` etc.: the symlink makes those paths stable while each
//! update is built aside in a new version directory. Internal names start with `_`, which no
//! Kubernetes object name can.

use std::path::{Path, PathBuf};

/// The managed root's name inside the bpffs.
pub(crate) const ROOT_DIR: &str = "bpfpin";
/// Maps shared between objects (explicit `pinPath`s and pin-by-name maps).
pub(crate) const SHARED_DIR: &str = "shared";
/// Version directories of every object.
pub(crate) const VERSIONS_DIR: &str = "_versions";
/// Symlinks being prepared for a swap.
pub(crate) const STAGING_DIR: &str = "_staging";

/// Paths of the managed root of one bpffs.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `<bpffs>/bpfpin`.
    pub fn new(bpffs: &Path) -> Self {
        Self {
            root: bpffs.join(ROOT_DIR),
        }
    }

    /// The managed root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<object>`: the stable path users read (a symlink to the current version).
    pub fn object(&self, object: &str) -> PathBuf {
        self.root.join(object)
    }

    /// `<root>/_versions/<object>`.
    fn versions_of(&self, object: &str) -> PathBuf {
        self.root.join(VERSIONS_DIR).join(object)
    }

    /// `<root>/_versions/<object>/<version>`.
    pub fn version(&self, object: &str, version: &str) -> PathBuf {
        self.versions_of(object).join(version)
    }

    /// The symlink target written at `<root>/<object>` for a version (relative, so the layout can
    /// be read through any mount of the same bpffs).
    pub(crate) fn link_target(object: &str, version: &str) -> PathBuf {
        Path::new(VERSIONS_DIR).join(object).join(version)
    }

    /// The version a symlink target names, if it is one of ours for `object`.
    pub(crate) fn version_from_target(object: &str, target: &Path) -> Option<String> {
        let rest = target
            .strip_prefix(Path::new(VERSIONS_DIR).join(object))
            .ok()?;
        let mut parts = rest.components();
        let version = parts.next()?.as_os_str().to_str()?.to_owned();
        parts.next().is_none().then_some(version)
    }

    /// `<root>/_staging`.
    pub fn staging(&self) -> PathBuf {
        self.root.join(STAGING_DIR)
    }

    /// `<root>/shared`.
    pub fn shared(&self) -> PathBuf {
        self.root.join(SHARED_DIR)
    }

    /// `<root>/shared/<pinPath>` (the pin path is validated before it gets here).
    pub fn shared_map(&self, pin_path: &str) -> PathBuf {
        self.shared().join(pin_path)
    }

    /// `<object dir>/maps/<map>`.
    pub(crate) fn map_in(dir: &Path, map: &str) -> PathBuf {
        dir.join("maps").join(map)
    }

    /// `<object dir>/progs/<program>`.
    pub(crate) fn prog_in(dir: &Path, program: &str) -> PathBuf {
        dir.join("progs").join(program)
    }

    /// `<object dir>/links/<program>/<attachment>`.
    pub(crate) fn link_in(dir: &Path, program: &str, attachment: &str) -> PathBuf {
        dir.join("links").join(program).join(attachment)
    }

    /// `<root>/<object>/...`: the stable, user-facing form of a path inside a version directory.
    pub(crate) fn public_path(&self, object: &str, version_dir: &Path, path: &Path) -> PathBuf {
        match path.strip_prefix(version_dir) {
            Ok(rest) => self.object(object).join(rest),
            Err(_) => path.to_path_buf(),
        }
    }
}

/// A bpffs-safe file name for an attachment detail (an interface name may hold `.`, which bpffs
/// refuses): `.`, `/` and `%` are percent-encoded.
pub fn encode_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '.' => out.push_str("%2E"),
            '/' => out.push_str("%2F"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = Layout::new(Path::new("/sys/fs/bpf"));
        assert_eq!(l.root(), Path::new("/sys/fs/bpf/bpfpin"));
        assert_eq!(l.object("counter"), Path::new("/sys/fs/bpf/bpfpin/counter"));
        assert_eq!(
            l.shared_map("team/counts"),
            Path::new("/sys/fs/bpf/bpfpin/shared/team/counts")
        );
        let v = l.version("counter", "abc");
        assert_eq!(v, Path::new("/sys/fs/bpf/bpfpin/_versions/counter/abc"));
        assert_eq!(
            l.public_path("counter", &v, &Layout::map_in(&v, "counts")),
            Path::new("/sys/fs/bpf/bpfpin/counter/maps/counts")
        );
    }

    #[test]
    fn symlink_targets_round_trip() {
        let t = Layout::link_target("counter", "abc-1");
        assert_eq!(t, Path::new("_versions/counter/abc-1"));
        assert_eq!(
            Layout::version_from_target("counter", &t).as_deref(),
            Some("abc-1")
        );
        assert_eq!(Layout::version_from_target("other", &t), None);
        assert_eq!(
            Layout::version_from_target("counter", Path::new("/etc")),
            None
        );
        assert_eq!(
            Layout::version_from_target("counter", Path::new("_versions/counter/a/b")),
            None
        );
    }

    #[test]
    fn names_never_hold_dots() {
        assert_eq!(encode_name("eth0.100"), "eth0%2E100");
        assert_eq!(encode_name("a/b%"), "a%2Fb%25");
        assert_eq!(encode_name("eth0"), "eth0");
    }
}
