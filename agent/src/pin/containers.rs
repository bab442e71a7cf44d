//! Uprobes in containers (`containers` of `uprobe`): find a running container's process through
//! its cgroup, open the uprobe's `target` inside that process's root filesystem, attach the
//! pinned program there and pin the link.
//!
//! How a container is found: its pod's cgroup is found by the pod's UID
//! ([`super::pod_cgroup::scan`]); the container's cgroup is the directory below it whose name
//! contains the container's ID (from `status.containerStatuses[].containerID`,
//! `containerd://<id>`): `<id>` with the cgroupfs driver, `cri-containerd-<id>.scope` with the
//! systemd driver (CRI-O: `crio-<id>.scope`). Any process listed in its `cgroup.procs` (or, when
//! the container made cgroups of its own, in one below) shows the container's filesystem at
//! `/proc/<pid>/root`.
//!
//! How the file is opened: `openat2(RESOLVE_IN_ROOT)` from that root, so `..` and absolute
//! symlinks inside the container resolve inside it and never reach a file of the node (the
//! kernel also refuses magic links such as `/proc/self/root` on the way, `RESOLVE_NO_MAGICLINKS`).
//! The descriptor's `/proc/self/fd` path is what aya (symbol lookup) and the kernel (the probe)
//! get: the file checked is the file probed.
//!
//! What the probe covers: a uprobe is set on a file (its inode; for an overlay file, the layer
//! file underneath, `d_real_inode`), so it fires in every process that runs that file: every
//! process of the container, and also any other container started from the same image layer.
//! It is not narrowed to the container's processes (a perf uprobe's pid filter follows one
//! process, and processes the container starts later would be missed).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
use aya::programs::{ProbeKind, UProbe};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::error::{Reason, StatusError, sources};

/// Directories below a container's cgroup looked at for a process (a container that makes
/// cgroups of its own keeps its processes in them, cgroup v2 has none in inner nodes).
const MAX_DEPTH: usize = 3;

/// Why a container's file could not be found, or the uprobe on it failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No cgroup of the container under its pod's: `(container id, the pod's cgroup)`.
    #[error("no cgroup of container {0} under {path}", path = .1.display())]
    NoCgroup(String, PathBuf),
    /// The container's cgroup lists no process (it is starting or stopping).
    #[error("no process in the container's cgroup {path}", path = .0.display())]
    NoProcess(PathBuf),
    /// The target could not be opened inside the container's root: `(target, root, error)`.
    #[error("uprobe target {0} inside the container's root {1}: {2}")]
    Open(String, String, #[source] std::io::Error),
    /// The target inside the container is not a regular file: `(target, what it is)`.
    #[error("uprobe target {0} inside the container is {1}, not a regular file")]
    NotFile(String, &'static str),
    /// The pinned program could not be opened: `(its pin, aya's error)`.
    #[error("opening the pinned program {path}: {cause}", path = .0.display(), cause = sources(.1))]
    Program(PathBuf, #[source] aya::programs::ProgramError),
    /// aya or the kernel refused the probe: `(target, aya's error)`.
    #[error("attaching the uprobe on {0} in the container: {cause}", cause = sources(&**.1))]
    Attach(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    /// The link could not be pinned: `(the pin path, aya's error)`.
    #[error("pinning the link at {path}: {1}", path = .0.display())]
    Pin(PathBuf, #[source] aya::pin::PinError),
}

impl StatusError for ContainerError {
    fn reason(&self) -> Reason {
        match self {
            ContainerError::Pin(..) => Reason::PinFailed,
            _ => Reason::AttachFailed,
        }
    }
}

/// The container ID of a `containerID` of a container status (`containerd://<id>`,
/// `cri-o://<id>`, `docker://<id>`); `None` when empty or not of that form.
pub fn container_id(status_id: &str) -> Option<String> {
    let (_, id) = status_id.split_once("://")?;
    (id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The link's file name under `links/<program>/`: `uprobe-pod-<pod uid>-<container>`.
pub fn link_name(pod_uid: &str, container: &str) -> String {
    format!(
        "uprobe-pod-{}-{}",
        super::layout::encode_name(pod_uid),
        super::layout::encode_name(container)
    )
}

/// Whether a file name under `links/<program>/` is a container uprobe attachment.
pub fn is_pod_link(name: &str) -> bool {
    name.starts_with("uprobe-pod-")
}

/// The cgroup of the container `id` below its pod's cgroup `pod_cgroup`.
pub fn container_cgroup(pod_cgroup: &Path, id: &str) -> Result<PathBuf, ContainerError> {
    let missing = || ContainerError::NoCgroup(id.to_owned(), pod_cgroup.to_path_buf());
    let entries = std::fs::read_dir(pod_cgroup).map_err(|_| missing())?;
    entries
        .flatten()
        .find(|e| {
            e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name().to_string_lossy().contains(id)
        })
        .map(|e| e.path())
        .ok_or_else(missing)
}

/// A process of the cgroup `dir`, or of a cgroup below it.
pub fn container_pid(dir: &Path) -> Result<u32, ContainerError> {
    fn find(dir: &Path, depth: usize) -> Option<u32> {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if let Some(pid) = procs.lines().find_map(|l| l.trim().parse::<u32>().ok()) {
            return Some(pid);
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .find_map(|e| find(&e.path(), depth + 1))
    }
    find(dir, 0).ok_or_else(|| ContainerError::NoProcess(dir.to_path_buf()))
}

/// Opens `target` (absolute, inside the container) from the root of process `pid`, never
/// leaving that root, and checks it is a regular file. The descriptor is `O_PATH`.
pub fn open_in_root(pid: u32, target: &str) -> Result<std::fs::File, ContainerError> {
    let root = format!("/proc/{pid}/root");
    let open = |e: std::io::Error| ContainerError::Open(target.to_owned(), root.clone(), e);
    let dir: OwnedFd = rustix::fs::open(
        root.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| open(e.into()))?;
    let fd = rustix::fs::openat2(
        &dir,
        target,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| open(e.into()))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(open)?;
    if !meta.file_type().is_file() {
        return Err(ContainerError::NotFile(
            target.to_owned(),
            crate::fd::describe_type(meta.file_type()),
        ));
    }
    Ok(file)
}

/// Where the probe goes in the file.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The target path inside the container (for messages).
    pub target: &'a str,
    /// The function symbol.
    pub symbol: Option<&'a str>,
    /// The offset (from the symbol, or from the file's start without one).
    pub offset: Option<u64>,
    /// `uretprobe` section: the function's return.
    pub ret: bool,
}

/// Attaches the uprobe program pinned at `program` on `file` (opened by [`open_in_root`]) and
/// pins the link at `link` (its directory must exist).
pub fn attach(
    program: &Path,
    probe: Probe<'_>,
    file: &std::fs::File,
    link: &Path,
) -> Result<(), ContainerError> {
    let kind = if probe.ret {
        ProbeKind::Return
    } else {
        ProbeKind::Entry
    };
    let mut prog = UProbe::from_pin(program, kind)
        .map_err(|e| ContainerError::Program(program.to_path_buf(), e))?;
    let location = match (probe.symbol, probe.offset) {
        (Some(sym), Some(off)) => UProbeAttachLocation::SymbolOffset(sym, off),
        (Some(sym), None) => UProbeAttachLocation::Symbol(sym),
        (None, Some(off)) => UProbeAttachLocation::AbsoluteOffset(off),
        (None, None) => UProbeAttachLocation::AbsoluteOffset(0),
    };
    let kernel = |e: Box<dyn std::error::Error + Send + Sync>| {
        ContainerError::Attach(probe.target.to_owned(), e)
    };
    let path = crate::fd::fd_path(file);
    let id = prog
        .attach(location, &path, UProbeScope::AllProcesses)
        .map_err(|e| kernel(Box::new(e)))?;
    let taken = prog.take_link(id).map_err(|e| kernel(Box::new(e)))?;
    let fd_link = FdLink::try_from(taken).map_err(|e| kernel(Box::new(e)))?;
    fd_link
        .pin(link)
        .map_err(|e| ContainerError::Pin(link.to_path_buf(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_of_every_runtime() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            container_id(&format!("containerd://{id}")).as_deref(),
            Some(id)
        );
        assert_eq!(container_id(&format!("cri-o://{id}")).as_deref(), Some(id));
        assert_eq!(container_id(""), None);
        assert_eq!(container_id(id), None);
        assert_eq!(container_id("containerd://../../x"), None);
    }

    #[test]
    fn link_names() {
        let name = link_name("u-1", "app");
        assert_eq!(name, "uprobe-pod-u-1-app");
        assert!(is_pod_link(&name));
        assert!(!is_pod_link("uprobe-target-bpfpin_probe_me"));
    }
}
