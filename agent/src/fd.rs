//! Files the agent does not trust (bytecode, attach targets), opened by descriptor: `O_PATH`
//! opens follow symlinks but open nothing (a FIFO cannot block, a device cannot react), checks
//! are made on the descriptor, and the file is then used through `/proc/self/fd/N`, so a swap of
//! the path after the check changes nothing. Used by the bytecode sources and the kernel core
//! alike, so neither imports the other for it.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The largest bytecode object accepted from any source, and by the loader.
pub const MAX_BYTES: u64 = 32 << 20;

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
/// device cannot block or react) and returns the descriptor with its `fstat`.
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
