//! `bytecode.path`, in both modes: the file is opened first and what was opened is checked, so a
//! file swapped for a symlink (or a FIFO, a device, a huge file) between a check and the read
//! cannot make the agent read something else, hang, or run out of memory.
//!
//! The path is opened with `O_PATH` (symlinks are followed, as the README allows; no device is
//! opened and no FIFO waits for a writer); then the real path of that descriptor
//! (`/proc/self/fd/N`) must be inside an allowed folder, `fstat` must say it is a regular file of
//! at most [`MAX_BYTES`], and only then is it reopened through the same descriptor (the same inode,
//! whatever happened to the path meanwhile) and read, at most [`MAX_BYTES`] + 1 bytes.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{ObjectError, Reason, StatusError};
use crate::fd::{MAX_BYTES, describe_type, fd_path, open_path};

/// Why a `bytecode.path` gave no bytecode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PathError {
    /// None of the bytecode folders exists on this node.
    #[error(
        "bytecode {path}: no bytecode folder exists on this node ({})",
        list(dirs)
    )]
    NoFolder { path: String, dirs: Vec<PathBuf> },
    /// Opening, inspecting or reading the file failed.
    #[error("bytecode {}: {step}{source}", path.display())]
    Io {
        path: PathBuf,
        step: String,
        source: std::io::Error,
    },
    /// The file resolves outside every allowed folder.
    #[error(
        "bytecode {} resolves to {}, outside the allowed folders ({}); add one with --bytecode-dir",
        path.display(),
        real.display(),
        list(allowed)
    )]
    NotAllowed {
        path: PathBuf,
        real: PathBuf,
        allowed: Vec<PathBuf>,
    },
    /// The file is a directory, a FIFO, a device or a socket.
    #[error("bytecode {}: is {kind}{}, not a regular file", path.display(), resolves(path, real))]
    NotRegular {
        path: PathBuf,
        real: PathBuf,
        kind: &'static str,
    },
    /// The file is over [`MAX_BYTES`].
    #[error(
        "bytecode {}: is {size} bytes{}, larger than the {} MiB limit for bytecode",
        path.display(),
        resolves(path, real),
        MAX_BYTES >> 20
    )]
    TooLarge {
        path: PathBuf,
        real: PathBuf,
        size: u64,
    },
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn resolves(path: &Path, real: &Path) -> String {
    if real == path {
        String::new()
    } else {
        format!(" (resolves to {})", real.display())
    }
}

impl StatusError for PathError {
    fn reason(&self) -> Reason {
        match self {
            PathError::NotAllowed { .. } => Reason::BytecodePathNotAllowed,
            _ => Reason::BytecodeUnavailable,
        }
    }
}

/// The folders `bytecode.path` may be read from, and the folder a relative path starts from.
#[derive(Debug, Clone)]
pub struct BytecodeDirs {
    /// The real paths of the allowed folders that exist.
    allowed: Vec<PathBuf>,
    /// The folders as given, for messages.
    given: Vec<PathBuf>,
    /// Local mode: relative paths start from this folder (the manifests folder). Cluster mode
    /// (`None`): from the first allowed folder where the path exists.
    base: Option<PathBuf>,
}

impl BytecodeDirs {
    /// Local mode: paths relative to `base`, inside `base` or one of `extra`.
    pub fn local(base: &Path, extra: &[PathBuf]) -> Self {
        let given: Vec<PathBuf> = std::iter::once(base)
            .chain(extra.iter().map(PathBuf::as_path))
            .map(Path::to_path_buf)
            .collect();
        Self {
            allowed: canonical(&given),
            given,
            base: Some(base.to_path_buf()),
        }
    }

    /// Cluster mode: paths inside one of `dirs`; a relative one is taken relative to the first
    /// of `dirs` where it exists.
    pub fn cluster(dirs: &[PathBuf]) -> Self {
        Self {
            allowed: canonical(dirs),
            given: dirs.to_vec(),
            base: None,
        }
    }

    /// Reads `path` from these folders.
    pub(crate) fn read(&self, path: &str) -> Result<Vec<u8>, PathError> {
        if let Some(base) = &self.base {
            return read_checked(Path::new(path), base, &self.allowed);
        }
        let Some(first) = self.allowed.first() else {
            return Err(PathError::NoFolder {
                path: path.to_owned(),
                dirs: self.given.clone(),
            });
        };
        let relative = Path::new(path);
        let folder = if relative.is_absolute() {
            Path::new("/")
        } else {
            // Only picks the folder: what is read is checked on the opened file.
            self.allowed
                .iter()
                .find(|d| d.join(relative).exists())
                .unwrap_or(first)
        };
        read_checked(relative, folder, &self.allowed)
    }
}

/// The real paths of the folders of `dirs` that exist.
fn canonical(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect()
}

/// Reads `bytecode.path` in cluster mode: it must resolve inside one of `dirs`. A relative path is
/// taken relative to the first of `dirs` where it exists.
pub fn read_path(path: &str, dirs: &[PathBuf]) -> Result<Vec<u8>, ObjectError> {
    Ok(BytecodeDirs::cluster(dirs).read(path)?)
}

/// Opens `folder/path`, checks what was opened (inside `allowed`, a regular file, at most
/// [`MAX_BYTES`]) and reads it from that descriptor.
pub fn read_file(path: &Path, folder: &Path, allowed: &[PathBuf]) -> Result<Vec<u8>, ObjectError> {
    Ok(read_checked(path, folder, allowed)?)
}

fn read_checked(path: &Path, folder: &Path, allowed: &[PathBuf]) -> Result<Vec<u8>, PathError> {
    let joined = folder.join(path);
    let io = |step: String| {
        let joined = joined.clone();
        move |source| PathError::Io {
            path: joined,
            step,
            source,
        }
    };
    // O_PATH: follows symlinks, but opens nothing (no device open, no wait for a FIFO's writer).
    let (handle, meta) = open_path(&joined).map_err(io(String::new()))?;
    let proc_path = fd_path(&handle);
    let real =
        std::fs::read_link(&proc_path).map_err(io(format!("reading {}: ", proc_path.display())))?;
    if !allowed.iter().any(|dir| real.starts_with(dir)) {
        return Err(PathError::NotAllowed {
            path: path.to_path_buf(),
            real,
            allowed: allowed.to_vec(),
        });
    }
    if !meta.file_type().is_file() {
        return Err(PathError::NotRegular {
            path: joined,
            real,
            kind: describe_type(meta.file_type()),
        });
    }
    if meta.len() > MAX_BYTES {
        return Err(PathError::TooLarge {
            path: joined,
            real,
            size: meta.len(),
        });
    }
    // Reopening the descriptor's /proc link opens the inode that was checked, not the path again.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&proc_path)
        .map_err(io(String::new()))?;
    drop(handle);
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One byte more than the limit: a file that grew since fstat is refused, not truncated.
    (&mut file)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io("reading: ".to_owned()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(PathError::TooLarge {
            path: joined,
            real,
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    fn dirs() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = vec![std::fs::canonicalize(dir.path()).expect("canonicalize")];
        (dir, allowed)
    }

    #[test]
    fn reads_a_regular_file_through_a_symlink_inside() {
        let (dir, allowed) = dirs();
        std::fs::write(dir.path().join("a.o"), b"elf").expect("write");
        std::os::unix::fs::symlink("a.o", dir.path().join("b.o")).expect("symlink");
        assert_eq!(
            read_file(Path::new("b.o"), &allowed[0], &allowed),
            Ok(b"elf".to_vec())
        );
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_at_once() {
        let (dir, allowed) = dirs();
        mkfifo_at(&dir.path().join("fifo.o"));
        std::fs::create_dir(dir.path().join("dir.o")).expect("mkdir");
        let e = read_file(Path::new("fifo.o"), &allowed[0], &allowed).expect_err("a FIFO");
        assert_eq!(e.reason, Reason::BytecodeUnavailable);
        assert!(e.message.contains("is a FIFO, not a regular file"), "{e}");
        assert!(e.message.contains("fifo.o"), "{e}");
        let e = read_file(Path::new("dir.o"), &allowed[0], &allowed).expect_err("a directory");
        assert!(e.message.contains("is a directory"), "{e}");
        let e = read_file(
            Path::new("/dev/null"),
            Path::new("/"),
            &[PathBuf::from("/dev")],
        )
        .expect_err("a device");
        assert!(e.message.contains("is a character device"), "{e}");
    }

    #[test]
    fn cluster_mode_refuses_a_fifo_in_a_bytecode_dir_too() {
        let (dir, allowed) = dirs();
        mkfifo_at(&dir.path().join("fifo.o"));
        let e = read_path("fifo.o", &allowed).expect_err("a FIFO");
        assert_eq!(e.reason, Reason::BytecodeUnavailable);
        assert_eq!(
            e.message,
            format!(
                "bytecode {}: is a FIFO, not a regular file",
                allowed[0].join("fifo.o").display()
            )
        );
    }

    fn mkfifo_at(path: &Path) {
        let c = std::ffi::CString::new(path.to_str().expect("utf8")).expect("cstring");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn refuses_files_over_the_limit_without_reading_them() {
        let (dir, allowed) = dirs();
        let big = File::create(dir.path().join("big.o")).expect("create");
        big.set_len(MAX_BYTES + 1).expect("sparse file");
        let e = read_file(Path::new("big.o"), &allowed[0], &allowed).expect_err("too large");
        assert_eq!(e.reason, Reason::BytecodeUnavailable);
        assert!(
            e.message
                .contains("is 33554433 bytes, larger than the 32 MiB limit"),
            "{e}"
        );
    }
}
