//! The hook kinds of issue 13's second part: BTF tracepoints (`tpBtf`) and LSM hooks (`lsm`),
//! both BPF trampolines whose target was given at load (from the section); system calls by name
//! (`ksyscall`, a kprobe on the architecture's syscall entry as libbpf's `ksyscall` makes it);
//! netfilter hooks (`netfilter`, a kernel netfilter link in the agent's network namespace). Each is
//! a bpf_link, pinned like the others by `attach_and_pin`; this file only says how each kind's link
//! is made.

use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, KProbe, Lsm, Netfilter, Program};
use bpfpin_crds::{Attach, NetfilterFamily, NetfilterHook};

use super::{At, AttachError, AttachPoint, Linked, TargetError, check_kprobes};
use crate::pin::layout::encode_name;

/// One attach point of the kinds of this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookPoint {
    /// `tp_btf/<name>`: the tracepoint the program was loaded against.
    TpBtf {
        /// `sched_switch`.
        name: String,
    },
    /// `lsm/<hook>`: the LSM hook the program was loaded against.
    Lsm {
        /// `file_open`.
        hook: String,
    },
    /// A system call's entry (kprobe) or return (kretprobe), by name.
    Ksyscall {
        /// `getpid`.
        syscall: String,
    },
    /// A netfilter hook of the agent's network namespace.
    Netfilter {
        /// IPv4 or IPv6.
        family: NetfilterFamily,
        /// Which hook.
        hook: NetfilterHook,
        /// The place among the hook's functions.
        priority: i32,
        /// `BPF_F_NETFILTER_IP_DEFRAG`.
        defrag: bool,
    },
}

/// The points of this file's kinds that `attach` names.
pub(super) fn points(attach: &Attach, points: &mut Vec<AttachPoint>) {
    let mut push = |p: HookPoint| points.push(AttachPoint::Hook(p));
    if let Some(t) = &attach.tp_btf {
        push(HookPoint::TpBtf {
            name: t.name.clone(),
        });
    }
    if let Some(l) = &attach.lsm {
        push(HookPoint::Lsm {
            hook: l.hook.clone(),
        });
    }
    if let Some(k) = &attach.ksyscall {
        push(HookPoint::Ksyscall {
            syscall: k.syscall.clone(),
        });
    }
    if let Some(n) = &attach.netfilter {
        push(HookPoint::Netfilter {
            family: n.family,
            hook: n.hook,
            priority: n.priority,
            defrag: n.defrag,
        });
    }
}

/// The netfilter link flag that defragments IP packets first (kernel 6.6+).
const BPF_F_NETFILTER_IP_DEFRAG: u32 = 1;

impl HookPoint {
    /// The link's file name under `links/<program>/`.
    pub(super) fn link_name(&self) -> String {
        match self {
            HookPoint::TpBtf { name } => format!("tpbtf-{}", encode_name(name)),
            HookPoint::Lsm { hook } => format!("lsm-{}", encode_name(hook)),
            HookPoint::Ksyscall { syscall } => format!("ksyscall-{}", encode_name(syscall)),
            HookPoint::Netfilter {
                family,
                hook,
                priority,
                defrag,
            } => {
                let priority = match priority {
                    p if *p < 0 => format!("m{}", p.unsigned_abs()),
                    p => p.to_string(),
                };
                format!(
                    "{NETFILTER_LINK}{}-{}-{priority}{}",
                    format!("{family:?}").to_ascii_lowercase(),
                    format!("{hook:?}").to_ascii_lowercase(),
                    if *defrag { "-defrag" } else { "" }
                )
            }
        }
    }

    /// The point in a sentence, for messages.
    pub(super) fn describe(&self) -> String {
        match self {
            HookPoint::TpBtf { name } => format!("BTF tracepoint {name}"),
            HookPoint::Lsm { hook } => format!("LSM hook {hook}"),
            HookPoint::Ksyscall { syscall } => format!("system call {syscall}"),
            HookPoint::Netfilter {
                family,
                hook,
                priority,
                ..
            } => format!("netfilter {family:?} {hook:?} at priority {priority}"),
        }
    }

    /// The program type the point takes, for `WrongType`.
    pub(super) fn wants(&self) -> &'static str {
        match self {
            HookPoint::TpBtf { .. } => "a BTF tracepoint program (SEC(\"tp_btf/...\"))",
            HookPoint::Lsm { .. } => "an LSM program (SEC(\"lsm/...\"))",
            HookPoint::Ksyscall { .. } => {
                "a kprobe program (SEC(\"ksyscall/...\") or SEC(\"kretsyscall/...\"))"
            }
            HookPoint::Netfilter { .. } => "a netfilter program (SEC(\"netfilter\"))",
        }
    }

    /// Checks the target, calls aya's attach for the program type the kind takes, and returns the
    /// link (not pinned yet). A netfilter hook that the previous version's link (at the same
    /// family, hook and priority: the same link name) holds is taken over: the kernel has one BPF
    /// program per priority and cannot update a netfilter link's program, so the old link is
    /// unpinned first and returned as replaced (a failed build makes it again, see
    /// [`restore_netfilter_link`]).
    pub(super) fn link(
        &self,
        program: &mut Program,
        at: &At<'_>,
        previous_link: Option<&Path>,
    ) -> Result<Linked, AttachError> {
        let link = match self {
            HookPoint::TpBtf { .. } => {
                let prog: &mut BtfTracePoint = at.typed(program)?;
                let id = prog.attach().map_err(|e| at.kernel(e))?;
                FdLink::from(prog.take_link(id).map_err(|e| at.kernel(e))?)
            }
            HookPoint::Lsm { .. } => {
                let prog: &mut Lsm = at.typed(program)?;
                check_bpf_lsm().map_err(|e| at.target(e))?;
                let id = prog.attach().map_err(|e| at.kernel(e))?;
                FdLink::from(prog.take_link(id).map_err(|e| at.kernel(e))?)
            }
            HookPoint::Ksyscall { syscall } => {
                let prog: &mut KProbe = at.typed(program)?;
                check_kprobes().map_err(|e| at.target(e))?;
                let function = syscall_function(syscall);
                let id = prog.attach(&function, 0).map_err(|e| at.kernel(e))?;
                let link = prog.take_link(id).map_err(|e| at.kernel(e))?;
                FdLink::try_from(link).map_err(|e| at.kernel(e))?
            }
            HookPoint::Netfilter {
                family,
                hook,
                priority,
                defrag,
            } => {
                let prog: &mut Netfilter = at.typed(program)?;
                let flags = if *defrag {
                    BPF_F_NETFILTER_IP_DEFRAG
                } else {
                    0
                };
                let (pf, hooknum) = (family.code(), hook.code());
                let mut replaced = None;
                let id = match prog.attach(pf, hooknum, *priority, flags) {
                    Err(e)
                        if crate::pin::xdp_dispatcher::has_errno(&e, libc::EBUSY)
                            && previous_link.is_some_and(Path::exists) =>
                    {
                        let prev = previous_link.expect("checked");
                        std::fs::remove_file(prev).map_err(|e| at.kernel(e))?;
                        tracing::info!(
                            program = at.program,
                            link = %prev.display(),
                            "unpinned the previous version's netfilter link to take its priority"
                        );
                        replaced = Some(prev.to_path_buf());
                        while_busy(|| prog.attach(pf, hooknum, *priority, flags))
                    }
                    other => other,
                }
                .map_err(|e| at.kernel(e))?;
                let link = FdLink::from(prog.take_link(id).map_err(|e| at.kernel(e))?);
                return Ok(Linked { link, replaced });
            }
        };
        Ok(link.into())
    }
}

/// The start of every netfilter link's name.
const NETFILTER_LINK: &str = "netfilter-";

/// `attach` again while it fails with EBUSY, for up to a second: the kernel frees an unpinned
/// link's hook from a workqueue (`bpf_link_put`), a moment after the unlink.
fn while_busy<T>(
    mut attach: impl FnMut() -> Result<T, aya::programs::ProgramError>,
) -> Result<T, aya::programs::ProgramError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match attach() {
            Err(e)
                if crate::pin::xdp_dispatcher::has_errno(&e, libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Whether the link pinned at `link` is a netfilter link (by its name).
pub(crate) fn is_netfilter_link(link: &Path) -> bool {
    link.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(NETFILTER_LINK))
}

/// The point a netfilter link's name says: `netfilter-<family>-<hook>-<priority>[-defrag]`.
fn parse_netfilter_link(name: &str) -> Option<HookPoint> {
    let mut parts = name.strip_prefix(NETFILTER_LINK)?.split('-');
    let family = match parts.next()? {
        "ipv4" => NetfilterFamily::IPv4,
        "ipv6" => NetfilterFamily::IPv6,
        _ => return None,
    };
    let hook = match parts.next()? {
        "prerouting" => NetfilterHook::PreRouting,
        "localin" => NetfilterHook::LocalIn,
        "forward" => NetfilterHook::Forward,
        "localout" => NetfilterHook::LocalOut,
        "postrouting" => NetfilterHook::PostRouting,
        _ => return None,
    };
    let priority = match parts.next()? {
        p if p.starts_with('m') => -p[1..].parse::<i32>().ok()?,
        p => p.parse().ok()?,
    };
    let defrag = match parts.next() {
        None => false,
        Some("defrag") => true,
        Some(_) => return None,
    };
    Some(HookPoint::Netfilter {
        family,
        hook,
        priority,
        defrag,
    })
}

/// Undo of a netfilter takeover: attaches the program pinned at `prog` (the previous version's)
/// again at the hook the link name `link` says, and pins the link there. Run after the failed
/// version's links are gone, so the priority is free.
pub(crate) fn restore_netfilter_link(
    link: &Path,
    prog: &Path,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let name = link
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("a netfilter link name")?;
    let Some(HookPoint::Netfilter {
        family,
        hook,
        priority,
        defrag,
    }) = parse_netfilter_link(name)
    else {
        return Err(format!("{name} is not a netfilter link name").into());
    };
    let mut program = Netfilter::from_pin(prog)?;
    let flags = if defrag { BPF_F_NETFILTER_IP_DEFRAG } else { 0 };
    let id = while_busy(|| program.attach(family.code(), hook.code(), priority, flags))?;
    FdLink::from(program.take_link(id)?).pin(link)?;
    Ok(link.to_path_buf())
}

/// The architecture's prefix of system call entry points (`SYSCALL_DEFINE` wrappers), as libbpf's
/// `arch_specific_syscall_pfx`.
fn syscall_prefix() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "__x64_",
        "x86" => "__ia32_",
        "aarch64" => "__arm64_",
        "s390x" => "__s390x_",
        "arm" => "__arm_",
        "riscv64" => "__riscv_",
        "powerpc64" => "",
        "loongarch64" => "",
        _ => "",
    }
}

/// The kernel function a `ksyscall` of `syscall` probes: the architecture's wrapper
/// (`__x64_sys_<syscall>`) where the kernel has one, else `sys_<syscall>` (kernels without
/// syscall wrappers), as libbpf chooses.
pub(crate) fn syscall_function(syscall: &str) -> String {
    let wrapper = format!("{}sys_{syscall}", syscall_prefix());
    if syscall_prefix().is_empty() || crate::pin::kallsyms::has(&wrapper) != Some(false) {
        wrapper
    } else {
        format!("sys_{syscall}")
    }
}

/// Fails when the kernel does not run the BPF LSM (`bpf` missing from
/// `/sys/kernel/security/lsm`): the kernel would accept the link, and the program never run.
fn check_bpf_lsm() -> Result<(), TargetError> {
    let path = "/sys/kernel/security/lsm";
    match std::fs::read_to_string(path) {
        Ok(lsms) if lsms.trim().split(',').any(|l| l == "bpf") => Ok(()),
        Ok(lsms) => Err(TargetError::NoBpfLsm(format!(
            "the kernel's active LSMs are `{}`, without bpf; boot it with `lsm=...,bpf`",
            lsms.trim()
        ))),
        // securityfs not mounted here: the kernel decides.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(yaml: &str) -> Vec<String> {
        let attach: Attach = serde_yaml::from_str(yaml).expect("attach");
        AttachPoint::all(&attach)
            .iter()
            .map(AttachPoint::link_name)
            .collect()
    }

    #[test]
    fn link_names_are_bpffs_names() {
        assert_eq!(
            names("{tpBtf: {name: sched_switch}}"),
            ["tpbtf-sched_switch"]
        );
        assert_eq!(names("{lsm: {hook: file_open}}"), ["lsm-file_open"]);
        assert_eq!(names("{ksyscall: {syscall: getpid}}"), ["ksyscall-getpid"]);
        assert_eq!(
            names("{netfilter: {family: IPv4, hook: LocalIn, priority: -100}}"),
            ["netfilter-ipv4-localin-m100"]
        );
        assert_eq!(
            names("{netfilter: {family: IPv6, hook: PostRouting, priority: 5, defrag: true}}"),
            ["netfilter-ipv6-postrouting-5-defrag"]
        );
    }

    #[test]
    fn a_netfilter_link_name_reads_back_as_its_point() {
        for yaml in [
            "{netfilter: {family: IPv4, hook: LocalIn, priority: -100}}",
            "{netfilter: {family: IPv6, hook: PostRouting, priority: 5, defrag: true}}",
            "{netfilter: {family: IPv4, hook: Forward, priority: 0}}",
        ] {
            let attach: Attach = serde_yaml::from_str(yaml).expect("attach");
            let point = &AttachPoint::all(&attach)[0];
            let AttachPoint::Hook(hook) = point else {
                panic!("{point:?}");
            };
            assert_eq!(
                parse_netfilter_link(&point.link_name()).as_ref(),
                Some(hook),
                "{yaml}"
            );
        }
        assert_eq!(parse_netfilter_link("netfilter-ipv4-localin"), None);
        assert_eq!(parse_netfilter_link("netfilter-ipv4-localin-1-x"), None);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_syscall_is_probed_at_its_x86_64_wrapper() {
        // Every x86-64 kernel since 4.17 has the wrappers; kallsyms lists them to every reader.
        assert_eq!(syscall_function("getpid"), "__x64_sys_getpid");
    }
}
