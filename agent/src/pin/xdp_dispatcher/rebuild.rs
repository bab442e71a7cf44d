//! One rebuild of an interface's dispatcher, shared by an attach and by the pass's sync: read what
//! holds the interface's XDP hook, decide the slots, load a new dispatcher, attach every slot,
//! pin libxdp's layout, and swap it in with one netlink `XDP_FLAGS_REPLACE` (or one
//! `BPF_LINK_UPDATE` for a dispatcher attached through a bpf_link by an older bpfpin).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkType, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Extension, ProgramInfo};

use super::ledger::Ledger;
use super::{
    BoxError, Config, DISPATCHER_LINK_PREFIX, DispatcherError, Holder, Loaded, MAX_SLOTS,
    NEXT_PREFIX, Share, config_for, link_info, load_dispatcher, read_config, remove_dir, slot_link,
    slot_prog,
};
use crate::pin::layout::Layout;

// linux/if_link.h
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// The interface a rebuild is for.
pub(super) struct Iface<'a> {
    pub name: &'a str,
    pub ifindex: u32,
    /// `<bpffs>/xdp`.
    pub libxdp: &'a Path,
    pub ledger: &'a Ledger,
}

impl Iface<'_> {
    fn pins_err(&self, what: &'static str, path: &Path, source: BoxError) -> DispatcherError {
        DispatcherError::Pins {
            interface: self.name.to_owned(),
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    fn dir(&self, id: u32) -> PathBuf {
        self.libxdp.join(format!("dispatch-{}-{id}", self.ifindex))
    }
}

/// What holds the interface's XDP hook now.
pub(super) enum Hook {
    Empty,
    /// A dispatcher attached through netlink, bpfpin's or libxdp's (xdp-loader).
    Netlink {
        id: u32,
        /// The attach mode's flag (`XDP_FLAGS_SKB_MODE`, …): a replacement must name it.
        mode: u32,
        conf: Config,
        dir: PathBuf,
    },
    /// A bpf_link every holder pins (`dispatcher-xdp-<interface>`): a dispatcher an older bpfpin
    /// attached, or this program's own direct link (an update from direct to shared). The kernel
    /// refuses a netlink replacement of a link, and detaching it first would drop packets, so it
    /// is adopted: rebuilt with link updates until its last holder goes.
    Link {
        pin: PathBuf,
        current: Option<(u32, Config, PathBuf)>,
    },
}

/// A program XDP on the interface runs that bpfpin did not attach and cannot share with.
pub(super) enum Refusal {
    Direct(Holder),
    Foreign(u32),
}

/// Reads the hook. `is_self` is the program being attached (its own direct link is no refusal).
pub(super) fn read_hook(
    iface: &Iface<'_>,
    holders: &[Holder],
    is_self: &dyn Fn(&Holder) -> bool,
) -> Result<Result<Hook, Refusal>, DispatcherError> {
    let (attached, id) = aya::netlink_xdp_query(iface.ifindex as i32).map_err(|e| {
        iface.pins_err(
            "reading the XDP program of the interface (netlink)",
            Path::new(iface.name),
            e.into(),
        )
    })?;
    if id == 0 {
        return Ok(Ok(Hook::Empty));
    }
    for h in holders {
        if let Some(dl) = &h.dispatcher_link
            && link_info(dl).is_some_and(|(_, p)| p == id)
        {
            let conf = read_config(id).map_err(|e| iface.pins_err("reading", dl, e))?;
            return Ok(Ok(Hook::Link {
                pin: dl.clone(),
                current: Some((id, conf, iface.dir(id))),
            }));
        }
        if let Some((LinkType::Xdp, p)) = h.kind
            && p == id
        {
            return Ok(if is_self(h) {
                Ok(Hook::Link {
                    pin: h.link.clone(),
                    current: None,
                })
            } else {
                Err(Refusal::Direct(h.clone()))
            });
        }
    }
    let mode = match attached {
        1 => XDP_FLAGS_DRV_MODE,
        2 => XDP_FLAGS_SKB_MODE,
        3 => XDP_FLAGS_HW_MODE,
        _ => 0,
    };
    Ok(match read_config(id) {
        Ok(conf) => Ok(Hook::Netlink {
            id,
            mode,
            conf,
            dir: iface.dir(id),
        }),
        Err(_) => Err(Refusal::Foreign(id)),
    })
}

/// Who a slot's program belongs to.
#[derive(Clone)]
pub(super) enum Owner {
    /// A bpfpin program: its holder's pin of the slot link.
    Bpfpin { link: PathBuf },
    /// A program someone else (xdp-loader) put in the dispatcher: kept as it is.
    Foreign,
}

/// One slot of the dispatcher being built.
pub(super) struct Slot {
    pub share: Share,
    /// Sort key after the priority (`object/program`, or the program's kernel name).
    pub name: String,
    pub who: String,
    /// The program, pinned (`None`: the program being attached now).
    pub prog: Option<PathBuf>,
    pub id: u32,
    pub owner: Owner,
}

/// The slots of the hook's dispatcher, read from its pins: `(kept, dropped)`. A slot is kept when
/// its program has a holder, or is not bpfpin's (xdp-loader's); a bpfpin program whose holder is
/// gone (the ledger knows it was bpfpin's) is dropped, and so is `drop_self`'s.
pub(super) fn current_slots(
    iface: &Iface<'_>,
    hook: &Hook,
    holders: &[Holder],
    drop_self: &dyn Fn(&Holder) -> bool,
) -> (Vec<Slot>, Vec<u32>) {
    let (conf, dir, link_held) = match hook {
        Hook::Empty | Hook::Link { current: None, .. } => return (Vec::new(), Vec::new()),
        Hook::Netlink { conf, dir, .. } => (conf, dir, false),
        Hook::Link {
            current: Some((_, conf, dir)),
            ..
        } => (conf, dir, true),
    };
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for n in 0..usize::from(conf.num_progs_enabled).min(MAX_SLOTS) {
        let prog = slot_prog(dir, n);
        let Ok(info) = ProgramInfo::from_pin(&prog) else {
            tracing::warn!(interface = iface.name, slot = n, path = %prog.display(), "a slot of the XDP dispatcher has no pinned program: dropped");
            continue;
        };
        let id = info.id();
        let share = Share {
            priority: conf.run_prios[n],
            chain_mask: conf.chain_call_actions[n],
        };
        let holder = holders
            .iter()
            .find(|h| matches!(h.kind, Some((LinkType::Tracing, p)) if p == id));
        match holder {
            Some(h) if drop_self(h) => dropped.push(id),
            Some(h) => kept.push(h.slot(share, prog, id)),
            // Its holder is gone. Only bpfpin attaches to a link-held dispatcher (libxdp
            // attaches through netlink, which the kernel refuses there).
            None if link_held || iface.ledger.knows(iface.ifindex, id) => dropped.push(id),
            None => {
                let name = info.name_as_str().unwrap_or("?").to_owned();
                kept.push(Slot {
                    share,
                    who: format!("program {name} (id {id}) that another loader attached"),
                    name,
                    prog: Some(prog),
                    id,
                    owner: Owner::Foreign,
                });
            }
        }
    }
    (kept, dropped)
}

/// Loads a dispatcher for `slots` (sorted here), attaches every slot, pins libxdp's layout
/// (`prog<N>-prog`, `prog<N>-link`) and the ledger, swaps it in and re-pins every holder's slot
/// link. `new` is the program being attached (the slot whose `prog` is `None`), `pin` where its
/// slot link goes, `spec_mode` its mode when the interface has no XDP program yet. Returns the
/// new dispatcher's id.
pub(super) fn rebuild(
    iface: &Iface<'_>,
    hook: &Hook,
    mut slots: Vec<Slot>,
    mut new: Option<(&mut Extension, &Path)>,
    spec_mode: u32,
    program: &str,
) -> Result<Option<u32>, DispatcherError> {
    let attach_err = |what: String, source: BoxError| DispatcherError::Attach {
        interface: iface.name.to_owned(),
        program: program.to_owned(),
        what,
        source,
    };
    if slots.is_empty() {
        detach(iface, hook).map_err(|e| attach_err("detaching the empty dispatcher".into(), e))?;
        return Ok(None);
    }
    slots.sort_by(|a, b| (a.share.priority, &a.name).cmp(&(b.share.priority, &b.name)));
    let shares: Vec<Share> = slots.iter().map(|s| s.share.clone()).collect();
    let mut next = load_dispatcher(iface.name, &config_for(&shares))?;
    let dir = iface.dir(next.id);
    let links = match build(
        iface,
        &mut next,
        &mut slots,
        new.as_mut().map(|(e, _)| &mut **e),
        &dir,
        program,
    ) {
        Ok(links) => links,
        Err(e) => {
            remove_dir(&dir);
            return Err(e);
        }
    };
    let xdp = match swap(iface, hook, &mut next, spec_mode) {
        Ok(l) => l,
        Err(e) => {
            remove_dir(&dir);
            return Err(attach_err(e.0, e.1));
        }
    };

    // The holders' pins: each slot link replaces the old one by one rename, so a holder always
    // has a link pinned.
    let new_pin = new.as_ref().map(|(_, p)| p.to_path_buf());
    for (slot, link) in slots.iter().zip(links) {
        let at = match (&slot.owner, &slot.prog) {
            (Owner::Foreign, _) => continue,
            (_, None) => new_pin.clone().expect("a new slot has a pin path"),
            (Owner::Bpfpin { link, .. }, Some(_)) => link.clone(),
        };
        repin(iface, &link, &at)?;
    }
    // On a link-held hook the new holder pins the interface's XDP link too.
    if let (Some(xdp), Some(path)) = (xdp, &new_pin) {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let dispatcher_pin = path.with_file_name(format!("{DISPATCHER_LINK_PREFIX}{file}"));
        let _ = std::fs::remove_file(&dispatcher_pin);
        xdp.pin(&dispatcher_pin)
            .map_err(|e| iface.pins_err("pinning", &dispatcher_pin, e.into()))?;
    }
    remove_other_dirs(iface, Some(&dir));
    Ok(Some(next.id))
}

/// Pins the link pinned at `from` also at `at`, replacing what `at` held by one rename.
pub(super) fn repin(iface: &Iface<'_>, from: &Path, at: &Path) -> Result<(), DispatcherError> {
    let link = FdLink::from(
        PinnedLink::from_pin(from).map_err(|e| iface.pins_err("reading", from, e.into()))?,
    );
    let f = at.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let tmp = at.with_file_name(format!("{NEXT_PREFIX}{f}"));
    let _ = std::fs::remove_file(&tmp);
    link.pin(&tmp)
        .map_err(|e| iface.pins_err("pinning", &tmp, e.into()))?;
    std::fs::rename(&tmp, at).map_err(|e| iface.pins_err("renaming over", at, e.into()))
}

/// Removes the interface's dispatcher directories other than `keep`: a dispatcher that left the
/// interface takes its slot links (and programs) with its pins.
pub(super) fn remove_other_dirs(iface: &Iface<'_>, keep: Option<&Path>) {
    let prefix = format!("dispatch-{}-", iface.ifindex);
    for entry in std::fs::read_dir(iface.libxdp)
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix));
        if ours && Some(p.as_path()) != keep {
            remove_dir(&p);
        }
    }
}

/// Attaches every slot's program to the new dispatcher and pins libxdp's layout in its directory
/// (and bpfpin's programs in the ledger). Returns the slot links' pins, in slot order.
fn build(
    iface: &Iface<'_>,
    next: &mut Loaded,
    slots: &mut [Slot],
    mut new: Option<&mut Extension>,
    dir: &Path,
    program: &str,
) -> Result<Vec<PathBuf>, DispatcherError> {
    std::fs::create_dir(dir).map_err(|e| iface.pins_err("creating", dir, e.into()))?;
    let mut links = Vec::with_capacity(slots.len());
    for (n, slot) in slots.iter_mut().enumerate() {
        let func = format!("prog{n}");
        let fail = |e: BoxError| DispatcherError::Attach {
            interface: iface.name.to_owned(),
            program: program.to_owned(),
            what: format!("attaching {} to slot {n} of the new dispatcher", slot.who),
            source: e,
        };
        let mut opened;
        let ext: &mut Extension = match &slot.prog {
            None => new.as_deref_mut().expect("the new program is given"),
            Some(pin) => {
                opened = Extension::from_pin(pin).map_err(|e| fail(e.into()))?;
                &mut opened
            }
        };
        let attached = (|| -> Result<FdLink, BoxError> {
            let id = ext.attach_to_program(&next.fd, &func)?;
            Ok(FdLink::from(ext.take_link(id)?))
        })()
        .map_err(fail)?;
        if slot.id == 0 {
            slot.id = ext.info().map_err(|e| fail(e.into()))?.id();
        }
        let at = slot_prog(dir, n);
        ext.pin(&at)
            .map_err(|e| iface.pins_err("pinning", &at, e.into()))?;
        if matches!(slot.owner, Owner::Bpfpin { .. }) {
            iface
                .ledger
                .record(iface.ifindex, slot.id, &slot.share, &at)
                .map_err(|(p, e)| iface.pins_err("pinning", &p, e))?;
        }
        // libxdp's layout: the slot link beside the program (its unpin and its rebuilds use it).
        let link_at = slot_link(dir, n);
        attached
            .pin(&link_at)
            .map_err(|e| iface.pins_err("pinning", &link_at, e.into()))?;
        links.push(link_at);
    }
    Ok(links)
}

type SwapError = (String, BoxError);

/// Puts the new dispatcher on the interface: one netlink call that names the program it replaces
/// (the kernel refuses it with EEXIST when someone replaced it meanwhile), or one link update.
/// Returns the XDP link for a link-held hook (the new holder pins it).
fn swap(
    iface: &Iface<'_>,
    hook: &Hook,
    next: &mut Loaded,
    spec_mode: u32,
) -> Result<Option<FdLink>, SwapError> {
    match hook {
        Hook::Link { pin, .. } => (|| -> Result<Option<FdLink>, BoxError> {
            let link = XdpLink::try_from(FdLink::from(PinnedLink::from_pin(pin)?))?;
            let id = next.program().attach_to_link(link)?;
            Ok(Some(FdLink::try_from(next.program().take_link(id)?)?))
        })()
        .map_err(|e| {
            (
                "updating the interface's XDP link to the new dispatcher".to_owned(),
                e,
            )
        }),
        Hook::Empty => {
            // SAFETY: netlink_xdp_set only writes the request into its own buffer.
            let r = unsafe {
                aya::netlink_xdp_set(
                    iface.ifindex as i32,
                    Some(next.fd.as_fd()),
                    None,
                    XDP_FLAGS_UPDATE_IF_NOEXIST | spec_mode,
                )
            };
            r.map(|()| None).map_err(|e| {
                let what = if e.raw_os_error() == Some(libc::EBUSY)
                    || e.raw_os_error() == Some(libc::EEXIST)
                {
                    "attaching the dispatcher to the interface, which holds an XDP program bpfpin did not attach (xdp-loader, ip link)"
                } else {
                    "attaching the dispatcher to the interface"
                };
                (what.to_owned(), e.into())
            })
        }
        Hook::Netlink { id, mode, .. } => {
            let old = program_fd(*id)
                .map_err(|e| ("opening the interface's current dispatcher".to_owned(), e))?;
            // SAFETY: as above.
            let r = unsafe {
                aya::netlink_xdp_set(
                    iface.ifindex as i32,
                    Some(next.fd.as_fd()),
                    Some(old.as_fd()),
                    XDP_FLAGS_REPLACE | mode,
                )
            };
            r.map(|()| None).map_err(|e| {
                let what = if e.raw_os_error() == Some(libc::EEXIST) {
                    "replacing the interface's dispatcher, which another loader replaced meanwhile (the next pass retries)"
                } else {
                    "replacing the interface's dispatcher (netlink)"
                };
                (what.to_owned(), e.into())
            })
        }
    }
}

/// Takes a dispatcher whose slots are all gone off the interface, with its pins.
fn detach(iface: &Iface<'_>, hook: &Hook) -> Result<(), BoxError> {
    match hook {
        Hook::Netlink { id, mode, .. } => {
            let old = program_fd(*id)?;
            // SAFETY: as in swap.
            unsafe {
                aya::netlink_xdp_set(
                    iface.ifindex as i32,
                    None,
                    Some(old.as_fd()),
                    XDP_FLAGS_REPLACE | mode,
                )
            }?;
            tracing::info!(
                interface = iface.name,
                dispatcher = id,
                "detached the empty XDP dispatcher"
            );
        }
        // A link leaves with its last holder's pin; nothing is attached otherwise.
        Hook::Link { .. } | Hook::Empty => {}
    }
    remove_other_dirs(iface, None);
    Ok(())
}

fn program_fd(id: u32) -> Result<aya::programs::ProgramFd, BoxError> {
    let info = aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .ok_or_else(|| format!("program {id} is not loaded"))?;
    Ok(info.fd()?)
}

/// The `XDP_FLAGS_*` mode bit of a spec's mode (none: the kernel's default).
pub(super) fn mode_flag(mode: Option<bpfpin_crds::XdpMode>) -> u32 {
    match mode {
        None => 0,
        Some(bpfpin_crds::XdpMode::Skb) => XDP_FLAGS_SKB_MODE,
        Some(bpfpin_crds::XdpMode::Drv) => XDP_FLAGS_DRV_MODE,
        Some(bpfpin_crds::XdpMode::Hw) => XDP_FLAGS_HW_MODE,
    }
}

/// A holder's program, pinned in its version directory (`links/<program>/<file>` →
/// `progs/<program>`).
pub(super) fn holder_prog(h: &Holder) -> Option<PathBuf> {
    let version_dir = h.link.parent()?.parent()?.parent()?;
    Some(Layout::prog_in(version_dir, &h.program))
}
