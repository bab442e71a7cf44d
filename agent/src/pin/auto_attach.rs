//! Auto-attach: what a program's ELF section says about its attach point, as libbpf's
//! `section_defs` table reads it. Where the section names the whole point
//! (`tracepoint/syscalls/sys_enter_execve`, `raw_tp/sched_switch`, `kprobe/do_unlinkat`,
//! `uprobe//usr/bin/bash:readline`, `fentry/do_unlinkat`, `iter/task`), `attach: {}` derives it;
//! where the section names part of it (`cgroup_skb/egress`, `tcx/ingress`: a direction) or only
//! the hook (`cgroup/connect4`, `sockops`, `xdp`), the manifest names the target, and `attach: {}`
//! is refused saying which field to set. An explicit attach of the same kind whose target the
//! section contradicts is refused too, naming both. One table, [`PREFIXES`], holds every libbpf
//! prefix, one line each (written with [`prefixes!`]).

use std::borrow::Cow;

use bpfpin_crds::{
    Attach, Direction, FunctionAttach, IterAttach, KprobeAttach, KsyscallAttach, LsmAttach,
    RawTracepointAttach, TpBtfAttach, TracepointAttach, UprobeAttach,
};

use crate::error::{Reason, StatusError};

/// What a section prefix says about the attach point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derive {
    /// `tracepoint/<category>/<name>`: the whole tracepoint.
    Tracepoint,
    /// `raw_tp/<name>`: the whole raw tracepoint.
    RawTracepoint,
    /// `kprobe/<function>[+<offset>]`: the whole kprobe.
    Kprobe,
    /// `uprobe/<binary>:<function>[+<offset>]`: the whole uprobe.
    Uprobe,
    /// `fentry/<function>`.
    Fentry,
    /// `fexit/<function>`.
    Fexit,
    /// `iter/<type>`: the whole iterator.
    Iter,
    /// `usdt/<path>:<provider>:<name>`: the whole USDT probe (`attach/usdt.rs`).
    Usdt,
    /// `tp_btf/<name>`: the whole BTF tracepoint.
    TpBtf,
    /// `lsm/<hook>`: the whole LSM hook.
    Lsm,
    /// `ksyscall/<syscall>`, `kretsyscall/<syscall>`: the whole system call probe.
    Ksyscall,
    /// `cgroup_skb/<direction>`: the direction; the manifest gives the cgroup.
    CgroupSkb(Direction),
    /// `tc/<direction>`, `tcx/<direction>`: the direction; the manifest gives the interfaces.
    Tc(Direction),
    /// The section names the program type (and hook) only; the manifest sets this attach field.
    Needs(&'static str),
    /// The program has no attach point of its own (it runs from a map entry, a socket, ...).
    Nothing(&'static str),
}

/// The prefix table, one line per prefix: `"prefix" => Derive variant`. Not formatted by rustfmt
/// (a brace macro), so each prefix stays one line.
macro_rules! prefixes {
    ($($prefix:literal => $derive:ident $(($($arg:tt)*))?,)*) => {
        &[$(($prefix, Derive::$derive $(($($arg)*))?)),*]
    };
}

/// Every prefix of libbpf's `section_defs` (libbpf 1.x `src/libbpf.c`), most specific first. An
/// entry ending in `/` matches any section that starts with it; the others match the section
/// exactly or followed by `/` (libbpf's `SEC_ATTACHABLE` names without `+`). Names aya 0.14 cannot
/// load are here too: the loader refuses those before attach is looked at.
#[rustfmt::skip]
pub const PREFIXES: &[(&str, Derive)] = prefixes! {
    "tracepoint/" => Tracepoint,
    "tp/" => Tracepoint,
    "tracepoint.s/" => Tracepoint,
    "tp.s/" => Tracepoint,
    "raw_tracepoint/" => RawTracepoint,
    "raw_tp/" => RawTracepoint,
    "raw_tracepoint.s/" => RawTracepoint,
    "raw_tp.s/" => RawTracepoint,
    "raw_tracepoint.w/" => RawTracepoint,
    "raw_tp.w/" => RawTracepoint,
    "kprobe.multi/" => Needs("kprobe (kprobe.multi is not loadable)"),
    "kretprobe.multi/" => Needs("kprobe (kretprobe.multi is not loadable)"),
    "kprobe.session/" => Needs("kprobe (kprobe.session is not loadable)"),
    "kprobe/" => Kprobe,
    "kretprobe/" => Kprobe,
    "kprobe" => Needs("kprobe.function"),
    "kretprobe" => Needs("kprobe.function"),
    "ksyscall/" => Ksyscall,
    "kretsyscall/" => Ksyscall,
    "uprobe.multi" => Needs("uprobe (uprobe.multi is not loadable)"),
    "uretprobe.multi" => Needs("uprobe (uretprobe.multi is not loadable)"),
    "uprobe.session" => Needs("uprobe (uprobe.session is not loadable)"),
    "uprobe.multi.s" => Needs("uprobe (uprobe.multi.s is not loadable)"),
    "uretprobe.multi.s" => Needs("uprobe (uretprobe.multi.s is not loadable)"),
    "uprobe.session.s" => Needs("uprobe (uprobe.session.s is not loadable)"),
    "uprobe/" => Uprobe,
    "uretprobe/" => Uprobe,
    "uprobe.s/" => Uprobe,
    "uretprobe.s/" => Uprobe,
    "uprobe" => Needs("uprobe.target and uprobe.symbol"),
    "uretprobe" => Needs("uprobe.target and uprobe.symbol"),
    "uprobe.s" => Needs("uprobe.target and uprobe.symbol"),
    "uretprobe.s" => Needs("uprobe.target and uprobe.symbol"),
    "usdt/" => Usdt,
    "usdt.s/" => Usdt,
    "usdt" => Needs("usdt.target, usdt.provider and usdt.name"),
    "usdt.s" => Needs("usdt.target, usdt.provider and usdt.name"),
    "fentry/" => Fentry,
    "fentry.s/" => Fentry,
    "fexit/" => Fexit,
    "fexit.s/" => Fexit,
    "fmod_ret/" => Nothing("fmod_ret is not loadable (aya 0.14)"),
    "fmod_ret.s/" => Nothing("fmod_ret is not loadable (aya 0.14)"),
    "freplace/" => Nothing("freplace programs extend a program bpfpin loads itself"),
    "tp_btf/" => TpBtf,
    "tp_btf.s/" => TpBtf,
    "lsm/" => Lsm,
    "lsm.s/" => Lsm,
    "lsm_cgroup/" => Nothing("lsm_cgroup is not loadable (aya 0.14)"),
    "iter/" => Iter,
    "iter.s/" => Iter,
    "cgroup_skb/ingress" => CgroupSkb(Direction::Ingress),
    "cgroup_skb/egress" => CgroupSkb(Direction::Egress),
    "cgroup/skb" => Needs("cgroupSkb.cgroup and cgroupSkb.direction"),
    "tc/ingress" => Tc(Direction::Ingress),
    "tc/egress" => Tc(Direction::Egress),
    "tcx/ingress" => Tc(Direction::Ingress),
    "tcx/egress" => Tc(Direction::Egress),
    "tc" => Needs("tc.interfaces and tc.direction"),
    "classifier" => Needs("tc.interfaces and tc.direction"),
    "netkit/primary" => Nothing("netkit links are not made by bpfpin"),
    "netkit/peer" => Nothing("netkit links are not made by bpfpin"),
    "action" => Nothing("load-only: a tc action runs it"),
    "xdp.frags/devmap" => Nothing("a devmap entry runs it"),
    "xdp/devmap" => Nothing("a devmap entry runs it"),
    "xdp.frags/cpumap" => Nothing("a cpumap entry runs it"),
    "xdp/cpumap" => Nothing("a cpumap entry runs it"),
    "xdp.frags" => Needs("xdp.interfaces"),
    "xdp" => Needs("xdp.interfaces"),
    "perf_event" => Needs("perfEvent.event and perfEvent.frequency or perfEvent.period"),
    "sockops" => Needs("sockOps.cgroup"),
    "sk_skb/stream_parser" => Needs("skSkb.map"),
    "sk_skb/stream_verdict" => Needs("skSkb.map"),
    "sk_skb/verdict" => Needs("skSkb.map"),
    "sk_skb" => Needs("skSkb.map"),
    "sk_msg" => Needs("skMsg.map"),
    "sk_lookup" => Needs("skLookup.netns"),
    "sk_reuseport/migrate" => Nothing("a reuseport socket array runs it"),
    "sk_reuseport" => Nothing("a reuseport socket array runs it"),
    "socket" => Nothing("a socket runs it (SO_ATTACH_BPF)"),
    "flow_dissector" => Nothing("flow dissector links are not made by bpfpin"),
    "lirc_mode2" => Nothing("a LIRC device runs it"),
    "lwt_in" => Nothing("load-only: a route with `encap bpf` runs it"),
    "lwt_out" => Nothing("load-only: a route with `encap bpf` runs it"),
    "lwt_xmit" => Nothing("load-only: a route with `encap bpf` runs it"),
    "lwt_seg6local" => Nothing("load-only: a route with `encap bpf` runs it"),
    "cgroup/sock_create" => Needs("cgroupSock.cgroup"),
    "cgroup/sock_release" => Needs("cgroupSock.cgroup"),
    "cgroup/sock" => Needs("cgroupSock.cgroup"),
    "cgroup/post_bind4" => Needs("cgroupSock.cgroup"),
    "cgroup/post_bind6" => Needs("cgroupSock.cgroup"),
    "cgroup/bind4" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/bind6" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/connect4" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/connect6" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/connect_unix" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/sendmsg4" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/sendmsg6" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/sendmsg_unix" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/recvmsg4" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/recvmsg6" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/recvmsg_unix" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/getpeername4" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/getpeername6" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/getpeername_unix" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/getsockname4" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/getsockname6" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/getsockname_unix" => Needs("cgroupSockAddr.cgroup"),
    "cgroup/sysctl" => Needs("cgroupSysctl.cgroup"),
    "cgroup/getsockopt" => Needs("cgroupSockopt.cgroup"),
    "cgroup/setsockopt" => Needs("cgroupSockopt.cgroup"),
    "cgroup/dev" => Needs("cgroupDevice.cgroup"),
    "struct_ops/" => Nothing("struct_ops is not loadable (aya 0.14)"),
    "struct_ops.s/" => Nothing("struct_ops is not loadable (aya 0.14)"),
    "syscall" => Nothing("load-only: bpf(BPF_PROG_RUN) runs it"),
    "netfilter" => Needs("netfilter.family, netfilter.hook and netfilter.priority (libbpf does not auto-attach netfilter either)"),
};

/// The table's entry for a section, and what follows its prefix (`syscalls/sys_enter_execve` of
/// `tracepoint/syscalls/sys_enter_execve`).
pub fn lookup(section: &str) -> Option<(Derive, &str)> {
    PREFIXES.iter().find_map(|&(prefix, derive)| {
        let rest = section.strip_prefix(prefix)?;
        let rest = if prefix.ends_with('/') {
            Some(rest).filter(|r| !r.is_empty())
        } else if rest.is_empty() {
            Some(rest)
        } else {
            rest.strip_prefix('/')
        };
        Some((derive, rest?))
    })
}

/// Why a program's attach cannot be had from its section, or contradicts it.
#[derive(Debug, thiserror::Error)]
pub enum AutoAttachError {
    /// `attach: {}`, and the section does not name the attach point: `(program, section, the
    /// fields to set)`.
    #[error(
        "program {0} (section `{1}`): `attach: {{}}` takes the attach point from the section, and this section does not name it; set attach.{2}"
    )]
    NotNamed(String, String, &'static str),
    /// `attach: {}` for a section whose program has no attach point: `(program, section, why)`.
    #[error("program {0} (section `{1}`) has no attach point bpfpin makes ({2}); remove `attach`")]
    NoPoint(String, String, &'static str),
    /// The section cannot be read as its prefix says: `(program, section, what is expected)`.
    #[error("program {0}: section `{1}` does not have the form {2}")]
    Malformed(String, String, &'static str),
    /// An explicit attach contradicts the section: `(program, the attach field, its value,
    /// section, what the section says)`.
    #[error(
        "program {0}: attach.{1} is {2}, but its section `{3}` names {4}; make them agree, or use `attach: {{}}` to take the section's"
    )]
    Contradicts(String, &'static str, String, String, String),
}

impl StatusError for AutoAttachError {
    fn reason(&self) -> Reason {
        Reason::InvalidSpec
    }
}

/// `<function>[+<offset>]`, the offset decimal or `0x` hex (libbpf's kprobe and uprobe forms).
fn function_offset(s: &str) -> Option<(&str, Option<u64>)> {
    match s.split_once('+') {
        None => Some((s, None)),
        Some((f, off)) => {
            let off = match off.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                None => off.parse().ok()?,
            };
            Some((f, Some(off)))
        }
    }
}

/// The attach point of program `program` with ELF section `section`: `attach` itself when it sets
/// a kind (after checking it against the section), or the point the section names when it sets
/// none.
pub fn resolve<'a>(
    program: &str,
    section: &str,
    attach: &'a Attach,
) -> Result<Cow<'a, Attach>, AutoAttachError> {
    let Some((derive, rest)) = lookup(section) else {
        // Not a libbpf name: the loader refuses the program before attach matters.
        return Ok(Cow::Borrowed(attach));
    };
    let (p, s) = (program.to_owned(), section.to_owned());
    if attach.kinds() > 0 {
        return match contradiction(derive, rest, attach) {
            Some((field, spec, named)) => {
                Err(AutoAttachError::Contradicts(p, field, spec, s, named))
            }
            None => Ok(Cow::Borrowed(attach)),
        };
    }
    match derive {
        Derive::CgroupSkb(_) => Err(AutoAttachError::NotNamed(
            p,
            s,
            "cgroupSkb.cgroup (and cgroupSkb.direction, which must be the section's)",
        )),
        Derive::Tc(_) => Err(AutoAttachError::NotNamed(
            p,
            s,
            "tc.interfaces (and tc.direction, which must be the section's)",
        )),
        Derive::Needs(fields) => Err(AutoAttachError::NotNamed(p, s, fields)),
        Derive::Nothing(why) => Err(AutoAttachError::NoPoint(p, s, why)),
        _ => named(derive, rest)
            .map(Cow::Owned)
            .map_err(|form| AutoAttachError::Malformed(p, s, form)),
    }
}

/// The attach point `rest` (the section after its prefix) names for a prefix that names a whole
/// one, or the form the section should have (an empty `Attach` for the other prefixes).
fn named(derive: Derive, rest: &str) -> Result<Attach, &'static str> {
    let mut a = Attach::default();
    match derive {
        Derive::Tracepoint => {
            let (category, name) = rest
                .split_once('/')
                .filter(|(c, n)| !c.is_empty() && !n.is_empty() && !n.contains('/'))
                .ok_or("tracepoint/<category>/<name>")?;
            a.tracepoint = Some(TracepointAttach {
                category: category.into(),
                name: name.into(),
            });
        }
        Derive::RawTracepoint => a.raw_tracepoint = Some(RawTracepointAttach { name: rest.into() }),
        Derive::Kprobe => {
            let (function, offset) = function_offset(rest).ok_or("kprobe/<function>[+<offset>]")?;
            a.kprobe = Some(KprobeAttach {
                function: function.into(),
                offset,
            });
        }
        Derive::Uprobe => {
            // libbpf: `uprobe/<binary>:<function>[+<offset>]`; an absolute binary gives `//`.
            let form = "uprobe/<binary>:<function>[+<offset>]";
            let (target, func) = rest
                .rsplit_once(':')
                .filter(|(t, f)| !t.is_empty() && !f.is_empty())
                .ok_or(form)?;
            let (symbol, offset) = function_offset(func).ok_or(form)?;
            a.uprobe = Some(UprobeAttach {
                target: target.into(),
                symbol: Some(symbol.into()),
                offset,
                pid: None,
                containers: None,
            });
        }
        Derive::Fentry => {
            a.fentry = Some(FunctionAttach {
                function: rest.into(),
            })
        }
        Derive::Fexit => {
            a.fexit = Some(FunctionAttach {
                function: rest.into(),
            })
        }
        Derive::Iter => a.iter = Some(IterAttach {}),
        Derive::Usdt => {
            // libbpf: `usdt/<path>:<provider>:<name>`; bpfpin reads the notes of an absolute path.
            let form = "usdt/<absolute path>:<provider>:<name>";
            let mut parts = rest.rsplitn(3, ':');
            let (name, provider, target) = (parts.next(), parts.next(), parts.next());
            let (Some(name), Some(provider), Some(target)) = (name, provider, target) else {
                return Err(form);
            };
            if !target.starts_with('/') || provider.is_empty() || name.is_empty() {
                return Err(form);
            }
            a.usdt = Some(bpfpin_crds::usdt::UsdtAttach {
                target: target.into(),
                provider: provider.into(),
                name: name.into(),
                pid: None,
            });
        }
        Derive::TpBtf => a.tp_btf = Some(TpBtfAttach { name: rest.into() }),
        Derive::Lsm => a.lsm = Some(LsmAttach { hook: rest.into() }),
        Derive::Ksyscall => {
            a.ksyscall = Some(KsyscallAttach {
                syscall: rest.into(),
            })
        }
        _ => {}
    }
    Ok(a)
}

/// An explicit attach against what the section names: only a kind the section's type takes is
/// compared (another kind fails later as the wrong program type). `(the attach field, its value,
/// what the section names)`.
fn contradiction(
    derive: Derive,
    rest: &str,
    attach: &Attach,
) -> Option<(&'static str, String, String)> {
    let differ = |field, spec: &str, named: &str| {
        (spec != named).then(|| (field, spec.into(), named.into()))
    };
    match derive {
        Derive::Tracepoint => {
            // A section without `<category>/` names no tracepoint to compare.
            rest.split_once('/')?;
            let t = attach.tracepoint.as_ref()?;
            differ("tracepoint", &format!("{}/{}", t.category, t.name), rest)
        }
        Derive::RawTracepoint => differ(
            "rawTracepoint.name",
            &attach.raw_tracepoint.as_ref()?.name,
            rest,
        ),
        Derive::Kprobe => {
            let (k, (function, offset)) = (attach.kprobe.as_ref()?, function_offset(rest)?);
            (k.function != function || offset.is_some_and(|o| k.offset != Some(o)))
                .then(|| ("kprobe.function", k.function.clone(), rest.into()))
        }
        Derive::Uprobe => {
            let (symbol, _) = function_offset(rest.rsplit_once(':')?.1)?;
            differ(
                "uprobe.symbol",
                attach.uprobe.as_ref()?.symbol.as_ref()?,
                symbol,
            )
        }
        Derive::Fentry => differ("fentry.function", &attach.fentry.as_ref()?.function, rest),
        Derive::Fexit => differ("fexit.function", &attach.fexit.as_ref()?.function, rest),
        Derive::CgroupSkb(d) => {
            let spec = attach.cgroup_skb.as_ref()?.direction;
            differ(
                "cgroupSkb.direction",
                &format!("{spec:?}"),
                &format!("{d:?}"),
            )
        }
        Derive::Tc(d) => {
            let spec = attach.tc.as_ref()?.direction;
            differ("tc.direction", &format!("{spec:?}"), &format!("{d:?}"))
        }
        Derive::Usdt => {
            let (s, n) = (attach.usdt.as_ref()?, named(derive, rest).ok()?.usdt?);
            let probe = |u: &bpfpin_crds::usdt::UsdtAttach| {
                format!("{}:{}:{}", u.target, u.provider, u.name)
            };
            differ("usdt", &probe(s), &probe(&n))
        }
        Derive::TpBtf => differ("tpBtf.name", &attach.tp_btf.as_ref()?.name, rest),
        Derive::Lsm => differ("lsm.hook", &attach.lsm.as_ref()?.hook, rest),
        Derive::Ksyscall => differ("ksyscall.syscall", &attach.ksyscall.as_ref()?.syscall, rest),
        Derive::Iter | Derive::Needs(_) | Derive::Nothing(_) => None,
    }
}

/// [`resolve`] on this node: a contradiction of a tracepoint or kprobe is refused only when the
/// manifest's target exists here. A target that does not exist is reported as missing when it is
/// attached (`AttachFailed`, naming it), as it always was: that is the more useful message.
pub fn resolve_on_node<'a>(
    program: &str,
    section: &str,
    attach: &'a Attach,
) -> Result<Cow<'a, Attach>, AutoAttachError> {
    match resolve(program, section, attach) {
        Err(AutoAttachError::Contradicts(_, field, ..)) if !spec_target_exists(field, attach) => {
            Ok(Cow::Borrowed(attach))
        }
        other => other,
    }
}

/// Whether the target the manifest names for `field` exists on this node (`true` for the kinds
/// whose target is not looked up here).
fn spec_target_exists(field: &str, attach: &Attach) -> bool {
    match field {
        "tracepoint" => attach
            .tracepoint
            .as_ref()
            .is_some_and(|t| super::attach::tracepoint_exists(&t.category, &t.name)),
        "kprobe.function" => attach
            .kprobe
            .as_ref()
            .is_some_and(|k| kernel_has_function(&k.function)),
        _ => true,
    }
}

/// Whether `/proc/kallsyms` lists a text symbol `function` (names are listed for every reader);
/// `true` when it cannot be read (the attach then says what the kernel lacks).
fn kernel_has_function(function: &str) -> bool {
    crate::pin::kallsyms::has(function).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(yaml: &str) -> Attach {
        serde_yaml::from_str(yaml).expect("attach")
    }

    fn derived(section: &str) -> Result<Attach, AutoAttachError> {
        resolve("p", section, &Attach::default()).map(Cow::into_owned)
    }

    /// Every section name libbpf's `section_defs` accepts (libbpf 1.x), with an attach target
    /// where the prefix takes one: each is in the table.
    const LIBBPF_SECTIONS: &[&str] = &[
        "socket",
        "sk_reuseport/migrate",
        "sk_reuseport",
        "kprobe/f",
        "uprobe/b:f",
        "uprobe.s/b:f",
        "kretprobe/f",
        "uretprobe/b:f",
        "uretprobe.s/b:f",
        "kprobe.multi/f",
        "kretprobe.multi/f",
        "kprobe.session/f",
        "uprobe.multi/b:f",
        "uretprobe.multi/b:f",
        "uprobe.session/b:f",
        "uprobe.multi.s/b:f",
        "uretprobe.multi.s/b:f",
        "uprobe.session.s/b:f",
        "ksyscall/s",
        "kretsyscall/s",
        "usdt/b:p:n",
        "usdt.s/b:p:n",
        "tc/ingress",
        "tc/egress",
        "tcx/ingress",
        "tcx/egress",
        "tc",
        "classifier",
        "action",
        "netkit/primary",
        "netkit/peer",
        "tracepoint/c/n",
        "tp/c/n",
        "tracepoint.s/c/n",
        "tp.s/c/n",
        "raw_tracepoint/n",
        "raw_tp/n",
        "raw_tracepoint.s/n",
        "raw_tp.s/n",
        "raw_tracepoint.w/n",
        "raw_tp.w/n",
        "tp_btf/n",
        "tp_btf.s/n",
        "fentry/f",
        "fmod_ret/f",
        "fexit/f",
        "fentry.s/f",
        "fmod_ret.s/f",
        "fexit.s/f",
        "freplace/f",
        "lsm/h",
        "lsm.s/h",
        "lsm_cgroup/h",
        "iter/task",
        "iter.s/task",
        "syscall",
        "xdp.frags/devmap",
        "xdp/devmap",
        "xdp.frags/cpumap",
        "xdp/cpumap",
        "xdp.frags",
        "xdp",
        "perf_event",
        "lwt_in",
        "lwt_out",
        "lwt_xmit",
        "lwt_seg6local",
        "sockops",
        "sk_skb/stream_parser",
        "sk_skb/stream_verdict",
        "sk_skb/verdict",
        "sk_skb",
        "sk_msg",
        "lirc_mode2",
        "flow_dissector",
        "cgroup_skb/ingress",
        "cgroup_skb/egress",
        "cgroup/skb",
        "cgroup/sock_create",
        "cgroup/sock_release",
        "cgroup/sock",
        "cgroup/post_bind4",
        "cgroup/post_bind6",
        "cgroup/bind4",
        "cgroup/bind6",
        "cgroup/connect4",
        "cgroup/connect6",
        "cgroup/connect_unix",
        "cgroup/sendmsg4",
        "cgroup/sendmsg6",
        "cgroup/sendmsg_unix",
        "cgroup/recvmsg4",
        "cgroup/recvmsg6",
        "cgroup/recvmsg_unix",
        "cgroup/getpeername4",
        "cgroup/getpeername6",
        "cgroup/getpeername_unix",
        "cgroup/getsockname4",
        "cgroup/getsockname6",
        "cgroup/getsockname_unix",
        "cgroup/sysctl",
        "cgroup/getsockopt",
        "cgroup/setsockopt",
        "cgroup/dev",
        "struct_ops/x",
        "struct_ops.s/x",
        "sk_lookup",
        "netfilter",
    ];

    #[test]
    fn every_libbpf_section_is_in_the_table() {
        for section in LIBBPF_SECTIONS {
            assert!(lookup(section).is_some(), "{section} is not in PREFIXES");
        }
        // Every table entry is one of libbpf's (no invented prefixes).
        for (prefix, _) in PREFIXES {
            let probe = if prefix.ends_with('/') {
                format!("{prefix}x")
            } else {
                (*prefix).to_owned()
            };
            let p = prefix.trim_end_matches('/');
            assert!(
                LIBBPF_SECTIONS
                    .iter()
                    .any(|s| *s == p || s.starts_with(&format!("{p}/"))),
                "{prefix} is not a libbpf prefix"
            );
            assert!(lookup(&probe).is_some(), "{prefix}");
        }
        assert!(lookup("nonsense").is_none());
        // The most specific entry wins.
        assert_eq!(
            lookup("kprobe.multi/f").map(|d| d.0),
            Some(Derive::Needs("kprobe (kprobe.multi is not loadable)"))
        );
        assert_eq!(lookup("kprobe/f"), Some((Derive::Kprobe, "f")));
        assert_eq!(
            lookup("xdp.frags/devmap").map(|d| d.0),
            Some(Derive::Nothing("a devmap entry runs it"))
        );
    }

    #[test]
    fn sections_that_name_the_point_derive_it() {
        let a = derived("tracepoint/syscalls/sys_enter_execve").expect("tp");
        assert_eq!(
            a.tracepoint,
            Some(TracepointAttach {
                category: "syscalls".into(),
                name: "sys_enter_execve".into()
            })
        );
        let a = derived("tp/sched/sched_switch").expect("tp");
        assert_eq!(a.tracepoint.expect("tp").name, "sched_switch");
        let a = derived("raw_tp/sched_switch").expect("raw tp");
        assert_eq!(a.raw_tracepoint.expect("raw").name, "sched_switch");
        let a = derived("kprobe/do_unlinkat").expect("kprobe");
        assert_eq!(
            a.kprobe,
            Some(KprobeAttach {
                function: "do_unlinkat".into(),
                offset: None
            })
        );
        let a = derived("kretprobe/do_sys_openat2+0x10").expect("kretprobe");
        assert_eq!(a.kprobe.expect("kprobe").offset, Some(16));
        let a = derived("uprobe//usr/bin/bash:readline").expect("uprobe");
        let u = a.uprobe.expect("uprobe");
        assert_eq!(
            (u.target.as_str(), u.symbol.as_deref()),
            ("/usr/bin/bash", Some("readline"))
        );
        let a = derived("uretprobe/libc.so.6:malloc+4").expect("uretprobe");
        let u = a.uprobe.expect("uprobe");
        assert_eq!((u.target.as_str(), u.offset), ("libc.so.6", Some(4)));
        assert_eq!(
            derived("fentry/do_unlinkat")
                .expect("fentry")
                .fentry
                .expect("f")
                .function,
            "do_unlinkat"
        );
        assert_eq!(
            derived("fexit.s/do_unlinkat")
                .expect("fexit")
                .fexit
                .expect("f")
                .function,
            "do_unlinkat"
        );
        assert!(derived("iter/task").expect("iter").iter.is_some());
        // Each derived attach sets exactly one kind.
        for s in [
            "tracepoint/a/b",
            "raw_tp/x",
            "kprobe/f",
            "uprobe/b:f",
            "fentry/f",
            "iter/task",
        ] {
            assert_eq!(derived(s).expect(s).kinds(), 1, "{s}");
        }
    }

    #[test]
    fn sections_that_do_not_name_it_say_which_field_to_set() {
        for (section, field) in [
            ("cgroup_skb/egress", "cgroupSkb.cgroup"),
            ("tcx/ingress", "tc.interfaces"),
            ("cgroup/connect4", "cgroupSockAddr.cgroup"),
            ("sockops", "sockOps.cgroup"),
            ("xdp", "xdp.interfaces"),
            ("sk_msg", "skMsg.map"),
            ("kprobe", "kprobe.function"),
            ("uprobe", "uprobe.target"),
        ] {
            let e = derived(section).expect_err(section);
            assert!(matches!(e, AutoAttachError::NotNamed(..)), "{section}: {e}");
            assert!(
                e.to_string().contains(&format!("set attach.{field}")),
                "{e}"
            );
            assert_eq!(e.reason(), Reason::InvalidSpec);
        }
        assert!(matches!(
            derived("netfilter"),
            Err(AutoAttachError::NotNamed(..))
        ));
        assert!(matches!(
            derived("socket"),
            Err(AutoAttachError::NoPoint(..))
        ));
        assert!(matches!(
            derived("tracepoint/syscalls"),
            Err(AutoAttachError::Malformed(..))
        ));
        assert!(matches!(
            derived("uprobe/nocolon"),
            Err(AutoAttachError::Malformed(..))
        ));
    }

    #[test]
    fn on_a_node_a_missing_target_is_left_to_attach() {
        let missing = attach("{tracepoint: {category: syscalls, name: sys_enter_nosuchcall}}");
        let got = resolve_on_node("p", "tracepoint/syscalls/sys_enter_getpid", &missing);
        assert!(matches!(got, Ok(Cow::Borrowed(_))), "{got:?}");
        let missing = attach("{kprobe: {function: bpfpin_no_such_function}}");
        let got = resolve_on_node("p", "kprobe/do_unlinkat", &missing);
        assert!(matches!(got, Ok(Cow::Borrowed(_))), "{got:?}");
        assert!(
            kernel_has_function("do_unlinkat"),
            "kallsyms lists do_unlinkat"
        );
        let present = attach("{kprobe: {function: do_unlinkat}}");
        let got = resolve_on_node("p", "kprobe/vfs_read", &present);
        assert!(
            matches!(got, Err(AutoAttachError::Contradicts(..))),
            "{got:?}"
        );
    }

    #[test]
    fn an_explicit_attach_that_contradicts_the_section_names_both() {
        let e = resolve(
            "count_execve",
            "tracepoint/syscalls/sys_enter_execve",
            &attach("{tracepoint: {category: syscalls, name: sys_enter_getpid}}"),
        )
        .expect_err("contradiction");
        assert_eq!(
            e.to_string(),
            "program count_execve: attach.tracepoint is syscalls/sys_enter_getpid, but its section `tracepoint/syscalls/sys_enter_execve` names syscalls/sys_enter_execve; make them agree, or use `attach: {}` to take the section's"
        );
        assert_eq!(e.reason(), Reason::InvalidSpec);
        for (section, yaml) in [
            (
                "cgroup_skb/egress",
                "{cgroupSkb: {cgroup: /sys/fs/cgroup, direction: Ingress}}",
            ),
            ("tcx/ingress", "{tc: {interfaces: [lo], direction: Egress}}"),
            ("raw_tp/sched_switch", "{rawTracepoint: {name: sys_enter}}"),
            ("kprobe/do_unlinkat", "{kprobe: {function: vfs_read}}"),
            (
                "kprobe/do_unlinkat+8",
                "{kprobe: {function: do_unlinkat, offset: 4}}",
            ),
            ("fentry/do_unlinkat", "{fentry: {function: vfs_read}}"),
            (
                "uprobe/libc.so.6:malloc",
                "{uprobe: {target: libc, symbol: free}}",
            ),
            // A section `attach: {}` would refuse as malformed still names what it names.
            (
                "tracepoint/syscalls/sys_enter_getpid/x",
                "{tracepoint: {category: syscalls, name: sys_enter_getpid}}",
            ),
            ("uprobe/:malloc", "{uprobe: {target: libc, symbol: free}}"),
        ] {
            let e = resolve("p", section, &attach(yaml)).expect_err(section);
            assert!(
                matches!(e, AutoAttachError::Contradicts(..)),
                "{section}: {e}"
            );
        }
        // Agreeing, or a section that names nothing, or another kind: the attach is kept as is.
        for (section, yaml) in [
            (
                "tracepoint/syscalls/sys_enter_getpid",
                "{tracepoint: {category: syscalls, name: sys_enter_getpid}}",
            ),
            (
                "cgroup_skb/egress",
                "{cgroupSkb: {cgroup: /sys/fs/cgroup, direction: Egress}}",
            ),
            ("kprobe", "{kprobe: {function: anything}}"),
            ("classifier", "{tc: {interfaces: [lo], direction: Egress}}"),
            (
                "kprobe/do_unlinkat",
                "{tracepoint: {category: syscalls, name: sys_enter_getpid}}",
            ),
            ("sockops", "{sockOps: {cgroup: /sys/fs/cgroup}}"),
            (
                "tracepoint/syscalls",
                "{tracepoint: {category: syscalls, name: sys_enter_getpid}}",
            ),
        ] {
            let a = attach(yaml);
            let got = resolve("p", section, &a).expect(section);
            assert!(matches!(got, Cow::Borrowed(_)), "{section}");
        }
    }

    #[test]
    fn usdt_sections_name_the_probe() {
        let a = derived("usdt//usr/lib/libc.so.6:libc:setjmp").expect("derived");
        let u = a.usdt.expect("usdt");
        assert_eq!(
            (u.target.as_str(), u.provider.as_str(), u.name.as_str()),
            ("/usr/lib/libc.so.6", "libc", "setjmp")
        );
        assert!(matches!(
            derived("usdt"),
            Err(AutoAttachError::NotNamed(
                _,
                _,
                "usdt.target, usdt.provider and usdt.name"
            ))
        ));
        for bad in [
            "usdt/libc.so.6:libc:setjmp",
            "usdt//bin/x:setjmp",
            "usdt//bin/x::n",
        ] {
            assert!(
                matches!(derived(bad), Err(AutoAttachError::Malformed(..))),
                "{bad}"
            );
        }
        let spec = attach("{usdt: {target: /bin/x, provider: p, name: other}}");
        let err = resolve("p", "usdt//bin/x:p:n", &spec).expect_err("contradiction");
        assert!(
            err.to_string().contains(
                "attach.usdt is /bin/x:p:other, but its section `usdt//bin/x:p:n` names /bin/x:p:n"
            ),
            "{err}"
        );
        let same = attach("{usdt: {target: /bin/x, provider: p, name: n}}");
        assert!(resolve("p", "usdt//bin/x:p:n", &same).is_ok());
        assert!(resolve("p", "usdt", &same).is_ok());
    }

    #[test]
    fn the_hook_kinds_are_derived_and_checked() {
        let a = derived("tp_btf/sched_switch").expect("tp_btf");
        assert_eq!(a.tp_btf.expect("tpBtf").name, "sched_switch");
        let a = derived("lsm.s/bprm_committed_creds").expect("lsm");
        assert_eq!(a.lsm.expect("lsm").hook, "bprm_committed_creds");
        let a = derived("kretsyscall/openat").expect("ksyscall");
        assert_eq!(a.ksyscall.expect("ksyscall").syscall, "openat");
        for (section, spec, field) in [
            (
                "tp_btf/sys_enter",
                "{tpBtf: {name: sched_switch}}",
                "tpBtf.name",
            ),
            (
                "lsm/file_open",
                "{lsm: {hook: bprm_check_security}}",
                "lsm.hook",
            ),
            (
                "ksyscall/getpid",
                "{ksyscall: {syscall: getppid}}",
                "ksyscall.syscall",
            ),
        ] {
            let e = resolve("p", section, &attach(spec)).expect_err(section);
            assert!(
                matches!(&e, AutoAttachError::Contradicts(_, f, ..) if *f == field),
                "{section}: {e}"
            );
        }
        assert!(resolve("p", "lsm/file_open", &attach("{lsm: {hook: file_open}}")).is_ok());
    }
}
