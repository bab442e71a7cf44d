//! Attach points and pinned links. Every attachment is a bpf_link pinned under
//! `links/<program>/<attachment>`, so it outlives the agent; unlinking the last pin detaches it.

use std::path::{Path, PathBuf};

use std::num::NonZeroU32;

use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::TcAttachOptions;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, FEntry, FExit, KProbe, Program,
    SchedClassifier, TcAttachType, TracePoint, UProbe, Xdp, XdpMode, xdp::XdpLink,
};
use bpfpin_crds::{
    Attach, Direction, FunctionAttach, KprobeAttach, LinkOrder as SpecOrder, TracepointAttach,
    UprobeAttach, XdpMode as SpecXdpMode,
};

use super::layout::encode_name;
use super::mounts::{CGROUP2_SUPER_MAGIC, DEBUGFS_MAGIC, TRACEFS_MAGIC, fd_fs_magic};
use crate::error::{Reason, StatusError, sources};

// Issue 13's kinds (raw tracepoints, cgroup hooks, sk_lookup, sockmap programs, perf events,
// iterators) live in their own file.
mod more;
pub(crate) use more::SockMaps;
pub use more::{CgroupHook, MorePoint, Sample};
// The usdt kind (a uprobe per site of a USDT probe, libbpf's usdt.bpf.h) lives in its own file.
pub(crate) mod usdt;
pub use usdt::{UsdtError, UsdtPoint};
// Issue 13's hook kinds (tpBtf, lsm, ksyscall, netfilter).
mod hooks;
pub use hooks::HookPoint;

/// One attach point of a program (an `xdp` entry with three interfaces is three points).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachPoint {
    /// A kernel tracepoint, `<category>/<name>` under tracefs `events/`.
    Tracepoint(TracepointAttach),
    /// XDP on one interface.
    Xdp {
        /// The network interface, by name.
        interface: String,
        /// Generic, native or offloaded XDP; the kernel picks when unset.
        mode: Option<SpecXdpMode>,
        /// Through the dispatcher, in this place (`attach.xdp.priority`/`proceedOn` set).
        share: Option<super::xdp_dispatcher::Share>,
    },
    /// tcx on one interface.
    Tc {
        /// The network interface, by name.
        interface: String,
        /// Which way the packets go: ingress or egress.
        direction: Direction,
        /// First or last among the interface's tcx programs.
        first: bool,
        /// Placed by priority among bpfpin's prioritized tcx programs instead
        /// (`attach.tc.priority`).
        priority: Option<u16>,
    },
    /// kprobe / kretprobe (no offset: the function's entry).
    Kprobe(KprobeAttach),
    /// uprobe / uretprobe.
    Uprobe(UprobeAttach),
    /// fentry: runs at the entry of a kernel function (a BPF trampoline).
    Fentry(FunctionAttach),
    /// fexit: runs when a kernel function returns (a BPF trampoline).
    Fexit(FunctionAttach),
    /// cgroup_skb: packets entering or leaving the sockets of a cgroup.
    /// A host cgroup's (`cgroup`); a spec with `pods` attaches per pod instead (pod_cgroup.rs).
    CgroupSkb {
        /// cgroup v2 directory.
        cgroup: String,
        /// Which way the packets go: ingress or egress.
        direction: Direction,
    },
    /// One of issue 13's kinds (see `attach/more.rs`).
    More(MorePoint),
    /// A USDT probe, or once expanded one of its sites (see `attach/usdt.rs`).
    Usdt(UsdtPoint),
    /// One of issue 13's hook kinds (see `attach/hooks.rs`).
    Hook(HookPoint),
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

impl AttachPoint {
    /// Every point a spec's `attach` names.
    pub fn all(attach: &Attach) -> Vec<AttachPoint> {
        let mut points = Vec::new();
        if let Some(tp) = &attach.tracepoint {
            points.push(AttachPoint::Tracepoint(tp.clone()));
        }
        // Patterns are resolved into names before ([`super::interfaces::resolve`]); one left
        // here names no interface.
        let named = |i: &&String| bpfpin_crds::interface_pattern(i).is_none();
        if let Some(xdp) = &attach.xdp {
            for interface in xdp.interfaces.iter().filter(named) {
                points.push(AttachPoint::Xdp {
                    interface: interface.clone(),
                    mode: xdp.mode,
                    share: super::xdp_dispatcher::Share::of(xdp),
                });
            }
        }
        if let Some(tc) = &attach.tc {
            for interface in tc.interfaces.iter().filter(named) {
                points.push(AttachPoint::Tc {
                    interface: interface.clone(),
                    direction: tc.direction,
                    first: tc.order == Some(SpecOrder::First),
                    priority: tc.priority,
                });
            }
        }
        let one = [
            attach.kprobe.clone().map(AttachPoint::Kprobe),
            // With `containers`, the points are the containers' files (containers.rs).
            attach
                .uprobe
                .clone()
                .filter(|u| u.containers.is_none())
                .map(AttachPoint::Uprobe),
            attach.fentry.clone().map(AttachPoint::Fentry),
            attach.fexit.clone().map(AttachPoint::Fexit),
            // With `pods` instead of `cgroup`, the points are the pods' cgroups (pod_cgroup.rs).
            attach.cgroup_skb.as_ref().and_then(|c| {
                Some(AttachPoint::CgroupSkb {
                    cgroup: c.cgroup.clone()?,
                    direction: c.direction,
                })
            }),
        ];
        points.extend(one.into_iter().flatten());
        more::points(attach, &mut points);
        points.extend(UsdtPoint::of(attach).map(AttachPoint::Usdt));
        hooks::points(attach, &mut points);
        points
    }

    /// The kernel function an fentry/fexit program is loaded against (it is part of the load).
    pub(crate) fn btf_function(attach: &Attach) -> Option<&str> {
        attach
            .fentry
            .as_ref()
            .or(attach.fexit.as_ref())
            .map(|f| f.function.as_str())
    }

    /// The link's file name under `links/<program>/`.
    pub fn link_name(&self) -> String {
        match self {
            AttachPoint::Tracepoint(t) => format!(
                "tracepoint-{}-{}",
                encode_name(&t.category),
                encode_name(&t.name)
            ),
            AttachPoint::Xdp { interface, .. } => format!("xdp-{}", encode_name(interface)),
            AttachPoint::Tc {
                interface,
                direction,
                priority,
                ..
            } => {
                let plain = format!(
                    "tc-{}-{}",
                    direction_name(*direction),
                    encode_name(interface)
                );
                match priority {
                    Some(p) => super::xdp_dispatcher::tcx::link_name(*p, &plain),
                    None => plain,
                }
            }
            AttachPoint::Kprobe(k) => match k.offset.unwrap_or(0) {
                0 => format!("kprobe-{}", encode_name(&k.function)),
                offset => format!("kprobe-{}-{offset}", encode_name(&k.function)),
            },
            AttachPoint::Uprobe(u) => {
                let file = std::path::Path::new(&u.target)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| u.target.clone());
                let mut name = format!("uprobe-{}", encode_name(&file));
                if let Some(sym) = &u.symbol {
                    name.push('-');
                    name.push_str(&encode_name(sym));
                }
                if let Some(off) = u.offset {
                    name.push_str(&format!("-{off}"));
                }
                if let Some(pid) = u.pid {
                    name.push_str(&format!("-pid{pid}"));
                }
                name
            }
            AttachPoint::Fentry(f) => format!("fentry-{}", encode_name(&f.function)),
            AttachPoint::Fexit(f) => format!("fexit-{}", encode_name(&f.function)),
            AttachPoint::CgroupSkb { cgroup, direction } => format!(
                "cgroupskb-{}-{}",
                direction_name(*direction),
                encode_name(cgroup.trim_start_matches('/'))
            ),
            AttachPoint::More(p) => p.link_name(),
            AttachPoint::Usdt(p) => p.link_name(),
            AttachPoint::Hook(p) => p.link_name(),
        }
    }

    fn describe(&self) -> String {
        match self {
            AttachPoint::Tracepoint(t) => format!("tracepoint {}/{}", t.category, t.name),
            AttachPoint::Xdp { interface, .. } => format!("XDP on interface {interface}"),
            AttachPoint::Tc {
                interface,
                direction,
                ..
            } => format!("tc {} on interface {interface}", direction_name(*direction)),
            AttachPoint::Kprobe(k) => format!("kprobe on {}", k.function),
            AttachPoint::Uprobe(u) => format!(
                "uprobe on {}{}",
                u.target,
                u.symbol
                    .as_ref()
                    .map(|s| format!(":{s}"))
                    .unwrap_or_default()
            ),
            AttachPoint::Fentry(f) => format!("fentry on {}", f.function),
            AttachPoint::Fexit(f) => format!("fexit on {}", f.function),
            AttachPoint::CgroupSkb { cgroup, direction } => {
                format!("cgroup_skb {} on {cgroup}", direction_name(*direction))
            }
            AttachPoint::More(p) => p.describe(),
            AttachPoint::Usdt(p) => p.describe(),
            AttachPoint::Hook(p) => p.describe(),
        }
    }

    fn wants(&self) -> &'static str {
        match self {
            AttachPoint::Tracepoint(_) => "a tracepoint program (SEC(\"tracepoint/...\"))",
            AttachPoint::Xdp { .. } => "an XDP program (SEC(\"xdp\"))",
            AttachPoint::Tc { .. } => "a tc program (SEC(\"classifier\"))",
            AttachPoint::Kprobe(_) => {
                "a kprobe program (SEC(\"kprobe/...\") or SEC(\"kretprobe/...\"))"
            }
            AttachPoint::Uprobe(_) => "a uprobe program (SEC(\"uprobe\") or SEC(\"uretprobe\"))",
            AttachPoint::Fentry(_) => "an fentry program (SEC(\"fentry/...\"))",
            AttachPoint::Fexit(_) => "an fexit program (SEC(\"fexit/...\"))",
            AttachPoint::CgroupSkb { .. } => "a cgroup_skb program (SEC(\"cgroup_skb/...\"))",
            AttachPoint::More(p) => p.wants(),
            AttachPoint::Usdt(_) => "a usdt program (SEC(\"usdt\"), built with <bpf/usdt.bpf.h>)",
            AttachPoint::Hook(p) => p.wants(),
        }
    }
}

/// Why a program could not be attached, or its link not pinned.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The program's type cannot attach at this kind of point: `(program, its type, the point's
    /// link name, what the point takes)`.
    #[error("program {0} has type {1}; attaching it to {2} needs {3}")]
    WrongType(String, String, String, &'static str),
    /// The attach target (tracefs entry, cgroup, uprobe binary, kprobe support) is not usable:
    /// `(program, the point described, what is wrong)`.
    #[error("attaching program {0} to {1}: {2}")]
    Target(String, String, #[source] TargetError),
    /// aya or the kernel refused the attachment: `(program, the point described, aya's error)`.
    #[error("attaching program {0} to {1}: {cause}", cause = sources(&**.2))]
    Kernel(
        String,
        String,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    /// XDP on the interface is taken (`EEXIST`, `EBUSY`): `(program, interface, who holds it,
    /// aya's error)`.
    #[error("attaching program {0} to XDP on interface {1}: the interface already runs XDP {2}; detach that program, or share the interface (attach.xdp.priority on every program there) ({cause})", cause = sources(&**.3))]
    XdpTaken(
        String,
        String,
        String,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    /// XDP fell back to netlink, whose attachment cannot be pinned: `(interface, program, aya's
    /// error)`.
    #[error(
        "XDP on interface {0} for program {1} was attached through netlink, not a bpf_link, so it cannot be pinned (the kernel is older than 5.9 or refused the link: {2})"
    )]
    NotALink(String, String, #[source] aya::programs::links::LinkError),
    /// A uprobe names neither a symbol nor an offset.
    #[error("uprobe of program {0}: set symbol, offset or both")]
    UprobeLocation(String),
    /// The new link could not be pinned: `(program, pin path, aya's error)`.
    #[error("pinning the link of program {0} at {path}: {2}", path = .1.display())]
    Pin(String, PathBuf, #[source] aya::pin::PinError),
    /// The previous version's link could not be pinned again in the new version: `(its pin, the
    /// new pin, aya's error)`.
    #[error("pinning link {path} at {path2}: {2}", path = .0.display(), path2 = .1.display())]
    Repin(
        PathBuf,
        PathBuf,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    /// A program sharing an XDP interface through the dispatcher could not be loaded or
    /// attached (the message is the dispatcher's error and its causes).
    #[error("{}", sources(.0))]
    Dispatcher(#[from] super::xdp_dispatcher::DispatcherError),
    /// A tcx program placed by priority could not be attached.
    #[error("{}", sources(.0))]
    Tcx(#[from] super::xdp_dispatcher::tcx::TcxError),
    /// The host interfaces of `xdp` or `tc` (patterns, `primaryNodeInterface`) could not be
    /// resolved.
    #[error(transparent)]
    Interfaces(#[from] super::interfaces::InterfacesError),
    /// The descriptor of a socket map could not be duplicated for an sk_msg/sk_skb attach:
    /// `(program, the error)`.
    #[error("attaching program {0}: duplicating its socket map's descriptor: {1}")]
    SockMapFd(String, #[source] std::io::Error),
}

impl StatusError for AttachError {
    fn reason(&self) -> Reason {
        match self {
            AttachError::Dispatcher(e) => e.reason(),
            AttachError::Tcx(e) => e.reason(),
            AttachError::UprobeLocation(..) => Reason::InvalidSpec,
            AttachError::Pin(..) | AttachError::Repin(..) => Reason::PinFailed,
            AttachError::WrongType(..)
            | AttachError::Target(..)
            | AttachError::Kernel(..)
            | AttachError::XdpTaken(..)
            | AttachError::NotALink(..)
            | AttachError::SockMapFd(..)
            | AttachError::Interfaces(..) => Reason::AttachFailed,
        }
    }
}

/// What is wrong with an attach target; checked before aya is called, so that aya never reads a
/// FIFO, a device or a file outside the filesystem the kind expects.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Neither tracefs mount point holds a tracefs.
    #[error("tracefs is not mounted (neither /sys/kernel/tracing nor /sys/kernel/debug/tracing)")]
    NoTracefs,
    /// The tracepoint's `id` file cannot be opened (the tracepoint does not exist): `(the file,
    /// the error)`.
    #[error("{path}: {1}", path = .0.display())]
    TracepointId(PathBuf, #[source] std::io::Error),
    /// `fstatfs` on a tracepoint's `id` file failed.
    #[error("{path}: fstatfs: {1}", path = .0.display())]
    TracepointStatfs(PathBuf, #[source] std::io::Error),
    /// The tracepoint's `id` file is on another filesystem than tracefs: `(the file, its
    /// filesystem magic, the directory taken for tracefs)`.
    #[error("{path} is not on tracefs (filesystem magic {1:#x}); {path2} is not a tracefs mount", path = .0.display(), path2 = .2.display())]
    NotTracefs(PathBuf, i64, PathBuf),
    /// The tracepoint's `id` is not a regular file: `(the file, what it is)`.
    #[error("{path} is {1}, not a tracefs file", path = .0.display())]
    TracepointNotFile(PathBuf, &'static str),
    /// The cgroup path is not a directory: `(cgroup, what it is)`.
    #[error("cgroup {0} is {1}, not a cgroup v2 directory")]
    CgroupNotDir(String, &'static str),
    /// The cgroup directory cannot be opened.
    #[error("opening the cgroup: {1}")]
    CgroupOpen(String, #[source] std::io::Error),
    /// `fstatfs` on the cgroup failed.
    #[error("cgroup {0}: fstatfs: {1}")]
    CgroupStatfs(String, #[source] std::io::Error),
    /// The cgroup is on cgroup v1 (or not a cgroup at all): `(cgroup, its filesystem magic)`.
    #[error("cgroup {0} is not on a cgroup v2 filesystem (filesystem magic {1:#x})")]
    NotCgroup2(String, i64),
    /// The uprobe target cannot be opened.
    #[error("uprobe target {0}: {1}")]
    UprobeOpen(String, #[source] std::io::Error),
    /// The uprobe target is not a regular file: `(target, what it is)`.
    #[error("uprobe target {0} is {1}, not a regular file")]
    UprobeNotFile(String, &'static str),
    /// The kernel has no kprobes.
    #[error("this kernel has no kprobe support (built without CONFIG_KPROBES)")]
    NoKprobes,
    // Issue 13's kinds.
    /// The online CPUs a perf event is opened on could not be read.
    #[error("{0}")]
    OnlineCpus(String),
    /// The network namespace file cannot be opened: `(path, the error)`.
    #[error("network namespace {0}: {1}")]
    NetnsOpen(String, #[source] std::io::Error),
    /// The file is not a namespace file: `(path, its filesystem magic)`.
    #[error("{0} is not a network namespace file (filesystem magic {1:#x}, not nsfs)")]
    NotNetns(String, i64),
    /// The map an sk_msg/sk_skb program attaches to is not in the object.
    #[error("the object has no map {0}")]
    NoSuchMap(String),
    /// The map is not a socket map: `(map, its type)`.
    #[error("map {0} has type {1}, not SockMap or SockHash")]
    NotSockMap(String, String),
    /// A USDT target, its notes or the object's spec map (`attach/usdt.rs`).
    #[error(transparent)]
    Usdt(Box<UsdtError>),
    /// The kernel does not run the BPF LSM: `(what it runs)`.
    #[error("{0}")]
    NoBpfLsm(String),
}

/// One program at one point: what every error of an attachment names.
struct At<'a> {
    program: &'a str,
    point: &'a AttachPoint,
    /// The link's pin (inside the managed root: where a message looks up bpfpin's programs).
    link: &'a Path,
}

impl At<'_> {
    fn kernel(&self, e: impl std::error::Error + Send + Sync + 'static) -> AttachError {
        AttachError::Kernel(self.program.to_owned(), self.point.describe(), Box::new(e))
    }

    /// An XDP attach error; a taken interface names its holder.
    fn xdp(&self, interface: &str, e: aya::programs::ProgramError) -> AttachError {
        // EEXIST: a program attached through netlink holds it; EBUSY: another bpf_link does.
        if [libc::EEXIST, libc::EBUSY]
            .iter()
            .any(|&errno| super::xdp_dispatcher::has_errno(&e, errno))
        {
            let holder = super::diagnose::describe_xdp_holder(interface, self.link);
            AttachError::XdpTaken(
                self.program.to_owned(),
                interface.to_owned(),
                holder,
                Box::new(e),
            )
        } else {
            self.kernel(e)
        }
    }

    fn target(&self, problem: TargetError) -> AttachError {
        AttachError::Target(self.program.to_owned(), self.point.describe(), problem)
    }

    /// The program as the type this kind of point takes.
    fn typed<'p, T>(&self, program: &'p mut Program) -> Result<&'p mut T, AttachError>
    where
        &'p mut T: TryFrom<&'p mut Program>,
    {
        // `Tracing` alone does not say tp_btf from fentry: the kind and the section do.
        let actual = format!(
            "{} (section `{}`)",
            super::diagnose::program_kind(program),
            program.section_name().unwrap_or_default()
        );
        program.try_into().map_err(|_| {
            AttachError::WrongType(
                self.program.to_owned(),
                actual,
                self.point.link_name(),
                self.point.wants(),
            )
        })
    }
}

/// The link of an attachment, made of what aya's `attach` returned: `$prog.take_link(id)` turned
/// into an `FdLink` (every kind here attaches with a bpf_link). A macro, because aya gives each
/// program type its own link type and no trait over `take_link`.
macro_rules! fd_link {
    ($at:expr, $prog:expr, $attached:expr) => {{
        let id = $attached.map_err(|e| $at.kernel(e))?;
        let link = $prog.take_link(id).map_err(|e| $at.kernel(e))?;
        FdLink::try_from(link).map_err(|e| $at.kernel(e))
    }};
}

/// A new link, and the previous version's XDP link it took over (whose program a failed build
/// puts back).
struct Linked {
    link: FdLink,
    replaced: Option<PathBuf>,
}

impl From<FdLink> for Linked {
    fn from(link: FdLink) -> Self {
        Linked {
            link,
            replaced: None,
        }
    }
}

impl AttachPoint {
    /// The one attach step of every kind: check the target, call aya's attach for the program
    /// type the kind takes, and return the link (not pinned yet).
    fn link(
        &self,
        program: &mut Program,
        at: &At<'_>,
        previous_link: Option<&Path>,
        maps: &SockMaps,
    ) -> Result<Linked, AttachError> {
        let linked = match self {
            AttachPoint::Tracepoint(t) => {
                let prog: &mut TracePoint = at.typed(program)?;
                check_tracepoint(&t.category, &t.name).map_err(|e| at.target(e))?;
                fd_link!(at, prog, prog.attach(&t.category, &t.name))?.into()
            }
            AttachPoint::Xdp {
                interface, mode, ..
            } => {
                let prog: &mut Xdp = at.typed(program)?;
                // An interface has one XDP link: the previous version's gets the new program.
                if let Some(prev) = previous_link.filter(|p| p.exists() && !is_detached(p)) {
                    let old = PinnedLink::from_pin(prev).map_err(|e| at.kernel(e))?;
                    let xdp_link =
                        XdpLink::try_from(FdLink::from(old)).map_err(|e| at.kernel(e))?;
                    let link = fd_link!(at, prog, prog.attach_to_link(xdp_link))?;
                    tracing::info!(
                        program = at.program,
                        interface,
                        "replaced the program of an XDP link"
                    );
                    return Ok(Linked {
                        link,
                        replaced: Some(prev.to_path_buf()),
                    });
                }
                let mode = match mode {
                    None => XdpMode::Default,
                    Some(SpecXdpMode::Skb) => XdpMode::Skb,
                    Some(SpecXdpMode::Drv) => XdpMode::Driver,
                    Some(SpecXdpMode::Hw) => XdpMode::Hardware,
                };
                let id = prog
                    .attach(interface, mode)
                    .map_err(|e| at.xdp(interface, e))?;
                let link = prog.take_link(id).map_err(|e| at.kernel(e))?;
                FdLink::try_from(link)
                    .map_err(|source| {
                        AttachError::NotALink(interface.clone(), at.program.to_owned(), source)
                    })?
                    .into()
            }
            AttachPoint::Tc {
                interface,
                direction,
                first,
                ..
            } => {
                let prog: &mut SchedClassifier = at.typed(program)?;
                let order = if *first {
                    LinkOrder::first()
                } else {
                    LinkOrder::last()
                };
                let kind = match direction {
                    Direction::Ingress => TcAttachType::Ingress,
                    Direction::Egress => TcAttachType::Egress,
                };
                let options = TcAttachOptions::TcxOrder(order);
                fd_link!(at, prog, prog.attach_with_options(interface, kind, options))?.into()
            }
            AttachPoint::Kprobe(k) => {
                let prog: &mut KProbe = at.typed(program)?;
                check_kprobes().map_err(|e| at.target(e))?;
                fd_link!(at, prog, prog.attach(&k.function, k.offset.unwrap_or(0)))?.into()
            }
            AttachPoint::Uprobe(u) => {
                let prog: &mut UProbe = at.typed(program)?;
                let target = &u.target;
                let location = match (&u.symbol, &u.offset) {
                    (Some(sym), Some(off)) => UProbeAttachLocation::SymbolOffset(sym, *off),
                    (Some(sym), None) => UProbeAttachLocation::Symbol(sym),
                    (None, Some(off)) => UProbeAttachLocation::AbsoluteOffset(*off),
                    (None, None) => {
                        return Err(AttachError::UprobeLocation(at.program.to_owned()));
                    }
                };
                let scope = match u.pid.and_then(NonZeroU32::new) {
                    Some(pid) => UProbeScope::OneProcess(pid),
                    None => UProbeScope::AllProcesses,
                };
                // A path is opened and checked here, and aya (symbol lookup) and the kernel (the
                // probe) get the descriptor's /proc link: the file checked is the file probed. A
                // bare library name is found by aya in the dynamic loader's cache (root-owned).
                let checked = if target.contains('/') {
                    Some(open_uprobe_target(target).map_err(|e| at.target(e))?)
                } else {
                    None
                };
                let target_path = match &checked {
                    Some(file) => crate::fd::fd_path(file),
                    None => PathBuf::from(target),
                };
                fd_link!(at, prog, prog.attach(location, &target_path, scope))?.into()
            }
            AttachPoint::Fentry(_) => {
                let prog: &mut FEntry = at.typed(program)?;
                fd_link!(at, prog, prog.attach())?.into()
            }
            AttachPoint::Fexit(_) => {
                let prog: &mut FExit = at.typed(program)?;
                fd_link!(at, prog, prog.attach())?.into()
            }
            AttachPoint::CgroupSkb { cgroup, direction } => {
                let prog: &mut CgroupSkb = at.typed(program)?;
                let file = open_cgroup(cgroup).map_err(|e| at.target(e))?;
                let kind = match direction {
                    Direction::Ingress => CgroupSkbAttachType::Ingress,
                    Direction::Egress => CgroupSkbAttachType::Egress,
                };
                fd_link!(at, prog, prog.attach(&file, kind, CgroupAttachMode::Single))?.into()
            }
            AttachPoint::More(p) => p.link(program, at, maps)?.into(),
            AttachPoint::Usdt(p) => p.link(program, at)?.into(),
            AttachPoint::Hook(p) => p.link(program, at, previous_link)?,
        };
        Ok(linked)
    }
}

/// Attaches `program` at `point` and pins the link at `path`. For XDP, when the previous version
/// of the object has a link on the same interface (`previous_link`), that link is updated to the
/// new program in one syscall instead (an interface has one XDP link), and its pin path is
/// returned so a failed build can put the old program back.
pub(crate) fn attach_and_pin(
    program: &mut Program,
    name: &str,
    point: &AttachPoint,
    path: &Path,
    previous_link: Option<&Path>,
    maps: &SockMaps,
) -> Result<Option<PathBuf>, AttachError> {
    // Programs that share their hook go through the dispatcher, which pins their links itself.
    match point {
        AttachPoint::Xdp {
            interface,
            mode,
            share: Some(share),
        } if matches!(program, Program::Extension(_)) => {
            super::xdp_dispatcher::attach_and_pin(program, name, interface, *mode, share, path)?;
            return Ok(None);
        }
        AttachPoint::Tc {
            interface,
            direction,
            priority: Some(priority),
            ..
        } => {
            super::xdp_dispatcher::tcx::attach_and_pin(
                program, name, interface, *direction, *priority, path,
            )?;
            return Ok(None);
        }
        _ => {}
    }
    let at = At {
        program: name,
        point,
        link: path,
    };
    let Linked { link, replaced } = point.link(program, &at, previous_link, maps)?;
    link.pin(path)
        .map_err(|source| AttachError::Pin(name.to_owned(), path.to_path_buf(), source))?;
    tracing::info!(program = name, link = %path.display(), at = %point.describe(), "attached");
    Ok(replaced)
}

/// Whether the link pinned at `path` is an XDP or tcx link whose interface went (the kernel
/// detached it and reports interface 0): a new version attaches again instead of taking it over.
pub(crate) fn is_detached(path: &Path) -> bool {
    PinnedLink::from_pin(path)
        .map(FdLink::from)
        .ok()
        .and_then(|l| l.info().ok())
        .and_then(|i| i.ifindex())
        == Some(0)
}

/// Pins the link pinned at `from` also at `to` (an unchanged program keeps its link across
/// versions).
pub(crate) fn repin_link(from: &Path, to: &Path) -> Result<(), AttachError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| {
        AttachError::Repin(from.to_path_buf(), to.to_path_buf(), source)
    };
    let link = PinnedLink::from_pin(from).map_err(|e| err(Box::new(e)))?;
    FdLink::from(link).pin(to).map_err(|e| err(Box::new(e)))?;
    Ok(())
}

/// The tracefs aya reads tracepoint ids from: the first of its two candidates that is a
/// non-empty directory (the same rule as aya's `find_tracefs_path`).
fn tracefs_dir() -> Option<&'static Path> {
    [
        Path::new("/sys/kernel/tracing"),
        Path::new("/sys/kernel/debug/tracing"),
    ]
    .into_iter()
    .find(|dir| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()))
}

/// Checks that the tracepoint's `id` file aya is about to read is a regular file on tracefs: a
/// FIFO there (a tracefs that is not one) would block the read forever. Files on tracefs are made
/// by the kernel, so what is checked is what aya reads.
fn check_tracepoint(category: &str, tracepoint: &str) -> Result<(), TargetError> {
    let tracefs = tracefs_dir().ok_or(TargetError::NoTracefs)?;
    let path = tracefs
        .join("events")
        .join(category)
        .join(tracepoint)
        .join("id");
    let (file, meta) = match crate::fd::open_path(&path) {
        Ok(opened) => opened,
        Err(source) => return Err(TargetError::TracepointId(path, source)),
    };
    let magic = match fd_fs_magic(&file) {
        Ok(magic) => magic,
        Err(source) => return Err(TargetError::TracepointStatfs(path, source)),
    };
    if magic != TRACEFS_MAGIC && magic != DEBUGFS_MAGIC {
        return Err(TargetError::NotTracefs(path, magic, tracefs.to_path_buf()));
    }
    if !meta.file_type().is_file() {
        let kind = crate::fd::describe_type(meta.file_type());
        return Err(TargetError::TracepointNotFile(path, kind));
    }
    Ok(())
}

/// Whether the tracepoint exists on this node (its tracefs `id` file checks out).
pub(crate) fn tracepoint_exists(category: &str, tracepoint: &str) -> bool {
    check_tracepoint(category, tracepoint).is_ok()
}

/// Fails when the kernel was built without kprobes (aya's error would not say so).
fn check_kprobes() -> Result<(), TargetError> {
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe/type");
    let kprobe_events = Path::new("/sys/kernel/tracing/kprobe_events");
    if kprobe_pmu.exists() || kprobe_events.exists() {
        Ok(())
    } else {
        Err(TargetError::NoKprobes)
    }
}

/// Opens a cgroup for cgroup_skb: a directory on cgroup v2. `O_DIRECTORY` makes opening a FIFO
/// or a device fail at once instead of blocking or reacting; the descriptor is what is attached.
pub(crate) fn open_cgroup(cgroup: &str) -> Result<std::fs::File, TargetError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(cgroup)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ENOTDIR) => TargetError::CgroupNotDir(
                cgroup.to_owned(),
                std::fs::metadata(cgroup)
                    .map(|m| crate::fd::describe_type(m.file_type()))
                    .unwrap_or("not a directory"),
            ),
            _ => TargetError::CgroupOpen(cgroup.to_owned(), source),
        })?;
    let magic = fd_fs_magic(&file)
        .map_err(|source| TargetError::CgroupStatfs(cgroup.to_owned(), source))?;
    if magic != CGROUP2_SUPER_MAGIC {
        return Err(TargetError::NotCgroup2(cgroup.to_owned(), magic));
    }
    Ok(file)
}

/// Opens a uprobe target path with `O_PATH` and checks it is a regular file.
fn open_uprobe_target(target: &str) -> Result<std::fs::File, TargetError> {
    let (file, meta) = crate::fd::open_path(Path::new(target))
        .map_err(|source| TargetError::UprobeOpen(target.to_owned(), source))?;
    if !meta.file_type().is_file() {
        return Err(TargetError::UprobeNotFile(
            target.to_owned(),
            crate::fd::describe_type(meta.file_type()),
        ));
    }
    Ok(file)
}

/// Whether a replaced link is a netfilter link, which the update unpinned and whose undo makes
/// it again ([`restore_netfilter_link`]) once the failed version's links are gone.
pub(crate) use hooks::{is_netfilter_link, restore_netfilter_link};

/// Puts the program pinned at `prog` back on the XDP link pinned at `link` (undo of an update).
pub(crate) fn restore_xdp_link(link: &Path, prog: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut program = Xdp::from_pin(prog, aya_obj::programs::XdpAttachType::Interface)?;
    let pinned = PinnedLink::from_pin(link)?;
    let xdp_link = XdpLink::try_from(FdLink::from(pinned))?;
    let id = program.attach_to_link(xdp_link)?;
    // Taken out of the program so that dropping the program does not detach it; the pin at
    // `link` keeps it alive once this handle closes.
    drop(program.take_link(id)?);
    Ok(())
}
