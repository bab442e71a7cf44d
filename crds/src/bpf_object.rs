//! `BpfObject`: one eBPF ELF object, which of its maps and programs to pin, on which nodes, and
//! where to attach each program.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use crate::attach_kinds::{
    CgroupAttach, IterAttach, PerfEventAttach, PerfEventName, RawTracepointAttach, SkLookupAttach,
    SockMapAttach,
};
use crate::pod_selection::PodSelection;
use crate::pod_selection::{validate_cgroup_or_pods, validate_selection};
use crate::validation::{
    ValidationError, validate_abs_path, validate_elf_name, validate_object_name, validate_pin_path,
    validate_symbol, validate_url,
};

/// The most entries in `status.failures`; the count of failed nodes is in `status.nodes.failed`.
pub const MAX_STATUS_FAILURES: usize = 10;

/// Desired state of a pinned eBPF object: which ELF object to load, which maps and programs to pin
/// under `/sys/fs/bpf/bpfpin/<name>/`, on which nodes, and where to attach each program.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "bpfpin.io",
    version = "v1alpha1",
    kind = "BpfObject",
    plural = "bpfobjects",
    shortname = "bpfo",
    status = "BpfObjectStatus",
    derive = "PartialEq",
    doc = "A BpfObject loads one eBPF ELF object on the selected nodes, pins its maps and programs under /sys/fs/bpf/bpfpin/<name>/ and attaches its programs through pinned links. Cluster-scoped: loading eBPF is node-root power.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Nodes", type_ = "string", description = "ready/selected nodes", json_path = ".status.nodesReady"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Unsupported", type_ = "integer", description = "selected nodes whose kernel does not meet spec.requires", json_path = ".status.nodes.unsupported", priority = 1),
    printcolumn(name = "Digest", type_ = "string", description = "sha256 of the bytecode the ready nodes run, or how many distinct ones", json_path = ".status.digest", priority = 1),
    validation = Rule::new("!self.metadata.name.contains('.')").message("BpfObject names become bpffs directory names and bpffs refuses names containing '.'; use '-' instead"),
    validation = Rule::new("self.metadata.name != 'shared'").message("the name 'shared' is reserved: /sys/fs/bpf/bpfpin/shared holds maps shared between objects"),
    validation = Rule::new("size(self.metadata.name) <= 63").message("BpfObject names are at most 63 characters")
)]
#[x_kube(validation = Rule::new("!has(self.bytecode.url) || has(self.sha256)").message("spec.sha256 is required when the bytecode comes from a url"))]
#[serde(rename_all = "camelCase")]
pub struct BpfObjectSpec {
    /// Which nodes load this object. Absent selects every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Where the ELF object comes from. Exactly one source must be set.
    pub bytecode: Bytecode,

    /// Optional lowercase hex SHA-256 of the ELF object; the agent refuses bytecode that does not
    /// match. Required for `bytecode.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{64}$')").message("must be 64 lowercase hex digits"))]
    #[schemars(length(max = 64))]
    pub sha256: Option<String>,

    /// Overrides for global variables in `.rodata` / `.data` (C `volatile const`), by symbol
    /// name; each value is base64 of the raw bytes, which must have the variable's size.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub global_data: BTreeMap<String, String>,

    /// Maps to pin. Absent or empty pins every map of the ELF object (ELF-internal maps such as
    /// `.rodata` are never pinned) under `<object>/maps/<map>`. Listing maps restricts pinning to
    /// them and lets a map be shared through `pinPath`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = 64))]
    pub maps: Vec<MapSpec>,

    /// Programs to load and pin under `<object>/progs/<program>`, optionally attached. Every
    /// program named here must exist in the ELF object; programs of the ELF not named here are
    /// not loaded.
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(min = 1, max = 256))]
    pub programs: Vec<ProgramSpec>,

    /// Tail calls: entries of `BPF_MAP_TYPE_PROG_ARRAY` maps of this object, each set to a program
    /// of this object by name. Indices of those maps that are not listed are cleared, so the map
    /// stays in step with the spec across updates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub tail_calls: Vec<TailCall>,

    /// What a node's kernel must offer to run this object (kernel version range, BTF, program
    /// and attach types). A selected node that falls short counts as not selected: nothing is
    /// pinned there and it is listed in `status.unsupported` with the requirement it fails.
    /// Each agent publishes what its kernel offers in its `BpfNodeState`
    /// (`status.capabilities`); see docs/capabilities.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<crate::capabilities::Requirements>,
}

/// One entry of a program array.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TailCall {
    /// The `BPF_MAP_TYPE_PROG_ARRAY` map.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("must be a C identifier"))]
    #[schemars(length(min = 1, max = 128))]
    pub map: String,
    /// The index to set.
    pub index: u32,
    /// The program (listed in `programs`) the index jumps to.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("must be a C identifier"))]
    #[schemars(length(min = 1, max = 128))]
    pub program: String,
}

/// Where the ELF object comes from: exactly one of `path`, `configMap`, `url`, `image`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.path), has(self.configMap), has(self.url), has(self.image)].filter(x, x).size() == 1").message("exactly one of path, configMap, url, image must be set"))]
#[x_kube(validation = Rule::new("!has(self.imagePullSecret) || has(self.image)").message("imagePullSecret is only used with image"))]
#[x_kube(validation = Rule::new("!has(self.skipSignatureVerification) || !self.skipSignatureVerification || has(self.image)").message("skipSignatureVerification is only used with image"))]
#[serde(rename_all = "camelCase")]
pub struct Bytecode {
    /// A file on the node, inside a directory the agent allows (`--bytecode-dir`, by default
    /// `/var/lib/bpfpin/bytecode`). In local mode it may be relative to the manifest's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub path: Option<String>,

    /// A key of a ConfigMap's `binaryData` (cluster mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapBytecode>,

    /// An HTTP(S) URL; `spec.sha256` is then required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,

    /// An OCI image in bpfman's bytecode-image format (one layer holding the `.o`, labels
    /// `io.ebpf.programs` / `io.ebpf.maps`): `registry/repository:tag` or
    /// `registry/repository@sha256:<digest>`, which pins the image. Pulled over HTTPS (plain HTTP
    /// only from a loopback registry), cached on the node by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub image: Option<String>,

    /// For `image`: a `kubernetes.io/dockerconfigjson` Secret holding the registry's credentials
    /// (cluster mode; the agent needs `get` on Secrets in its namespace). Absent: the node's
    /// `--registry-auth` credentials, or an anonymous pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<SecretReference>,

    /// For `image`: do not verify its signature. Honoured only on nodes whose agent allows it
    /// (`--image-verification-allow-opt-out`, the chart's
    /// `agent.imageVerification.allowOptOut`); elsewhere, with verification on, the object fails
    /// with `SignatureInvalid`. No effect when the node verifies nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_signature_verification: bool,
}

/// A Secret, by namespace and name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key of a ConfigMap whose `binaryData` holds the ELF object.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapBytecode {
    /// Namespace of the ConfigMap.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in `binaryData` (or `data`) that holds the object.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// One map of the ELF object to pin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MapSpec {
    /// The map's name in the ELF object.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("must be a C identifier; ELF-internal maps such as .rodata are never pinned (use globalData)"))]
    #[schemars(length(min = 1, max = 128))]
    pub name: String,

    /// Share the map at `/sys/fs/bpf/bpfpin/shared/<pinPath>`: every object naming the same
    /// pinPath uses one map (its definition must match). Relative; segments of letters, digits,
    /// `_` and `-`. Absent: the map is private, at `<object>/maps/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.startsWith('/')").message("must be relative: it is placed under /sys/fs/bpf/bpfpin/shared/"))]
    #[x_kube(validation = Rule::new("!self.split('/').exists(s, s == '..')").message("must not contain '..': a pin path may not leave /sys/fs/bpf/bpfpin/shared/"))]
    #[x_kube(validation = Rule::new("!self.split('/').exists(s, s == '')").message("must not have empty segments ('//' or a trailing '/')"))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_/-]*$')").message("segments may only hold letters, digits, '_' and '-' (bpffs refuses '.')"))]
    #[schemars(length(min = 1, max = 200))]
    pub pin_path: Option<String>,

    /// Overrides the map's `max_entries` from the ELF (e.g. to size a hash map per node class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_entries: Option<u32>,
}

/// One program of the ELF object to load and pin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProgramSpec {
    /// The program's function name in the ELF object.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("must be a C identifier (the program's function name)"))]
    #[schemars(length(min = 1, max = 128))]
    pub name: String,

    /// Where to attach the program. Each attachment is a bpf_link pinned under
    /// `<object>/links/<program>/<attachment>`, so it survives agent restarts. Absent: the program
    /// is loaded and pinned only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<Attach>,
}

/// An attach point: at most one kind may be set. The program's type (its ELF section) must fit
/// the kind: `SEC("tracepoint/...")` for `tracepoint`, `SEC("xdp")` for `xdp`, `SEC("classifier")`
/// for `tc`, `SEC("kprobe/...")` or `SEC("kretprobe/...")` for `kprobe`,
/// `SEC("uprobe")` or `SEC("uretprobe")` for `uprobe`, `SEC("fentry/...")` / `SEC("fexit/...")`,
/// `SEC("cgroup_skb/ingress|egress")` for `cgroupSkb`, and as the README's section table says for
/// the other kinds. `attach: {}` (no kind) derives the attach point from the section where the
/// section names it fully (`tracepoint/<category>/<name>`, `raw_tp/<name>`, `kprobe/<function>`,
/// `fentry/<function>`, `iter/<type>`, ...); a kind whose target contradicts the section is
/// refused (`InvalidSpec`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.tracepoint), has(self.xdp), has(self.tc), has(self.kprobe), has(self.uprobe), has(self.fentry), has(self.fexit), has(self.cgroupSkb), has(self.rawTracepoint), has(self.sockOps), has(self.cgroupSockAddr), has(self.cgroupSock), has(self.cgroupSysctl), has(self.cgroupSockopt), has(self.cgroupDevice), has(self.skLookup), has(self.skMsg), has(self.skSkb), has(self.perfEvent), has(self.iter), has(self.usdt), has(self.tpBtf), has(self.lsm), has(self.ksyscall), has(self.netfilter)].filter(x, x).size() <= 1").message("at most one attach kind may be set (none: the attach point comes from the program's section)"))]
#[serde(rename_all = "camelCase")]
pub struct Attach {
    /// A kernel tracepoint (`/sys/kernel/tracing/events/<category>/<name>`). Link name:
    /// `tracepoint-<category>-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracepoint: Option<TracepointAttach>,

    /// XDP on network interfaces of the node, one link per interface, named `xdp-<interface>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpAttach>,

    /// TC through tcx (kernel 6.6+) on network interfaces, one link per interface, named
    /// `tc-<direction>-<interface>` (lowercase direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc: Option<TcAttach>,

    /// A kprobe or kretprobe (decided by the program's section) on a kernel function. Link name:
    /// `kprobe-<function>` or `kprobe-<function>-<offset>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kprobe: Option<KprobeAttach>,

    /// A uprobe or uretprobe (decided by the program's section) in a binary or library on the
    /// node. Link name: `uprobe-<binary file name>-<symbol or offset>[-<pid>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uprobe: Option<UprobeAttach>,

    /// fentry on a kernel function (BTF). Link name: `fentry-<function>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fentry: Option<FunctionAttach>,

    /// fexit on a kernel function (BTF). Link name: `fexit-<function>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fexit: Option<FunctionAttach>,

    /// A cgroup v2 socket-buffer hook. Link name: `cgroupskb-<direction>-<cgroup path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_skb: Option<CgroupSkbAttach>,

    // Issue 13's attach kinds (each a pinned bpf_link; see the README's section table).
    /// A raw tracepoint (`SEC("raw_tp/...")` or `SEC("raw_tracepoint/...")`): the kernel
    /// tracepoint by name, without tracefs. Link name: `rawtp-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_tracepoint: Option<RawTracepointAttach>,

    /// `SEC("sockops")`: TCP socket events of the sockets of a cgroup v2. Link name:
    /// `sockops-<cgroup path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sock_ops: Option<CgroupAttach>,

    /// `SEC("cgroup/connect4|connect6|bind4|bind6|sendmsg4|sendmsg6|recvmsg4|recvmsg6|getpeername4|getpeername6|getsockname4|getsockname6|connect_unix|sendmsg_unix|recvmsg_unix|getpeername_unix|getsockname_unix")`:
    /// socket address calls of processes in a cgroup v2; which call is decided by the section.
    /// Link name: `cgroupsockaddr-<cgroup path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sock_addr: Option<CgroupAttach>,

    /// `SEC("cgroup/sock_create|sock_release|post_bind4|post_bind6")` (and `SEC("cgroup/sock")`):
    /// socket creation, release or bind of processes in a cgroup v2; which one is decided by the
    /// section. Link name: `cgroupsock-<cgroup path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sock: Option<CgroupAttach>,

    /// `SEC("cgroup/sysctl")`: `/proc/sys` reads and writes of processes in a cgroup v2. Link
    /// name: `cgroupsysctl-<cgroup path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sysctl: Option<CgroupAttach>,

    /// `SEC("cgroup/getsockopt|setsockopt")`: socket options of processes in a cgroup v2; get or
    /// set is decided by the section. Link name: `cgroupsockopt-<cgroup path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sockopt: Option<CgroupAttach>,

    /// `SEC("cgroup/dev")`: device access of processes in a cgroup v2. Link name:
    /// `cgroupdevice-<cgroup path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_device: Option<CgroupAttach>,

    /// `SEC("sk_lookup")`: socket lookup of a network namespace. Link name:
    /// `sklookup-<netns path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk_lookup: Option<SkLookupAttach>,

    /// `SEC("sk_msg")`: messages sent on the sockets of a sockmap or sockhash of this object
    /// (kernel 6.10+, whose sockmap links can be pinned). Link name: `skmsg-<map>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk_msg: Option<SockMapAttach>,

    /// `SEC("sk_skb/stream_parser|stream_verdict|verdict")` (plain `SEC("sk_skb")` is a stream
    /// verdict): packets of the sockets of a sockmap or sockhash of this object (kernel 6.10+).
    /// Link name: `skskb-<map>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk_skb: Option<SockMapAttach>,

    /// `SEC("perf_event")`: a perf event sampled on every online CPU, one link per CPU, named
    /// `perfevent-<event>-cpu<N>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perf_event: Option<PerfEventAttach>,

    /// `SEC("iter/<type>")`: a BPF iterator, whose link is pinned at `links/<program>/iter`;
    /// reading that file (`cat`) runs the program and returns what it printed. `iter: {}`: the
    /// type comes from the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iter: Option<IterAttach>,

    /// `SEC("usdt")` (a program using libbpf's `<bpf/usdt.bpf.h>`): every site of a USDT probe
    /// of a binary or shared library, one link per site, named
    /// `usdt-<file>-<provider>-<name>-<site>` (`site` from 0, in the file's note order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usdt: Option<crate::usdt::UsdtAttach>,

    // Issue 13's hook kinds (crate::attach_hooks).
    /// `SEC("tp_btf/<name>")`: a BTF-enabled raw tracepoint (a BPF trampoline). Link name:
    /// `tpbtf-<name>`. `attach: {}` takes it from the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp_btf: Option<crate::attach_hooks::TpBtfAttach>,

    /// `SEC("lsm/<hook>")`: a BPF LSM hook (a BPF trampoline; the node must run the `bpf` LSM).
    /// Link name: `lsm-<hook>`. `attach: {}` takes it from the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsm: Option<crate::attach_hooks::LsmAttach>,

    /// `SEC("ksyscall/<name>")` or `SEC("kretsyscall/<name>")`: a kprobe or kretprobe on the
    /// system call's architecture-specific entry (`__x64_sys_<name>`), as libbpf attaches it.
    /// Link name: `ksyscall-<name>`. `attach: {}` takes it from the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksyscall: Option<crate::attach_hooks::KsyscallAttach>,

    /// `SEC("netfilter")`: a netfilter hook of the node's network namespace (kernel 6.4+), by
    /// protocol family, hook and priority. Link name:
    /// `netfilter-<family>-<hook>-<priority>` (lowercase; a negative priority is `m<n>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<crate::attach_hooks::NetfilterAttach>,
}

/// A tc (tcx) attach point.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.networkNamespaces) != ((has(self.interfaces) && size(self.interfaces) > 0) || (has(self.primaryNodeInterface) && self.primaryNodeInterface))").message("set either interfaces or primaryNodeInterface (on the node) or networkNamespaces (inside pods), not both"))]
#[x_kube(validation = Rule::new("!has(self.networkNamespaces) || !has(self.priority)").message("priority is not supported with networkNamespaces"))]
pub struct TcAttach {
    /// Network interfaces on the node: names, or patterns written `/<regex>/` (e.g.
    /// `/^eth[0-9]+$/`), as for `xdp.interfaces`: a pattern is matched at each pass, so an
    /// interface that appears later is attached and one that goes loses its link pin. Links are
    /// named `tc-<direction>-<interface>` either way. Empty with `networkNamespaces`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new(HOST_PATTERN_RULE).message(HOST_PATTERN_MESSAGE))]
    #[schemars(length(max = 64))]
    pub interfaces: Vec<InterfaceName>,
    /// Also attach on the node's primary interface: the interface of its IPv4 default route (the
    /// one with the lowest metric), or of its IPv6 default route when it has no IPv4 one. A node
    /// with no default route fails the object there with reason `AttachFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_node_interface: Option<bool>,
    /// Attach inside the network namespace of every matching pod on the node instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespaces: Option<NetworkNamespaces>,
    /// `Ingress` or `Egress`.
    pub direction: Direction,
    /// Where the link goes among the interface's other tcx programs: `Last` (default) or `First`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<LinkOrder>,
    /// Instead of `order` (which it overrides when both are set): 0 to 1000, lower runs first, among the programs bpfpin attached with a
    /// priority on the same interface and direction (the XDP meaning, mapped onto tcx's
    /// before/after ordering; equal priorities run in object/program name order). tcx runs the
    /// next program only after `TCX_NEXT` (-1); `TC_ACT_OK`, `TC_ACT_SHOT` and the other verdicts
    /// end the chain, so a legacy tc program that returns `TC_ACT_OK` hides every later one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: Option<u16>,
}

/// Traffic direction.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Direction {
    /// Incoming traffic.
    #[default]
    Ingress,
    /// Outgoing traffic.
    Egress,
}

/// Position of a link among an attach point's programs.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkOrder {
    /// Before every other program.
    First,
    /// After every other program.
    Last,
}

/// A kprobe attach point.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KprobeAttach {
    /// Kernel function (as in /proc/kallsyms), e.g. `do_unlinkat`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_]+$')").message("must be a kernel symbol: letters, digits and '_'"))]
    #[schemars(length(min = 1, max = 128))]
    pub function: String,
    /// Offset into the function, in bytes (kprobe only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// A uprobe attach point.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("has(self.symbol) || has(self.offset)").message("set symbol, offset or both"))]
#[x_kube(validation = Rule::new("!has(self.containers) || !has(self.pid)").message("pid and containers are exclusive"))]
#[x_kube(validation = Rule::new("!has(self.containers) || self.target.startsWith('/')").message("with containers, target must be an absolute path inside the container"))]
#[serde(rename_all = "camelCase")]
pub struct UprobeAttach {
    /// Absolute path of the binary or library on the node (or a library name found by the
    /// dynamic loader's cache, e.g. `libc`). With `containers`: the absolute path inside each
    /// selected container's filesystem.
    #[schemars(length(min = 1, max = 4096))]
    pub target: String,
    /// Function symbol in the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub symbol: Option<String>,
    /// Offset in bytes: from the symbol when `symbol` is set, else from the start of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Only fire in this process. Absent: every process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Resolve `target` inside the filesystem of every matching container on the node instead
    /// of on the node (one link per pod and container, named `uprobe-pod-<pod uid>-<container>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<ContainerSelection>,
}

/// A kernel function for fentry/fexit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FunctionAttach {
    /// Kernel function with BTF, e.g. `do_unlinkat`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_]+$')").message("must be a kernel symbol: letters, digits and '_'"))]
    #[schemars(length(min = 1, max = 128))]
    pub function: String,
}

/// A cgroup socket-buffer attach point.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cgroup) != has(self.pods)").message("set exactly one of cgroup (on the node) or pods (their cgroups)"))]
pub struct CgroupSkbAttach {
    /// Absolute path of a cgroup v2 directory on the node, e.g. `/sys/fs/cgroup/system.slice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute path to a cgroup v2 directory"))]
    #[schemars(length(min = 1, max = 4096))]
    pub cgroup: Option<String>,
    /// Attach to the cgroup of every matching pod on the node instead (one link per pod, named
    /// `cgroupskb-<direction>-pod-<pod uid>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodSelection>,
    /// `Ingress` or `Egress`.
    pub direction: Direction,
}

/// A tracepoint attach point.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TracepointAttach {
    /// Tracepoint category (a directory of tracefs `events/`), e.g. `syscalls`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_]+$')").message("must be letters, digits and '_'"))]
    #[schemars(length(min = 1, max = 64))]
    pub category: String,
    /// Tracepoint name within the category, e.g. `sys_enter_getpid`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_]+$')").message("must be letters, digits and '_'"))]
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
}

/// An XDP attach point.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.networkNamespaces) != ((has(self.interfaces) && size(self.interfaces) > 0) || (has(self.primaryNodeInterface) && self.primaryNodeInterface))").message("set either interfaces or primaryNodeInterface (on the node) or networkNamespaces (inside pods), not both"))]
#[x_kube(validation = Rule::new("!has(self.networkNamespaces) || (!has(self.priority) && (!has(self.proceedOn) || size(self.proceedOn) == 0))").message("priority and proceedOn are not supported with networkNamespaces"))]
pub struct XdpAttach {
    /// Network interfaces on the node: names, or patterns written `/<regex>/` (e.g.
    /// `/^eth[0-9]+$/`). A name that does not exist fails the object on that node with reason
    /// `AttachFailed`. A pattern is matched against the node's interfaces at each pass: an
    /// interface that appears later is attached (the agent listens to the kernel's link events),
    /// one that goes loses its link pin; a pattern that matches nothing attaches nothing and is no
    /// error. Links are named `xdp-<interface>` either way. Empty with `networkNamespaces`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new(HOST_PATTERN_RULE).message(HOST_PATTERN_MESSAGE))]
    #[schemars(length(max = 64))]
    pub interfaces: Vec<InterfaceName>,
    /// Also attach on the node's primary interface (bpfman's `primaryNodeInterface`): the
    /// interface of the node's IPv4 default route (the one with the lowest metric), or, when the
    /// node has no IPv4 default route, of its IPv6 one. Looked up at each pass, so a default route
    /// that moves moves the link. A node with no default route fails the object there with reason
    /// `AttachFailed`, naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_node_interface: Option<bool>,
    /// Attach inside the network namespace of every matching pod on the node instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_namespaces: Option<NetworkNamespaces>,
    /// Attach mode: `Skb` (generic, works everywhere), `Drv` (native driver), `Hw` (offload).
    /// Absent lets the kernel choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<XdpMode>,
    /// Where the program runs among the XDP programs of the interface: 0 to 1000, lower runs
    /// first (libxdp's `priority`; equal priorities run in object/program name order). Setting
    /// `priority` or `proceedOn` attaches the program through bpfpin's libxdp-compatible
    /// dispatcher (up to 10 programs per interface, from any objects, and programs xdp-loader
    /// attached); absent with no `proceedOn`, the program attaches alone, directly, and holds the
    /// interface. Absent with `proceedOn` set: 50, libxdp's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: Option<u16>,
    /// The XDP actions after which the next program of the interface runs (libxdp's chain-call
    /// actions); any other action ends the chain and is the interface's verdict. Absent: `[Pass]`,
    /// libxdp's default. Only with the dispatcher (see `priority`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 5))]
    pub proceed_on: Vec<XdpAction>,
}

impl XdpAttach {
    /// libxdp's default priority.
    pub const DEFAULT_PRIORITY: u16 = 50;
    /// The highest priority value (libxdp's range).
    pub const MAX_PRIORITY: u16 = 1000;

    /// Whether the program shares the interface through the dispatcher.
    pub fn uses_dispatcher(&self) -> bool {
        self.priority.is_some() || !self.proceed_on.is_empty()
    }
}

/// An XDP program's verdict (`enum xdp_action`).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum XdpAction {
    /// `XDP_ABORTED` (0): an error; the packet is dropped and a trace event fires.
    Aborted,
    /// `XDP_DROP` (1).
    Drop,
    /// `XDP_PASS` (2): on to the kernel's network stack.
    Pass,
    /// `XDP_TX` (3): back out of the interface it came in on.
    Tx,
    /// `XDP_REDIRECT` (4): to another interface, CPU or AF_XDP socket.
    Redirect,
}

impl XdpAction {
    /// The kernel's value of the action.
    pub fn code(self) -> u32 {
        match self {
            XdpAction::Aborted => 0,
            XdpAction::Drop => 1,
            XdpAction::Pass => 2,
            XdpAction::Tx => 3,
            XdpAction::Redirect => 4,
        }
    }
}

/// A network interface name (or, where the field says so, a pattern written `/<regex>/`).
pub type InterfaceName = String;

/// The CEL rule of host `interfaces`: an entry that starts with `/` is a whole pattern.
const HOST_PATTERN_RULE: &str =
    "self.all(i, !i.startsWith('/') || (size(i) > 2 && size(i) <= 258 && i.endsWith('/')))";
const HOST_PATTERN_MESSAGE: &str =
    "an interface pattern is written /<regex>/ (at most 256 characters between the slashes)";

/// XDP attach mode.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Generic XDP in the kernel's network stack (`XDP_FLAGS_SKB_MODE`).
    Skb,
    /// Native XDP in the driver (`XDP_FLAGS_DRV_MODE`).
    Drv,
    /// Offloaded to the NIC (`XDP_FLAGS_HW_MODE`).
    Hw,
}

// --- Pod-aware attachment (issue 14) ---

/// The pods whose network namespaces an `xdp` or `tc` program attaches in (bpfman's field names):
/// on each node, every pod of `namespace` that `podSelector` matches, scheduled there, with a
/// network namespace of its own (hostNetwork pods are skipped). A pod that starts later is
/// attached when its IP is known; a deleted pod's links are unpinned.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkNamespaces {
    /// The pods' namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Which pods of `namespace` (labels; empty selects every pod of it).
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// Interfaces inside each pod's network namespace: names, or patterns written `/<regex>/`
    /// (e.g. `/^net[0-9]+$/`) matched against the interfaces the pod's namespace has at each
    /// pass, so interfaces that appear later are attached and those that go are unpinned.
    /// Default `[eth0]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 16))]
    pub interfaces: Vec<InterfaceName>,
}

// `LabelSelector` is only `PartialEq` in k8s-openapi, but its equality is on strings.
impl Eq for NetworkNamespaces {}

/// The containers a uprobe's `target` is resolved in (`containers` of `uprobe`, bpfman's field
/// names): on each node, the running containers named `containerNames` (all of them when absent)
/// of every pod of `namespace` that `podSelector` matches, scheduled there and not ended. The
/// file is the one the container sees at `target` (its root filesystem, symlinks resolved inside
/// it); the probe fires in every process that runs that file. A container that starts later, or
/// restarts (a new container ID), is attached when it runs; a deleted pod's links are unpinned.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSelection {
    /// The pods' namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Which pods of `namespace` (labels; empty selects every pod of it).
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// Which containers of each pod (by `spec.containers[].name`). Absent or empty: every
    /// container of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 32))]
    pub container_names: Vec<String>,
}

// As for `NetworkNamespaces`.
impl Eq for ContainerSelection {}

impl ContainerSelection {
    /// The checks of the schema, again in Rust; `at` is the field path of `containers`.
    pub fn validate(&self, at: &str) -> Result<(), ValidationError> {
        validate_selection(at, &self.namespace, &self.pod_selector)?;
        for (i, name) in self.container_names.iter().enumerate() {
            let n = name.as_bytes();
            let label = !n.is_empty()
                && n.len() <= 63
                && n.iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && n.first() != Some(&b'-')
                && n.last() != Some(&b'-');
            if !label {
                return Err(ValidationError {
                    field: format!("{at}.containerNames[{i}]"),
                    value: name.clone(),
                    reason: "must be a container name (a DNS label)".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether the container named `name` is selected.
    pub fn selects(&self, name: &str) -> bool {
        self.container_names.is_empty() || self.container_names.iter().any(|c| c == name)
    }
}

/// The regular expression of an interface entry written `/<regex>/`; `None` for a plain name.
pub fn interface_pattern(entry: &str) -> Option<&str> {
    entry
        .strip_prefix('/')
        .and_then(|e| e.strip_suffix('/'))
        .filter(|p| !p.is_empty())
}

/// Whether `attach` names host interfaces by pattern or `primaryNodeInterface` on `xdp` or `tc`:
/// which interfaces it attaches on changes with the node's links.
pub fn follows_host_interfaces(attach: &Attach) -> bool {
    let dynamic = |entries: &[InterfaceName], primary: Option<bool>| {
        primary == Some(true) || entries.iter().any(|e| interface_pattern(e).is_some())
    };
    attach
        .xdp
        .as_ref()
        .is_some_and(|x| dynamic(&x.interfaces, x.primary_node_interface))
        || attach
            .tc
            .as_ref()
            .is_some_and(|t| dynamic(&t.interfaces, t.primary_node_interface))
}

/// The check of one pattern entry of an `interfaces` list (`field` names the entry): a valid
/// regular expression of at most 256 characters between the slashes. `Ok(false)` for an entry
/// that is no pattern.
fn validate_pattern_entry(field: &str, entry: &str) -> Result<bool, ValidationError> {
    let refuse = |reason: String| ValidationError {
        field: field.to_owned(),
        value: entry.to_owned(),
        reason,
    };
    let Some(pattern) = interface_pattern(entry) else {
        if entry.starts_with('/') {
            return Err(refuse(
                "an interface pattern is written /<regex>/ (at most 256 characters between the slashes)".into(),
            ));
        }
        return Ok(false);
    };
    if pattern.len() > 256 {
        return Err(refuse(
            "an interface pattern is written /<regex>/ (at most 256 characters between the slashes)".into(),
        ));
    }
    if let Err(e) = regex::Regex::new(pattern) {
        return Err(refuse(format!("is not a valid regular expression: {e}")));
    }
    Ok(true)
}

/// The checks of host `interfaces` (`at` is the field path of the attach kind): patterns are
/// valid; plain names are taken as they are (a missing one fails the attach, naming it).
fn validate_host_interfaces(at: &str, entries: &[InterfaceName]) -> Result<(), ValidationError> {
    for (i, entry) in entries.iter().enumerate() {
        validate_pattern_entry(&format!("{at}.interfaces[{i}]"), entry)?;
    }
    Ok(())
}

impl NetworkNamespaces {
    /// The interfaces to attach on inside each pod (`[eth0]` when none are listed).
    pub fn interfaces(&self) -> Vec<InterfaceName> {
        if self.interfaces.is_empty() {
            vec!["eth0".to_owned()]
        } else {
            self.interfaces.clone()
        }
    }

    /// The checks of the schema, again in Rust; `at` is the field path of the attach kind.
    fn validate(&self, at: &str, host_interfaces: usize) -> Result<(), ValidationError> {
        let refuse = |field: &str, value: &str, reason: &str| ValidationError {
            field: format!("{at}.{field}"),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if host_interfaces > 0 {
            return Err(refuse(
                "interfaces",
                "",
                "set either interfaces or primaryNodeInterface (on the node) or networkNamespaces (inside pods), not both",
            ));
        }
        validate_selection(
            &format!("{at}.networkNamespaces"),
            &self.namespace,
            &self.pod_selector,
        )?;
        for (i, name) in self.interfaces.iter().enumerate() {
            let field = format!("{at}.networkNamespaces.interfaces[{i}]");
            if validate_pattern_entry(&field, name)? {
                continue;
            }
            // IFNAMSIZ is 16 with its NUL; the kernel refuses '/' and whitespace in names.
            if name.is_empty()
                || name.len() > 15
                || name.contains('/')
                || name.chars().any(char::is_whitespace)
            {
                return Err(refuse(
                    &format!("networkNamespaces.interfaces[{i}]"),
                    name,
                    "must be an interface name (1 to 15 characters, no '/' or spaces)",
                ));
            }
        }
        Ok(())
    }
}

impl Attach {
    /// The pods this attach point follows, when it is pod-scoped.
    pub fn network_namespaces(&self) -> Option<&NetworkNamespaces> {
        self.xdp
            .as_ref()
            .and_then(|x| x.network_namespaces.as_ref())
            .or(self.tc.as_ref().and_then(|t| t.network_namespaces.as_ref()))
    }

    /// The pods whose cgroups this attach point follows, when a cgroup hook sets `pods`.
    pub fn cgroup_pods(&self) -> Option<&PodSelection> {
        self.cgroup_skb
            .as_ref()
            .and_then(|c| c.pods.as_ref())
            .or_else(|| {
                [
                    &self.sock_ops,
                    &self.cgroup_sock_addr,
                    &self.cgroup_sock,
                    &self.cgroup_sysctl,
                    &self.cgroup_sockopt,
                    &self.cgroup_device,
                ]
                .into_iter()
                .find_map(|c| c.as_ref().and_then(|c| c.pods.as_ref()))
            })
    }

    /// The containers a uprobe's target is resolved in, when `uprobe` sets `containers`.
    pub fn containers(&self) -> Option<&ContainerSelection> {
        self.uprobe.as_ref().and_then(|u| u.containers.as_ref())
    }

    /// The pod-scoped checks of `spec.programs[i].attach` (`at`).
    fn validate_pods(&self, at: &str) -> Result<(), ValidationError> {
        if let Some(u) = &self.uprobe
            && let Some(c) = &u.containers
        {
            let at = format!("{at}.uprobe");
            if u.pid.is_some() {
                return Err(ValidationError {
                    field: format!("{at}.pid"),
                    value: u.pid.unwrap_or_default().to_string(),
                    reason: "pid and containers are exclusive".into(),
                });
            }
            if !u.target.starts_with('/') {
                return Err(ValidationError {
                    field: format!("{at}.target"),
                    value: u.target.clone(),
                    reason: "with containers, target must be an absolute path inside the container"
                        .into(),
                });
            }
            c.validate(&format!("{at}.containers"))?;
        }
        if let Some(x) = &self.xdp {
            let at = format!("{at}.xdp");
            let host = x.interfaces.len() + usize::from(x.primary_node_interface == Some(true));
            match &x.network_namespaces {
                Some(n) => {
                    n.validate(&at, host)?;
                    if x.priority.is_some() || !x.proceed_on.is_empty() {
                        return Err(ValidationError {
                            field: format!("{at}.networkNamespaces"),
                            value: String::new(),
                            reason:
                                "priority and proceedOn are not supported with networkNamespaces"
                                    .into(),
                        });
                    }
                }
                None if host == 0 => return Err(no_interfaces(&at)),
                None => validate_host_interfaces(&at, &x.interfaces)?,
            }
        }
        if let Some(t) = &self.tc {
            let at = format!("{at}.tc");
            let host = t.interfaces.len() + usize::from(t.primary_node_interface == Some(true));
            match &t.network_namespaces {
                Some(n) => {
                    n.validate(&at, host)?;
                    if t.priority.is_some() {
                        return Err(ValidationError {
                            field: format!("{at}.networkNamespaces"),
                            value: String::new(),
                            reason: "priority is not supported with networkNamespaces".into(),
                        });
                    }
                }
                None if host == 0 => return Err(no_interfaces(&at)),
                None => validate_host_interfaces(&at, &t.interfaces)?,
            }
        }
        Ok(())
    }
}

fn no_interfaces(at: &str) -> ValidationError {
    ValidationError {
        field: format!("{at}.interfaces"),
        value: String::new(),
        reason: "set either interfaces or primaryNodeInterface (on the node) or networkNamespaces (inside pods)".into(),
    }
}

#[cfg(test)]
mod pod_tests {
    use super::*;

    fn spec(attach: &str) -> BpfObjectSpec {
        serde_yaml::from_str(&format!(
            "bytecode: {{path: n.o}}\nprograms:\n- name: p\n  attach: {attach}\n"
        ))
        .expect("spec parses")
    }

    #[test]
    fn network_namespaces_validate() {
        let good = spec(
            "{xdp: {networkNamespaces: {namespace: web, podSelector: {matchLabels: {app: web}}}}}",
        );
        assert_eq!(good.validate("o"), Ok(()));
        let nn = good.programs[0]
            .attach
            .as_ref()
            .and_then(Attach::network_namespaces)
            .expect("pod-scoped");
        assert_eq!(nn.interfaces(), vec!["eth0".to_owned()]);
        assert_eq!(
            spec("{tc: {direction: Ingress, networkNamespaces: {namespace: web, interfaces: [net1]}}}")
                .validate("o"),
            Ok(())
        );
        let refused = |attach: &str| spec(attach).validate("o").expect_err(attach);
        let e = refused("{xdp: {interfaces: [eth0], networkNamespaces: {namespace: web}}}");
        assert_eq!(e.field, "spec.programs[0].attach.xdp.interfaces");
        assert!(e.reason.contains("not both"), "{e}");
        let e = refused("{xdp: {}}");
        assert!(e.reason.contains("either interfaces"), "{e}");
        let e = refused("{tc: {direction: Egress}}");
        assert_eq!(e.field, "spec.programs[0].attach.tc.interfaces");
        let e = refused("{xdp: {networkNamespaces: {namespace: Web_1}}}");
        assert_eq!(
            e.field,
            "spec.programs[0].attach.xdp.networkNamespaces.namespace"
        );
        let e = refused(
            "{xdp: {networkNamespaces: {namespace: web, interfaces: [a.very.long.name0]}}}",
        );
        assert_eq!(
            e.field,
            "spec.programs[0].attach.xdp.networkNamespaces.interfaces[0]"
        );
        let e = refused("{xdp: {priority: 10, networkNamespaces: {namespace: web}}}");
        assert!(e.reason.contains("priority"), "{e}");
        let e =
            refused("{tc: {direction: Egress, priority: 10, networkNamespaces: {namespace: web}}}");
        assert!(e.reason.contains("priority"), "{e}");
        let e = refused(
            "{xdp: {networkNamespaces: {namespace: web, podSelector: {matchExpressions: [{key: a, operator: Is}]}}}}",
        );
        assert_eq!(
            e.field,
            "spec.programs[0].attach.xdp.networkNamespaces.podSelector"
        );
    }

    #[test]
    fn interface_patterns_are_regexes_between_slashes() {
        assert_eq!(interface_pattern("/^eth[0-9]+$/"), Some("^eth[0-9]+$"));
        assert_eq!(interface_pattern("eth0"), None);
        assert_eq!(interface_pattern("//"), None);
        let ok = spec(
            "{xdp: {networkNamespaces: {namespace: web, interfaces: [eth0, '/^net[0-9]+$/']}}}",
        );
        assert_eq!(ok.validate("o"), Ok(()));
        let e = spec("{tc: {direction: Ingress, networkNamespaces: {namespace: web, interfaces: ['/^net[0-9+$/']}}}")
            .validate("o")
            .expect_err("bad regex");
        assert_eq!(
            e.field,
            "spec.programs[0].attach.tc.networkNamespaces.interfaces[0]"
        );
        assert!(
            e.reason.starts_with("is not a valid regular expression"),
            "{e}"
        );
    }

    #[test]
    fn host_interfaces_take_patterns_and_the_primary_interface() {
        for good in [
            "{xdp: {interfaces: ['/^eth[0-9]+$/', lo]}}",
            "{xdp: {primaryNodeInterface: true}}",
            "{xdp: {primaryNodeInterface: true, interfaces: ['/^veth/'], priority: 10}}",
            "{tc: {direction: Ingress, interfaces: ['/^bpfpinif[0-9]+$/']}}",
            "{tc: {direction: Egress, primaryNodeInterface: true}}",
            // Plain names keep their meaning: taken as they are.
            "{xdp: {interfaces: [eth0]}}",
        ] {
            let s = spec(good);
            assert_eq!(s.validate("o"), Ok(()), "{good}");
        }
        let dynamic =
            |a: &str| follows_host_interfaces(spec(a).programs[0].attach.as_ref().expect("attach"));
        assert!(dynamic("{xdp: {interfaces: ['/^eth[0-9]+$/']}}"));
        assert!(dynamic(
            "{tc: {direction: Egress, primaryNodeInterface: true}}"
        ));
        assert!(!dynamic("{xdp: {interfaces: [eth0]}}"));
        assert!(!dynamic(
            "{xdp: {interfaces: [eth0], primaryNodeInterface: false}}"
        ));
        assert!(!dynamic(
            "{xdp: {networkNamespaces: {namespace: web, interfaces: ['/x/']}}}"
        ));
        let refused = |attach: &str| spec(attach).validate("o").expect_err(attach);
        let e = refused("{xdp: {interfaces: ['/^eth[0-9+$/']}}");
        assert_eq!(e.field, "spec.programs[0].attach.xdp.interfaces[0]");
        assert!(
            e.reason.starts_with("is not a valid regular expression"),
            "{e}"
        );
        let e = refused("{tc: {direction: Ingress, interfaces: [eth0, '/^eth']}}");
        assert_eq!(e.field, "spec.programs[0].attach.tc.interfaces[1]");
        assert!(e.reason.contains("written /<regex>/"), "{e}");
        let long = format!("{{xdp: {{interfaces: ['/{}/']}}}}", "a".repeat(257));
        let e = refused(&long);
        assert!(e.reason.contains("at most 256"), "{e}");
        let e = refused("{xdp: {primaryNodeInterface: true, networkNamespaces: {namespace: web}}}");
        assert_eq!(e.field, "spec.programs[0].attach.xdp.interfaces");
        assert!(e.reason.contains("not both"), "{e}");
        let e = refused("{xdp: {primaryNodeInterface: false}}");
        assert!(e.reason.contains("primaryNodeInterface"), "{e}");
    }

    #[test]
    fn uprobe_containers_validate() {
        let good = spec(
            "{uprobe: {target: /app/server, symbol: handle, containers: {namespace: web, podSelector: {matchLabels: {app: web}}, containerNames: [app, side-car]}}}",
        );
        assert_eq!(good.validate("o"), Ok(()));
        let attach = good.programs[0].attach.as_ref().expect("attach");
        let c = attach.containers().expect("container-scoped");
        assert!(c.selects("app") && c.selects("side-car") && !c.selects("other"));
        let all = spec("{uprobe: {target: /bin/sh, offset: 16, containers: {namespace: web}}}");
        assert_eq!(all.validate("o"), Ok(()));
        let every = all.programs[0].attach.as_ref().and_then(Attach::containers);
        assert!(
            every.expect("scoped").selects("anything"),
            "no names: every container"
        );
        assert!(
            spec("{uprobe: {target: /bin/sh, symbol: main}}").programs[0]
                .attach
                .as_ref()
                .and_then(Attach::containers)
                .is_none()
        );
        for (bad, field, reason) in [
            (
                "{uprobe: {target: /bin/sh, symbol: main, pid: 7, containers: {namespace: web}}}",
                "uprobe.pid",
                "exclusive",
            ),
            (
                "{uprobe: {target: libc, symbol: malloc, containers: {namespace: web}}}",
                "uprobe.target",
                "absolute path inside the container",
            ),
            (
                "{uprobe: {target: /bin/sh, symbol: main, containers: {namespace: Web}}}",
                "uprobe.containers.namespace",
                "DNS label",
            ),
            (
                "{uprobe: {target: /bin/sh, symbol: main, containers: {namespace: web, containerNames: [ok, Not_OK]}}}",
                "uprobe.containers.containerNames[1]",
                "container name",
            ),
            (
                "{uprobe: {target: /bin/sh, symbol: main, containers: {namespace: web, containerNames: [-a]}}}",
                "uprobe.containers.containerNames[0]",
                "container name",
            ),
        ] {
            let e = spec(bad).validate("o").expect_err(bad);
            assert_eq!(e.field, format!("spec.programs[0].attach.{field}"), "{bad}");
            assert!(e.reason.contains(reason), "{bad}: {e}");
        }
    }

    #[test]
    fn cgroup_hooks_take_exactly_one_of_cgroup_and_pods() {
        for good in [
            "{cgroupSkb: {direction: Egress, pods: {namespace: web, podSelector: {matchLabels: {app: web}}}}}",
            "{cgroupSkb: {direction: Egress, cgroup: /sys/fs/cgroup/a}}",
            "{sockOps: {pods: {namespace: web}}}",
            "{cgroupSock: {pods: {namespace: web}}}",
            "{cgroupDevice: {cgroup: /sys/fs/cgroup/a}}",
        ] {
            let s = spec(good);
            assert_eq!(s.validate("o"), Ok(()), "{good}");
            let attach = s.programs[0].attach.as_ref().expect("attach");
            let pods = good.contains("pods");
            assert_eq!(attach.cgroup_pods().is_some(), pods, "{good}");
        }
        for (bad, field) in [
            ("{cgroupSkb: {direction: Egress}}", "cgroupSkb"),
            (
                "{sockOps: {cgroup: /sys/fs/cgroup/a, pods: {namespace: web}}}",
                "sockOps",
            ),
            ("{cgroupSysctl: {}}", "cgroupSysctl"),
            (
                "{cgroupSock: {pods: {namespace: Web}}}",
                "cgroupSock.pods.namespace",
            ),
            (
                "{cgroupSockopt: {pods: {namespace: web, podSelector: {matchExpressions: [{key: a, operator: Is}]}}}}",
                "cgroupSockopt.pods.podSelector",
            ),
            (
                "{cgroupSkb: {direction: Egress, cgroup: a/b}}",
                "cgroupSkb.cgroup",
            ),
        ] {
            let e = spec(bad).validate("o").expect_err(bad);
            assert_eq!(
                e.field,
                format!("spec.programs[0].attach.{field}"),
                "{bad}: {e}"
            );
        }
        let e = spec("{sockOps: {}}").validate("o").expect_err("neither");
        assert_eq!(
            e.reason,
            "set exactly one of cgroup (on the node) or pods (their cgroups)"
        );
    }
}

// --- end of pod-aware attachment ---

/// Observed state, aggregated by the operator from every selected node's `BpfNodeState`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BpfObjectStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (pinned at this generation on every selected node), `Progressing` (some nodes have
    /// not reported this generation yet), `Degraded` (some nodes failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Node counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
    /// `ready/selected`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_ready: Option<String>,
    /// The first failures (at most 10), by node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<NodeFailure>,

    /// Nodes the node selector selects but whose kernel does not meet `spec.requires` (at most
    /// 10, by node name; the count is `nodes.unsupported`). They are not counted as selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<UnsupportedNode>,
    /// The `sha256:<hex>` of the bytecode the ready nodes run, when they all run the same;
    /// otherwise `<n> distinct digests` (each node's is in its `BpfNodeState`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The image manifest digest (`sha256:<hex>`) the ready nodes pulled their bytecode from,
    /// when it came from `bytecode.image` and they all agree; otherwise `<n> distinct digests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Pod-scoped attachments (`networkNamespaces`) summed over the nodes that report this
    /// generation; which pod failed is in each node's `BpfNodeState`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodCounts>,
}

/// A selected node that cannot run the object.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UnsupportedNode {
    /// The node.
    pub node: String,
    /// The requirement of `spec.requires` it fails, e.g. `kernel 5.10.0 is older than
    /// spec.requires.kernel.min 5.15`.
    pub requirement: String,
}

/// Pods matched and attached, summed over the nodes.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    /// Pods that some program's `networkNamespaces` selects.
    pub matched: i32,
    /// Of those, pods with every selected program attached.
    pub attached: i32,
    /// Pods whose attachment failed on their node (see its `BpfNodeState`).
    pub failed: i32,
}

/// How many nodes are selected, ready and failed.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// Nodes the node selector selects.
    pub selected: i32,
    /// Selected nodes that report this generation pinned.
    pub ready: i32,
    /// Selected nodes that report a failure for this generation.
    pub failed: i32,
    /// Nodes the node selector matches whose kernel does not meet `spec.requires` (not
    /// counted in `selected`).
    #[serde(default)]
    pub unsupported: i32,
}

/// A failure on one node.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeFailure {
    /// The node.
    pub node: String,
    /// A CamelCase reason, e.g. `VerifierRejected`, `DigestMismatch`, `ProgramNotFound`.
    pub reason: String,
    /// What went wrong, in a sentence (with the tail of the verifier log where there is one).
    pub message: String,
}

impl BpfObjectSpec {
    /// The checks the CRD schema makes with CEL, again in Rust, for local mode and as the
    /// agent's last line of defence. `name` is the object's `metadata.name`.
    pub fn validate(&self, name: &str) -> Result<(), ValidationError> {
        validate_object_name(name)?;
        let sources = [
            self.bytecode.path.is_some(),
            self.bytecode.config_map.is_some(),
            self.bytecode.url.is_some(),
            self.bytecode.image.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(ValidationError {
                field: "spec.bytecode".into(),
                value: String::new(),
                reason: "exactly one of path, configMap, url, image must be set".into(),
            });
        }
        if self.bytecode.image_pull_secret.is_some() && self.bytecode.image.is_none() {
            return Err(ValidationError {
                field: "spec.bytecode.imagePullSecret".into(),
                value: String::new(),
                reason: "is only used with image".into(),
            });
        }
        if self.bytecode.skip_signature_verification && self.bytecode.image.is_none() {
            return Err(ValidationError {
                field: "spec.bytecode.skipSignatureVerification".into(),
                value: String::new(),
                reason: "is only used with image".into(),
            });
        }
        if let Some(url) = &self.bytecode.url {
            validate_url("spec.bytecode.url", url)?;
        }
        if self.bytecode.url.is_some() && self.sha256.is_none() {
            return Err(ValidationError {
                field: "spec.sha256".into(),
                value: String::new(),
                reason: "is required when the bytecode comes from a url".into(),
            });
        }
        if let Some(sha) = &self.sha256
            && (sha.len() != 64
                || !sha
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(ValidationError {
                field: "spec.sha256".into(),
                value: sha.clone(),
                reason: "must be 64 lowercase hex digits".into(),
            });
        }
        if self.programs.is_empty() {
            return Err(ValidationError {
                field: "spec.programs".into(),
                value: String::new(),
                reason: "must name at least one program".into(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, map) in self.maps.iter().enumerate() {
            validate_elf_name(&format!("spec.maps[{i}].name"), &map.name)?;
            if !seen.insert(&map.name) {
                return Err(ValidationError {
                    field: format!("spec.maps[{i}].name"),
                    value: map.name.clone(),
                    reason: "is listed twice".into(),
                });
            }
            if let Some(pin_path) = &map.pin_path {
                validate_pin_path(&format!("spec.maps[{i}].pinPath"), pin_path)?;
            }
        }
        for (i, tc) in self.tail_calls.iter().enumerate() {
            validate_elf_name(&format!("spec.tailCalls[{i}].map"), &tc.map)?;
            validate_elf_name(&format!("spec.tailCalls[{i}].program"), &tc.program)?;
            if !self.programs.iter().any(|p| p.name == tc.program) {
                return Err(ValidationError {
                    field: format!("spec.tailCalls[{i}].program"),
                    value: tc.program.clone(),
                    reason: "must be one of spec.programs".into(),
                });
            }
        }
        if let Some(requires) = &self.requires {
            requires.validate()?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, prog) in self.programs.iter().enumerate() {
            validate_elf_name(&format!("spec.programs[{i}].name"), &prog.name)?;
            if !seen.insert(&prog.name) {
                return Err(ValidationError {
                    field: format!("spec.programs[{i}].name"),
                    value: prog.name.clone(),
                    reason: "is listed twice".into(),
                });
            }
            if let Some(attach) = &prog.attach {
                if attach.kinds() > 1 {
                    return Err(ValidationError {
                        field: format!("spec.programs[{i}].attach"),
                        value: String::new(),
                        reason: "at most one attach kind may be set (none: the attach point comes from the program's section)".into(),
                    });
                }
                attach.validate_pods(&format!("spec.programs[{i}].attach"))?;
                let at = |kind: &str| format!("spec.programs[{i}].attach.{kind}");
                attach.validate_more(&at)?;
                attach.validate_usdt(&at)?;
                if let Some(t) = &attach.tracepoint {
                    validate_symbol(&at("tracepoint.category"), &t.category, 64)?;
                    validate_symbol(&at("tracepoint.name"), &t.name, 128)?;
                }
                if let Some(k) = &attach.kprobe {
                    validate_symbol(&at("kprobe.function"), &k.function, 128)?;
                }
                if let Some(f) = &attach.fentry {
                    validate_symbol(&at("fentry.function"), &f.function, 128)?;
                }
                if let Some(f) = &attach.fexit {
                    validate_symbol(&at("fexit.function"), &f.function, 128)?;
                }
                if let Some(u) = &attach.uprobe
                    && u.symbol.is_none()
                    && u.offset.is_none()
                {
                    return Err(ValidationError {
                        field: format!("spec.programs[{i}].attach.uprobe"),
                        value: u.target.clone(),
                        reason: "set symbol, offset or both".into(),
                    });
                }
                if let Some(c) = &attach.cgroup_skb {
                    validate_cgroup_or_pods(
                        &at("cgroupSkb"),
                        c.cgroup.as_deref(),
                        c.pods.as_ref(),
                    )?;
                }
            }
        }
        Ok(())
    }
}

// The checks of the attach kinds defined in attach_kinds.rs, attach_hooks.rs and usdt.rs, here
// with `Attach` so that those modules stay leaves (they define the kinds' fields, not `Attach`).
impl Attach {
    /// How many attach kinds are set (the spec allows at most one; none takes the attach point
    /// from the program's section). The one list of every kind.
    pub fn kinds(&self) -> usize {
        [
            self.tracepoint.is_some(),
            self.xdp.is_some(),
            self.tc.is_some(),
            self.kprobe.is_some(),
            self.uprobe.is_some(),
            self.fentry.is_some(),
            self.fexit.is_some(),
            self.cgroup_skb.is_some(),
            self.raw_tracepoint.is_some(),
            self.sock_ops.is_some(),
            self.cgroup_sock_addr.is_some(),
            self.cgroup_sock.is_some(),
            self.cgroup_sysctl.is_some(),
            self.cgroup_sockopt.is_some(),
            self.cgroup_device.is_some(),
            self.sk_lookup.is_some(),
            self.sk_msg.is_some(),
            self.sk_skb.is_some(),
            self.perf_event.is_some(),
            self.iter.is_some(),
            self.usdt.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count()
            + self.hook_kinds()
    }

    /// The checks the CRD's CEL rules make of this module's kinds; `at("sockOps.cgroup")` is the
    /// field's full name.
    pub fn validate_more(&self, at: &dyn Fn(&str) -> String) -> Result<(), ValidationError> {
        if let Some(r) = &self.raw_tracepoint {
            validate_symbol(&at("rawTracepoint.name"), &r.name, 128)?;
        }
        let cgroups = [
            ("sockOps", &self.sock_ops),
            ("cgroupSockAddr", &self.cgroup_sock_addr),
            ("cgroupSock", &self.cgroup_sock),
            ("cgroupSysctl", &self.cgroup_sysctl),
            ("cgroupSockopt", &self.cgroup_sockopt),
            ("cgroupDevice", &self.cgroup_device),
        ];
        for (kind, c) in cgroups {
            if let Some(c) = c {
                validate_cgroup_or_pods(&at(kind), c.cgroup.as_deref(), c.pods.as_ref())?;
            }
        }
        if let Some(l) = &self.sk_lookup {
            validate_abs_path(at("skLookup.netns"), &l.netns)?;
        }
        if let Some(m) = &self.sk_msg {
            validate_elf_name(&at("skMsg.map"), &m.map)?;
        }
        if let Some(m) = &self.sk_skb {
            validate_elf_name(&at("skSkb.map"), &m.map)?;
        }
        if let Some(p) = &self.perf_event {
            if p.frequency.is_some() == p.period.is_some() {
                return Err(ValidationError {
                    field: at("perfEvent"),
                    value: p.event.link_part(),
                    reason: "set exactly one of frequency, period".into(),
                });
            }
            if p.frequency == Some(0) || p.period == Some(0) {
                return Err(ValidationError {
                    field: at("perfEvent"),
                    value: "0".into(),
                    reason: "frequency and period are at least 1".into(),
                });
            }
        }
        self.validate_hooks(at)
    }
}

impl Attach {
    /// How many of attach_hooks.rs's kinds are set (counted by [`Attach::kinds`]).
    pub fn hook_kinds(&self) -> usize {
        [
            self.tp_btf.is_some(),
            self.lsm.is_some(),
            self.ksyscall.is_some(),
            self.netfilter.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count()
    }

    /// The checks the CRD's CEL rules make of attach_hooks.rs's kinds (run by
    /// [`Attach::validate_more`]).
    pub fn validate_hooks(&self, at: &dyn Fn(&str) -> String) -> Result<(), ValidationError> {
        if let Some(t) = &self.tp_btf {
            validate_symbol(&at("tpBtf.name"), &t.name, 128)?;
        }
        if let Some(l) = &self.lsm {
            validate_symbol(&at("lsm.hook"), &l.hook, 128)?;
        }
        if let Some(k) = &self.ksyscall {
            validate_symbol(&at("ksyscall.syscall"), &k.syscall, 64)?;
        }
        if let Some(n) = &self.netfilter
            && (n.priority == i32::MIN || n.priority == i32::MAX)
        {
            return Err(ValidationError {
                field: at("netfilter.priority"),
                value: n.priority.to_string(),
                reason: "the kernel reserves -2147483648 and 2147483647".into(),
            });
        }
        Ok(())
    }
}

impl Attach {
    /// The agent's checks of `attach.usdt` (the CRD's CEL rules say the same).
    pub fn validate_usdt(&self, at: &dyn Fn(&str) -> String) -> Result<(), ValidationError> {
        let Some(u) = &self.usdt else {
            return Ok(());
        };
        if !u.target.starts_with('/') || u.target.split('/').any(|s| s == "..") {
            return Err(ValidationError {
                field: at("usdt.target"),
                value: u.target.clone(),
                reason: "must be an absolute path without '..'".into(),
            });
        }
        validate_symbol(&at("usdt.provider"), &u.provider, 128)?;
        validate_symbol(&at("usdt.name"), &u.name, 128)?;
        for (field, value) in [("usdt.provider", &u.provider), ("usdt.name", &u.name)] {
            if value.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(ValidationError {
                    field: at(field),
                    value: value.clone(),
                    reason: "must be a C identifier".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BpfObjectSpec {
        serde_yaml::from_str(
            r#"
bytecode: {path: counter.bpf.o}
maps: [{name: counts, pinPath: team/counts}]
programs:
- name: count_getpid
  attach: {tracepoint: {category: syscalls, name: sys_enter_getpid}}
- name: tail_target
"#,
        )
        .expect("spec parses")
    }

    #[test]
    fn a_good_spec_validates() {
        assert_eq!(spec().validate("counter"), Ok(()));
    }

    #[test]
    fn bad_specs_name_the_field() {
        let mut s = spec();
        s.maps[0].pin_path = Some("../../etc".into());
        assert!(
            s.validate("counter")
                .unwrap_err()
                .to_string()
                .contains("spec.maps[0].pinPath")
        );

        let mut s = spec();
        s.bytecode.url = Some("https://x/y.o".into());
        assert!(
            s.validate("counter")
                .unwrap_err()
                .reason
                .contains("exactly one")
        );

        let mut s = spec();
        s.bytecode.image_pull_secret = Some(SecretReference {
            namespace: "ns".into(),
            name: "pull".into(),
        });
        assert!(
            s.validate("counter")
                .unwrap_err()
                .field
                .contains("imagePullSecret")
        );

        let mut s = spec();
        s.programs.push(s.programs[0].clone());
        assert!(s.validate("counter").unwrap_err().reason.contains("twice"));

        let mut s = spec();
        s.bytecode = Bytecode {
            url: Some("https://x/y.o".into()),
            ..Default::default()
        };
        assert!(s.validate("counter").unwrap_err().field.contains("sha256"));

        assert!(
            spec()
                .validate("my.counter")
                .unwrap_err()
                .reason
                .contains("'.'")
        );
        assert!(
            spec()
                .validate("shared")
                .unwrap_err()
                .reason
                .contains("reserved")
        );
    }
}
