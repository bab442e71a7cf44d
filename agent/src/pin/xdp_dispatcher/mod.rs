//! Many XDP programs on one interface: bpfpin's libxdp-compatible dispatcher.
//!
//! A program whose `attach.xdp` sets `priority` or `proceedOn` is loaded as an extension
//! (`BPF_PROG_TYPE_EXT`, freplace) instead of an XDP program, and runs in a slot of the
//! interface's dispatcher (`bpf/xdp_dispatcher.bpf.c`, libxdp's protocol version 2). Every change
//! of the interface's set of programs loads a new dispatcher with the new order in its `.rodata`,
//! attaches every program to its slot, and swaps the new dispatcher in with one netlink
//! `XDP_FLAGS_REPLACE` naming the one it replaces, as libxdp does ([`rebuild`]): packets see
//! either the old chain or the new one, and libxdp (xdp-loader) can rebuild bpfpin's dispatcher
//! and bpfpin libxdp's, each keeping the other's programs.
//!
//! Pins (the bpffs the agent manages, e.g. `/sys/fs/bpf`; libxdp's `LIBXDP_BPFFS`):
//! ```text
//! <bpffs>/xdp/                                   libxdp's directory; flock(2) on it is the lock
//!   dispatch-<ifindex>-<dispatcher id>/prog<N>-prog   the program in slot N (libxdp's layout)
//!   dispatch-<ifindex>-<dispatcher id>/prog<N>-link   its slot link (libxdp's layout)
//!   bpfpin-slots/<ifindex>-<id>-<prio>-<mask>    which slot programs are bpfpin's ([`ledger`])
//! <root>/_versions/<object>/<version>/links/<program>/
//!   xdp-<interface>                              the program's slot link (a second pin)
//!   dispatcher-xdp-<interface>                   only on a link-held dispatcher (see below)
//! ```
//! The dispatcher's directory holds the slots, so removing an object's pins does not detach its
//! program: [`sync`], after the pass's sweep, rebuilds each interface whose dispatcher holds a
//! bpfpin program without a holder, or lacks a holder's program (a rolled-back update), and
//! detaches a dispatcher left with no program. Nothing is kept in memory: a restarted agent finds
//! the dispatcher (netlink), its slots and their holders from these pins. A dispatcher an older
//! bpfpin attached through a bpf_link (pinned by every holder as `dispatcher-xdp-<interface>`) is
//! adopted and rebuilt with `BPF_LINK_UPDATE` until its last holder goes: the kernel refuses to
//! replace a link through netlink, and detaching it first would drop packets.

mod config;
mod ledger;
mod rebuild;
pub mod tcx;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData};
use aya::programs::links::{FdLink, LinkType, PinnedLink};
use aya::programs::{Extension, Program, ProgramError, ProgramFd, ProgramInfo, Xdp};
use aya::{Ebpf, EbpfLoader};
use bpfpin_crds::{ProgramSpec, XdpMode as SpecXdpMode};

pub use config::{Config, MAX_SLOTS, Share, config_for, mask_of};
pub use ledger::LEDGER_DIR;
use ledger::Ledger;
use rebuild::{Hook, Iface, Owner, Refusal, Slot, read_hook};

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
/// `xdp` is the program's attach point with its interfaces resolved (patterns and
/// `primaryNodeInterface` made names, [`crate::pin::interfaces`]).
pub fn load(
    root: &Path,
    spec: &ProgramSpec,
    xdp: Option<&bpfpin_crds::XdpAttach>,
    program: &mut Extension,
) -> Result<(), DispatcherError> {
    let name = spec.name.as_str();
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

    /// Its slot in a dispatcher: its program `prog` (kernel id `id`) in place `share`.
    fn slot(&self, share: Share, prog: PathBuf, id: u32) -> Slot {
        Slot {
            share,
            name: format!("{}/{}", self.object, self.program),
            who: self.describe(),
            prog: Some(prog),
            id,
            owner: Owner::Bpfpin {
                link: self.link.clone(),
            },
        }
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

fn slot_link(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("prog{n}-link"))
}

fn ifindex_of(interface: &str) -> u32 {
    match std::ffi::CString::new(interface) {
        // SAFETY: a NUL-terminated string.
        Ok(c) => unsafe { libc::if_nametoindex(c.as_ptr()) },
        Err(_) => 0,
    }
}

/// Attaches the extension `program` to a slot of `interface`'s dispatcher (creating the
/// dispatcher when the interface has none) and pins the slot's link at `path`. The dispatcher is
/// rebuilt with the new slot in priority order, every other program kept (bpfpin's and
/// xdp-loader's), and swapped in with one netlink replacement (or one link update).
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
    let ifindex = ifindex_of(interface);
    if ifindex == 0 {
        return Err(DispatcherError::NoInterface {
            interface: interface.to_owned(),
            program: name.to_owned(),
        });
    }
    let libxdp = bpffs.join(LIBXDP_DIR);
    let _lock = Lock::take(&libxdp).map_err(|e| pins_err("locking", &libxdp, e.into()))?;
    let ledger = Ledger::new(&libxdp);
    let iface = Iface {
        name: interface,
        ifindex,
        libxdp: &libxdp,
        ledger: &ledger,
    };

    let holders = scan_holders(root, interface);
    let is_self = |h: &Holder| h.object == object && h.program == name;
    let hook = match read_hook(&iface, &holders, &is_self)? {
        Ok(hook) => hook,
        Err(Refusal::Direct(h)) => {
            return Err(DispatcherError::HeldDirectly {
                interface: interface.to_owned(),
                program: name.to_owned(),
                holder: h.describe(),
            });
        }
        Err(Refusal::Foreign(id)) => {
            return Err(attach_err(
                "attaching the dispatcher to the interface, which holds an XDP program bpfpin did not attach (xdp-loader, ip link)".into(),
                format!("program {id} is attached and is no libxdp dispatcher").into(),
            ));
        }
    };
    // This program's previous version leaves its slot to the new one.
    let (mut slots, _) = rebuild::current_slots(&iface, &hook, &holders, &is_self);
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
        prog: None,
        id: 0,
        owner: Owner::Bpfpin {
            link: path.to_path_buf(),
        },
    });
    let order: Vec<String> = {
        let mut v: Vec<_> = slots
            .iter()
            .map(|s| (s.share.priority, s.name.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    };
    let replaced = match &hook {
        Hook::Netlink { id, .. } => Some(*id),
        Hook::Link { current, .. } => current.as_ref().map(|c| c.0),
        Hook::Empty => None,
    };
    let id = rebuild::rebuild(
        &iface,
        &hook,
        slots,
        Some((ext, path)),
        rebuild::mode_flag(mode),
        name,
    )?;
    tracing::info!(
        program = name,
        object = %object,
        interface,
        dispatcher = id,
        replaced,
        order = ?order,
        "attached through the XDP dispatcher"
    );
    Ok(())
}

/// The pass's clean-up of every interface where bpfpin has put programs in a dispatcher, after
/// the sweep: a program whose object or version is gone leaves its slot, a holder whose program
/// lost its slot (a failed update that the loader rolled back, `xdp-loader unload` of it) gets it
/// back, and a dispatcher left with no program leaves the interface. Each is one rebuild, as an
/// attach is; an interface whose dispatcher already holds what it should is not touched (so a
/// restart adopts). xdp-loader's programs are kept. Failures are logged; the next pass retries.
pub fn sync(root: &Path) {
    let bpffs = root.parent().unwrap_or(root);
    let libxdp = bpffs.join(LIBXDP_DIR);
    if !libxdp.is_dir() {
        return;
    }
    let Ok(_lock) = Lock::take(&libxdp) else {
        tracing::warn!(path = %libxdp.display(), "cannot lock the XDP dispatchers' directory: not synced this pass");
        return;
    };
    let ledger = Ledger::new(&libxdp);
    let mut ifindexes: Vec<u32> = ledger.entries().iter().map(|e| e.ifindex).collect();
    for e in std::fs::read_dir(&libxdp).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(i) = name
            .strip_prefix("dispatch-")
            .and_then(|r| r.split('-').next())
            .and_then(|i| i.parse().ok())
        {
            ifindexes.push(i);
        }
    }
    ifindexes.sort_unstable();
    ifindexes.dedup();
    for ifindex in ifindexes {
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: the buffer has IF_NAMESIZE bytes, as if_indextoname requires.
        let named = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
        let iface_name = if named.is_null() {
            None
        } else {
            // SAFETY: if_indextoname wrote a NUL-terminated name.
            Some(
                unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        let Some(interface) = iface_name else {
            // The interface is gone, and its XDP programs with it.
            let iface = Iface {
                name: "?",
                ifindex,
                libxdp: &libxdp,
                ledger: &ledger,
            };
            if ledger.entries().iter().any(|e| e.ifindex == ifindex) {
                rebuild::remove_other_dirs(&iface, None);
                ledger.prune(ifindex, &|_| false);
            }
            continue;
        };
        let iface = Iface {
            name: &interface,
            ifindex,
            libxdp: &libxdp,
            ledger: &ledger,
        };
        if let Err(e) = sync_interface(root, &iface) {
            tracing::warn!(interface, error = %crate::error::chain(&e), "could not sync the XDP dispatcher (retried next pass)");
        }
    }
}

fn sync_interface(root: &Path, iface: &Iface<'_>) -> Result<(), DispatcherError> {
    let holders: Vec<Holder> = scan_holders(root, iface.name)
        .into_iter()
        .filter(|h| matches!(h.kind, Some((LinkType::Tracing, _))))
        .collect();
    let ours = iface
        .ledger
        .entries()
        .iter()
        .any(|e| e.ifindex == iface.ifindex);
    if holders.is_empty() && !ours {
        // Only another loader's dispatcher: not bpfpin's to touch.
        return Ok(());
    }
    let hook = match read_hook(iface, &holders, &|_| false)? {
        Ok(hook) => hook,
        // Someone else replaced the dispatcher with a plain program: bpfpin's slots are gone with
        // it, and bpfpin does not take the interface back.
        Err(_) => return Ok(()),
    };
    let (mut slots, dropped) = rebuild::current_slots(iface, &hook, &holders, &|_| false);
    let mut missing = Vec::new();
    for h in &holders {
        let Some((_, id)) = h.kind else { continue };
        if slots.iter().any(|s| s.id == id) {
            continue;
        }
        let Some(prog) = rebuild::holder_prog(h) else {
            continue;
        };
        let share = iface
            .ledger
            .of(iface.ifindex, id)
            .map(|e| e.share)
            .unwrap_or(Share {
                priority: u32::from(bpfpin_crds::XdpAttach::DEFAULT_PRIORITY),
                chain_mask: mask_of(&[]),
            });
        missing.push(h.describe());
        slots.push(h.slot(share, prog, id));
    }
    let in_slots: Vec<u32> = slots.iter().map(|s| s.id).collect();
    if dropped.is_empty() && missing.is_empty() {
        if matches!(hook, Hook::Empty) {
            rebuild::remove_other_dirs(iface, None);
        } else if let Hook::Netlink { dir, conf, .. } = &hook {
            // Holders re-pinned at the dispatcher's slot links: after xdp-loader rebuilt it, their
            // old links would keep the old dispatcher loaded.
            for n in 0..usize::from(conf.num_progs_enabled).min(MAX_SLOTS) {
                let link = slot_link(dir, n);
                let Ok(info) = ProgramInfo::from_pin(slot_prog(dir, n)) else {
                    continue;
                };
                if let Some(h) = holders
                    .iter()
                    .find(|h| matches!(h.kind, Some((_, p)) if p == info.id()))
                    && link_id(&h.link) != link_id(&link)
                {
                    rebuild::repin(iface, &link, &h.link)?;
                }
            }
        }
        iface.ledger.prune(iface.ifindex, &|id| {
            in_slots.contains(&id)
                || holders
                    .iter()
                    .any(|h| matches!(h.kind, Some((_, p)) if p == id))
        });
        return Ok(());
    }
    let id = rebuild::rebuild(iface, &hook, slots, None, 0, "(sync)")?;
    iface.ledger.prune(iface.ifindex, &|id| {
        in_slots.contains(&id)
            || holders
                .iter()
                .any(|h| matches!(h.kind, Some((_, p)) if p == id))
    });
    tracing::info!(
        interface = iface.name,
        dispatcher = id,
        dropped = ?dropped,
        restored = ?missing,
        "rebuilt the XDP dispatcher"
    );
    Ok(())
}

fn link_id(path: &Path) -> Option<u32> {
    let link = FdLink::from(PinnedLink::from_pin(path).ok()?);
    Some(link.info().ok()?.id())
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
