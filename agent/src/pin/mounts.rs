//! The filesystems the agent needs: bpffs (pins) and tracefs (tracepoint ids). Where they are not
//! mounted the agent mounts them, or says exactly what is missing.

use std::ffi::CString;
use std::path::Path;

use rustix::mount::MountFlags;

use crate::error::AgentError;

/// Filesystem types as `statfs(2)` gives them in `f_type` (`linux/magic.h`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
pub(crate) const TRACEFS_MAGIC: i64 = 0x7472_6163;
pub(crate) const DEBUGFS_MAGIC: i64 = 0x6462_6720;
pub(crate) const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[expect(
    clippy::useless_conversion,
    reason = "f_type is i64 on x86_64 but 32-bit on other architectures"
)]
fn fs_magic(path: &Path) -> std::io::Result<i64> {
    Ok(i64::from(rustix::fs::statfs(path)?.f_type))
}

/// The filesystem type of an open descriptor (`fstatfs` works on `O_PATH` descriptors too).
#[expect(
    clippy::useless_conversion,
    reason = "f_type is i64 on x86_64 but 32-bit on other architectures"
)]
pub(crate) fn fd_fs_magic(fd: impl std::os::fd::AsFd) -> std::io::Result<i64> {
    Ok(i64::from(rustix::fs::fstatfs(fd)?.f_type))
}

/// Mount options of a bpffs the agent mounts itself, as the chart's init container has them:
/// only root may enter it (a bpffs is mode 1777 by default, where any user could create the
/// managed root first), and nothing on it is a device, setuid or executable.
pub(crate) const BPFFS_OPTIONS: &str = "mode=0700";

fn mount(
    fstype: &str,
    target: &Path,
    flags: MountFlags,
    data: Option<&str>,
) -> std::io::Result<()> {
    let data = data
        .map(CString::new)
        .transpose()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    rustix::mount::mount(fstype, target, fstype, flags, data.as_deref())?;
    Ok(())
}

/// True when `path` is the root of (or inside) a bpffs.
pub(crate) fn is_bpffs(path: &Path) -> bool {
    fs_magic(path).is_ok_and(|m| m == BPF_FS_MAGIC)
}

/// Makes sure `mountpoint` is a bpffs: mounts one when it is a directory that holds another
/// filesystem's (empty) mount point, creates the directory when it is missing.
pub(crate) fn ensure_bpffs(mountpoint: &Path) -> Result<(), AgentError> {
    let err = |message: String| AgentError::Bpffs {
        path: mountpoint.to_path_buf(),
        message,
    };
    if is_bpffs(mountpoint) {
        return Ok(());
    }
    if !mountpoint.exists() {
        std::fs::create_dir_all(mountpoint)
            .map_err(|e| err(format!("does not exist and could not be created: {e}")))?;
    }
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount("bpf", mountpoint, flags, Some(BPFFS_OPTIONS)).map_err(|e| {
        err(format!(
            "is not a bpffs and mounting one failed ({e}); mount it with `mount -t bpf bpf {}` or give the agent CAP_SYS_ADMIN",
            mountpoint.display()
        ))
    })?;
    tracing::info!(path = %mountpoint.display(), options = BPFFS_OPTIONS, "mounted bpffs (nosuid,nodev,noexec)");
    Ok(())
}

/// Makes sure tracefs is mounted where aya looks for it (`/sys/kernel/tracing`, or
/// `/sys/kernel/debug/tracing`). Tracepoint attachments need it; aya looks only once per process,
/// so this runs at start-up.
pub fn ensure_tracefs() -> Result<(), AgentError> {
    let primary = Path::new("/sys/kernel/tracing");
    for candidate in [primary, Path::new("/sys/kernel/debug/tracing")] {
        if fs_magic(candidate).is_ok_and(|m| m == TRACEFS_MAGIC)
            || candidate.join("events").is_dir()
        {
            return Ok(());
        }
    }
    mount("tracefs", primary, MountFlags::empty(), None).map_err(|e| AgentError::Bpffs {
        path: primary.to_path_buf(),
        message: format!(
            "tracefs is not mounted and mounting it failed ({e}); tracepoint attachments need `mount -t tracefs tracefs /sys/kernel/tracing`"
        ),
    })?;
    tracing::info!(path = %primary.display(), "mounted tracefs");
    Ok(())
}
