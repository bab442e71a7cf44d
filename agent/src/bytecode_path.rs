//! `bytecode.path`, in both modes: the file is opened first and what was opened is checked, so a
//! file swapped for a symlink (or a FIFO, a device, a huge file) between a check and the read
//! cannot make the agent read something else, hang, or run out of memory.
//!
//! The path is opened with `O_PATH` (symlinks are followed, as the README allows; no device is
//! opened and no FIFO waits for a writer); then the real path of that descriptor
//! (`/proc/self/fd/N`) must be inside an allowed folder, `fstat` must say it is a regular file of
//! at most [`MAX_BYTES`], and only then is it reopened through the same descriptor (the same inode,
//! whatever happened to the path meanwhile) and read, at most [`MAX_BYTES`] + 1 bytes.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use bpfpin_crds::BpfObject;

use crate::error::{ObjectError, Reason};
use crate::fetch::Fetcher;
use crate::local::LocalConfig;

/// The largest bytecode accepted from any source (the limit of `bytecode.url` and
/// `bytecode.image` too).
pub const MAX_BYTES: u64 = crate::fetch::MAX_BYTES;

/// The folders local mode reads bytecode from: the manifests folder and every `--bytecode-dir`
/// (their real paths; folders that do not exist are left out).
pub fn allowed_dirs(config: &LocalConfig) -> Vec<PathBuf> {
    std::iter::once(&config.manifests)
        .chain(&config.bytecode_dirs)
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect()
}

/// Reads `bytecode.path` (refusing files outside the allowed folders and anything that is not a
/// regular file of at most [`MAX_BYTES`]), downloads `bytecode.url` or pulls `bytecode.image`.
pub fn read_bytecode(
    obj: &BpfObject,
    folder: &Path,
    allowed: &[PathBuf],
    fetcher: &Fetcher,
) -> Result<Vec<u8>, ObjectError> {
    let source = &obj.spec.bytecode;
    if let Some(url) = &source.url {
        return fetcher.fetch(url, obj.spec.sha256.as_deref());
    }
    if let Some(image) = &source.image {
        return crate::oci::pull(
            fetcher,
            &fetcher.registry_auth,
            image,
            obj.spec.sha256.as_deref(),
        );
    }
    let Some(path) = &source.path else {
        return Err(ObjectError::new(
            Reason::UnsupportedSource,
            "bytecode.configMap is not available in local mode; use bytecode.path, bytecode.url or bytecode.image",
        ));
    };
    read_file(Path::new(path), folder, allowed)
}

/// Reads `bytecode.path` in cluster mode: it must resolve inside one of `dirs`. A relative path is
/// taken relative to the first of `dirs` where it exists.
pub fn read_path(path: &str, dirs: &[PathBuf]) -> Result<Vec<u8>, ObjectError> {
    let allowed: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect();
    let Some(first) = allowed.first() else {
        return Err(ObjectError::new(
            Reason::BytecodeUnavailable,
            format!(
                "bytecode {path}: no bytecode folder exists on this node ({})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let relative = Path::new(path);
    let folder = if relative.is_absolute() {
        Path::new("/")
    } else {
        // Only picks the folder: what is read is checked on the opened file.
        allowed
            .iter()
            .find(|d| d.join(relative).exists())
            .unwrap_or(first)
    };
    read_file(relative, folder, &allowed)
}

/// Opens `folder/path`, checks what was opened (inside `allowed`, a regular file, at most
/// [`MAX_BYTES`]) and reads it from that descriptor.
pub fn read_file(path: &Path, folder: &Path, allowed: &[PathBuf]) -> Result<Vec<u8>, ObjectError> {
    let joined = folder.join(path);
    let unavailable = |what: String| {
        ObjectError::new(
            Reason::BytecodeUnavailable,
            format!("bytecode {}: {what}", joined.display()),
        )
    };
    // O_PATH: follows symlinks, but opens nothing (no device open, no wait for a FIFO's writer).
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(&joined)
        .map_err(|e| unavailable(e.to_string()))?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let real = std::fs::read_link(&fd_path)
        .map_err(|e| unavailable(format!("reading {}: {e}", fd_path.display())))?;
    if !allowed.iter().any(|dir| real.starts_with(dir)) {
        return Err(ObjectError::new(
            Reason::BytecodePathNotAllowed,
            format!(
                "bytecode {} resolves to {}, outside the allowed folders ({}); add one with --bytecode-dir",
                path.display(),
                real.display(),
                allowed
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let meta = handle
        .metadata()
        .map_err(|e| unavailable(format!("fstat: {e}")))?;
    let resolved = if real == joined {
        String::new()
    } else {
        format!(" (resolves to {})", real.display())
    };
    if !meta.file_type().is_file() {
        return Err(unavailable(format!(
            "is {}{resolved}, not a regular file",
            describe_type(meta.file_type())
        )));
    }
    let too_large = |size: u64| {
        unavailable(format!(
            "is {size} bytes{resolved}, larger than the {} MiB limit for bytecode",
            MAX_BYTES >> 20
        ))
    };
    if meta.len() > MAX_BYTES {
        return Err(too_large(meta.len()));
    }
    // Reopening the descriptor's /proc link opens the inode that was checked, not the path again.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fd_path)
        .map_err(|e| unavailable(e.to_string()))?;
    drop(handle);
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One byte more than the limit: a file that grew since fstat is refused, not truncated.
    (&mut file)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unavailable(format!("reading: {e}")))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, for messages.
pub fn describe_type(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Opens `path` with `O_PATH` (following symlinks; nothing is opened for reading, so a FIFO or a
/// device cannot block or react) and returns the descriptor with its `fstat`: attach targets are
/// checked on this descriptor and then used through `/proc/self/fd/N`, so a swap of the path after
/// the check changes nothing.
pub fn open_path(path: &Path) -> std::io::Result<(File, std::fs::Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// The `/proc/self/fd/N` path of an open descriptor: the same inode, whatever its path is now.
pub fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
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
