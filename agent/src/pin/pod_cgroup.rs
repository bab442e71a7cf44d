//! Attaching the cgroup hooks (`pods` of `cgroupSkb`, `sockOps`, `cgroupSockAddr`, ...) to the
//! cgroups of pods: find each pod's cgroup by its UID under the node's cgroup v2 tree, attach the
//! pinned program there, and pin the link.
//!
//! How a pod's cgroup is found: the kubelet names it after the pod's UID, under its cgroup root
//! and the pod's QoS class. The layouts, all matched by pattern under `--cgroup-dir`:
//! - cgroupfs driver: `[<cgroup root>/]kubepods/[burstable|besteffort/]pod<uid>` (a Guaranteed
//!   pod sits directly under `kubepods`);
//! - systemd driver: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with '_'>.slice`.
//!
//! BPF cgroup programs attach only on cgroup v2: on a v1 host with the hybrid layout, the
//! kubelet's container runtime (runc) also makes every cgroup in the unified hierarchy
//! (`/sys/fs/cgroup/unified`), which is where the agent looks ([`default_cgroup_dir`]).
//!
//! The walk descends into every child of the root (the kubelet's `--cgroup-root`, such as
//! `kubelet.slice` or a custom name), and below that only into directories whose name contains
//! `kubepods` or is a QoS class, so a host with hundreds of services costs one directory listing
//! per service at most. A pod directory is not descended into (its containers are below it).
//!
//! A cgroup link holds its cgroup: when the pod's cgroup is removed the kernel detaches the
//! program, and its link reports cgroup id 0. A pinned link whose cgroup id is not the id of the
//! pod's cgroup now (a re-created cgroup, same pod) is attached again.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{
    CgroupAttachMode, CgroupDevice, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
    CgroupSockopt, CgroupSysctl, SockOps,
};
use aya_obj::programs::{CgroupSockAddrAttachType, CgroupSockAttachType, CgroupSockoptAttachType};
use bpfpin_crds::Direction;

use super::attach::{CgroupHook, TargetError, open_cgroup};
use crate::error::{Reason, StatusError, sources};

/// Where the agent looks for pod cgroups when `--cgroup-dir` is not given: `/sys/fs/cgroup` on
/// a cgroup v2 host, `/sys/fs/cgroup/unified` on a v1 host with the hybrid layout.
pub fn default_cgroup_dir() -> PathBuf {
    let v2 = Path::new("/sys/fs/cgroup");
    let hybrid = v2.join("unified");
    let is_v2 = |p: &Path| open_cgroup(&p.display().to_string()).is_ok();
    if !is_v2(v2) && is_v2(&hybrid) {
        hybrid
    } else {
        v2.to_path_buf()
    }
}

/// Directories deeper than this under the root are not looked at.
const MAX_DEPTH: usize = 6;

/// Why a pod's cgroup could not be found, or the attachment to it failed.
#[derive(Debug, thiserror::Error)]
pub enum PodCgroupError {
    /// No cgroup of the pod's UID under the root (yet): `(uid, the root)`.
    #[error("no cgroup of pod UID {0} under {path}", path = .1.display())]
    NotFound(String, PathBuf),
    /// The cgroup is not usable (not cgroup v2, cannot be opened).
    #[error("pod cgroup: {0}")]
    Target(#[source] TargetError),
    /// The pinned program could not be opened: `(its pin, aya's error)`.
    #[error("opening the pinned program {path}: {cause}", path = .0.display(), cause = sources(.1))]
    Program(PathBuf, #[source] aya::programs::ProgramError),
    /// The program's section gives no attach type for the hook: `(program, section)`.
    #[error("program {0}: section {1} names no attach type for this hook")]
    Section(String, String),
    /// aya or the kernel refused the attachment: `(the hook, the cgroup, aya's error)`.
    #[error("attaching {0} to cgroup {path}: {cause}", path = .1.display(), cause = sources(&**.2))]
    Attach(
        String,
        PathBuf,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    /// The link could not be pinned: `(the pin path, aya's error)`.
    #[error("pinning the link at {path}: {1}", path = .0.display())]
    Pin(PathBuf, #[source] aya::pin::PinError),
}

impl StatusError for PodCgroupError {
    fn reason(&self) -> Reason {
        match self {
            PodCgroupError::Pin(..) => Reason::PinFailed,
            _ => Reason::AttachFailed,
        }
    }
}

/// One pod's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// Its directory.
    pub path: PathBuf,
    /// Its cgroup id (the directory's inode number on cgroup v2): a re-created cgroup has a new
    /// one.
    pub id: u64,
}

/// The pod UID a cgroup directory name is of, if it is a pod's: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid with '_'>.slice` (systemd). The UID comes back with dashes.
pub fn pod_uid_of(name: &str) -> Option<String> {
    let (systemd, stem) = match name.strip_suffix(".slice") {
        Some(stem) => (true, stem),
        None => (false, name),
    };
    let (before, uid) = stem.rsplit_once("pod")?;
    let prefix_ok = if systemd {
        before.starts_with("kubepods") && before.ends_with('-')
    } else {
        before.is_empty()
    };
    let uid_ok = !uid.is_empty()
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    (prefix_ok && uid_ok).then(|| uid.replace('_', "-").to_ascii_lowercase())
}

/// Whether the walk goes into a directory below the root's children.
fn is_kubepods_dir(name: &str) -> bool {
    name.contains("kubepods") || name == "burstable" || name == "besteffort"
}

/// Every pod cgroup under `root`, by pod UID (lowercase, with dashes).
pub fn scan(root: &Path) -> HashMap<String, PodCgroup> {
    let mut found = HashMap::new();
    let mut queue = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = queue.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(uid) = pod_uid_of(&name) {
                found.insert(
                    uid,
                    PodCgroup {
                        path: entry.path(),
                        id: meta.ino(),
                    },
                );
            } else if depth + 1 < MAX_DEPTH && (depth == 0 || is_kubepods_dir(&name)) {
                queue.push((entry.path(), depth + 1));
            }
        }
    }
    found
}

/// What to attach to a pod's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupPodHook {
    /// cgroup_skb, this way.
    Skb(Direction),
    /// One of the other cgroup hooks.
    Hook(CgroupHook),
}

impl CgroupPodHook {
    /// The attachment name under `links/<program>/`: `cgroupskb-<direction>-pod-<uid>` or
    /// `<hook>-pod-<uid>` (`sockops-pod-<uid>`, `cgroupsockaddr-pod-<uid>`, ...).
    pub fn link_name(&self, pod_uid: &str) -> String {
        let uid = super::layout::encode_name(pod_uid);
        match self {
            CgroupPodHook::Skb(Direction::Ingress) => format!("cgroupskb-ingress-pod-{uid}"),
            CgroupPodHook::Skb(Direction::Egress) => format!("cgroupskb-egress-pod-{uid}"),
            CgroupPodHook::Hook(h) => format!("{}-pod-{uid}", h.name()),
        }
    }

    /// Whether a file name under `links/<program>/` is a pod cgroup attachment.
    pub fn is_pod_link(name: &str) -> bool {
        let hooks = [
            CgroupHook::SockOps,
            CgroupHook::SockAddr,
            CgroupHook::Sock,
            CgroupHook::Sysctl,
            CgroupHook::Sockopt,
            CgroupHook::Device,
        ];
        ["cgroupskb-ingress-pod-", "cgroupskb-egress-pod-"]
            .iter()
            .any(|p| name.starts_with(p))
            || hooks
                .iter()
                .any(|h| name.starts_with(&format!("{}-pod-", h.name())))
    }

    fn describe(&self) -> String {
        match self {
            CgroupPodHook::Skb(Direction::Ingress) => "cgroup_skb ingress".into(),
            CgroupPodHook::Skb(Direction::Egress) => "cgroup_skb egress".into(),
            CgroupPodHook::Hook(h) => h.name().into(),
        }
    }
}

/// The attach type a program's ELF section gives, for the hooks whose programs need it named
/// when opened from a pin (sock_addr, sock, sockopt, and uprobe or uretprobe).
#[derive(Debug, Clone, Copy)]
pub enum SectionType {
    /// `cgroup/connect4`, `cgroup/bind6`, ...
    SockAddr(CgroupSockAddrAttachType),
    /// `cgroup/sock_create`, `cgroup/post_bind4`, ...
    Sock(CgroupSockAttachType),
    /// `cgroup/getsockopt`, `cgroup/setsockopt`.
    Sockopt(CgroupSockoptAttachType),
    /// `uprobe` (`ret: false`) or `uretprobe` (`ret: true`), sleepable or not.
    Uprobe {
        /// A uretprobe.
        ret: bool,
    },
    /// Any other section.
    Other,
}

impl SectionType {
    /// The attach type of an aya-obj program section.
    pub fn of(section: &aya_obj::ProgramSection) -> Self {
        use aya_obj::ProgramSection as S;
        match section {
            S::CgroupSockAddr { attach_type } => SectionType::SockAddr(*attach_type),
            S::CgroupSock { attach_type } => SectionType::Sock(*attach_type),
            S::CgroupSockopt { attach_type } => SectionType::Sockopt(*attach_type),
            S::UProbe { .. } => SectionType::Uprobe { ret: false },
            S::URetProbe { .. } => SectionType::Uprobe { ret: true },
            _ => SectionType::Other,
        }
    }
}

/// The link pinned at `link` is attached to `cgroup` (its cgroup id is the cgroup's).
pub fn is_attached_to(link: &Path, cgroup: &PodCgroup) -> bool {
    PinnedLink::from_pin(link)
        .map(FdLink::from)
        .ok()
        .and_then(|l| l.info().ok())
        .and_then(|i| i.cgroup_id())
        == Some(cgroup.id)
}

/// Attaches the program pinned at `program` (named `name`, its section's attach type `section`)
/// to the pod cgroup `cgroup` and pins the link at `link` (its directory must exist).
pub fn attach(
    cgroup: &PodCgroup,
    program: &Path,
    name: &str,
    hook: CgroupPodHook,
    section: SectionType,
    link: &Path,
) -> Result<(), PodCgroupError> {
    let file = open_cgroup(&cgroup.path.display().to_string()).map_err(PodCgroupError::Target)?;
    let mode = CgroupAttachMode::Single;
    let what = hook.describe();
    let kernel = |e: Box<dyn std::error::Error + Send + Sync>| {
        PodCgroupError::Attach(what.clone(), cgroup.path.clone(), e)
    };
    let open = |e| PodCgroupError::Program(program.to_path_buf(), e);
    let wrong = || PodCgroupError::Section(name.to_owned(), format!("{section:?}"));
    macro_rules! link {
        ($prog:expr, $attached:expr) => {{
            let mut prog = $prog;
            let id = $attached(&mut prog).map_err(|e| kernel(Box::new(e)))?;
            let l = prog.take_link(id).map_err(|e| kernel(Box::new(e)))?;
            FdLink::try_from(l).map_err(|e| kernel(Box::new(e)))?
        }};
    }
    let fd_link = match hook {
        CgroupPodHook::Skb(direction) => {
            let kind = match direction {
                Direction::Ingress => CgroupSkbAttachType::Ingress,
                Direction::Egress => CgroupSkbAttachType::Egress,
            };
            link!(
                CgroupSkb::from_pin(program, kind).map_err(open)?,
                |p: &mut CgroupSkb| p.attach(&file, kind, mode)
            )
        }
        CgroupPodHook::Hook(CgroupHook::SockOps) => link!(
            SockOps::from_pin(program).map_err(open)?,
            |p: &mut SockOps| p.attach(&file, mode)
        ),
        CgroupPodHook::Hook(CgroupHook::Sysctl) => link!(
            CgroupSysctl::from_pin(program).map_err(open)?,
            |p: &mut CgroupSysctl| p.attach(&file, mode)
        ),
        CgroupPodHook::Hook(CgroupHook::Device) => link!(
            CgroupDevice::from_pin(program).map_err(open)?,
            |p: &mut CgroupDevice| p.attach(&file, mode)
        ),
        CgroupPodHook::Hook(CgroupHook::SockAddr) => {
            let SectionType::SockAddr(t) = section else {
                return Err(wrong());
            };
            link!(
                CgroupSockAddr::from_pin(program, t).map_err(open)?,
                |p: &mut CgroupSockAddr| p.attach(&file, mode)
            )
        }
        CgroupPodHook::Hook(CgroupHook::Sock) => {
            let SectionType::Sock(t) = section else {
                return Err(wrong());
            };
            link!(
                CgroupSock::from_pin(program, t).map_err(open)?,
                |p: &mut CgroupSock| p.attach(&file, mode)
            )
        }
        CgroupPodHook::Hook(CgroupHook::Sockopt) => {
            let SectionType::Sockopt(t) = section else {
                return Err(wrong());
            };
            link!(
                CgroupSockopt::from_pin(program, t).map_err(open)?,
                |p: &mut CgroupSockopt| p.attach(&file, mode)
            )
        }
    };
    fd_link
        .pin(link)
        .map_err(|e| PodCgroupError::Pin(link.to_path_buf(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroup_names_of_every_layout() {
        let uid = "0a1b2c3d-0000-4444-8888-abcdefabcdef";
        let under = uid.replace('-', "_");
        for (name, want) in [
            (format!("pod{uid}"), Some(uid)),
            (format!("kubepods-besteffort-pod{under}.slice"), Some(uid)),
            (format!("kubepods-burstable-pod{under}.slice"), Some(uid)),
            (format!("kubepods-pod{under}.slice"), Some(uid)),
            ("podman".to_owned(), None),
            ("pod".to_owned(), None),
            (format!("xpod{uid}"), None),
            (format!("system-pod{under}.slice"), None),
            ("kubepods-besteffort.slice".to_owned(), None),
            ("besteffort".to_owned(), None),
        ] {
            assert_eq!(pod_uid_of(&name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn pod_link_names() {
        let skb = CgroupPodHook::Skb(Direction::Egress).link_name("u-1");
        let sock = CgroupPodHook::Hook(CgroupHook::Sock).link_name("u-1");
        assert_eq!(
            (skb.as_str(), sock.as_str()),
            ("cgroupskb-egress-pod-u-1", "cgroupsock-pod-u-1")
        );
        assert!(CgroupPodHook::is_pod_link(&skb) && CgroupPodHook::is_pod_link(&sock));
        assert!(!CgroupPodHook::is_pod_link(
            "cgroupskb-egress-sys-fs-cgroup"
        ));
    }
}
