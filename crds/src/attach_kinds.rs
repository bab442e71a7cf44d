//! The attach kinds of issue 13 (raw tracepoints, the cgroup hooks, sk_lookup, sockmap programs,
//! perf events, iterators): their spec types and the checks the agent makes of them again (the
//! CRD's CEL rules say the same). The fields are in [`crate::Attach`].

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A raw tracepoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RawTracepointAttach {
    /// The kernel tracepoint, without its category, e.g. `sched_switch` or `sys_enter`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_]+$')").message("must be letters, digits and '_'"))]
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
}

/// A cgroup v2 directory a cgroup program attaches to, or the cgroups of matching pods; the hook
/// (connect4, sock_create, ...) is the one the program's section names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cgroup) != has(self.pods)").message("set exactly one of cgroup (on the node) or pods (their cgroups)"))]
pub struct CgroupAttach {
    /// Absolute path of a cgroup v2 directory on the node, e.g. `/sys/fs/cgroup/system.slice`.
    /// The program runs for the processes of this cgroup and of its descendants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute path to a cgroup v2 directory"))]
    #[schemars(length(min = 1, max = 4096))]
    pub cgroup: Option<String>,
    /// Attach to the cgroup of every matching pod on the node instead (one link per pod, named
    /// `<kind>-pod-<pod uid>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<crate::pod_selection::PodSelection>,
}

/// The network namespace of an sk_lookup program.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SkLookupAttach {
    /// Absolute path of a network namespace file on the node: `/run/netns/<name>` (made by
    /// `ip netns add`) or `/proc/<pid>/ns/net`. It must be an nsfs file.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute path to a network namespace file"))]
    #[schemars(length(min = 1, max = 4096))]
    pub netns: String,
}

/// The socket map of an sk_msg or sk_skb program.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SockMapAttach {
    /// A `BPF_MAP_TYPE_SOCKMAP` or `BPF_MAP_TYPE_SOCKHASH` map of the same object, by name
    /// (private or shared through `maps[].pinPath`).
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("must be a C identifier (a map of this object)"))]
    #[schemars(length(min = 1, max = 128))]
    pub map: String,
}

/// A perf event, sampled on every online CPU of the node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("has(self.frequency) != has(self.period)").message("set exactly one of frequency, period"))]
#[serde(rename_all = "camelCase")]
pub struct PerfEventAttach {
    /// The event. Software events work on every node: `CpuClock`, `TaskClock`, `PageFaults`,
    /// `ContextSwitches`, `CpuMigrations`, `PageFaultsMin`, `PageFaultsMaj`, `AlignmentFaults`,
    /// `EmulationFaults`, `Dummy`. Hardware events need a PMU (often absent in VMs): `CpuCycles`,
    /// `Instructions`, `CacheReferences`, `CacheMisses`, `BranchInstructions`, `BranchMisses`,
    /// `BusCycles`, `StalledCyclesFrontend`, `StalledCyclesBackend`, `RefCpuCycles`.
    pub event: PerfEventName,
    /// Samples per second on each CPU (instead of `period`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub frequency: Option<u64>,
    /// One sample every this many events (instead of `frequency`); for `CpuClock` and
    /// `TaskClock` the events are nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub period: Option<u64>,
}

/// A perf event (`perf list`): the generic software and hardware events.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum PerfEventName {
    /// `PERF_COUNT_SW_CPU_CLOCK`: a timer per CPU.
    #[default]
    CpuClock,
    /// `PERF_COUNT_SW_TASK_CLOCK`: time the running task spent on the CPU.
    TaskClock,
    /// `PERF_COUNT_SW_PAGE_FAULTS`.
    PageFaults,
    /// `PERF_COUNT_SW_CONTEXT_SWITCHES`.
    ContextSwitches,
    /// `PERF_COUNT_SW_CPU_MIGRATIONS`.
    CpuMigrations,
    /// `PERF_COUNT_SW_PAGE_FAULTS_MIN`.
    PageFaultsMin,
    /// `PERF_COUNT_SW_PAGE_FAULTS_MAJ`.
    PageFaultsMaj,
    /// `PERF_COUNT_SW_ALIGNMENT_FAULTS`.
    AlignmentFaults,
    /// `PERF_COUNT_SW_EMULATION_FAULTS`.
    EmulationFaults,
    /// `PERF_COUNT_SW_DUMMY`.
    Dummy,
    /// `PERF_COUNT_HW_CPU_CYCLES` (needs a PMU).
    CpuCycles,
    /// `PERF_COUNT_HW_INSTRUCTIONS` (needs a PMU).
    Instructions,
    /// `PERF_COUNT_HW_CACHE_REFERENCES` (needs a PMU).
    CacheReferences,
    /// `PERF_COUNT_HW_CACHE_MISSES` (needs a PMU).
    CacheMisses,
    /// `PERF_COUNT_HW_BRANCH_INSTRUCTIONS` (needs a PMU).
    BranchInstructions,
    /// `PERF_COUNT_HW_BRANCH_MISSES` (needs a PMU).
    BranchMisses,
    /// `PERF_COUNT_HW_BUS_CYCLES` (needs a PMU).
    BusCycles,
    /// `PERF_COUNT_HW_STALLED_CYCLES_FRONTEND` (needs a PMU).
    StalledCyclesFrontend,
    /// `PERF_COUNT_HW_STALLED_CYCLES_BACKEND` (needs a PMU).
    StalledCyclesBackend,
    /// `PERF_COUNT_HW_REF_CPU_CYCLES` (needs a PMU).
    RefCpuCycles,
}

impl PerfEventName {
    /// The name in link file names: the variant in lowercase (`cpuclock`).
    pub fn link_part(self) -> String {
        format!("{self:?}").to_ascii_lowercase()
    }
}

/// A BPF iterator: the iterated type is in the program's section (`iter/task`, `iter/bpf_map`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IterAttach {}

#[cfg(test)]
mod tests {
    use crate::Attach;
    use crate::validation::ValidationError;

    fn attach(yaml: &str) -> Attach {
        serde_yaml::from_str(yaml).expect("attach parses")
    }

    fn check(a: &Attach) -> Result<(), ValidationError> {
        a.validate_more(&|k| format!("spec.programs[0].attach.{k}"))
    }

    #[test]
    fn the_new_kinds_validate() {
        for good in [
            "{rawTracepoint: {name: sched_switch}}",
            "{sockOps: {cgroup: /sys/fs/cgroup/x}}",
            "{skLookup: {netns: /run/netns/a}}",
            "{skMsg: {map: sock_map}}",
            "{perfEvent: {event: CpuClock, frequency: 99}}",
            "{iter: {}}",
        ] {
            let a = attach(good);
            assert_eq!(a.kinds(), 1, "{good}");
            assert_eq!(check(&a), Ok(()), "{good}");
        }
        assert_eq!(attach("{}").kinds(), 0);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (bad, field) in [
            ("{rawTracepoint: {name: '../x'}}", "rawTracepoint.name"),
            ("{cgroupSock: {cgroup: sys/fs/cgroup}}", "cgroupSock.cgroup"),
            (
                "{cgroupDevice: {cgroup: /sys/fs/cgroup/../../etc}}",
                "cgroupDevice.cgroup",
            ),
            ("{skLookup: {netns: run/netns/a}}", "skLookup.netns"),
            ("{skSkb: {map: '.bss'}}", "skSkb.map"),
            ("{perfEvent: {event: CpuClock}}", "perfEvent"),
            (
                "{perfEvent: {event: CpuClock, frequency: 1, period: 2}}",
                "perfEvent",
            ),
            ("{perfEvent: {event: CpuClock, period: 0}}", "perfEvent"),
        ] {
            let e = check(&attach(bad)).expect_err(bad);
            assert_eq!(e.field, format!("spec.programs[0].attach.{field}"), "{bad}");
        }
    }
}
