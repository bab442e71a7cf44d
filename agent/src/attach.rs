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
use bpfpin_crds::{Attach, Direction, LinkOrder as SpecOrder, XdpMode as SpecXdpMode};

use crate::error::{ObjectError, Reason};
use crate::layout::encode_name;

/// One attach point of a program (an `xdp` entry with three interfaces is three points).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachPoint {
    /// A tracepoint.
    Tracepoint {
        /// Category (`syscalls`).
        category: String,
        /// Name (`sys_enter_getpid`).
        name: String,
    },
    /// XDP on one interface.
    Xdp {
        /// Interface name.
        interface: String,
        /// Attach mode.
        mode: Option<SpecXdpMode>,
        /// Through the dispatcher, in this place (`attach.xdp.priority`/`proceedOn` set).
        share: Option<crate::xdp_dispatcher::Share>,
    },
    /// tcx on one interface.
    Tc {
        /// Interface name.
        interface: String,
        /// Ingress or egress.
        direction: Direction,
        /// First or last among the interface's tcx programs.
        first: bool,
        /// Placed by priority among bpfpin's prioritized tcx programs instead (`attach.tc.priority`).
        priority: Option<u16>,
    },
    /// kprobe / kretprobe.
    Kprobe {
        /// Kernel function.
        function: String,
        /// Offset into it.
        offset: u64,
    },
    /// uprobe / uretprobe.
    Uprobe {
        /// Binary or library.
        target: String,
        /// Symbol.
        symbol: Option<String>,
        /// Offset (from the symbol, or absolute).
        offset: Option<u64>,
        /// Only this process.
        pid: Option<u32>,
    },
    /// fentry.
    Fentry {
        /// Kernel function.
        function: String,
    },
    /// fexit.
    Fexit {
        /// Kernel function.
        function: String,
    },
    /// cgroup_skb.
    CgroupSkb {
        /// cgroup v2 directory.
        cgroup: String,
        /// Ingress or egress.
        direction: Direction,
    },
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
            points.push(AttachPoint::Tracepoint {
                category: tp.category.clone(),
                name: tp.name.clone(),
            });
        }
        if let Some(xdp) = &attach.xdp {
            for interface in &xdp.interfaces {
                points.push(AttachPoint::Xdp {
                    interface: interface.clone(),
                    mode: xdp.mode,
                    share: crate::xdp_dispatcher::Share::of(xdp),
                });
            }
        }
        if let Some(tc) = &attach.tc {
            for interface in &tc.interfaces {
                points.push(AttachPoint::Tc {
                    interface: interface.clone(),
                    direction: tc.direction,
                    first: tc.order == Some(SpecOrder::First),
                    priority: tc.priority,
                });
            }
        }
        if let Some(k) = &attach.kprobe {
            points.push(AttachPoint::Kprobe {
                function: k.function.clone(),
                offset: k.offset.unwrap_or(0),
            });
        }
        if let Some(u) = &attach.uprobe {
            points.push(AttachPoint::Uprobe {
                target: u.target.clone(),
                symbol: u.symbol.clone(),
                offset: u.offset,
                pid: u.pid,
            });
        }
        if let Some(f) = &attach.fentry {
            points.push(AttachPoint::Fentry {
                function: f.function.clone(),
            });
        }
        if let Some(f) = &attach.fexit {
            points.push(AttachPoint::Fexit {
                function: f.function.clone(),
            });
        }
        if let Some(c) = &attach.cgroup_skb {
            points.push(AttachPoint::CgroupSkb {
                cgroup: c.cgroup.clone(),
                direction: c.direction,
            });
        }
        points
    }

    /// The kernel function an fentry/fexit program is loaded against (it is part of the load).
    pub fn btf_function(attach: &Attach) -> Option<&str> {
        attach
            .fentry
            .as_ref()
            .or(attach.fexit.as_ref())
            .map(|f| f.function.as_str())
    }

    /// The link's file name under `links/<program>/`.
    pub fn link_name(&self) -> String {
        match self {
            AttachPoint::Tracepoint { category, name } => {
                format!("tracepoint-{}-{}", encode_name(category), encode_name(name))
            }
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
                    Some(p) => crate::xdp_dispatcher::tcx::link_name(*p, &plain),
                    None => plain,
                }
            }
            AttachPoint::Kprobe { function, offset } if *offset == 0 => {
                format!("kprobe-{}", encode_name(function))
            }
            AttachPoint::Kprobe { function, offset } => {
                format!("kprobe-{}-{offset}", encode_name(function))
            }
            AttachPoint::Uprobe {
                target,
                symbol,
                offset,
                pid,
            } => {
                let file = std::path::Path::new(target)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| target.clone());
                let mut name = format!("uprobe-{}", encode_name(&file));
                if let Some(sym) = symbol {
                    name.push('-');
                    name.push_str(&encode_name(sym));
                }
                if let Some(off) = offset {
                    name.push_str(&format!("-{off}"));
                }
                if let Some(pid) = pid {
                    name.push_str(&format!("-pid{pid}"));
                }
                name
            }
            AttachPoint::Fentry { function } => format!("fentry-{}", encode_name(function)),
            AttachPoint::Fexit { function } => format!("fexit-{}", encode_name(function)),
            AttachPoint::CgroupSkb { cgroup, direction } => format!(
                "cgroupskb-{}-{}",
                direction_name(*direction),
                encode_name(cgroup.trim_start_matches('/'))
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            AttachPoint::Tracepoint { category, name } => format!("tracepoint {category}/{name}"),
            AttachPoint::Xdp { interface, .. } => format!("XDP on interface {interface}"),
            AttachPoint::Tc {
                interface,
                direction,
                ..
            } => format!("tc {} on interface {interface}", direction_name(*direction)),
            AttachPoint::Kprobe { function, .. } => format!("kprobe on {function}"),
            AttachPoint::Uprobe { target, symbol, .. } => format!(
                "uprobe on {target}{}",
                symbol.as_ref().map(|s| format!(":{s}")).unwrap_or_default()
            ),
            AttachPoint::Fentry { function } => format!("fentry on {function}"),
            AttachPoint::Fexit { function } => format!("fexit on {function}"),
            AttachPoint::CgroupSkb { cgroup, direction } => {
                format!("cgroup_skb {} on {cgroup}", direction_name(*direction))
            }
        }
    }

    fn wants(&self) -> &'static str {
        match self {
            AttachPoint::Tracepoint { .. } => "a tracepoint program (SEC(\"tracepoint/...\"))",
            AttachPoint::Xdp { .. } => "an XDP program (SEC(\"xdp\"))",
            AttachPoint::Tc { .. } => "a tc program (SEC(\"classifier\"))",
            AttachPoint::Kprobe { .. } => {
                "a kprobe program (SEC(\"kprobe/...\") or SEC(\"kretprobe/...\"))"
            }
            AttachPoint::Uprobe { .. } => {
                "a uprobe program (SEC(\"uprobe\") or SEC(\"uretprobe\"))"
            }
            AttachPoint::Fentry { .. } => "an fentry program (SEC(\"fentry/...\"))",
            AttachPoint::Fexit { .. } => "an fexit program (SEC(\"fexit/...\"))",
            AttachPoint::CgroupSkb { .. } => "a cgroup_skb program (SEC(\"cgroup_skb/...\"))",
        }
    }
}

fn attach_error(program: &str, point: &AttachPoint, err: &dyn std::error::Error) -> ObjectError {
    let what = point.describe();
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    ObjectError::new(
        Reason::AttachFailed,
        format!("attaching program {program} to {what}: {msg}"),
    )
}

/// Attaches `program` at `point` and pins the link at `path`. For XDP, when the previous version
/// of the object has a link on the same interface (`previous_link`), that link is updated to the
/// new program in one syscall instead (an interface has one XDP link), and its pin path is
/// returned so a failed build can put the old program back.
pub fn attach_and_pin(
    program: &mut Program,
    name: &str,
    point: &AttachPoint,
    path: &Path,
    previous_link: Option<&Path>,
) -> Result<Option<PathBuf>, ObjectError> {
    let err = |e: &dyn std::error::Error| attach_error(name, point, e);
    let pin_err = |e: &dyn std::error::Error| {
        ObjectError::new(
            Reason::PinFailed,
            format!(
                "pinning the link of program {name} at {}: {e}",
                path.display()
            ),
        )
    };
    match point {
        AttachPoint::Tracepoint { category, name: tp } => {
            let actual = format!("{:?}", program.prog_type());
            let prog: &mut TracePoint = program
                .try_into()
                .map_err(|_| wrong_type_named(name, point, &actual))?;
            check_tracepoint(name, point, category, tp)?;
            let id = prog.attach(category, tp).map_err(|e| err(&e))?;
            let link = prog.take_link(id).map_err(|e| err(&e))?;
            let fd_link = FdLink::try_from(link).map_err(|e| err(&e))?;
            fd_link.pin(path).map_err(|e| pin_err(&e))?;
            tracing::info!(program = name, link = %path.display(), "attached");
            Ok(None)
        }
        AttachPoint::Xdp {
            interface,
            mode,
            share: Some(share),
        } => {
            crate::xdp_dispatcher::attach_and_pin(program, name, interface, *mode, share, path)?;
            Ok(None)
        }
        AttachPoint::Xdp {
            interface, mode, ..
        } => {
            let actual = format!("{:?}", program.prog_type());
            let prog: &mut Xdp = program
                .try_into()
                .map_err(|_| wrong_type_named(name, point, &actual))?;
            if let Some(prev) = previous_link.filter(|p| p.exists()) {
                let old = PinnedLink::from_pin(prev).map_err(|e| err(&e))?;
                let xdp_link = XdpLink::try_from(FdLink::from(old)).map_err(|e| err(&e))?;
                let id = prog.attach_to_link(xdp_link).map_err(|e| err(&e))?;
                let link = prog.take_link(id).map_err(|e| err(&e))?;
                let fd_link = FdLink::try_from(link).map_err(|e| err(&e))?;
                fd_link.pin(path).map_err(|e| pin_err(&e))?;
                tracing::info!(program = name, link = %path.display(), interface, "replaced the program of an XDP link");
                return Ok(Some(prev.to_path_buf()));
            }
            let mode = match mode {
                None => XdpMode::Default,
                Some(SpecXdpMode::Skb) => XdpMode::Skb,
                Some(SpecXdpMode::Drv) => XdpMode::Driver,
                Some(SpecXdpMode::Hw) => XdpMode::Hardware,
            };
            let id = prog.attach(interface, mode).map_err(|e| err(&e))?;
            let link = prog.take_link(id).map_err(|e| err(&e))?;
            let fd_link = FdLink::try_from(link).map_err(|e| {
                ObjectError::new(
                    Reason::AttachFailed,
                    format!("XDP on interface {interface} for program {name} was attached through netlink, not a bpf_link, so it cannot be pinned (the kernel is older than 5.9 or refused the link: {e})"),
                )
            })?;
            fd_link.pin(path).map_err(|e| pin_err(&e))?;
            tracing::info!(program = name, link = %path.display(), interface, "attached");
            Ok(None)
        }
        AttachPoint::Tc {
            interface,
            direction,
            priority: Some(priority),
            ..
        } => {
            crate::xdp_dispatcher::tcx::attach_and_pin(
                program, name, interface, *direction, *priority, path,
            )?;
            Ok(None)
        }
        other => {
            let fd_link = attach_generic(program, name, other)?;
            fd_link.pin(path).map_err(|e| pin_err(&e))?;
            tracing::info!(program = name, link = %path.display(), at = %other.describe(), "attached");
            Ok(None)
        }
    }
}

/// The attach kinds whose link is simply created and pinned.
fn attach_generic(
    program: &mut Program,
    name: &str,
    point: &AttachPoint,
) -> Result<FdLink, ObjectError> {
    let actual = format!("{:?}", program.prog_type());
    let wrong = || wrong_type_named(name, point, &actual);
    let err = |e: &dyn std::error::Error| attach_error(name, point, e);
    macro_rules! link {
        ($prog:expr, $id:expr) => {{
            let id = $id.map_err(|e| err(&e))?;
            let link = $prog.take_link(id).map_err(|e| err(&e))?;
            FdLink::try_from(link).map_err(|e| err(&e))
        }};
    }
    match point {
        AttachPoint::Tc {
            interface,
            direction,
            first,
            ..
        } => {
            let prog: &mut SchedClassifier = program.try_into().map_err(|_| wrong())?;
            let order = if *first {
                LinkOrder::first()
            } else {
                LinkOrder::last()
            };
            let kind = match direction {
                Direction::Ingress => TcAttachType::Ingress,
                Direction::Egress => TcAttachType::Egress,
            };
            link!(
                prog,
                prog.attach_with_options(interface, kind, TcAttachOptions::TcxOrder(order))
            )
        }
        AttachPoint::Kprobe { function, offset } => {
            let prog: &mut KProbe = program.try_into().map_err(|_| wrong())?;
            if !std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
                && !std::path::Path::new("/sys/kernel/tracing/kprobe_events").exists()
            {
                return Err(ObjectError::new(
                    Reason::AttachFailed,
                    format!(
                        "attaching program {name} to {}: this kernel has no kprobe support (built without CONFIG_KPROBES)",
                        point.describe()
                    ),
                ));
            }
            link!(prog, prog.attach(function, *offset))
        }
        AttachPoint::Uprobe {
            target,
            symbol,
            offset,
            pid,
        } => {
            let prog: &mut UProbe = program.try_into().map_err(|_| wrong())?;
            let location = match (symbol, offset) {
                (Some(sym), Some(off)) => UProbeAttachLocation::SymbolOffset(sym, *off),
                (Some(sym), None) => UProbeAttachLocation::Symbol(sym),
                (None, Some(off)) => UProbeAttachLocation::AbsoluteOffset(*off),
                (None, None) => {
                    return Err(ObjectError::new(
                        Reason::InvalidSpec,
                        format!("uprobe of program {name}: set symbol, offset or both"),
                    ));
                }
            };
            let scope = match pid.and_then(NonZeroU32::new) {
                Some(pid) => UProbeScope::OneProcess(pid),
                None => UProbeScope::AllProcesses,
            };
            // A path is opened and checked here, and aya (symbol lookup) and the kernel (the
            // probe) get the descriptor's /proc link: the file checked is the file probed. A bare
            // library name is found by aya in the dynamic loader's cache (root-owned).
            let checked = if target.contains('/') {
                Some(open_uprobe_target(name, point, target)?)
            } else {
                None
            };
            let target_path = match &checked {
                Some(file) => crate::bytecode_path::fd_path(file),
                None => PathBuf::from(target),
            };
            link!(prog, prog.attach(location, &target_path, scope))
        }
        AttachPoint::Fentry { .. } => {
            let prog: &mut FEntry = program.try_into().map_err(|_| wrong())?;
            link!(prog, prog.attach())
        }
        AttachPoint::Fexit { .. } => {
            let prog: &mut FExit = program.try_into().map_err(|_| wrong())?;
            link!(prog, prog.attach())
        }
        AttachPoint::CgroupSkb { cgroup, direction } => {
            let prog: &mut CgroupSkb = program.try_into().map_err(|_| wrong())?;
            let file = open_cgroup(name, point, cgroup)?;
            let kind = match direction {
                Direction::Ingress => CgroupSkbAttachType::Ingress,
                Direction::Egress => CgroupSkbAttachType::Egress,
            };
            link!(prog, prog.attach(&file, kind, CgroupAttachMode::Single))
        }
        AttachPoint::Tracepoint { .. } | AttachPoint::Xdp { .. } => {
            unreachable!("handled by attach_and_pin")
        }
    }
}

/// Magic numbers of `statfs(2)`'s `f_type` (linux/magic.h).
const TRACEFS_MAGIC: i64 = 0x7472_6163;
const DEBUGFS_MAGIC: i64 = 0x6462_6720;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The filesystem type of an open descriptor (`fstatfs`; works on `O_PATH` descriptors).
fn fs_magic(file: &std::fs::File) -> std::io::Result<i64> {
    use std::os::unix::io::AsRawFd;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a valid descriptor and a buffer of the right size.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded, so it filled the buffer.
    #[expect(
        clippy::unnecessary_cast,
        reason = "f_type is i64 on x86_64 but i32 or u32 elsewhere"
    )]
    Ok(unsafe { buf.assume_init() }.f_type as i64)
}

fn target_error(program: &str, point: &AttachPoint, what: String) -> ObjectError {
    ObjectError::new(
        Reason::AttachFailed,
        format!(
            "attaching program {program} to {}: {what}",
            point.describe()
        ),
    )
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
fn check_tracepoint(
    program: &str,
    point: &AttachPoint,
    category: &str,
    tracepoint: &str,
) -> Result<(), ObjectError> {
    let Some(tracefs) = tracefs_dir() else {
        return Err(target_error(
            program,
            point,
            "tracefs is not mounted (neither /sys/kernel/tracing nor /sys/kernel/debug/tracing)"
                .into(),
        ));
    };
    let id = tracefs
        .join("events")
        .join(category)
        .join(tracepoint)
        .join("id");
    let (file, meta) = crate::bytecode_path::open_path(&id)
        .map_err(|e| target_error(program, point, format!("{}: {e}", id.display())))?;
    let magic = fs_magic(&file)
        .map_err(|e| target_error(program, point, format!("{}: fstatfs: {e}", id.display())))?;
    if magic != TRACEFS_MAGIC && magic != DEBUGFS_MAGIC {
        return Err(target_error(
            program,
            point,
            format!(
                "{} is not on tracefs (filesystem magic {magic:#x}); {} is not a tracefs mount",
                id.display(),
                tracefs.display()
            ),
        ));
    }
    if !meta.file_type().is_file() {
        return Err(target_error(
            program,
            point,
            format!(
                "{} is {}, not a tracefs file",
                id.display(),
                crate::bytecode_path::describe_type(meta.file_type())
            ),
        ));
    }
    Ok(())
}

/// Opens a cgroup for cgroup_skb: a directory on cgroup v2. `O_DIRECTORY` makes opening a FIFO
/// or a device fail at once instead of blocking or reacting; the descriptor is what is attached.
fn open_cgroup(
    program: &str,
    point: &AttachPoint,
    cgroup: &str,
) -> Result<std::fs::File, ObjectError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(cgroup)
        .map_err(|e| {
            let what = match e.raw_os_error() {
                Some(libc::ENOTDIR) => {
                    let kind = std::fs::metadata(cgroup)
                        .map(|m| crate::bytecode_path::describe_type(m.file_type()))
                        .unwrap_or("not a directory");
                    format!("cgroup {cgroup} is {kind}, not a cgroup v2 directory")
                }
                _ => format!("opening the cgroup: {e}"),
            };
            target_error(program, point, what)
        })?;
    let magic = fs_magic(&file)
        .map_err(|e| target_error(program, point, format!("cgroup {cgroup}: fstatfs: {e}")))?;
    if magic != CGROUP2_SUPER_MAGIC {
        return Err(target_error(
            program,
            point,
            format!(
                "cgroup {cgroup} is not on a cgroup v2 filesystem (filesystem magic {magic:#x})"
            ),
        ));
    }
    Ok(file)
}

/// Opens a uprobe target path with `O_PATH` and checks it is a regular file.
fn open_uprobe_target(
    program: &str,
    point: &AttachPoint,
    target: &str,
) -> Result<std::fs::File, ObjectError> {
    let (file, meta) = crate::bytecode_path::open_path(Path::new(target))
        .map_err(|e| target_error(program, point, format!("uprobe target {target}: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(target_error(
            program,
            point,
            format!(
                "uprobe target {target} is {}, not a regular file",
                crate::bytecode_path::describe_type(meta.file_type())
            ),
        ));
    }
    Ok(file)
}

fn wrong_type_named(program: &str, point: &AttachPoint, actual: &str) -> ObjectError {
    let want = point.wants();
    ObjectError::new(
        Reason::AttachFailed,
        format!(
            "program {program} has type {actual}; attaching it to {} needs {want}",
            point.link_name()
        ),
    )
}

/// Puts the program pinned at `prog` back on the XDP link pinned at `link` (undo of an update).
pub fn restore_xdp_link(link: &Path, prog: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut program = Xdp::from_pin(prog, aya_obj::programs::XdpAttachType::Interface)?;
    let pinned = PinnedLink::from_pin(link)?;
    let xdp_link = XdpLink::try_from(FdLink::from(pinned))?;
    let id = program.attach_to_link(xdp_link)?;
    // Taken out of the program so that dropping the program does not detach it; the pin at
    // `link` keeps it alive once this handle closes.
    drop(program.take_link(id)?);
    Ok(())
}
