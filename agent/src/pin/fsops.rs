//! Filesystem operations on the managed root, confined to it. Every operation opens the root
//! (checking it is a directory of the agent's user that no one else may write), then walks from
//! that descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` and
//! removes with `unlinkat` on the directory it opened: a directory swapped for a symlink while a
//! walk runs makes that step fail, it never leads outside the root. The agent never touches
//! anything outside its root.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Reason, StatusError};

/// Why a path under the managed root was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The path would leave the managed root (or is the root itself): `(path, root, how)`.
    #[error("path {path} {2}; the agent only writes under {path2}", path = .0.display(), path2 = .1.display())]
    Escape(PathBuf, PathBuf, &'static str),
    /// A directory below the root could not be created.
    #[error("creating directory {path}: {1}", path = .0.display())]
    CreateDir(PathBuf, #[source] std::io::Error),
}

impl StatusError for FsError {
    fn reason(&self) -> Reason {
        match self {
            FsError::Escape(..) => Reason::InvalidSpec,
            FsError::CreateDir(..) => Reason::PinFailed,
        }
    }
}

/// Mode of every directory the agent creates under the root: pins are root's business.
pub(crate) const DIR_MODE: u32 = 0o700;

/// How deep a removal walks: the layout is at most ~12 levels deep; anything deeper is not ours.
const MAX_DEPTH: usize = 32;

/// Path resolution for every step below the root: no symlink, no `..` above the start, and no
/// step onto another mount.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Refuses a path that is not strictly under `root`, that has `.`/`..` components, or whose
/// directories between `root` and the last component include a symlink.
pub fn confine(root: &Path, path: &Path) -> Result<(), FsError> {
    let escape = |why: &'static str| FsError::Escape(path.to_path_buf(), root.to_path_buf(), why);
    let rest = path
        .strip_prefix(root)
        .map_err(|_| escape("is outside the managed root"))?;
    if rest.as_os_str().is_empty() {
        return Err(escape("is the managed root itself"));
    }
    let mut here = root.to_path_buf();
    let parts: Vec<Component<'_>> = rest.components().collect();
    for (i, part) in parts.iter().enumerate() {
        match part {
            Component::Normal(name) => here.push(name),
            _ => return Err(escape("has '.' or '..' components")),
        }
        if i + 1 < parts.len()
            && std::fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err(escape("passes through a symlink"));
        }
    }
    Ok(())
}

/// Why `root` may not be used as the managed root, in a sentence: it must be a directory (not a
/// symlink) owned by the agent's user, writable by no one else. Otherwise another user could
/// swap its entries for symlinks and turn the sweep against files outside it.
pub(crate) fn check_root(root: &Path) -> Result<(), String> {
    open_root(root).map(drop).map_err(|e| e.to_string())
}

/// Opens the root and checks it (see [`check_root`]).
fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    let refuse = |why: String| {
        std::io::Error::other(format!(
            "the managed root {} {why}; refusing to use it",
            root.display()
        ))
    };
    let fd = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => refuse("is not a directory (a symlink?)".into()),
        e => refuse(format!("cannot be opened ({e})")),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(refuse(format!(
            "is owned by uid {}, not by the agent's uid {me}: another user created it and could swap its entries for symlinks; remove it (or chown it to {me}) and restart",
            st.st_uid
        )));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "has mode {mode:o}: it is writable by group or others, who could swap its entries for symlinks; chmod it to 700"
        )));
    }
    Ok(fd)
}

/// Opens the directory `rel` (relative, may be empty) below `base` without following symlinks
/// or leaving `base`.
fn open_beneath(base: &OwnedFd, rel: &Path) -> std::io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    Ok(rustix::fs::openat2(
        base,
        rel,
        DIR_FLAGS,
        Mode::empty(),
        BENEATH,
    )?)
}

/// The root and the directory of `path`'s parent, opened; and `path`'s last component.
fn open_parent(root: &Path, path: &Path) -> std::io::Result<(OwnedFd, CString)> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| std::io::Error::other("outside the managed root"))?;
    let name = rel
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let name = CString::new(name.as_bytes()).map_err(std::io::Error::other)?;
    let root_fd = open_root(root)?;
    let parent = open_beneath(&root_fd, rel.parent().unwrap_or(Path::new("")))?;
    Ok((parent, name))
}

/// `mkdir -p` under the root: each directory gets mode 0700, and each step is opened below the
/// last one without following a symlink.
pub(crate) fn create_dirs(root: &Path, dir: &Path) -> Result<(), FsError> {
    confine(root, dir)?;
    let fail = |source: std::io::Error| FsError::CreateDir(dir.to_path_buf(), source);
    let rel = dir.strip_prefix(root).expect("confined");
    let mut fd = open_root(root).map_err(fail)?;
    for part in rel.components() {
        let name = part.as_os_str();
        match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(fail(e.into())),
        }
        fd = open_beneath(&fd, Path::new(name)).map_err(fail)?;
    }
    Ok(())
}

/// Removes `path` and everything below it, never following symlinks, and returns how many pins
/// (files) were unlinked. Unlinking a link's last pin detaches it; a program's or map's, frees it
/// once nothing else holds it. Failures are logged and the rest goes on.
pub(crate) fn remove_tree(root: &Path, path: &Path) -> usize {
    if let Err(e) = confine(root, path) {
        tracing::error!(path = %path.display(), error = %e, "refusing to remove");
        return 0;
    }
    match open_parent(root, path) {
        Ok((parent, name)) => remove_at(&parent, &name, path, 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "refusing to remove: cannot open its directory inside the managed root");
            0
        }
    }
}

/// Removes the entry `name` of the directory `dir` (shown as `shown` in logs).
fn remove_at(dir: &OwnedFd, name: &CString, shown: &Path, depth: usize) -> usize {
    match rustix::fs::openat2(dir, name.as_c_str(), DIR_FLAGS, Mode::empty(), BENEATH) {
        Ok(sub) => {
            if depth >= MAX_DEPTH {
                tracing::error!(path = %shown.display(), "refusing to remove: nested too deep to be the agent's");
                return 0;
            }
            let mut count = 0;
            for (child, _) in entries(&sub) {
                let child_shown = shown.join(OsStr::from_bytes(child.as_bytes()));
                count += remove_at(&sub, &child, &child_shown, depth + 1);
            }
            if let Err(e) = rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::REMOVEDIR) {
                tracing::warn!(path = %shown.display(), error = %e, "could not remove directory");
            }
            count
        }
        // Not a directory (or a symlink, which is never followed): unlink the entry itself.
        Err(Errno::NOTDIR | Errno::LOOP) => {
            let is_link = rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
            match rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
                Ok(()) if is_link => 0,
                Ok(()) => {
                    tracing::debug!(path = %shown.display(), "unpinned");
                    1
                }
                Err(Errno::NOENT) => 0,
                Err(e) => {
                    tracing::warn!(path = %shown.display(), error = %e, "could not unpin");
                    0
                }
            }
        }
        Err(Errno::NOENT) => 0,
        Err(e) => {
            tracing::warn!(path = %shown.display(), error = %e, "could not open for removal");
            0
        }
    }
}

/// What an entry of a directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A directory (walked, never followed if it is a symlink).
    Dir,
    /// A symbolic link: unlinked, never followed.
    Symlink,
    /// A pin (or anything else).
    Pin,
}

/// The entries of an opened directory (without `.` and `..`).
fn entries(dir: &OwnedFd) -> Vec<(CString, EntryKind)> {
    let Ok(fd) = dir.as_fd().try_clone_to_owned() else {
        return Vec::new();
    };
    let Ok(listing) = Dir::new(fd) else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter(|e| e.file_name().to_bytes() != b"." && e.file_name().to_bytes() != b"..")
        .map(|e| {
            let kind = match e.file_type() {
                FileType::Directory => EntryKind::Dir,
                FileType::Symlink => EntryKind::Symlink,
                _ => EntryKind::Pin,
            };
            (e.file_name().to_owned(), kind)
        })
        .collect()
}

/// The entries of `dir` under the root, by name (none when it cannot be opened below the root
/// without following a symlink).
pub fn list(root: &Path, dir: &Path) -> Vec<(String, EntryKind)> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return Vec::new();
    };
    let Ok(fd) = open_root(root).and_then(|r| open_beneath(&r, rel)) else {
        return Vec::new();
    };
    entries(&fd)
        .into_iter()
        .map(|(n, k)| (String::from_utf8_lossy(n.as_bytes()).into_owned(), k))
        .collect()
}

/// Every entry below `dir` that is not a directory (pins and symlinks), as paths, sorted.
pub(crate) fn files_under(root: &Path, dir: &Path) -> Vec<(PathBuf, EntryKind)> {
    fn walk(fd: &OwnedFd, shown: &Path, depth: usize, out: &mut Vec<(PathBuf, EntryKind)>) {
        for (name, kind) in entries(fd) {
            let path = shown.join(OsStr::from_bytes(name.as_bytes()));
            match kind {
                EntryKind::Dir => {
                    if depth < MAX_DEPTH
                        && let Ok(sub) =
                            open_beneath(fd, Path::new(OsStr::from_bytes(name.as_bytes())))
                    {
                        walk(&sub, &path, depth + 1, out);
                    }
                }
                kind => out.push((path, kind)),
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(rel) = dir.strip_prefix(root)
        && let Ok(fd) = open_root(root).and_then(|r| open_beneath(&r, rel))
    {
        walk(&fd, dir, 0, &mut out);
    }
    out.sort();
    out
}

/// Every pin (not directory, not symlink) below `dir`, as paths, sorted.
pub(crate) fn pins_under(root: &Path, dir: &Path) -> Vec<PathBuf> {
    files_under(root, dir)
        .into_iter()
        .filter(|(_, k)| *k == EntryKind::Pin)
        .map(|(p, _)| p)
        .collect()
}

/// Removes empty directories below `dir` (not `dir` itself).
pub(crate) fn prune_empty_dirs(root: &Path, dir: &Path) {
    fn prune(fd: &OwnedFd, depth: usize) {
        for (name, kind) in entries(fd) {
            if kind != EntryKind::Dir || depth >= MAX_DEPTH {
                continue;
            }
            if let Ok(sub) =
                rustix::fs::openat2(fd, name.as_c_str(), DIR_FLAGS, Mode::empty(), BENEATH)
            {
                prune(&sub, depth + 1);
            }
            // Fails (as wanted) when not empty.
            let _ = rustix::fs::unlinkat(fd, name.as_c_str(), AtFlags::REMOVEDIR);
        }
    }
    if let Ok(rel) = dir.strip_prefix(root)
        && let Ok(fd) = open_root(root).and_then(|r| open_beneath(&r, rel))
    {
        prune(&fd, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_root(dir: &tempfile::TempDir) -> PathBuf {
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::set_permissions(
            &root,
            std::os::unix::fs::PermissionsExt::from_mode(DIR_MODE),
        )
        .expect("chmod");
        root
    }

    #[test]
    fn confine_refuses_escapes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", root.join("evil")).expect("symlink");
        assert!(confine(&root, &root.join("a/b")).is_ok());
        assert!(
            confine(&root, &root.join("evil")).is_ok(),
            "the last component may be a symlink (it is unlinked, not followed)"
        );
        assert!(confine(&root, &root.join("evil/passwd")).is_err());
        assert!(confine(&root, &root.join("a/../../x")).is_err());
        assert!(confine(&root, Path::new("/etc/passwd")).is_err());
        assert!(confine(&root, &root).is_err());
    }

    #[test]
    fn remove_tree_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = private_root(&dir);
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("obj")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("keep"), b"x").expect("write");
        std::fs::write(root.join("obj/pin"), b"x").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("obj/link")).expect("symlink");
        assert_eq!(remove_tree(&root, &root.join("obj")), 1);
        assert!(!root.join("obj").exists());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn a_symlinked_parent_is_not_walked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = private_root(&dir);
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).expect("mkdir");
        std::fs::write(outside.join("sub/keep"), b"x").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("evil")).expect("symlink");
        assert!(open_parent(&root, &root.join("evil/sub")).is_err());
        assert!(pins_under(&root, &root.join("evil")).is_empty());
        assert!(list(&root, &root.join("evil")).is_empty());
        // As if the symlink appeared after a check: removing it unlinks the symlink alone.
        let root_fd = open_root(&root).expect("open the root");
        let name = CString::new("evil").expect("cstr");
        assert_eq!(remove_at(&root_fd, &name, &root.join("evil"), 0), 0);
        assert!(std::fs::symlink_metadata(root.join("evil")).is_err());
        assert!(outside.join("sub/keep").exists());
    }

    #[test]
    fn create_dirs_makes_private_directories() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = private_root(&dir);
        create_dirs(&root, &root.join("a/b/c")).expect("create");
        for d in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(root.join(d))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, DIR_MODE, "{d}");
        }
        std::os::unix::fs::symlink(dir.path(), root.join("evil")).expect("symlink");
        assert!(create_dirs(&root, &root.join("evil/x")).is_err());
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn a_root_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = private_root(&dir);
        assert_eq!(check_root(&root), Ok(()));
        std::fs::set_permissions(&root, PermissionsExt::from_mode(0o1777)).expect("chmod");
        let err = check_root(&root).expect_err("1777 refused");
        assert!(
            err.contains("mode 1777") && err.contains("writable by group or others"),
            "{err}"
        );
        assert_eq!(remove_tree(&root, &root.join("x")), 0);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&root, &link).expect("symlink");
        let err = check_root(&link).expect_err("a symlink refused");
        assert!(err.contains("not a directory"), "{err}");
    }
}
