//! tc (tcx) priorities: `attach.tc.priority` mapped onto tcx's own before/after ordering.
//!
//! tcx keeps an ordered list of programs per interface and direction and inserts a link before or
//! after a given program. A program with a priority goes before the first of bpfpin's
//! prioritized programs there that sorts after it (priority, then `object/program`), else after
//! the last one that sorts before it, else last. A prioritized link is pinned as
//! `links/<program>/prio<NNNN>-tc-<direction>-<interface>`: the name holds the priority, so a later
//! attachment (or a restarted agent) finds the others' places without any state of its own, and a
//! new priority is a new attachment. tcx refuses the same program twice on one hook (mprog's
//! EEXIST) and has no move (a link update or `BPF_F_REPLACE` keeps the old position), so when an
//! update keeps the program and only changes its priority, its old link is unpinned (detached)
//! just before the program is attached at its new place: packets in between skip it. A second
//! instance of the bytecode would be accepted at the new place first, but the loader keeps an
//! unchanged program across versions and has none to give here.
//!
//! tcx runs the next program only after `TCX_NEXT` (-1); every other verdict (`TC_ACT_OK`,
//! `TC_ACT_SHOT`, …) ends the chain. That is unlike XDP's `proceedOn`, and unlike legacy tc,
//! where `TC_ACT_OK` let later filters run: a ported program that returns `TC_ACT_OK` hides every
//! program after it.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{Program, ProgramId, SchedClassifier, TcAttachType};
use bpfpin_crds::Direction;

use crate::error::Reason;
use crate::pin::layout::VERSIONS_DIR;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failure to attach a tcx program by priority.
#[derive(Debug, thiserror::Error)]
pub enum TcxError {
    /// The program is no tc program.
    #[error(
        "program {program} has type {actual}; attaching it to {link} needs a tc program (SEC(\"classifier\"))"
    )]
    WrongType {
        /// The program.
        program: String,
        /// Its type.
        actual: String,
        /// The link's name.
        link: String,
    },
    /// `priority` above 1000 (the CRD refuses it too; local manifests get here).
    #[error("program {program}: attach.tc.priority {priority} is above 1000")]
    Priority {
        /// The program.
        program: String,
        /// The priority asked for.
        priority: u16,
    },
    /// The attach or a pin failed.
    #[error(
        "attaching program {program} to tc {direction} on interface {interface} with priority {priority}: {what}"
    )]
    Attach {
        /// The program.
        program: String,
        /// `ingress` or `egress`.
        direction: &'static str,
        /// The interface.
        interface: String,
        /// The priority.
        priority: u16,
        /// The step.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl TcxError {
    /// The reason written in status (the message is the error with its causes, see
    /// [`crate::pin::attach::AttachError`]).
    pub(crate) fn reason(&self) -> Reason {
        match self {
            TcxError::Priority { .. } => Reason::InvalidSpec,
            _ => Reason::AttachFailed,
        }
    }
}

/// A prioritized tcx link of bpfpin on the same interface and direction.
struct Placed {
    key: (u16, String),
    object: String,
    program: String,
    program_id: u32,
    pin: PathBuf,
}

/// The link name of a prioritized tcx attachment: `prio<NNNN>-tc-<direction>-<interface>`.
pub fn link_name(priority: u16, plain: &str) -> String {
    format!("prio{priority:04}-{plain}")
}

/// Every prioritized link pinned for `plain` (`tc-<direction>-<interface>`).
fn placed(root: &Path, plain: &str) -> Vec<Placed> {
    let suffix = format!("-{plain}");
    let dirs = |p: &Path| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect()
    };
    let mut out = Vec::new();
    for (object, obj_dir) in dirs(&root.join(VERSIONS_DIR)) {
        for (_, version_dir) in dirs(&obj_dir) {
            for (program, dir) in dirs(&version_dir.join("links")) {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let Some(prio) = name
                        .strip_prefix("prio")
                        .and_then(|rest| rest.strip_suffix(&suffix))
                        .and_then(|p| p.parse::<u16>().ok())
                    else {
                        continue;
                    };
                    if let Some((_, program_id)) = super::link_info(&entry.path()) {
                        out.push(Placed {
                            key: (prio, format!("{object}/{program}")),
                            object: object.clone(),
                            program: program.clone(),
                            program_id,
                            pin: entry.path(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// Attaches `program` to tcx on `interface` in `direction` at its priority's place and pins the
/// link at `path` (`prio<NNNN>-tc-<direction>-<interface>`).
pub fn attach_and_pin(
    program: &mut Program,
    name: &str,
    interface: &str,
    direction: Direction,
    priority: u16,
    path: &Path,
) -> Result<(), TcxError> {
    let dir_name = match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let err = |what: &str, source: BoxError| TcxError::Attach {
        program: name.to_owned(),
        direction: dir_name,
        interface: interface.to_owned(),
        priority,
        what: what.to_owned(),
        source,
    };
    if priority > bpfpin_crds::XdpAttach::MAX_PRIORITY {
        return Err(TcxError::Priority {
            program: name.to_owned(),
            priority,
        });
    }
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default()
        .to_owned();
    let plain = file
        .strip_prefix(&link_name(priority, ""))
        .unwrap_or(&file)
        .to_owned();
    let actual = format!("{:?}", program.prog_type());
    let prog: &mut SchedClassifier = program.try_into().map_err(|_| TcxError::WrongType {
        program: name.to_owned(),
        actual,
        link: file.clone(),
    })?;
    let (root, object) = super::split_link_path(path).ok_or_else(|| {
        err(
            "the link path is not in a version directory",
            "layout".into(),
        )
    })?;
    let mine = (priority, format!("{object}/{name}"));
    let all = placed(root, &plain);
    let (own, mut others): (Vec<Placed>, Vec<Placed>) = all
        .into_iter()
        .partition(|p| p.object == object && p.program == name);
    others.sort_by(|a, b| a.key.cmp(&b.key));
    let order = || match others.iter().find(|p| p.key > mine) {
        // SAFETY (both): the ids come from live links; a stale id makes the kernel refuse the
        // attach with an error, nothing worse.
        Some(next) => LinkOrder::before_program_id(unsafe { ProgramId::new(next.program_id) }),
        None => match others.iter().rev().find(|p| p.key < mine) {
            Some(prev) => LinkOrder::after_program_id(unsafe { ProgramId::new(prev.program_id) }),
            None => LinkOrder::last(),
        },
    };
    let kind = match direction {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    };
    let mut attach = || -> Result<FdLink, BoxError> {
        let id = prog.attach_with_options(interface, kind, TcAttachOptions::TcxOrder(order()))?;
        Ok(FdLink::try_from(prog.take_link(id)?)?)
    };
    let link = match attach() {
        Err(e) if super::has_errno(e.as_ref(), libc::EEXIST) && !own.is_empty() => {
            // The same program, kept by an update, is attached at its old priority: move it.
            for p in &own {
                let _ = std::fs::remove_file(&p.pin);
            }
            // Unlinking the last pin releases the old link, but the kernel frees it after an RCU
            // grace period (bpffs frees inodes by RCU, and the link is put from there): until
            // then the program is still attached and tcx answers EEXIST. Wait for that, briefly.
            let mut result = attach();
            for _ in 0..100 {
                match &result {
                    Err(e) if super::has_errno(e.as_ref(), libc::EEXIST) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        result = attach();
                    }
                    _ => break,
                }
            }
            result
        }
        other => other,
    }
    .map_err(|e| err("attaching", e))?;
    link.pin(path)
        .map_err(|e| err("pinning the link", e.into()))?;
    tracing::info!(program = name, object = %object, interface, direction = dir_name, priority, "attached to tcx by priority");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_names_hold_the_priority() {
        assert_eq!(
            super::link_name(7, "tc-ingress-eth0"),
            "prio0007-tc-ingress-eth0"
        );
    }
}
