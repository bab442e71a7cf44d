//! The ELF-internal maps that hold an object's global variables (`.bss`, `.data`, `.rodata`, and
//! `.bss.*`, `.data.*`, `.rodata.*`): pinned, so user space can read a global counter, and reused
//! by the next version when nothing about them changed, so its programs keep their ids and the
//! counters keep counting.
//!
//! bpffs refuses names with a dot, so `<version>/globals/<section>` drops the leading dot and
//! percent-encodes the others ([`pin_name`]: `.bss` → `globals/bss`, `.data.counts` →
//! `globals/data%2Ecounts`); `maps/` is left to the object's own maps, whose names could be
//! `bss`. Beside each pin, the symlink `globals/_layout/<name>` records what the map was made for
//! (bpffs holds no files; a symlink's target is a string): a hash of its layout (definition, and
//! the section's variables from the object's BTF, in order) and, for `.rodata`, of its values
//! (the ELF's with `globalData` applied). A new version reuses the previous version's map only
//! when both hashes agree, as libbpf reuses a pinned map only when it is compatible: a `.bss` or
//! `.data` map keeps its contents, a frozen `.rodata` map its constants. Anything else makes a
//! fresh map, and the log says why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use aya_obj::EbpfSectionKind;
use sha2::{Digest, Sha256};

use super::btf_vars;
use super::fsops::{self, FsError};
use super::layout::{Layout, encode_name};
use crate::error::{Reason, StatusError, chain};

/// The directory of a version holding its internal maps.
pub(crate) const GLOBALS_DIR: &str = "globals";
/// Inside [`GLOBALS_DIR`]: one symlink per map, whose target records its layout and values.
const RECORD_DIR: &str = "_layout";

/// Why an internal map could not be pinned.
#[derive(Debug, thiserror::Error)]
pub enum InternalMapError {
    /// aya's load made no map for the section.
    #[error("internal map {0} was not created")]
    NotCreated(String),
    /// The map could not be pinned: `(section, pin path, aya's error)`.
    #[error("pinning internal map {0} at {path}: {cause}", path = .1.display(), cause = chain(.2))]
    Pin(String, PathBuf, #[source] aya::pin::PinError),
    /// The record of its layout could not be written: `(section, record path, the error)`.
    #[error("recording the layout of internal map {0} at {path}: {2}", path = .1.display())]
    Record(String, PathBuf, #[source] std::io::Error),
    /// A directory under the managed root was refused or could not be made.
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl StatusError for InternalMapError {
    fn reason(&self) -> Reason {
        match self {
            InternalMapError::Fs(e) => e.reason(),
            _ => Reason::PinFailed,
        }
    }
}

/// The bpffs-legal name of a section's pin: the leading dot dropped, the others encoded.
pub fn pin_name(section: &str) -> String {
    encode_name(section.strip_prefix('.').unwrap_or(section))
}

/// `<version>/globals/<pin name>`.
pub(crate) fn pin_in(dir: &Path, section: &str) -> PathBuf {
    dir.join(GLOBALS_DIR).join(pin_name(section))
}

/// `<version>/globals/_layout/<pin name>`.
fn record_in(dir: &Path, section: &str) -> PathBuf {
    dir.join(GLOBALS_DIR)
        .join(RECORD_DIR)
        .join(pin_name(section))
}

/// Whether an ELF map is one aya makes for a section of global variables.
fn is_internal(map: &aya_obj::Map) -> bool {
    matches!(
        map.section_kind(),
        EbpfSectionKind::Bss | EbpfSectionKind::Data | EbpfSectionKind::Rodata
    )
}

/// The object's internal maps, by section name, sorted.
fn sections(elf: &aya_obj::Object) -> Vec<&String> {
    let mut names: Vec<&String> = elf
        .maps
        .iter()
        .filter(|(_, m)| is_internal(m))
        .map(|(n, _)| n)
        .collect();
    names.sort_unstable();
    names
}

/// Whether every internal map of the object is pinned in a version directory (a version pinned
/// before internal maps were is not adopted, but rebuilt).
pub(crate) fn all_pinned(dir: &Path, elf: &aya_obj::Object) -> bool {
    sections(elf)
        .iter()
        .all(|s| pin_in(dir, s).exists() && std::fs::symlink_metadata(record_in(dir, s)).is_ok())
}

/// Pins the internal maps of a version an older agent pinned without them, taken from the maps
/// its programs (`prog_pins`) use, so that upgrading the agent adopts instead of reloading.
/// `spec` is the version's (its key matched, so the layout and values recorded are the ones
/// loaded). `false` when a map cannot be found or pinned: the version is then rebuilt.
pub(crate) fn pin_from_programs(
    root: &Path,
    dir: &Path,
    elf: &aya_obj::Object,
    spec: &bpfpin_crds::BpfObjectSpec,
    prog_pins: &[PathBuf],
) -> bool {
    use base64::Engine as _;
    let globals: Option<Vec<(&str, Vec<u8>)>> = spec
        .global_data
        .iter()
        .map(|(n, b)| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
            Some((n.as_str(), bytes))
        })
        .collect();
    let Some(globals) = globals else {
        return false;
    };
    let plan = InternalMaps::plan("", elf, &globals, None);
    let mut ids: Vec<u32> = prog_pins
        .iter()
        .filter_map(|p| aya::programs::ProgramInfo::from_pin(p).ok())
        .filter_map(|info| info.map_ids().ok().flatten())
        .flatten()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let infos: Vec<MapInfo> = ids
        .into_iter()
        .filter_map(|id| MapInfo::from_id(id).ok())
        .collect();
    if fsops::create_dirs(root, &dir.join(GLOBALS_DIR).join(RECORD_DIR)).is_err() {
        return false;
    }
    for m in &plan.maps {
        // The kernel keeps 15 bytes of a map's name (BPF_OBJ_NAME_LEN).
        let kernel_name: String = m.section.chars().take(15).collect();
        let value_size = elf.maps[&m.section].value_size();
        let found = infos.iter().find(|i| {
            i.name_as_str() == Some(kernel_name.as_str()) && i.value_size() == value_size
        });
        let Some(info) = found else {
            return false;
        };
        let Ok(map) = aya::maps::MapData::from_id(info.id()) else {
            return false;
        };
        if map.pin(pin_in(dir, &m.section)).is_err()
            || std::os::unix::fs::symlink(&m.record, record_in(dir, &m.section)).is_err()
        {
            return false;
        }
        tracing::info!(map = %m.section, path = %pin_in(dir, &m.section).display(), "pinned an internal map of a version pinned without it");
    }
    true
}

/// The pins of the object's internal maps in a version directory, by section name.
pub(crate) fn pins(dir: &Path, elf: &aya_obj::Object) -> Vec<PathBuf> {
    sections(elf).iter().map(|s| pin_in(dir, s)).collect()
}

/// One internal map of a build.
#[derive(Debug)]
struct Planned {
    section: String,
    /// `<layout hash>-<values hash>` (`-` alone for the values of `.bss`/`.data`).
    record: String,
    /// The previous version's pin, when it can serve this build.
    reuse: Option<PathBuf>,
}

/// The internal maps of one build, and which of them the previous version hands over.
#[derive(Debug, Default)]
pub(crate) struct InternalMaps {
    maps: Vec<Planned>,
}

impl InternalMaps {
    /// Decides, for each internal map, whether the previous version's pin is reused (same layout,
    /// and for `.rodata` the same values after `globals`); logs why it is not when it exists.
    pub fn plan(
        object: &str,
        elf: &aya_obj::Object,
        globals: &[(&str, Vec<u8>)],
        previous: Option<&Path>,
    ) -> Self {
        let layouts = elf
            .btf
            .as_ref()
            .and_then(|btf| btf_vars::section_layouts(&btf.to_bytes()))
            .unwrap_or_default();
        // `.rodata` as the kernel will hold it: the ELF's bytes with `globalData` written in
        // (only cloned when there are overrides; aya's load reports overrides that do not fit).
        let patched = (!globals.is_empty()).then(|| {
            let mut copy = elf.clone();
            let overrides: HashMap<&str, (&[u8], bool)> = globals
                .iter()
                .map(|(n, b)| (*n, (b.as_slice(), true)))
                .collect();
            copy.patch_map_data(overrides).ok().map(|()| copy)
        });
        let mut maps = Vec::new();
        for section in sections(elf) {
            let map = &elf.maps[section];
            let mut layout = Sha256::new();
            layout.update(format!(
                "{section} type {} key {} value {} entries {} flags {}\n",
                map.map_type(),
                map.key_size(),
                map.value_size(),
                map.max_entries(),
                map.map_flags()
            ));
            for var in layouts.get(section.as_str()).into_iter().flatten() {
                layout.update(var.as_bytes());
                layout.update(b"\n");
            }
            let layout = hex::encode(&layout.finalize()[..8]);
            let values = if map.section_kind() == EbpfSectionKind::Rodata {
                let data = match &patched {
                    None => Some(map.data()),
                    Some(copy) => copy.as_ref().map(|c| c.maps[section].data()),
                };
                // Overrides that do not fit: the load fails anyway; nothing is reused.
                data.map_or_else(
                    || "unknown".to_owned(),
                    |d| hex::encode(&Sha256::digest(d)[..8]),
                )
            } else {
                String::new()
            };
            let record = format!("{layout}-{values}");
            let reuse = previous.and_then(|prev| reusable(object, prev, section, map, &record));
            maps.push(Planned {
                section: section.clone(),
                record,
                reuse,
            });
        }
        Self { maps }
    }

    /// `(section, previous pin)` of each map the load opens instead of creating.
    pub fn reused(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.maps
            .iter()
            .filter_map(|m| Some((m.section.as_str(), m.reuse.as_deref()?)))
    }

    /// Pins every internal map of the loaded object in the version directory, with its record;
    /// returns the public paths.
    pub fn pin(
        &self,
        ebpf: &aya::Ebpf,
        layout: &Layout,
        object: &str,
        dir: &Path,
    ) -> Result<Vec<PathBuf>, InternalMapError> {
        let mut pins = Vec::with_capacity(self.maps.len());
        if self.maps.is_empty() {
            return Ok(pins);
        }
        fsops::create_dirs(layout.root(), &dir.join(GLOBALS_DIR).join(RECORD_DIR))?;
        for m in &self.maps {
            let map = ebpf
                .map(&m.section)
                .ok_or_else(|| InternalMapError::NotCreated(m.section.clone()))?;
            let path = pin_in(dir, &m.section);
            map.pin(&path)
                .map_err(|e| InternalMapError::Pin(m.section.clone(), path.clone(), e))?;
            let record = record_in(dir, &m.section);
            std::os::unix::fs::symlink(&m.record, &record)
                .map_err(|e| InternalMapError::Record(m.section.clone(), record, e))?;
            pins.push(layout.public_path(object, dir, &path));
        }
        Ok(pins)
    }
}

/// The previous version's pin of `section` when its record is `record` and the kernel's map
/// still has the ELF's definition; otherwise `None`, with a log line saying why.
fn reusable(
    object: &str,
    prev: &Path,
    section: &str,
    map: &aya_obj::Map,
    record: &str,
) -> Option<PathBuf> {
    let pin = pin_in(prev, section);
    if !pin.exists() {
        return None;
    }
    let had = std::fs::read_link(record_in(prev, section)).ok();
    let had = had.as_deref().and_then(Path::to_str).unwrap_or_default();
    let (had_layout, had_values) = had.split_once('-').unwrap_or((had, ""));
    let (layout, values) = record.split_once('-').unwrap_or((record, ""));
    let why = if had_layout != layout {
        "its layout changed (definition or variables)"
    } else if had_values != values {
        "its values changed (the constants or globalData)"
    } else {
        let same = MapInfo::from_pin(&pin).is_ok_and(|info| {
            info.value_size() == map.value_size() && info.key_size() == map.key_size()
        });
        if same {
            return Some(pin);
        }
        "the pinned map has another definition"
    };
    tracing::info!(
        object,
        map = section,
        reason = why,
        "a fresh internal map for the new version: {why}"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_are_bpffs_legal_and_distinct() {
        assert_eq!(pin_name(".bss"), "bss");
        assert_eq!(pin_name(".rodata"), "rodata");
        assert_eq!(pin_name(".data.counts"), "data%2Ecounts");
        assert_ne!(pin_name(".data.a_b"), pin_name(".data_a.b"));
        assert!(!pin_name(".rodata.str1.1").contains('.'));
        assert_eq!(
            pin_in(Path::new("/v"), ".data.x"),
            Path::new("/v/globals/data%2Ex")
        );
    }
}
