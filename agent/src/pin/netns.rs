//! Attaching inside a pod's network namespace: find the namespace, enter it on one short-lived
//! thread, attach there, and pin the link in the agent's own bpffs.
//!
//! How a pod's namespace is found, and why this way: the container runtime bind-mounts every
//! sandbox's network namespace as a file under one directory (`/var/run/netns/cni-<id>` for
//! containerd and CRI-O). The agent mounts that directory read-only and picks the file whose
//! namespace holds the pod's IP (`status.podIP`, unique on a node). The alternatives need more
//! than the agent has: `/proc/<pid>/ns/net` of a pod process needs `hostPID` and, since the pause
//! process keeps capabilities the agent dropped, `CAP_SYS_PTRACE`; the CRI socket
//! (`RuntimeService/PodSandboxStatus` gives the path directly) lets whoever holds it start
//! privileged containers, and needs a gRPC client. Opening a namespace file needs only read
//! access to it, and `setns` only the `CAP_SYS_ADMIN` the agent already has.
//!
//! `setns(CLONE_NEWNET)` changes the calling thread only, so each attachment runs on a thread
//! of its own, which ends with it: the interface name is looked up and the link created inside
//! the pod's namespace, while the pin is made in the agent's mount namespace as usual. A link
//! holds its interface, not the namespace: when the pod goes, the kernel detaches it, and the
//! pin is removed by the next pass.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use bpfpin_crds::{Direction, XdpMode as SpecXdpMode};

use super::mounts::fd_fs_magic;
use crate::error::{Reason, StatusError, sources};

/// `NSFS_MAGIC`: the filesystem of namespace files (`/proc/<pid>/ns/*` and their bind mounts).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Why a pod's namespace could not be found or entered, or the attachment in it failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The runtime's namespace directory cannot be read: `(the directory, the error)`.
    #[error("cannot list the network namespaces in {path}: {1}", path = .0.display())]
    ListDir(PathBuf, #[source] std::io::Error),
    /// No namespace file holds the pod's IP (yet): `(the IP, the directory)`.
    #[error("no network namespace in {path} has the pod's IP {0}", path = .1.display())]
    NotFound(IpAddr, PathBuf),
    /// The thread could not enter the namespace: `(the namespace file, the error)`.
    #[error("entering the network namespace {path}: {1}", path = .0.display())]
    Enter(PathBuf, #[source] std::io::Error),
    /// The pinned program could not be opened: `(its pin, aya's error)`.
    #[error("opening the pinned program {path}: {cause}", path = .0.display(), cause = sources(.1))]
    Program(PathBuf, #[source] aya::programs::ProgramError),
    /// aya or the kernel refused the attachment: `(what, interface, aya's error)`.
    #[error("attaching {0} on interface {1}: {cause}", cause = sources(&**.2))]
    Attach(
        &'static str,
        String,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    /// The link could not be pinned: `(the pin path, aya's error)`.
    #[error("pinning the link at {path}: {1}", path = .0.display())]
    Pin(PathBuf, #[source] aya::pin::PinError),
    /// The attaching thread panicked.
    #[error("the thread attaching in {path} panicked", path = .0.display())]
    Panicked(PathBuf),
}

impl StatusError for NetnsError {
    fn reason(&self) -> Reason {
        match self {
            NetnsError::Pin(..) => Reason::PinFailed,
            _ => Reason::AttachFailed,
        }
    }
}

/// An opened pod network namespace.
#[derive(Debug)]
pub struct Netns {
    /// The namespace file it was opened from.
    pub path: PathBuf,
    /// The namespace's inode: a pod whose sandbox is re-created gets a new one.
    pub inode: u64,
    file: Arc<File>,
}

/// The namespace files of one runtime directory, with the IPs each held when last looked at
/// (namespaces are cached by inode, so a pass enters only namespaces it has not seen).
#[derive(Debug)]
pub struct NetnsDir {
    dir: PathBuf,
    seen: HashMap<OsString, (u64, Vec<IpAddr>)>,
}

impl NetnsDir {
    /// The namespaces bind-mounted under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            seen: HashMap::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every namespace of the directory, by the IPs it holds.
    pub fn scan(&mut self) -> Result<HashMap<IpAddr, Netns>, NetnsError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| NetnsError::ListDir(self.dir.clone(), e))?;
        let mut present = Vec::new();
        let mut found = HashMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            present.push(name.clone());
            let path = entry.path();
            let Some(file) = open_netns(&path) else {
                continue;
            };
            let Ok(inode) = file.metadata().map(|m| m.ino()) else {
                continue;
            };
            let ips = match self.seen.get(&name) {
                Some((ino, ips)) if *ino == inode => ips.clone(),
                _ => {
                    let ips = in_netns(&path, &file, addresses).unwrap_or_default();
                    self.seen.insert(name.clone(), (inode, ips.clone()));
                    ips
                }
            };
            let file = Arc::new(file);
            for ip in ips.into_iter().filter(|ip| !ip.is_loopback()) {
                let netns = Netns {
                    path: path.clone(),
                    inode,
                    file: file.clone(),
                };
                found.insert(ip, netns);
            }
        }
        self.seen.retain(|name, _| present.contains(name));
        Ok(found)
    }
}

/// Opens a namespace file; anything that is not one (a leftover empty file of a namespace being
/// torn down, a stray entry) is skipped.
fn open_netns(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    (fd_fs_magic(&file).ok()? == NSFS_MAGIC).then_some(file)
}

/// Runs `f` on a new thread that has entered `netns` (the agent's other threads stay where they
/// are).
fn in_netns<T: Send>(
    path: &Path,
    netns: &File,
    f: impl FnOnce() -> Result<T, NetnsError> + Send,
) -> Result<T, NetnsError> {
    let fd = netns.as_raw_fd();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: `fd` is an open namespace file for the whole scope; setns changes only
                // this thread's network namespace, and the thread ends right after `f`.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Enter(
                        path.to_path_buf(),
                        std::io::Error::last_os_error(),
                    ));
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(NetnsError::Panicked(path.to_path_buf())))
    })
}

/// The addresses of every interface of the calling thread's network namespace.
fn addresses() -> Result<Vec<IpAddr>, NetnsError> {
    let mut ips = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below; each entry's address is read only
    // when its family says which sockaddr it is.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Ok(ips);
        }
        let mut cur = head;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        ips.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        ips.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    Ok(ips)
}

/// The names of the interfaces of `netns` (for `/regex/` interface patterns).
pub fn interface_names(netns: &Netns) -> Result<Vec<String>, NetnsError> {
    in_netns(&netns.path, &netns.file, || {
        let mut names = Vec::new();
        // SAFETY: if_nameindex returns an array ended by a zero entry, freed below; each name is
        // a NUL-terminated string of it. It lists the calling thread's network namespace.
        unsafe {
            let head = libc::if_nameindex();
            if head.is_null() {
                return Ok(names);
            }
            let mut cur = head;
            while (*cur).if_index != 0 && !(*cur).if_name.is_null() {
                let name = std::ffi::CStr::from_ptr((*cur).if_name);
                names.push(name.to_string_lossy().into_owned());
                cur = cur.add(1);
            }
            libc::if_freenameindex(head);
        }
        names.sort();
        Ok(names)
    })
}

/// What to attach inside a pod.
#[derive(Debug, Clone, Copy)]
pub enum PodHook {
    /// XDP, in this mode (the kernel picks when unset).
    Xdp(Option<SpecXdpMode>),
    /// tcx, this way, first or last.
    Tc(Direction, bool),
}

impl PodHook {
    /// The attachment name under `links/<program>/`: `xdp-pod-<uid>-<interface>` or
    /// `tc-<direction>-pod-<uid>-<interface>` (a pod uid holds only hex digits and dashes; the
    /// interface is encoded like every attachment name, so no dot reaches bpffs).
    pub fn link_name(&self, pod_uid: &str, interface: &str) -> String {
        let iface = super::layout::encode_name(interface);
        let uid = super::layout::encode_name(pod_uid);
        match self {
            PodHook::Xdp(_) => format!("xdp-pod-{uid}-{iface}"),
            PodHook::Tc(Direction::Ingress, _) => format!("tc-ingress-pod-{uid}-{iface}"),
            PodHook::Tc(Direction::Egress, _) => format!("tc-egress-pod-{uid}-{iface}"),
        }
    }

    /// Whether a file name under `links/<program>/` is a pod attachment of this kind.
    pub fn is_pod_link(name: &str) -> bool {
        ["xdp-pod-", "tc-ingress-pod-", "tc-egress-pod-"]
            .iter()
            .any(|p| name.starts_with(p))
    }
}

/// Whether the XDP or tcx link pinned at `link` is still on an interface (the kernel detaches it,
/// and reports interface 0, when the interface goes with its namespace). A pin that cannot be
/// read is not.
pub fn is_attached(link: &Path) -> bool {
    aya::programs::links::PinnedLink::from_pin(link)
        .map(FdLink::from)
        .ok()
        .and_then(|l| l.info().ok())
        .and_then(|i| i.ifindex())
        .is_some_and(|ifindex| ifindex != 0)
}

/// Attaches the program pinned at `program` on `interface` inside `netns` and pins the link at
/// `link` (its directory must exist).
pub fn attach(
    netns: &Netns,
    program: &Path,
    hook: PodHook,
    interface: &str,
    link: &Path,
) -> Result<(), NetnsError> {
    let fd_link = in_netns(&netns.path, &netns.file, || {
        let kernel = |what: &'static str| {
            move |e: Box<dyn std::error::Error + Send + Sync>| {
                NetnsError::Attach(what, interface.to_owned(), e)
            }
        };
        match hook {
            PodHook::Xdp(mode) => {
                let mut prog = Xdp::from_pin(program, aya_obj::programs::XdpAttachType::Interface)
                    .map_err(|e| NetnsError::Program(program.to_path_buf(), e))?;
                let mode = match mode {
                    None => XdpMode::Default,
                    Some(SpecXdpMode::Skb) => XdpMode::Skb,
                    Some(SpecXdpMode::Drv) => XdpMode::Driver,
                    Some(SpecXdpMode::Hw) => XdpMode::Hardware,
                };
                let err = kernel("XDP");
                let id = prog.attach(interface, mode).map_err(|e| err(Box::new(e)))?;
                let link = prog.take_link(id).map_err(|e| err(Box::new(e)))?;
                FdLink::try_from(link).map_err(|e| err(Box::new(e)))
            }
            PodHook::Tc(direction, first) => {
                let mut prog = SchedClassifier::from_pin(program)
                    .map_err(|e| NetnsError::Program(program.to_path_buf(), e))?;
                let kind = match direction {
                    Direction::Ingress => TcAttachType::Ingress,
                    Direction::Egress => TcAttachType::Egress,
                };
                let order = if first {
                    LinkOrder::first()
                } else {
                    LinkOrder::last()
                };
                let err = kernel("tcx");
                let id = prog
                    .attach_with_options(interface, kind, TcAttachOptions::TcxOrder(order))
                    .map_err(|e| err(Box::new(e)))?;
                let link = prog.take_link(id).map_err(|e| err(Box::new(e)))?;
                FdLink::try_from(link).map_err(|e| err(Box::new(e)))
            }
        }
    })?;
    fd_link
        .pin(link)
        .map_err(|e| NetnsError::Pin(link.to_path_buf(), e))?;
    Ok(())
}
