//! Filesystem operations on the managed root, confined to it: every path is checked to lie under
//! the root without passing through a symlink, and removals never follow symlinks. The agent never
//! touches anything outside its root.

use std::path::{Component, Path};

use crate::error::{ObjectError, Reason};

/// Refuses a path that is not strictly under `root`, that has `.`/`..` components, or whose
/// directories between `root` and the last component include a symlink.
pub fn confine(root: &Path, path: &Path) -> Result<(), ObjectError> {
    let escape = |why: &str| {
        ObjectError::new(
            Reason::InvalidSpec,
            format!(
                "path {} {why}; the agent only writes under {}",
                path.display(),
                root.display()
            ),
        )
    };
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

/// `mkdir -p` under the root.
pub fn create_dirs(root: &Path, dir: &Path) -> Result<(), ObjectError> {
    confine(root, dir)?;
    std::fs::create_dir_all(dir).map_err(|e| {
        ObjectError::new(
            Reason::PinFailed,
            format!("creating directory {}: {e}", dir.display()),
        )
    })
}

/// Removes `path` and everything below it, never following symlinks, and returns how many pins
/// (files) were unlinked. Unlinking a link's last pin detaches it; a program's or map's, frees it
/// once nothing else holds it. Failures are logged and the rest goes on.
pub fn remove_tree(root: &Path, path: &Path) -> usize {
    if let Err(e) = confine(root, path) {
        tracing::error!(path = %path.display(), error = %e, "refusing to remove");
        return 0;
    }
    remove_unchecked(path)
}

fn remove_unchecked(path: &Path) -> usize {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        let mut count = 0;
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                count += remove_unchecked(&entry.path());
            }
        }
        if let Err(e) = std::fs::remove_dir(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove directory");
        }
        count
    } else {
        match std::fs::remove_file(path) {
            Ok(()) => {
                if !meta.file_type().is_symlink() {
                    tracing::debug!(path = %path.display(), "unpinned");
                    1
                } else {
                    0
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not unpin");
                0
            }
        }
    }
}

/// Removes empty directories below `dir` (not `dir` itself).
pub fn prune_empty_dirs(root: &Path, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            prune_empty_dirs(root, &path);
            if confine(root, &path).is_ok() {
                let _ = std::fs::remove_dir(&path); // fails (as wanted) when not empty
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let root = dir.path().join("root");
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
}
