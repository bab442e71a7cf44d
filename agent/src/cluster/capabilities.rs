//! What this node's kernel can run, probed once per process: the kernel release, BTF, the
//! program types it loads (aya's `is_program_supported`, the probe `bpftool feature probe` makes:
//! a trivial program of each type is loaded and closed) and the attach types it has hooks for.
//! Published in the `BpfNodeState` (`status.capabilities`) and, in brief, as the node labels
//! [`KERNEL_LABEL`] and [`BTF_LABEL`]; `spec.requires` is judged against it
//! ([`bpfpin_crds::Requirements::unmet`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use aya::programs::{LsmAttachType, ProgramType as AyaType};
use bpfpin_crds::capabilities::{BTF_LABEL, KERNEL_LABEL, KernelVersion};
use bpfpin_crds::{AttachType, NodeCapabilities, ProgramType};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

use super::node_state::FIELD_MANAGER;

/// Where the kernel exposes its BTF.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The perf PMUs aya attaches kprobes, uprobes and tracepoints through.
const PMUS: &str = "/sys/bus/event_source/devices";
/// tracefs, where the legacy `kprobe_events` / `uprobe_events` files are (aya's fallback).
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

static OVERRIDE: OnceLock<String> = OnceLock::new();
static PROBED: OnceLock<NodeCapabilities> = OnceLock::new();

/// **Test only** (`--test-only-kernel-release`): report `release` as the kernel release instead
/// of the real one, so that an e2e run can give two agents on one host different kernels. The
/// program and attach type probes stay real. Call before [`probed`]; later calls are ignored.
pub fn set_test_only_kernel_release(release: String) {
    let _ = OVERRIDE.set(release);
}

/// This node's capabilities, probed on the first call (each later call returns the same).
pub fn probed() -> &'static NodeCapabilities {
    PROBED.get_or_init(|| {
        let started = std::time::Instant::now();
        let mut caps = probe();
        if let Some(release) = OVERRIDE.get() {
            tracing::warn!(
                real = %caps.kernel, reported = %release,
                "--test-only-kernel-release: reporting a kernel release that is not this kernel's"
            );
            caps.kernel = release.clone();
        }
        tracing::info!(
            kernel = %caps.kernel,
            btf = caps.btf,
            program_types = caps.program_types.len(),
            refused = ?ProgramType::ALL.iter().filter(|t| !caps.program_types.contains(t)).map(|t| t.as_str()).collect::<Vec<_>>(),
            attach_types = ?caps.attach_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            ms = started.elapsed().as_millis() as u64,
            "kernel capabilities probed"
        );
        caps
    })
}

/// Probes the running kernel.
pub fn probe() -> NodeCapabilities {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let program_types: Vec<ProgramType> =
        ProgramType::ALL.into_iter().filter(|t| loads(*t)).collect();
    let attach_types = AttachType::ALL
        .into_iter()
        .filter(|t| can_attach(*t, &program_types))
        .collect();
    NodeCapabilities {
        kernel,
        btf: Path::new(VMLINUX_BTF).exists(),
        program_types,
        attach_types,
    }
}

/// aya's name for a program type.
fn aya_type(t: ProgramType) -> AyaType {
    match t {
        ProgramType::SocketFilter => AyaType::SocketFilter,
        ProgramType::Kprobe => AyaType::KProbe,
        ProgramType::SchedCls => AyaType::SchedClassifier,
        ProgramType::SchedAct => AyaType::SchedAction,
        ProgramType::Tracepoint => AyaType::TracePoint,
        ProgramType::Xdp => AyaType::Xdp,
        ProgramType::PerfEvent => AyaType::PerfEvent,
        ProgramType::CgroupSkb => AyaType::CgroupSkb,
        ProgramType::CgroupSock => AyaType::CgroupSock,
        ProgramType::LwtIn => AyaType::LwtInput,
        ProgramType::LwtOut => AyaType::LwtOutput,
        ProgramType::LwtXmit => AyaType::LwtXmit,
        ProgramType::SockOps => AyaType::SockOps,
        ProgramType::SkSkb => AyaType::SkSkb,
        ProgramType::CgroupDevice => AyaType::CgroupDevice,
        ProgramType::SkMsg => AyaType::SkMsg,
        ProgramType::RawTracepoint => AyaType::RawTracePoint,
        ProgramType::CgroupSockAddr => AyaType::CgroupSockAddr,
        ProgramType::LwtSeg6local => AyaType::LwtSeg6local,
        ProgramType::LircMode2 => AyaType::LircMode2,
        ProgramType::SkReuseport => AyaType::SkReuseport,
        ProgramType::FlowDissector => AyaType::FlowDissector,
        ProgramType::CgroupSysctl => AyaType::CgroupSysctl,
        ProgramType::RawTracepointWritable => AyaType::RawTracePointWritable,
        ProgramType::CgroupSockopt => AyaType::CgroupSockopt,
        ProgramType::Tracing => AyaType::Tracing,
        ProgramType::StructOps => AyaType::StructOps,
        ProgramType::Ext => AyaType::Extension,
        ProgramType::Lsm => AyaType::Lsm(LsmAttachType::Mac),
        ProgramType::SkLookup => AyaType::SkLookup,
        ProgramType::Syscall => AyaType::Syscall,
        ProgramType::Netfilter => AyaType::Netfilter,
    }
}

/// Whether the kernel loads a trivial program of type `t` (for tracing and LSM, also whether a
/// trampoline attaches: aya checks both). A probe that fails unexpectedly counts as refused.
fn loads(t: ProgramType) -> bool {
    match aya::sys::is_program_supported(aya_type(t)) {
        Ok(supported) => supported,
        Err(error) => {
            tracing::debug!(program_type = t.as_str(), %error, "program type probe failed: counted as refused");
            false
        }
    }
}

/// Whether the perf PMU `name` or the tracefs file `legacy` exists.
fn has_pmu_or_tracefs(name: &str, legacy: Option<&str>) -> bool {
    Path::new(PMUS).join(name).join("type").exists()
        || legacy.is_some_and(|file| TRACEFS.iter().any(|t| Path::new(t).join(file).exists()))
}

/// Whether programs can attach as `t`: the program type loads and the hook exists.
fn can_attach(t: AttachType, loads: &[ProgramType]) -> bool {
    let has = |p: ProgramType| loads.contains(&p);
    match t {
        AttachType::Tracepoint => {
            has(ProgramType::Tracepoint) && has_pmu_or_tracefs("tracepoint", Some("events"))
        }
        AttachType::Kprobe => {
            has(ProgramType::Kprobe) && has_pmu_or_tracefs("kprobe", Some("kprobe_events"))
        }
        AttachType::Uprobe => {
            has(ProgramType::Kprobe) && has_pmu_or_tracefs("uprobe", Some("uprobe_events"))
        }
        AttachType::Xdp => has(ProgramType::Xdp),
        AttachType::Tc => has(ProgramType::SchedCls),
        AttachType::CgroupSkb => has(ProgramType::CgroupSkb),
        // aya's tracing probe attaches through a trampoline, which is what fentry/fexit need.
        AttachType::Fentry | AttachType::Fexit => has(ProgramType::Tracing),
    }
}

/// The node labels that summarise `caps` (few and stable: the whole list is in the
/// `BpfNodeState`).
pub fn labels(caps: &NodeCapabilities) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if let Some(version) = KernelVersion::of_release(&caps.kernel) {
        labels.insert(KERNEL_LABEL.to_owned(), version.major_minor());
    }
    labels.insert(BTF_LABEL.to_owned(), caps.btf.to_string());
    labels
}

/// Puts [`labels`] on this node's `Node` (server-side apply of only those labels, so the
/// kubelet's and anyone else's labels are left alone). A refusal (no `patch` on nodes) is logged
/// and changes nothing else: the capabilities are in the `BpfNodeState` either way.
pub async fn label_node(client: &kube::Client, node: &str, caps: &NodeCapabilities) {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": labels(caps)},
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(node, &params, &Patch::Apply(&patch)).await {
        Ok(_) => {
            tracing::info!(labels = ?labels(caps), "node labelled with its kernel capabilities")
        }
        Err(error) => tracing::warn!(
            %error,
            "cannot label the Node with its kernel capabilities (the agent needs patch on nodes); they are in its BpfNodeState"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_kernel_major_minor_and_btf() {
        let caps = NodeCapabilities {
            kernel: "6.18.44-fc-v1045".into(),
            btf: true,
            ..Default::default()
        };
        assert_eq!(
            labels(&caps),
            BTreeMap::from([
                ("bpfpin.io/btf".to_owned(), "true".to_owned()),
                ("bpfpin.io/kernel".to_owned(), "6.18".to_owned()),
            ])
        );
        let odd = NodeCapabilities {
            kernel: "unknown".into(),
            ..Default::default()
        };
        assert_eq!(
            labels(&odd),
            BTreeMap::from([("bpfpin.io/btf".to_owned(), "false".to_owned())])
        );
    }
}
