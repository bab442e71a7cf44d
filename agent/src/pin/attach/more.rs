//! The attach kinds of issue 13 that this kind of host runs: raw tracepoints, the cgroup hooks
//! (sock_ops, sock_addr, sock, sysctl, sockopt, device), sk_lookup, sk_msg/sk_skb on a socket map
//! of the object, perf events (one link per CPU) and iterators. Each is a bpf_link, pinned like
//! the others by `attach_and_pin`; this file only says how each kind's link is made.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};

use aya::programs::links::FdLink;
use aya::programs::perf_event::{
    HardwareEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
};
use aya::programs::{
    CgroupAttachMode, CgroupDevice, CgroupSock, CgroupSockAddr, CgroupSockopt, CgroupSysctl, Iter,
    PerfEvent, Program, RawTracePoint, SkLookup, SkMsg, SkSkb, SockOps,
};
use bpfpin_crds::{Attach, PerfEventName};

use super::{At, AttachError, AttachPoint, TargetError, open_cgroup};
use crate::pin::layout::encode_name;
use crate::pin::mounts::fd_fs_magic;

/// The filesystem magic of nsfs, where namespace files live (`/proc/<pid>/ns/*`, and the bind
/// mounts of `ip netns`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// A cgroup hook; which attach type (connect4, sock_create, getsockopt...) is the program's, from
/// its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupHook {
    /// `sockops`.
    SockOps,
    /// `cgroup/connect4`, `cgroup/bind6`, `cgroup/sendmsg4`, ...
    SockAddr,
    /// `cgroup/sock_create`, `cgroup/post_bind4`, ...
    Sock,
    /// `cgroup/sysctl`.
    Sysctl,
    /// `cgroup/getsockopt`, `cgroup/setsockopt`.
    Sockopt,
    /// `cgroup/dev`.
    Device,
}

impl CgroupHook {
    /// The hook's link name prefix (`sockops`, `cgroupsock`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CgroupHook::SockOps => "sockops",
            CgroupHook::SockAddr => "cgroupsockaddr",
            CgroupHook::Sock => "cgroupsock",
            CgroupHook::Sysctl => "cgroupsysctl",
            CgroupHook::Sockopt => "cgroupsockopt",
            CgroupHook::Device => "cgroupdevice",
        }
    }

    /// The program type the hook takes, for messages.
    pub fn wants(self) -> &'static str {
        match self {
            CgroupHook::SockOps => "a sock_ops program (SEC(\"sockops\"))",
            CgroupHook::SockAddr => {
                "a cgroup sock_addr program (SEC(\"cgroup/connect4\"), bind4, sendmsg4, ...)"
            }
            CgroupHook::Sock => {
                "a cgroup sock program (SEC(\"cgroup/sock_create\"), post_bind4, ...)"
            }
            CgroupHook::Sysctl => "a cgroup sysctl program (SEC(\"cgroup/sysctl\"))",
            CgroupHook::Sockopt => {
                "a cgroup sockopt program (SEC(\"cgroup/getsockopt\") or SEC(\"cgroup/setsockopt\"))"
            }
            CgroupHook::Device => "a cgroup device program (SEC(\"cgroup/dev\"))",
        }
    }
}

/// How often a perf event samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// Samples per second.
    Frequency(u64),
    /// Events between samples.
    Period(u64),
}

/// One attach point of the kinds of this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MorePoint {
    /// A raw tracepoint, by name.
    RawTracepoint {
        /// `sched_switch`.
        name: String,
    },
    /// A cgroup v2 hook.
    Cgroup {
        /// Which program type the hook takes.
        hook: CgroupHook,
        /// The cgroup directory.
        cgroup: String,
    },
    /// sk_lookup in a network namespace.
    SkLookup {
        /// The namespace file.
        netns: String,
    },
    /// sk_msg (`skb: false`) or sk_skb on a socket map of the object.
    SockMap {
        /// sk_skb rather than sk_msg.
        skb: bool,
        /// The map, by name.
        map: String,
    },
    /// A perf event on one CPU.
    PerfEvent {
        /// The event.
        event: PerfEventName,
        /// Its sampling.
        sample: Sample,
        /// The CPU; `Err` holds why the online CPUs could not be read.
        cpu: Result<u32, String>,
    },
    /// A BPF iterator (its type is in the program's section).
    Iter,
}

/// The points of this file's kinds that `attach` names.
pub(super) fn points(attach: &Attach, points: &mut Vec<AttachPoint>) {
    let mut push = |p: MorePoint| points.push(AttachPoint::More(p));
    if let Some(r) = &attach.raw_tracepoint {
        push(MorePoint::RawTracepoint {
            name: r.name.clone(),
        });
    }
    let cgroups = [
        (CgroupHook::SockOps, &attach.sock_ops),
        (CgroupHook::SockAddr, &attach.cgroup_sock_addr),
        (CgroupHook::Sock, &attach.cgroup_sock),
        (CgroupHook::Sysctl, &attach.cgroup_sysctl),
        (CgroupHook::Sockopt, &attach.cgroup_sockopt),
        (CgroupHook::Device, &attach.cgroup_device),
    ];
    // A pod-scoped hook (`pods`) has no point on the node: the pod step attaches it.
    for (hook, c) in cgroups {
        if let Some(cgroup) = c.as_ref().and_then(|c| c.cgroup.clone()) {
            push(MorePoint::Cgroup { hook, cgroup });
        }
    }
    if let Some(l) = &attach.sk_lookup {
        push(MorePoint::SkLookup {
            netns: l.netns.clone(),
        });
    }
    if let Some(m) = &attach.sk_msg {
        push(MorePoint::SockMap {
            skb: false,
            map: m.map.clone(),
        });
    }
    if let Some(m) = &attach.sk_skb {
        push(MorePoint::SockMap {
            skb: true,
            map: m.map.clone(),
        });
    }
    if let Some(p) = &attach.perf_event {
        let sample = match (p.frequency, p.period) {
            (Some(f), _) => Sample::Frequency(f),
            (None, period) => Sample::Period(period.unwrap_or(1)),
        };
        // One link per online CPU: a perf event counts on one CPU (for every process).
        match aya::util::online_cpus() {
            Ok(cpus) => {
                for cpu in cpus {
                    push(MorePoint::PerfEvent {
                        event: p.event,
                        sample,
                        cpu: Ok(cpu),
                    });
                }
            }
            Err((file, e)) => push(MorePoint::PerfEvent {
                event: p.event,
                sample,
                cpu: Err(format!("reading the online CPUs ({file}): {e}")),
            }),
        }
    }
    if attach.iter.is_some() {
        push(MorePoint::Iter);
    }
}

impl MorePoint {
    /// The link's file name under `links/<program>/`.
    pub(super) fn link_name(&self) -> String {
        match self {
            MorePoint::RawTracepoint { name } => format!("rawtp-{}", encode_name(name)),
            MorePoint::Cgroup { hook, cgroup } => format!(
                "{}-{}",
                hook.name(),
                encode_name(cgroup.trim_start_matches('/'))
            ),
            MorePoint::SkLookup { netns } => {
                format!("sklookup-{}", encode_name(netns.trim_start_matches('/')))
            }
            MorePoint::SockMap { skb: false, map } => format!("skmsg-{}", encode_name(map)),
            MorePoint::SockMap { skb: true, map } => format!("skskb-{}", encode_name(map)),
            MorePoint::PerfEvent { event, cpu, .. } => match cpu {
                Ok(cpu) => format!("perfevent-{}-cpu{cpu}", event.link_part()),
                Err(_) => format!("perfevent-{}", event.link_part()),
            },
            MorePoint::Iter => "iter".to_owned(),
        }
    }

    /// The point in a sentence, for messages.
    pub(super) fn describe(&self) -> String {
        match self {
            MorePoint::RawTracepoint { name } => format!("raw tracepoint {name}"),
            MorePoint::Cgroup { hook, cgroup } => format!("{} on cgroup {cgroup}", hook.name()),
            MorePoint::SkLookup { netns } => format!("sk_lookup in network namespace {netns}"),
            MorePoint::SockMap { skb: false, map } => format!("sk_msg on map {map}"),
            MorePoint::SockMap { skb: true, map } => format!("sk_skb on map {map}"),
            MorePoint::PerfEvent { event, cpu, .. } => match cpu {
                Ok(cpu) => format!("perf event {event:?} on CPU {cpu}"),
                Err(_) => format!("perf event {event:?}"),
            },
            MorePoint::Iter => "a BPF iterator".to_owned(),
        }
    }

    /// The program type the point takes, for `WrongType`.
    pub(super) fn wants(&self) -> &'static str {
        match self {
            MorePoint::RawTracepoint { .. } => {
                "a raw tracepoint program (SEC(\"raw_tp/...\") or SEC(\"raw_tracepoint/...\"))"
            }
            MorePoint::Cgroup { hook, .. } => hook.wants(),
            MorePoint::SkLookup { .. } => "an sk_lookup program (SEC(\"sk_lookup\"))",
            MorePoint::SockMap { skb: false, .. } => "an sk_msg program (SEC(\"sk_msg\"))",
            MorePoint::SockMap { skb: true, .. } => "an sk_skb program (SEC(\"sk_skb/...\"))",
            MorePoint::PerfEvent { .. } => "a perf_event program (SEC(\"perf_event\"))",
            MorePoint::Iter => "an iterator program (SEC(\"iter/...\"))",
        }
    }

    /// The socket map a point attaches to, if it is a sk_msg/sk_skb point.
    pub(crate) fn sock_map(&self) -> Option<&str> {
        match self {
            MorePoint::SockMap { map, .. } => Some(map),
            _ => None,
        }
    }

    /// Checks the target, calls aya's attach for the program type the kind takes, and returns the
    /// link (not pinned yet).
    pub(super) fn link(
        &self,
        program: &mut Program,
        at: &At<'_>,
        maps: &SockMaps,
    ) -> Result<FdLink, AttachError> {
        let link = match self {
            MorePoint::RawTracepoint { name } => {
                let prog: &mut RawTracePoint = at.typed(program)?;
                let id = prog.attach(name).map_err(|e| at.kernel(e))?;
                FdLink::from(prog.take_link(id).map_err(|e| at.kernel(e))?)
            }
            MorePoint::Cgroup { hook, cgroup } => {
                self.typed_cgroup(*hook, program, at)?;
                let file = open_cgroup(cgroup).map_err(|e| at.target(e))?;
                let mode = CgroupAttachMode::Single;
                match program {
                    Program::SockOps(p) => cgroup_link!(at, p, p.attach(&file, mode)),
                    Program::CgroupSockAddr(p) => cgroup_link!(at, p, p.attach(&file, mode)),
                    Program::CgroupSock(p) => cgroup_link!(at, p, p.attach(&file, mode)),
                    Program::CgroupSysctl(p) => cgroup_link!(at, p, p.attach(&file, mode)),
                    Program::CgroupSockopt(p) => cgroup_link!(at, p, p.attach(&file, mode)),
                    Program::CgroupDevice(p) => cgroup_link!(at, p, p.attach(&file, mode)),
                    _ => unreachable!("typed_cgroup checked the type"),
                }
            }
            MorePoint::SkLookup { netns } => {
                let prog: &mut SkLookup = at.typed(program)?;
                let file = open_netns(netns).map_err(|e| at.target(e))?;
                let id = prog.attach(&file).map_err(|e| at.kernel(e))?;
                FdLink::from(prog.take_link(id).map_err(|e| at.kernel(e))?)
            }
            MorePoint::SockMap { skb, map } => {
                let fd = maps.get(map).map_err(|e| at.target(e))?;
                if *skb {
                    let prog: &mut SkSkb = at.typed(program)?;
                    prog.attach_link(fd).map_err(|e| at.kernel(e))?
                } else {
                    let prog: &mut SkMsg = at.typed(program)?;
                    prog.attach_link(fd).map_err(|e| at.kernel(e))?
                }
            }
            MorePoint::PerfEvent { event, sample, cpu } => {
                let prog: &mut PerfEvent = at.typed(program)?;
                let cpu = match cpu {
                    Ok(cpu) => *cpu,
                    Err(why) => return Err(at.target(TargetError::OnlineCpus(why.clone()))),
                };
                let policy = match sample {
                    Sample::Frequency(f) => SamplePolicy::Frequency(*f),
                    Sample::Period(p) => SamplePolicy::Period(*p),
                };
                let scope = PerfEventScope::AllProcessesOneCpu { cpu };
                let id = prog
                    .attach(perf_config(*event), scope, policy, false)
                    .map_err(|e| at.kernel(e))?;
                let link = prog.take_link(id).map_err(|e| at.kernel(e))?;
                FdLink::try_from(link).map_err(|e| at.kernel(e))?
            }
            MorePoint::Iter => {
                let prog: &mut Iter = at.typed(program)?;
                let id = prog.attach().map_err(|e| at.kernel(e))?;
                let link = prog.take_link(id).map_err(|e| at.kernel(e))?;
                FdLink::try_from(link).map_err(|e| at.kernel(e))?
            }
        };
        Ok(link)
    }

    /// The program as one of the cgroup types, the one `hook` takes.
    fn typed_cgroup(
        &self,
        hook: CgroupHook,
        program: &mut Program,
        at: &At<'_>,
    ) -> Result<(), AttachError> {
        match hook {
            CgroupHook::SockOps => at.typed::<SockOps>(program).map(drop),
            CgroupHook::SockAddr => at.typed::<CgroupSockAddr>(program).map(drop),
            CgroupHook::Sock => at.typed::<CgroupSock>(program).map(drop),
            CgroupHook::Sysctl => at.typed::<CgroupSysctl>(program).map(drop),
            CgroupHook::Sockopt => at.typed::<CgroupSockopt>(program).map(drop),
            CgroupHook::Device => at.typed::<CgroupDevice>(program).map(drop),
        }
    }
}

/// The link of a cgroup program's attach: aya gives each cgroup type its own link type, each
/// convertible into an `FdLink` (a cgroup link since kernel 5.7).
macro_rules! cgroup_link {
    ($at:expr, $prog:expr, $attached:expr) => {{
        let id = $attached.map_err(|e| $at.kernel(e))?;
        let link = $prog.take_link(id).map_err(|e| $at.kernel(e))?;
        FdLink::try_from(link).map_err(|e| $at.kernel(e))?
    }};
}
use cgroup_link;

fn perf_config(event: PerfEventName) -> PerfEventConfig {
    use PerfEventName as N;
    let sw = PerfEventConfig::Software;
    let hw = PerfEventConfig::Hardware;
    match event {
        N::CpuClock => sw(SoftwareEvent::CpuClock),
        N::TaskClock => sw(SoftwareEvent::TaskClock),
        N::PageFaults => sw(SoftwareEvent::PageFaults),
        N::ContextSwitches => sw(SoftwareEvent::ContextSwitches),
        N::CpuMigrations => sw(SoftwareEvent::CpuMigrations),
        N::PageFaultsMin => sw(SoftwareEvent::PageFaultsMin),
        N::PageFaultsMaj => sw(SoftwareEvent::PageFaultsMaj),
        N::AlignmentFaults => sw(SoftwareEvent::AlignmentFaults),
        N::EmulationFaults => sw(SoftwareEvent::EmulationFaults),
        N::Dummy => sw(SoftwareEvent::Dummy),
        N::CpuCycles => hw(HardwareEvent::CpuCycles),
        N::Instructions => hw(HardwareEvent::Instructions),
        N::CacheReferences => hw(HardwareEvent::CacheReferences),
        N::CacheMisses => hw(HardwareEvent::CacheMisses),
        N::BranchInstructions => hw(HardwareEvent::BranchInstructions),
        N::BranchMisses => hw(HardwareEvent::BranchMisses),
        N::BusCycles => hw(HardwareEvent::BusCycles),
        N::StalledCyclesFrontend => hw(HardwareEvent::StalledCyclesFrontend),
        N::StalledCyclesBackend => hw(HardwareEvent::StalledCyclesBackend),
        N::RefCpuCycles => hw(HardwareEvent::RefCpuCycles),
    }
}

/// Opens a network namespace file for sk_lookup: it must be on nsfs. `O_NONBLOCK` makes opening
/// a FIFO return at once; the descriptor checked is the one attached.
fn open_netns(netns: &str) -> Result<std::fs::File, TargetError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(netns)
        .map_err(|source| TargetError::NetnsOpen(netns.to_owned(), source))?;
    let magic =
        fd_fs_magic(&file).map_err(|source| TargetError::NetnsOpen(netns.to_owned(), source))?;
    if magic != NSFS_MAGIC {
        return Err(TargetError::NotNetns(netns.to_owned(), magic));
    }
    Ok(file)
}

/// The socket maps of a loaded object, by name (descriptors duplicated before the object's
/// programs are borrowed for attaching), and the names of its other maps.
#[derive(Debug, Default)]
pub(crate) struct SockMaps {
    fds: BTreeMap<String, OwnedFd>,
    others: BTreeMap<String, String>,
}

impl SockMaps {
    /// The socket maps of `ebpf` that the points name (no descriptor is duplicated when none
    /// does).
    pub(crate) fn of<'p>(
        ebpf: &aya::Ebpf,
        points: impl IntoIterator<Item = &'p AttachPoint>,
    ) -> Result<SockMaps, std::io::Error> {
        use aya::maps::Map;
        let mut maps = SockMaps::default();
        for point in points {
            let Some(name) = point.sock_map() else {
                continue;
            };
            match ebpf.map(name) {
                Some(Map::SockMap(data) | Map::SockHash(data)) => {
                    maps.fds
                        .insert(name.to_owned(), data.fd().as_fd().try_clone_to_owned()?);
                }
                Some(other) => {
                    let kind = format!("{other:?}");
                    let kind = kind.split('(').next().unwrap_or_default().to_owned();
                    maps.others.insert(name.to_owned(), kind);
                }
                None => {}
            }
        }
        Ok(maps)
    }

    fn get(&self, name: &str) -> Result<&OwnedFd, TargetError> {
        if let Some(fd) = self.fds.get(name) {
            return Ok(fd);
        }
        Err(match self.others.get(name) {
            Some(kind) => TargetError::NotSockMap(name.to_owned(), kind.clone()),
            None => TargetError::NoSuchMap(name.to_owned()),
        })
    }
}

impl AttachPoint {
    /// The socket map this point attaches to (sk_msg/sk_skb).
    pub(crate) fn sock_map(&self) -> Option<&str> {
        match self {
            AttachPoint::More(p) => p.sock_map(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points_of(yaml: &str) -> Vec<AttachPoint> {
        let attach: Attach = serde_yaml::from_str(yaml).expect("attach");
        AttachPoint::all(&attach)
    }

    #[test]
    fn link_names_are_bpffs_names() {
        let names: Vec<String> = [
            "{rawTracepoint: {name: sched_switch}}",
            "{sockOps: {cgroup: /sys/fs/cgroup/a.slice}}",
            "{cgroupSockAddr: {cgroup: /sys/fs/cgroup/a}}",
            "{skLookup: {netns: /run/netns/n1}}",
            "{skMsg: {map: sock_map}}",
            "{skSkb: {map: sock_map}}",
            "{iter: {}}",
        ]
        .iter()
        .flat_map(|y| points_of(y))
        .map(|p| p.link_name())
        .collect();
        assert_eq!(names[0], "rawtp-sched_switch");
        assert_eq!(names[1], "sockops-sys%2Ffs%2Fcgroup%2Fa%2Eslice");
        assert_eq!(names[3], "sklookup-run%2Fnetns%2Fn1");
        assert_eq!(names[4], "skmsg-sock_map");
        assert_eq!(names[5], "skskb-sock_map");
        assert_eq!(names[6], "iter");
        for n in &names {
            assert!(!n.contains('.') && !n.contains('/'), "{n}");
        }
    }

    #[test]
    fn a_perf_event_has_one_point_per_online_cpu() {
        let cpus = aya::util::online_cpus().expect("online cpus");
        let points = points_of("{perfEvent: {event: CpuClock, frequency: 99}}");
        assert_eq!(points.len(), cpus.len());
        assert_eq!(
            points[0].link_name(),
            format!("perfevent-cpuclock-cpu{}", cpus[0])
        );
    }
}
