//! Many XDP programs on one interface: bpfpin's libxdp-compatible dispatcher.
//!
//! A program whose `attach.xdp` sets `priority` or `proceedOn` is loaded as an extension
//! (`BPF_PROG_TYPE_EXT`, freplace) instead of an XDP program, and runs in a slot of the
//! interface's dispatcher (`bpf/xdp_dispatcher.bpf.c`, libxdp's protocol version 2). Every change
//! of the interface's set of programs loads a new dispatcher with the new order in its `.rodata`,
//! attaches every program to its slot, and swaps the new dispatcher in with one
//! `BPF_LINK_UPDATE` of the interface's XDP link: packets see either the old chain or the new one.
//!
//! Pins (the bpffs the agent manages, e.g. `/sys/fs/bpf`; libxdp's `LIBXDP_BPFFS`):
//! ```text
//! <bpffs>/xdp/                                   libxdp's directory; flock(2) on it is the lock
//!   dispatch-<ifindex>-<dispatcher id>/prog<N>-prog   the program in slot N (libxdp reads these)
//! <root>/_versions/<object>/<version>/links/<program>/
//!   xdp-<interface>                              the freplace link of the program's slot
//!   dispatcher-xdp-<interface>                   the interface's XDP link (one pin per holder)
//! ```
//! The slot's link lives only in the holder's version directory, so when the agent's sweep
//! removes that directory the slot's program detaches and the empty slot passes packets on (its
//! return value is in every chain mask): removal needs no rebuild. Every holder pins the XDP link,
//! so the dispatcher leaves the interface with the last holder. Nothing is kept in memory: a
//! restarted agent finds the dispatcher, its slots and their holders from these pins.

mod config;
pub mod tcx;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData};
use aya::programs::links::{FdLink, LinkType, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Extension, Program, ProgramError, ProgramFd, ProgramInfo, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use bpfpin_crds::{ProgramSpec, XdpMode as SpecXdpMode};

pub use config::{Config, MAX_SLOTS, Share, config_for, mask_of};

use crate::error::Reason;
use crate::pin::layout::{VERSIONS_DIR, encode_name};

/// The dispatcher's ELF object, built from `bpf/xdp_dispatcher.bpf.c` by `build.rs`.
pub static DISPATCHER_OBJECT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/xdp_dispatcher.bpf.o"));
/// The dispatcher's entry point in that object.
const ENTRY: &str = "xdp_dispatcher";
/// libxdp's directory in a bpffs.
pub const LIBXDP_DIR: &str = "xdp";
/// Prefix of a holder's pin of the interface's XDP link.
const DISPATCHER_LINK_PREFIX: &str = "dispatcher-";
/// Prefix of a link pinned beside the one it replaces (bpffs names cannot hold a dot).
const NEXT_PREFIX: &str = "next-";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failure to put a program on an interface through the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    /// This kernel refuses extension programs (EPERM at load, as for fentry).
    #[error(
        "attaching program {program} to XDP on interface {interface} through the dispatcher ({held}): the kernel refuses freplace (BPF_PROG_TYPE_EXT) programs, which sharing an interface needs"
    )]
    FreplaceRefused {
        /// The program.
        program: String,
        /// The interface.
        interface: String,
        /// Which bpfpin programs hold the interface now.
        held: String,
        /// The load error.
        #[source]
        source: Box<ProgramError>,
    },
    /// Loading the program as an extension failed otherwise.
    #[error("loading program {program} as an extension of the XDP dispatcher")]
    LoadExtension {
        /// The program.
        program: String,
        /// The load error.
        #[source]
        source: Box<ProgramError>,
    },
    /// Loading a dispatcher failed.
    #[error("loading the XDP dispatcher for interface {interface}")]
    LoadDispatcher {
        /// The interface.
        interface: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// Every slot is taken.
    #[error(
        "XDP on interface {interface} already runs {MAX_SLOTS} programs ({holders}): program {program} cannot join, a dispatcher has {MAX_SLOTS} slots"
    )]
    Full {
        /// The interface.
        interface: String,
        /// The program that wanted a slot.
        program: String,
        /// The programs in the slots.
        holders: String,
    },
    /// The interface's XDP is a program attached without the dispatcher.
    #[error(
        "XDP on interface {interface} is held by {holder}, attached directly (without attach.xdp.priority or proceedOn): program {program} cannot share it; set attach.xdp.priority on every program of the interface"
    )]
    HeldDirectly {
        /// The interface.
        interface: String,
        /// The program that wanted a slot.
        program: String,
        /// The direct holder.
        holder: String,
    },
    /// The interface does not exist.
    #[error("attaching program {program} to XDP on interface {interface}: no such interface")]
    NoInterface {
        /// The interface.
        interface: String,
        /// The program.
        program: String,
    },
    /// A pin of the dispatcher could not be read or written.
    #[error("XDP dispatcher of interface {interface}: {what} {}", path.display())]
    Pins {
        /// The interface.
        interface: String,
        /// What was done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A program could not be attached to its slot, or the dispatcher to the interface.
    #[error(
        "attaching program {program} to XDP on interface {interface} through the dispatcher: {what}"
    )]
    Attach {
        /// The interface.
        interface: String,
        /// The program.
        program: String,
        /// The step.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// `attach.xdp.priority` out of range (the CRD refuses it too; local manifests get here).
    #[error("program {program}: attach.xdp.priority {priority} is above {max}", max = bpfpin_crds::XdpAttach::MAX_PRIORITY)]
    Priority {
        /// The program.
        program: String,
        /// The priority asked for.
        priority: u16,
    },
}

impl DispatcherError {
    /// The reason written in status (the message is the error with its causes, see
    /// [`crate::pin::attach::AttachError`]).
    pub(crate) fn reason(&self) -> Reason {
        match self {
            DispatcherError::Priority { .. } => Reason::InvalidSpec,
            _ => Reason::AttachFailed,
        }
    }
}

/// Whether a program of a spec goes through the dispatcher (is loaded as an extension).
pub fn wants_dispatcher(spec: &ProgramSpec) -> bool {
    spec.attach
        .as_ref()
        .and_then(|a| a.xdp.as_ref())
        .is_some_and(|x| x.uses_dispatcher())
}

/// A dispatcher loaded with a configuration, not attached.
struct Loaded {
    ebpf: Ebpf,
    fd: ProgramFd,
    id: u32,
}

impl Loaded {
    fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(ENTRY)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked by load_dispatcher")
    }
}

fn load_dispatcher(interface: &str, conf: &Config) -> Result<Loaded, DispatcherError> {
    let err = |source: BoxError| DispatcherError::LoadDispatcher {
        interface: interface.to_owned(),
        source,
    };
    let mut ebpf = EbpfLoader::new()
        .override_global("conf", conf, true)
        .load(DISPATCHER_OBJECT)
        .map_err(|e| err(e.into()))?;
    let program: &mut Xdp = ebpf
        .program_mut(ENTRY)
        .ok_or_else(|| err(format!("no program {ENTRY} in the dispatcher object").into()))?
        .try_into()
        .map_err(|e: ProgramError| err(e.into()))?;
    program.load().map_err(|e| err(e.into()))?;
    let fd = program
        .fd()
        .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
        .map_err(|e| err(e.into()))?;
    let id = program.info().map_err(|e| err(e.into()))?.id();
    Ok(Loaded { ebpf, fd, id })
}

/// Loads `program` (an [`Extension`], see [`wants_dispatcher`]) against a fresh dispatcher's
/// slot 0; [`attach_and_pin`] later attaches it to the slot of the interface's dispatcher (an
/// extension may attach to any function with the same prototype, Linux 5.10).
pub fn load(
    root: &Path,
    spec: &ProgramSpec,
    program: &mut Extension,
) -> Result<(), DispatcherError> {
    let name = spec.name.as_str();
    let xdp = spec.attach.as_ref().and_then(|a| a.xdp.as_ref());
    let interfaces: Vec<String> = xdp.map(|x| x.interfaces.clone()).unwrap_or_default();
    let first = interfaces.first().cloned().unwrap_or_default();
    if let Some(priority) = xdp.and_then(|x| x.priority)
        && priority > bpfpin_crds::XdpAttach::MAX_PRIORITY
    {
        return Err(DispatcherError::Priority {
            program: name.to_owned(),
            priority,
        });
    }
    // Every slot enabled, so that the verifier keeps every slot function of the template.
    let template = load_dispatcher(
        &first,
        &Config {
            num_progs_enabled: MAX_SLOTS as u8,
            ..Config::default()
        },
    )?;
    match program.load(template.fd, "prog0") {
        Ok(()) => Ok(()),
        Err(source) if is_eperm(&source) => {
            let held = interfaces
                .iter()
                .map(|i| {
                    let holders = scan_holders(root, i);
                    if holders.is_empty() {
                        format!("no bpfpin program holds interface {i}")
                    } else {
                        format!("interface {i} is held by {}", names(&holders))
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            Err(DispatcherError::FreplaceRefused {
                program: name.to_owned(),
                interface: interfaces.join(", "),
                held,
                source: Box::new(source),
            })
        }
        Err(source) => Err(DispatcherError::LoadExtension {
            program: name.to_owned(),
            source: Box::new(source),
        }),
    }
}

fn is_eperm(err: &ProgramError) -> bool {
    matches!(err, ProgramError::LoadError { io_error, .. } if io_error.raw_os_error() == Some(libc::EPERM))
}

/// A bpfpin program pinned on an interface.
#[derive(Debug, Clone)]
struct Holder {
    object: String,
    program: String,
    /// `links/<program>/xdp-<interface>`.
    link: PathBuf,
    /// The link's type and program id (`None` when the pin cannot be read).
    kind: Option<(LinkType, u32)>,
    /// `links/<program>/dispatcher-xdp-<interface>`, when pinned.
    dispatcher_link: Option<PathBuf>,
}

impl Holder {
    fn describe(&self) -> String {
        format!("program {} of object {}", self.program, self.object)
    }
}

fn names(holders: &[Holder]) -> String {
    holders
        .iter()
        .map(Holder::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn link_info(path: &Path) -> Option<(LinkType, u32)> {
    let link = FdLink::from(PinnedLink::from_pin(path).ok()?);
    let info = link.info().ok()?;
    Some((info.link_type().ok()?, info.program_id()))
}

/// Every link pinned under the managed root for XDP on `interface` (every version of every
/// object: during an update both the old and the new version hold one).
fn scan_holders(root: &Path, interface: &str) -> Vec<Holder> {
    let file = format!("xdp-{}", encode_name(interface));
    let dispatcher_file = format!("{DISPATCHER_LINK_PREFIX}{file}");
    let mut out = Vec::new();
    let dirs = |p: &Path| -> Vec<(String, PathBuf)> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect();
        v.sort();
        v
    };
    for (object, obj_dir) in dirs(&root.join(VERSIONS_DIR)) {
        for (_, version_dir) in dirs(&obj_dir) {
            for (program, dir) in dirs(&version_dir.join("links")) {
                let link = dir.join(&file);
                if !link.exists() {
                    continue;
                }
                let dispatcher_link = Some(dir.join(&dispatcher_file)).filter(|p| p.exists());
                out.push(Holder {
                    object: object.clone(),
                    program,
                    kind: link_info(&link),
                    link,
                    dispatcher_link,
                });
            }
        }
    }
    out
}

/// `<root>/_versions/<object>/<version>/links/<program>/<file>`: the root and the object.
pub(crate) fn split_link_path(path: &Path) -> Option<(&Path, String)> {
    let version_dir = path.parent()?.parent()?.parent()?;
    let object_dir = version_dir.parent()?;
    let versions = object_dir.parent()?;
    (versions.file_name()? == VERSIONS_DIR).then_some(())?;
    Some((
        versions.parent()?,
        object_dir.file_name()?.to_str()?.to_owned(),
    ))
}

/// An exclusive flock(2) on `<bpffs>/xdp`, libxdp's lock: xdp-loader and this agent never
/// rebuild an interface's dispatcher at the same time. Released on drop.
struct Lock {
    _file: std::fs::File,
}

impl Lock {
    fn take(dir: &Path) -> std::io::Result<Lock> {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let file = std::fs::File::open(dir)?;
        // SAFETY: a valid descriptor; flock has no other preconditions.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Lock { _file: file })
    }
}

/// One slot of the dispatcher being built.
struct Slot {
    share: Share,
    /// Sort key after the priority (`object/program`, or the program's kernel name).
    name: String,
    who: String,
    source: SlotSource,
}

enum SlotSource {
    /// The program being attached now.
    New,
    /// A bpfpin program already in a slot: its link is re-pinned at `link`.
    Held { prog: PathBuf, link: PathBuf },
}

/// The interface's current dispatcher: its id, configuration and directory.
struct Current {
    id: u32,
    conf: Config,
    dir: PathBuf,
    /// A pin of the interface's XDP link.
    xdp_link: PathBuf,
}

fn read_config(id: u32) -> Result<Config, BoxError> {
    let info = aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .ok_or_else(|| format!("dispatcher program {id} is not loaded"))?;
    for map_id in info.map_ids()?.unwrap_or_default() {
        let data = MapData::from_id(map_id)?;
        if !data
            .info()?
            .name_as_str()
            .is_some_and(|n| n.ends_with("rodata"))
        {
            continue;
        }
        let array: Array<MapData, Config> = Array::try_from(Map::from_map_data(data)?)?;
        let conf = array.get(&0, 0)?;
        if conf.magic != config::MAGIC || conf.dispatcher_version != config::VERSION {
            return Err(format!(
                "program {id} on the interface is no libxdp dispatcher of version {} (magic {}, version {})",
                config::VERSION,
                conf.magic,
                conf.dispatcher_version
            )
            .into());
        }
        return Ok(conf);
    }
    Err(format!("dispatcher program {id} has no .rodata configuration").into())
}

fn slot_prog(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("prog{n}-prog"))
}

/// Attaches the extension `program` to a slot of `interface`'s dispatcher (creating the
/// dispatcher when the interface has none) and pins the slot's link at `path`. The dispatcher is
/// rebuilt with the new slot in priority order and swapped in with one link update.
pub fn attach_and_pin(
    program: &mut Program,
    name: &str,
    interface: &str,
    mode: Option<SpecXdpMode>,
    share: &Share,
    path: &Path,
) -> Result<(), DispatcherError> {
    let pins_err = |what: &'static str, path: &Path, source: BoxError| DispatcherError::Pins {
        interface: interface.to_owned(),
        what,
        path: path.to_path_buf(),
        source,
    };
    let attach_err = |what: String, source: BoxError| DispatcherError::Attach {
        interface: interface.to_owned(),
        program: name.to_owned(),
        what,
        source,
    };
    let Program::Extension(ext) = program else {
        return Err(attach_err(
            "the program was not loaded as an extension".into(),
            format!("{:?}", program.prog_type()).into(),
        ));
    };
    let (root, object) = split_link_path(path).ok_or_else(|| {
        pins_err(
            "the link path is not in a version directory",
            path,
            "unexpected layout".into(),
        )
    })?;
    let bpffs = root.parent().unwrap_or(root);
    let ifindex = {
        let c = std::ffi::CString::new(interface)
            .map_err(|e| pins_err("interface name", path, e.into()))?;
        // SAFETY: a NUL-terminated string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    };
    if ifindex == 0 {
        return Err(DispatcherError::NoInterface {
            interface: interface.to_owned(),
            program: name.to_owned(),
        });
    }
    let libxdp = bpffs.join(LIBXDP_DIR);
    let _lock = Lock::take(&libxdp).map_err(|e| pins_err("locking", &libxdp, e.into()))?;

    let holders = scan_holders(root, interface);
    let is_self = |h: &Holder| h.object == object && h.program == name;
    // The XDP link of the interface: a holder's pin of it, or this program's own earlier direct
    // link (an update from direct to shared replaces the program of that link).
    let mut xdp_link: Option<PathBuf> = None;
    let mut current: Option<Current> = None;
    for h in &holders {
        match (&h.kind, &h.dispatcher_link) {
            (Some((LinkType::Xdp, _)), _) if !is_self(h) => {
                return Err(DispatcherError::HeldDirectly {
                    interface: interface.to_owned(),
                    program: name.to_owned(),
                    holder: h.describe(),
                });
            }
            (Some((LinkType::Xdp, _)), _) => xdp_link = Some(h.link.clone()),
            (_, Some(dl)) if current.is_none() => {
                if let Some((_, id)) = link_info(dl) {
                    let conf = read_config(id).map_err(|e| pins_err("reading", dl, e))?;
                    current = Some(Current {
                        id,
                        conf,
                        dir: libxdp.join(format!("dispatch-{ifindex}-{id}")),
                        xdp_link: dl.clone(),
                    });
                }
            }
            _ => {}
        }
    }

    // The slots to keep: programs of the current dispatcher that still have a holder (or that
    // someone else attached), except this program's previous version.
    let mut slots = Vec::new();
    if let Some(cur) = &current {
        for n in 0..usize::from(cur.conf.num_progs_enabled).min(MAX_SLOTS) {
            let prog = slot_prog(&cur.dir, n);
            let Ok(info) = ProgramInfo::from_pin(&prog) else {
                continue;
            };
            let share = Share {
                priority: cur.conf.run_prios[n],
                chain_mask: cur.conf.chain_call_actions[n],
            };
            let holder = holders
                .iter()
                .find(|h| matches!(h.kind, Some((LinkType::Tracing, id)) if id == info.id()));
            match holder {
                Some(h) if is_self(h) => {}
                Some(h) => slots.push(Slot {
                    share,
                    name: format!("{}/{}", h.object, h.program),
                    who: h.describe(),
                    source: SlotSource::Held {
                        prog,
                        link: h.link.clone(),
                    },
                }),
                // Its holder is gone (the slot's link was unpinned with it): dropped. (Programs
                // xdp-loader attached cannot be here: libxdp attaches through netlink, and the
                // kernel refuses that while bpfpin's bpf_link holds the interface.)
                None => {}
            }
        }
    }
    if slots.len() >= MAX_SLOTS {
        return Err(DispatcherError::Full {
            interface: interface.to_owned(),
            program: name.to_owned(),
            holders: slots
                .iter()
                .map(|s| s.who.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    slots.push(Slot {
        share: share.clone(),
        name: format!("{object}/{name}"),
        who: format!("program {name} of object {object}"),
        source: SlotSource::New,
    });
    slots.sort_by(|a, b| (a.share.priority, &a.name).cmp(&(b.share.priority, &b.name)));

    let shares: Vec<Share> = slots.iter().map(|s| s.share.clone()).collect();
    let mut next = load_dispatcher(interface, &config_for(&shares))?;
    let dir = libxdp.join(format!("dispatch-{ifindex}-{}", next.id));
    let built = build(&mut next, ext, &slots, &dir, interface, name);
    let links = match built {
        Ok(links) => links,
        Err(e) => {
            remove_dir(&dir);
            return Err(e);
        }
    };

    // The swap: one link update when the interface has an XDP link, else a new link.
    let swap = match current.as_ref().map(|c| c.xdp_link.clone()).or(xdp_link) {
        Some(pin) => (|| -> Result<FdLink, BoxError> {
            let link = XdpLink::try_from(FdLink::from(PinnedLink::from_pin(&pin)?))?;
            let id = next.program().attach_to_link(link)?;
            Ok(FdLink::try_from(next.program().take_link(id)?)?)
        })()
        .map_err(|e| {
            attach_err(
                "updating the interface's XDP link to the new dispatcher".into(),
                e,
            )
        }),
        None => {
            let mode = match mode {
                None => XdpMode::Default,
                Some(SpecXdpMode::Skb) => XdpMode::Skb,
                Some(SpecXdpMode::Drv) => XdpMode::Driver,
                Some(SpecXdpMode::Hw) => XdpMode::Hardware,
            };
            (|| -> Result<FdLink, BoxError> {
                let id = next.program().attach(interface, mode)?;
                Ok(FdLink::try_from(next.program().take_link(id)?)?)
            })()
            .map_err(|e| {
                let what = if has_errno(e.as_ref(), libc::EBUSY) {
                    "attaching the dispatcher to the interface, which holds an XDP program bpfpin did not attach (xdp-loader, ip link)"
                } else {
                    "attaching the dispatcher to the interface"
                };
                attach_err(what.into(), e)
            })
        }
    };
    let xdp = match swap {
        Ok(l) => l,
        Err(e) => {
            remove_dir(&dir);
            return Err(e);
        }
    };

    // Pins: this program's slot link and its pin of the XDP link; the other holders' slot links
    // replace theirs (each by one rename, so a holder always has a link pinned).
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let dispatcher_pin = path.with_file_name(format!("{DISPATCHER_LINK_PREFIX}{file}"));
    let _ = std::fs::remove_file(&dispatcher_pin);
    xdp.pin(&dispatcher_pin)
        .map_err(|e| pins_err("pinning", &dispatcher_pin, e.into()))?;
    for (slot, link) in slots.iter().zip(links) {
        match &slot.source {
            SlotSource::New => {
                link.pin(path)
                    .map_err(|e| pins_err("pinning", path, e.into()))?;
            }
            SlotSource::Held { link: at, .. } => {
                let f = at.file_name().and_then(|f| f.to_str()).unwrap_or_default();
                let tmp = at.with_file_name(format!("{NEXT_PREFIX}{f}"));
                let _ = std::fs::remove_file(&tmp);
                link.pin(&tmp)
                    .map_err(|e| pins_err("pinning", &tmp, e.into()))?;
                std::fs::rename(&tmp, at).map_err(|e| pins_err("renaming over", at, e.into()))?;
            }
        }
    }
    // Older dispatchers of this interface: their slot links (and programs) go with the pins.
    for entry in std::fs::read_dir(&libxdp).into_iter().flatten().flatten() {
        let p = entry.path();
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&format!("dispatch-{ifindex}-")));
        if stale && p != dir {
            remove_dir(&p);
        }
    }
    tracing::info!(
        program = name,
        object = %object,
        interface,
        dispatcher = next.id,
        replaced = current.as_ref().map(|c| c.id),
        order = ?slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "attached through the XDP dispatcher"
    );
    Ok(())
}

/// Attaches every slot's program to the new dispatcher and pins the slot programs in its
/// directory. Returns the slot links, in slot order.
fn build(
    next: &mut Loaded,
    ext: &mut Extension,
    slots: &[Slot],
    dir: &Path,
    interface: &str,
    name: &str,
) -> Result<Vec<FdLink>, DispatcherError> {
    let pins_err = |what: &'static str, path: &Path, source: BoxError| DispatcherError::Pins {
        interface: interface.to_owned(),
        what,
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir(dir).map_err(|e| pins_err("creating", dir, e.into()))?;
    let mut links = Vec::with_capacity(slots.len());
    for (n, slot) in slots.iter().enumerate() {
        let func = format!("prog{n}");
        let attach = |prog: &mut Extension| -> Result<FdLink, BoxError> {
            let id = prog.attach_to_program(&next.fd, &func)?;
            Ok(FdLink::from(prog.take_link(id)?))
        };
        let fail = |e: BoxError| DispatcherError::Attach {
            interface: interface.to_owned(),
            program: name.to_owned(),
            what: format!("attaching {} to slot {n} of the new dispatcher", slot.who),
            source: e,
        };
        let link = match &slot.source {
            SlotSource::New => {
                let link = attach(ext).map_err(fail)?;
                let at = slot_prog(dir, n);
                ext.pin(&at)
                    .map_err(|e| pins_err("pinning", &at, e.into()))?;
                link
            }
            SlotSource::Held { prog, .. } => {
                let mut p = Extension::from_pin(prog).map_err(|e| fail(e.into()))?;
                let link = attach(&mut p).map_err(fail)?;
                let at = slot_prog(dir, n);
                p.pin(&at).map_err(|e| pins_err("pinning", &at, e.into()))?;
                link
            }
        };
        links.push(link);
    }
    Ok(links)
}

/// Whether the kernel returned `errno` somewhere in the error's chain.
pub(crate) fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Unpins everything in a dispatcher directory and removes it (best effort: a leftover is swept
/// at the interface's next rebuild).
fn remove_dir(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    let _ = std::fs::remove_dir(dir);
}
