//! Node capability gating: what a node's kernel can run (probed once by its agent, published in
//! its `BpfNodeState`) and what an object needs (`spec.requires`). One function,
//! [`Requirements::unmet`], judges the two, so the agent (which refuses to load) and the operator
//! (which counts the node as not selected) can never disagree.

use std::cmp::Ordering;
use std::fmt;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

/// The node label with the kernel's `major.minor`, e.g. `bpfpin.io/kernel=6.18`.
pub const KERNEL_LABEL: &str = "bpfpin.io/kernel";
/// The node label saying whether the kernel has BTF (`/sys/kernel/btf/vmlinux`): `true` or `false`.
pub const BTF_LABEL: &str = "bpfpin.io/btf";

/// A kernel program type, named as `bpftool feature probe` names it (`BPF_PROG_TYPE_<NAME>` in
/// lower case).
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum ProgramType {
    /// `BPF_PROG_TYPE_SOCKET_FILTER`.
    SocketFilter,
    /// `BPF_PROG_TYPE_KPROBE` (kprobe and uprobe programs).
    Kprobe,
    /// `BPF_PROG_TYPE_SCHED_CLS` (tc and tcx programs).
    SchedCls,
    /// `BPF_PROG_TYPE_SCHED_ACT`.
    SchedAct,
    /// `BPF_PROG_TYPE_TRACEPOINT`.
    Tracepoint,
    /// `BPF_PROG_TYPE_XDP`.
    Xdp,
    /// `BPF_PROG_TYPE_PERF_EVENT`.
    PerfEvent,
    /// `BPF_PROG_TYPE_CGROUP_SKB`.
    CgroupSkb,
    /// `BPF_PROG_TYPE_CGROUP_SOCK`.
    CgroupSock,
    /// `BPF_PROG_TYPE_LWT_IN`.
    LwtIn,
    /// `BPF_PROG_TYPE_LWT_OUT`.
    LwtOut,
    /// `BPF_PROG_TYPE_LWT_XMIT`.
    LwtXmit,
    /// `BPF_PROG_TYPE_SOCK_OPS`.
    SockOps,
    /// `BPF_PROG_TYPE_SK_SKB`.
    SkSkb,
    /// `BPF_PROG_TYPE_CGROUP_DEVICE`.
    CgroupDevice,
    /// `BPF_PROG_TYPE_SK_MSG`.
    SkMsg,
    /// `BPF_PROG_TYPE_RAW_TRACEPOINT`.
    RawTracepoint,
    /// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
    CgroupSockAddr,
    /// `BPF_PROG_TYPE_LWT_SEG6LOCAL`.
    LwtSeg6local,
    /// `BPF_PROG_TYPE_LIRC_MODE2`.
    LircMode2,
    /// `BPF_PROG_TYPE_SK_REUSEPORT`.
    SkReuseport,
    /// `BPF_PROG_TYPE_FLOW_DISSECTOR`.
    FlowDissector,
    /// `BPF_PROG_TYPE_CGROUP_SYSCTL`.
    CgroupSysctl,
    /// `BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE`.
    RawTracepointWritable,
    /// `BPF_PROG_TYPE_CGROUP_SOCKOPT`.
    CgroupSockopt,
    /// `BPF_PROG_TYPE_TRACING` (fentry, fexit, tp_btf, iter): loaded and attached through a
    /// trampoline, which the probe also checks.
    Tracing,
    /// `BPF_PROG_TYPE_STRUCT_OPS`.
    StructOps,
    /// `BPF_PROG_TYPE_EXT` (freplace, the XDP dispatcher's slots).
    Ext,
    /// `BPF_PROG_TYPE_LSM`.
    Lsm,
    /// `BPF_PROG_TYPE_SK_LOOKUP`.
    SkLookup,
    /// `BPF_PROG_TYPE_SYSCALL`.
    Syscall,
    /// `BPF_PROG_TYPE_NETFILTER`.
    Netfilter,
}

impl ProgramType {
    /// Every type, in the kernel's order.
    pub const ALL: [ProgramType; 32] = [
        Self::SocketFilter,
        Self::Kprobe,
        Self::SchedCls,
        Self::SchedAct,
        Self::Tracepoint,
        Self::Xdp,
        Self::PerfEvent,
        Self::CgroupSkb,
        Self::CgroupSock,
        Self::LwtIn,
        Self::LwtOut,
        Self::LwtXmit,
        Self::SockOps,
        Self::SkSkb,
        Self::CgroupDevice,
        Self::SkMsg,
        Self::RawTracepoint,
        Self::CgroupSockAddr,
        Self::LwtSeg6local,
        Self::LircMode2,
        Self::SkReuseport,
        Self::FlowDissector,
        Self::CgroupSysctl,
        Self::RawTracepointWritable,
        Self::CgroupSockopt,
        Self::Tracing,
        Self::StructOps,
        Self::Ext,
        Self::Lsm,
        Self::SkLookup,
        Self::Syscall,
        Self::Netfilter,
    ];

    /// The name as written in YAML and by `bpftool feature probe`, e.g. `sched_cls`.
    pub fn as_str(self) -> &'static str {
        // The variants are declared in NAMES' order (a test checks each against serde's name).
        NAMES[self as usize]
    }
}

/// [`ProgramType::ALL`]'s names, so [`ProgramType::as_str`] returns a `&'static str`.
const NAMES: [&str; 32] = [
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

/// A way to attach a program, named like the attach kinds of `spec.programs[].attach`. A kind is
/// available when its program type loads and the kernel has the hook: kprobes need the kprobe
/// PMU or `kprobe_events` (`CONFIG_KPROBE_EVENTS`), uprobes the uprobe PMU or `uprobe_events`,
/// tracepoints the tracepoint PMU, fentry and fexit a BPF trampoline.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub enum AttachType {
    /// `attach.tracepoint`.
    Tracepoint,
    /// `attach.xdp`.
    Xdp,
    /// `attach.tc`.
    Tc,
    /// `attach.kprobe`.
    Kprobe,
    /// `attach.uprobe`.
    Uprobe,
    /// `attach.fentry`.
    Fentry,
    /// `attach.fexit`.
    Fexit,
    /// `attach.cgroupSkb`.
    CgroupSkb,
}

impl AttachType {
    /// Every attach type the probe judges.
    pub const ALL: [AttachType; 8] = [
        Self::Tracepoint,
        Self::Xdp,
        Self::Tc,
        Self::Kprobe,
        Self::Uprobe,
        Self::Fentry,
        Self::Fexit,
        Self::CgroupSkb,
    ];

    /// The name as written in YAML, e.g. `cgroupSkb`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoint",
            Self::Xdp => "xdp",
            Self::Tc => "tc",
            Self::Kprobe => "kprobe",
            Self::Uprobe => "uprobe",
            Self::Fentry => "fentry",
            Self::Fexit => "fexit",
            Self::CgroupSkb => "cgroupSkb",
        }
    }
}

/// What a node's kernel can run, as its agent probed it once at start (the probes of `bpftool
/// feature probe`). Published in `BpfNodeState.status.capabilities`; the operator judges
/// `spec.requires` with it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeCapabilities {
    /// The kernel release as `uname -r` gives it, e.g. `6.18.44-generic`; `spec.requires.kernel`
    /// is compared with its leading `major.minor.patch`.
    pub kernel: String,
    /// Whether the kernel exposes its BTF (`/sys/kernel/btf/vmlinux`), which CO-RE relocations,
    /// fentry/fexit and tp_btf programs need.
    pub btf: bool,
    /// The program types this kernel loads (a trivial program of each type was loaded); a type
    /// not listed is refused.
    #[serde(default)]
    pub program_types: Vec<ProgramType>,
    /// The attach types this kernel has the hooks for; a type not listed cannot attach here.
    #[serde(default)]
    pub attach_types: Vec<AttachType>,
}

/// What an object needs of a node's kernel. A selected node that does not meet every listed
/// requirement counts as not selected: the object is not pinned there, and the node is listed in
/// `status.unsupported` with the requirement it fails (not counted as `Degraded`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    /// The kernel versions the object runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelRange>,
    /// `true`: only nodes whose kernel exposes BTF (`/sys/kernel/btf/vmlinux`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btf: Option<bool>,
    /// Program types the node's kernel must load, named as by `bpftool feature probe`, e.g.
    /// `tracing`, `sched_cls`, `xdp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub program_types: Vec<ProgramType>,
    /// Attach types the node's kernel must have the hook for, named like the attach kinds of
    /// `spec.programs[].attach`, e.g. `kprobe`, `fentry`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach_types: Vec<AttachType>,
}

/// A range of kernel versions, both ends inclusive, each `major.minor` or `major.minor.patch`.
/// An end given as `major.minor` covers every patch release of it: `max: "6.1"` admits 6.1.150.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KernelRange {
    /// The oldest kernel, e.g. `5.15`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,4}[.][0-9]{1,4}([.][0-9]{1,6})?$')").message("must be a kernel version: major.minor or major.minor.patch"))]
    pub min: Option<String>,
    /// The newest kernel, e.g. `6.8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,4}[.][0-9]{1,4}([.][0-9]{1,6})?$')").message("must be a kernel version: major.minor or major.minor.patch"))]
    pub max: Option<String>,
}

/// A kernel version, `major.minor[.patch]`, compared component by component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelVersion {
    /// The components given: 2 or 3.
    parts: [u32; 3],
    given: usize,
}

impl KernelVersion {
    /// A version written as in `spec.requires.kernel` (`6.1`, `5.15.2`), or `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = [0u32; 3];
        let mut given = 0;
        for piece in s.split('.') {
            if given == 3 || piece.is_empty() || piece.len() > 6 {
                return None;
            }
            if !piece.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[given] = piece.parse().ok()?;
            given += 1;
        }
        (given >= 2).then_some(Self { parts, given })
    }

    /// The leading `major.minor.patch` of a release as `uname -r` prints it
    /// (`6.18.44-fc-v1045`, `5.15.0-91-generic`, `6.8.0+`), or `None`.
    pub fn of_release(release: &str) -> Option<Self> {
        let mut parts = [0u32; 3];
        let mut given = 0;
        for piece in release.split('.') {
            let digits: String = piece.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() || digits.len() > 6 {
                break;
            }
            parts[given] = digits.parse().ok()?;
            given += 1;
            if given == 3 || digits.len() != piece.len() {
                break;
            }
        }
        (given >= 2).then_some(Self { parts, given: 3 })
    }

    /// `major.minor`, the value of the [`KERNEL_LABEL`] label.
    pub fn major_minor(self) -> String {
        format!("{}.{}", self.parts[0], self.parts[1])
    }

    /// Compares `self` (a node's kernel) with `bound` on the components `bound` gives.
    fn cmp_to_bound(self, bound: Self) -> Ordering {
        self.parts[..bound.given].cmp(&bound.parts[..bound.given])
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self.parts[..self.given]
            .iter()
            .map(u32::to_string)
            .collect();
        f.write_str(&shown.join("."))
    }
}

impl Requirements {
    /// The first requirement `node` does not meet, as a sentence naming it (the reason shown in
    /// `status.unsupported` and in the agent's refusal), or `None` when the node can run the
    /// object.
    pub fn unmet(&self, node: &NodeCapabilities) -> Option<String> {
        if let Some(range) = &self.kernel {
            let version = KernelVersion::of_release(&node.kernel);
            for (end, bound) in [("min", &range.min), ("max", &range.max)] {
                let Some(bound) = bound else { continue };
                let Some(want) = KernelVersion::parse(bound) else {
                    return Some(format!(
                        "spec.requires.kernel.{end} {bound:?} is not a kernel version (major.minor or major.minor.patch)"
                    ));
                };
                let Some(version) = version else {
                    return Some(format!(
                        "kernel {:?} has no major.minor version to compare with spec.requires.kernel.{end} {bound}",
                        node.kernel
                    ));
                };
                let ok = match end {
                    "min" => version.cmp_to_bound(want) != Ordering::Less,
                    _ => version.cmp_to_bound(want) != Ordering::Greater,
                };
                if !ok {
                    let side = if end == "min" { "older" } else { "newer" };
                    return Some(format!(
                        "kernel {} is {side} than spec.requires.kernel.{end} {bound}",
                        node.kernel
                    ));
                }
            }
        }
        if self.btf == Some(true) && !node.btf {
            return Some(
                "the kernel has no BTF (/sys/kernel/btf/vmlinux) and spec.requires.btf is true"
                    .to_owned(),
            );
        }
        if let Some(t) = self
            .program_types
            .iter()
            .find(|t| !node.program_types.contains(t))
        {
            return Some(format!(
                "the kernel refuses program type {} (spec.requires.programTypes)",
                t.as_str()
            ));
        }
        if let Some(t) = self
            .attach_types
            .iter()
            .find(|t| !node.attach_types.contains(t))
        {
            return Some(format!(
                "the kernel cannot attach {} programs (spec.requires.attachTypes)",
                t.as_str()
            ));
        }
        None
    }

    /// The checks the CRD's CEL rules make on `spec.requires`, again in Rust (local mode, and the
    /// agent's last line of defence).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let Some(range) = &self.kernel else {
            return Ok(());
        };
        for (end, bound) in [("min", &range.min), ("max", &range.max)] {
            if let Some(bound) = bound
                && (KernelVersion::parse(bound).is_none()
                    || bound.split('.').take(2).any(|p| p.len() > 4))
            {
                return Err(ValidationError {
                    field: format!("spec.requires.kernel.{end}"),
                    value: bound.clone(),
                    reason: "must be a kernel version: major.minor or major.minor.patch".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether nothing is required.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kernel: &str) -> NodeCapabilities {
        NodeCapabilities {
            kernel: kernel.into(),
            btf: true,
            program_types: vec![ProgramType::Xdp, ProgramType::Kprobe],
            attach_types: vec![AttachType::Xdp, AttachType::Uprobe],
        }
    }

    fn range(min: Option<&str>, max: Option<&str>) -> Requirements {
        Requirements {
            kernel: Some(KernelRange {
                min: min.map(Into::into),
                max: max.map(Into::into),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn versions_parse_and_compare_on_the_given_components() {
        assert_eq!(
            KernelVersion::of_release("6.18.44-fc-v1045").map(|v| v.to_string()),
            Some("6.18.44".into())
        );
        assert_eq!(
            KernelVersion::of_release("5.15.0-91-generic").map(|v| v.major_minor()),
            Some("5.15".into())
        );
        assert_eq!(
            KernelVersion::of_release("6.8+").map(|v| v.to_string()),
            Some("6.8.0".into())
        );
        assert_eq!(KernelVersion::of_release("linux"), None);
        assert_eq!(KernelVersion::parse("6"), None);
        assert_eq!(KernelVersion::parse("6.1.2.3"), None);
        assert_eq!(KernelVersion::parse("6.x"), None);
        assert_eq!(KernelVersion::parse("6..1"), None);

        assert_eq!(
            range(Some("6.1"), Some("6.18")).unmet(&node("6.18.44")),
            None
        );
        assert_eq!(range(Some("6.18.44"), None).unmet(&node("6.18.44")), None);
        assert_eq!(
            range(Some("6.18.45"), None)
                .unmet(&node("6.18.44-x"))
                .as_deref(),
            Some("kernel 6.18.44-x is older than spec.requires.kernel.min 6.18.45")
        );
        assert_eq!(
            range(None, Some("6.1")).unmet(&node("6.18.44")).as_deref(),
            Some("kernel 6.18.44 is newer than spec.requires.kernel.max 6.1")
        );
        // `6.1` as a maximum admits every 6.1 patch release; `5.10` as a minimum 5.10.0.
        assert_eq!(range(None, Some("6.1")).unmet(&node("6.1.150")), None);
        assert_eq!(range(Some("5.10"), None).unmet(&node("5.10.0")), None);
        assert!(range(Some("5.10"), None).unmet(&node("5.4.1")).is_some());
        assert!(
            range(Some("x"), None)
                .unmet(&node("6.1.1"))
                .is_some_and(|m| m.contains("not a kernel version"))
        );
    }

    #[test]
    fn btf_program_and_attach_types() {
        let mut n = node("6.18.0");
        assert_eq!(Requirements::default().unmet(&n), None);
        let btf = Requirements {
            btf: Some(true),
            ..Default::default()
        };
        assert_eq!(btf.unmet(&n), None);
        n.btf = false;
        assert!(btf.unmet(&n).is_some_and(|m| m.contains("no BTF")));
        let types = Requirements {
            program_types: vec![ProgramType::Xdp, ProgramType::Tracing],
            ..Default::default()
        };
        assert_eq!(
            types.unmet(&n).as_deref(),
            Some("the kernel refuses program type tracing (spec.requires.programTypes)")
        );
        let attach = Requirements {
            attach_types: vec![AttachType::Uprobe, AttachType::Kprobe],
            ..Default::default()
        };
        assert_eq!(
            attach.unmet(&n).as_deref(),
            Some("the kernel cannot attach kprobe programs (spec.requires.attachTypes)")
        );
    }

    #[test]
    fn names_are_the_serialized_ones() {
        for t in ProgramType::ALL {
            assert_eq!(
                serde_json::to_value(t).expect("serializes"),
                serde_json::Value::String(t.as_str().into())
            );
        }
        for t in AttachType::ALL {
            assert_eq!(
                serde_json::to_value(t).expect("serializes"),
                serde_json::Value::String(t.as_str().into())
            );
        }
        assert_eq!(ProgramType::LircMode2.as_str(), "lirc_mode2");
        assert_eq!(ProgramType::LwtSeg6local.as_str(), "lwt_seg6local");
    }
}
