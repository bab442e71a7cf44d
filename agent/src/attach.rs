//! Attach points and pinned links. Every attachment is a bpf_link pinned under
//! `links/<program>/<attachment>`, so it outlives the agent; unlinking the last pin detaches it.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Program, TracePoint, Xdp, XdpMode, xdp::XdpLink};
use bpfpin_crds::{Attach, XdpMode as SpecXdpMode};

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
    },
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
                });
            }
        }
        points
    }

    /// The link's file name under `links/<program>/`.
    pub fn link_name(&self) -> String {
        match self {
            AttachPoint::Tracepoint { category, name } => {
                format!("tracepoint-{}-{}", encode_name(category), encode_name(name))
            }
            AttachPoint::Xdp { interface, .. } => format!("xdp-{}", encode_name(interface)),
        }
    }
}

fn attach_error(program: &str, point: &AttachPoint, err: &dyn std::error::Error) -> ObjectError {
    let what = match point {
        AttachPoint::Tracepoint { category, name } => format!("tracepoint {category}/{name}"),
        AttachPoint::Xdp { interface, .. } => format!("XDP on interface {interface}"),
    };
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
            let id = prog.attach(category, tp).map_err(|e| err(&e))?;
            let link = prog.take_link(id).map_err(|e| err(&e))?;
            let fd_link = FdLink::try_from(link).map_err(|e| err(&e))?;
            fd_link.pin(path).map_err(|e| pin_err(&e))?;
            tracing::info!(program = name, link = %path.display(), "attached");
            Ok(None)
        }
        AttachPoint::Xdp { interface, mode } => {
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
    }
}

fn wrong_type_named(program: &str, point: &AttachPoint, actual: &str) -> ObjectError {
    let want = match point {
        AttachPoint::Tracepoint { .. } => "a tracepoint program (SEC(\"tracepoint/...\"))",
        AttachPoint::Xdp { .. } => "an XDP program (SEC(\"xdp\"))",
    };
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
