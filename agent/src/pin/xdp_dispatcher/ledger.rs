//! Which programs in an interface's dispatcher are bpfpin's: `<bpffs>/xdp/bpfpin-slots/`, one pin
//! of each program bpfpin put in a slot, named `<ifindex>-<program id>-<priority>-<chain mask>`.
//!
//! A dispatcher's slots hold programs of several loaders (xdp-loader's beside bpfpin's), and a
//! slot program's own pins say nothing of who loaded it. When an object goes, its version
//! directory (and its holder pins) goes with it; its program is still in the dispatcher, held by
//! the dispatcher's `prog<N>-link`. The ledger tells that program apart from xdp-loader's, so the
//! pass's sync drops it (and keeps xdp-loader's). The name also keeps the program's place, so a
//! program whose slot was lost (a failed update that the loader rolled back) goes back where it
//! was. libxdp reads only `dispatch-*` directories there.

use std::path::{Path, PathBuf};

use aya::programs::Extension;

use super::{BoxError, Share};

/// The ledger's directory name under `<bpffs>/xdp`.
pub const LEDGER_DIR: &str = "bpfpin-slots";

/// One program bpfpin put in a slot.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub ifindex: u32,
    pub id: u32,
    pub share: Share,
    pub path: PathBuf,
}

pub(super) struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    pub fn new(libxdp: &Path) -> Ledger {
        Ledger {
            dir: libxdp.join(LEDGER_DIR),
        }
    }

    pub fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let mut parts = name.split('-');
                let ifindex = parts.next()?.parse().ok()?;
                let id = parts.next()?.parse().ok()?;
                let priority = parts.next()?.parse().ok()?;
                let chain_mask = u32::from_str_radix(parts.next()?, 16).ok()?;
                Some(Entry {
                    ifindex,
                    id,
                    share: Share {
                        priority,
                        chain_mask,
                    },
                    path: e.path(),
                })
            })
            .collect();
        out.sort_by_key(|e| (e.ifindex, e.id));
        out
    }

    pub fn of(&self, ifindex: u32, id: u32) -> Option<Entry> {
        self.entries()
            .into_iter()
            .find(|e| e.ifindex == ifindex && e.id == id)
    }

    pub fn knows(&self, ifindex: u32, id: u32) -> bool {
        self.of(ifindex, id).is_some()
    }

    /// Records the program pinned at `prog` (id `id`) with its place; an older place of the same
    /// program is replaced.
    pub fn record(
        &self,
        ifindex: u32,
        id: u32,
        share: &Share,
        prog: &Path,
    ) -> Result<(), (PathBuf, BoxError)> {
        let path = self.dir.join(format!(
            "{ifindex}-{id}-{}-{:x}",
            share.priority, share.chain_mask
        ));
        if path.exists() {
            return Ok(());
        }
        if let Err(e) = std::fs::create_dir(&self.dir)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err((self.dir.clone(), e.into()));
        }
        let pin = || -> Result<(), BoxError> {
            let mut p = Extension::from_pin(prog)?;
            p.pin(&path)?;
            Ok(())
        };
        pin().map_err(|e| (path.clone(), e))?;
        for old in self.entries() {
            if old.ifindex == ifindex && old.id == id && old.path != path {
                let _ = std::fs::remove_file(&old.path);
            }
        }
        Ok(())
    }

    /// Forgets the interface's entries whose program is not in `keep`.
    pub fn prune(&self, ifindex: u32, keep: &dyn Fn(u32) -> bool) {
        for e in self.entries() {
            if e.ifindex == ifindex && !keep(e.id) {
                let _ = std::fs::remove_file(&e.path);
                tracing::debug!(
                    ifindex,
                    program = e.id,
                    "forgot a program that left the XDP dispatcher"
                );
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
