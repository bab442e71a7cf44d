//! The attach kinds of issue 13's second part: BTF tracepoints (`tpBtf`), LSM hooks (`lsm`),
//! system calls by name (`ksyscall`) and netfilter hooks (`netfilter`). Their spec types and the
//! checks the agent makes of them again (the CRD's CEL rules say the same). The fields are in
//! [`crate::Attach`]; [`crate::Attach::kinds`] and [`crate::Attach::validate_more`] (in `bpf_object.rs`) include them.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A BTF-enabled raw tracepoint (`SEC("tp_btf/<name>")`): the program gets the tracepoint's
/// arguments typed, as the kernel's BTF declares them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TpBtfAttach {
    /// The tracepoint, without its category, e.g. `sched_switch` or `sys_enter`. The program is
    /// loaded against it, so it must be the one the section names (`tp_btf/<name>`).
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_]+$')").message("must be letters, digits and '_'"))]
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
}

/// A BPF LSM hook (`SEC("lsm/<hook>")`): the program runs at the kernel's security hook and its
/// return value (0 or a negative errno) allows or denies the operation. The node's kernel must
/// run the `bpf` LSM (`bpf` in `/sys/kernel/security/lsm`, set by the `lsm=` boot parameter).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LsmAttach {
    /// The hook, without the `bpf_lsm_` prefix, e.g. `file_open` or `bprm_check_security`. The
    /// program is loaded against it, so it must be the one the section names (`lsm/<hook>`).
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_]+$')").message("must be letters, digits and '_'"))]
    #[schemars(length(min = 1, max = 128))]
    pub hook: String,
}

/// A system call, probed at the kernel's architecture-specific entry point as libbpf's
/// `ksyscall` does (`__x64_sys_<name>` on x86-64, `__arm64_sys_<name>` on arm64): a kprobe
/// (`SEC("ksyscall/<name>")`) or a kretprobe (`SEC("kretsyscall/<name>")`), decided by the
/// section. Needs a kernel with kprobes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KsyscallAttach {
    /// The system call's name, e.g. `openat` or `getpid`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_]+$')").message("must be letters, digits and '_'"))]
    #[schemars(length(min = 1, max = 64))]
    pub syscall: String,
}

/// A netfilter hook in the node's network namespace (`SEC("netfilter")`, kernel 6.4+): the program
/// sees each packet of the hook and returns `NF_ACCEPT` (1) or `NF_DROP` (0).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetfilterAttach {
    /// The protocol family: `IPv4` or `IPv6`.
    pub family: NetfilterFamily,
    /// The hook: `PreRouting`, `LocalIn`, `Forward`, `LocalOut` or `PostRouting`.
    pub hook: NetfilterHook,
    /// The program's place among the hook's functions (iptables' `filter` table is at 0,
    /// connection tracking at -200): lower runs first. Neither -2147483648 nor 2147483647
    /// (reserved by the kernel), and at most one BPF program per family, hook and priority.
    #[x_kube(validation = Rule::new("self > -2147483648 && self < 2147483647").message("the kernel reserves -2147483648 and 2147483647"))]
    pub priority: i32,
    /// Defragment IP packets before the program sees them (`BPF_F_NETFILTER_IP_DEFRAG`, kernel
    /// 6.6+). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub defrag: bool,
}

/// A netfilter protocol family.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum NetfilterFamily {
    /// `NFPROTO_IPV4` (2).
    #[default]
    IPv4,
    /// `NFPROTO_IPV6` (10).
    IPv6,
}

impl NetfilterFamily {
    /// The kernel's `NFPROTO_*` value.
    pub fn code(self) -> u32 {
        match self {
            NetfilterFamily::IPv4 => 2,
            NetfilterFamily::IPv6 => 10,
        }
    }
}

/// A netfilter hook (`enum nf_inet_hooks`).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum NetfilterHook {
    /// `NF_INET_PRE_ROUTING` (0): every packet received, before routing.
    #[default]
    PreRouting,
    /// `NF_INET_LOCAL_IN` (1): packets for this host.
    LocalIn,
    /// `NF_INET_FORWARD` (2): packets routed through this host.
    Forward,
    /// `NF_INET_LOCAL_OUT` (3): packets this host sends.
    LocalOut,
    /// `NF_INET_POST_ROUTING` (4): every packet leaving, after routing.
    PostRouting,
}

impl NetfilterHook {
    /// The kernel's `NF_INET_*` value.
    pub fn code(self) -> u32 {
        match self {
            NetfilterHook::PreRouting => 0,
            NetfilterHook::LocalIn => 1,
            NetfilterHook::Forward => 2,
            NetfilterHook::LocalOut => 3,
            NetfilterHook::PostRouting => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attach;
    use crate::validation::ValidationError;

    fn attach(yaml: &str) -> Attach {
        serde_yaml::from_str(yaml).expect("attach parses")
    }

    fn check(a: &Attach) -> Result<(), ValidationError> {
        a.validate_more(&|k| format!("spec.programs[0].attach.{k}"))
    }

    #[test]
    fn the_hook_kinds_validate() {
        for good in [
            "{tpBtf: {name: sched_switch}}",
            "{lsm: {hook: file_open}}",
            "{ksyscall: {syscall: getpid}}",
            "{netfilter: {family: IPv4, hook: LocalIn, priority: -100}}",
            "{netfilter: {family: IPv6, hook: PostRouting, priority: 7, defrag: true}}",
        ] {
            let a = attach(good);
            assert_eq!(a.kinds(), 1, "{good}");
            assert_eq!(check(&a), Ok(()), "{good}");
        }
        let two = attach("{lsm: {hook: file_open}, ksyscall: {syscall: getpid}}");
        assert_eq!(two.kinds(), 2);
    }

    #[test]
    fn bad_hook_values_name_their_field() {
        for (bad, field) in [
            ("{tpBtf: {name: 'sched/switch'}}", "tpBtf.name"),
            ("{lsm: {hook: ''}}", "lsm.hook"),
            (
                "{ksyscall: {syscall: '__x64_sys_getpid+4'}}",
                "ksyscall.syscall",
            ),
            (
                "{netfilter: {family: IPv4, hook: LocalIn, priority: 2147483647}}",
                "netfilter.priority",
            ),
        ] {
            let e = check(&attach(bad)).expect_err(bad);
            assert_eq!(e.field, format!("spec.programs[0].attach.{field}"), "{bad}");
        }
        // Unknown hooks and families are refused by the schema (and by serde).
        assert!(
            serde_yaml::from_str::<Attach>(
                "{netfilter: {family: Bridge, hook: LocalIn, priority: 1}}"
            )
            .is_err()
        );
        assert!(
            serde_yaml::from_str::<Attach>(
                "{netfilter: {family: IPv4, hook: Ingress, priority: 1}}"
            )
            .is_err()
        );
    }

    #[test]
    fn the_kernel_codes() {
        assert_eq!(NetfilterFamily::IPv4.code(), 2);
        assert_eq!(NetfilterFamily::IPv6.code(), 10);
        assert_eq!(NetfilterHook::LocalIn.code(), 1);
        assert_eq!(NetfilterHook::PostRouting.code(), 4);
    }
}
