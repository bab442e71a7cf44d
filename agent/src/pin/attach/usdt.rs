//! The `usdt` attach kind: a program written with libbpf's `<bpf/usdt.bpf.h>` at every site of a
//! USDT probe, as libbpf's `bpf_program__attach_usdt` does it. The target's `.note.stapsdt` notes
//! ([`crate::pin::usdt_notes`]) give the sites; each site's argument specs are written into the
//! object's `__bpf_usdt_specs` map under a spec id, and the site gets a uprobe at its file offset
//! whose BPF cookie is that id (usdt.bpf.h reads the cookie when `LINUX_HAS_BPF_COOKIE`, which
//! the loader sets, so the ip map `__bpf_usdt_ip_to_spec_id` is not used: cookies need Linux
//! 5.15). A probe with a semaphore gets the semaphore's file offset as the uprobe's reference
//! counter, so the kernel sets it while the probe is attached. One pinned link per site:
//! `usdt-<file>-<provider>-<name>-<site>`, `site` counting from 0 in note order.

use std::io::Read as _;
use std::num::NonZeroU32;
use std::path::Path;

use aya::maps::{Array, MapData};
use aya::programs::links::FdLink;
use aya::programs::uprobe::UProbeScope;
use aya::programs::{Program, UProbe};
use bpfpin_crds::Attach;

use super::{At, AttachError, AttachPoint, TargetError, open_uprobe_target};
use crate::pin::layout::encode_name;
use crate::pin::usdt_notes::{self, SPEC_SIZE, UsdtSite};

/// The map of argument specs usdt.bpf.h declares (`BPF_USDT_MAX_SPEC_CNT` entries).
pub const SPECS_MAP: &str = "__bpf_usdt_specs";

/// The largest target file read for its notes.
const MAX_TARGET_SIZE: u64 = 1 << 30;

/// A USDT probe as the spec names it, and once expanded ([`expand`]) one of its sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsdtPoint {
    /// Absolute path of the binary or library.
    pub target: String,
    /// The probe's provider.
    pub provider: String,
    /// The probe's name.
    pub name: String,
    /// Only this process (all when unset).
    pub pid: Option<u32>,
    /// The site: its index among the probe's sites, the site, and its spec id (the cookie),
    /// which [`write_specs`] sets.
    pub site: Option<(usize, UsdtSite, u32)>,
}

impl UsdtPoint {
    pub(super) fn of(attach: &Attach) -> Option<UsdtPoint> {
        attach.usdt.as_ref().map(|u| UsdtPoint {
            target: u.target.clone(),
            provider: u.provider.clone(),
            name: u.name.clone(),
            pid: u.pid,
            site: None,
        })
    }

    pub(super) fn link_name(&self) -> String {
        let file = Path::new(&self.target)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.target.clone());
        let mut name = format!(
            "usdt-{}-{}-{}",
            encode_name(&file),
            encode_name(&self.provider),
            encode_name(&self.name)
        );
        if let Some((index, ..)) = &self.site {
            name.push_str(&format!("-{index}"));
        }
        if let Some(pid) = self.pid {
            name.push_str(&format!("-pid{pid}"));
        }
        name
    }

    pub(super) fn describe(&self) -> String {
        match &self.site {
            Some((index, site, _)) => format!(
                "USDT {}:{} site {index} ({:#x}) of {}",
                self.provider, self.name, site.pc, self.target
            ),
            None => format!("USDT {}:{} of {}", self.provider, self.name, self.target),
        }
    }

    pub(super) fn link(&self, program: &mut Program, at: &At<'_>) -> Result<FdLink, AttachError> {
        let prog: &mut UProbe = at.typed(program)?;
        let Some((_, site, spec_id)) = &self.site else {
            unreachable!("USDT points are expanded into their sites before they are attached")
        };
        let file = open_uprobe_target(&self.target).map_err(|e| at.target(e))?;
        let scope = match self.pid.and_then(NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let path = crate::fd::fd_path(&file);
        let id = prog
            .attach_with_ref_ctr(
                site.offset,
                &path,
                scope,
                Some(u64::from(*spec_id)),
                site.semaphore_offset,
            )
            .map_err(|e| at.kernel(e))?;
        let link = prog.take_link(id).map_err(|e| at.kernel(e))?;
        FdLink::try_from(link).map_err(|e| at.kernel(e))
    }
}

/// What is wrong with a USDT target.
#[derive(Debug, thiserror::Error)]
pub enum UsdtError {
    /// The file could not be read: `(target, the error)`.
    #[error("reading {0}: {1}")]
    Read(String, #[source] std::io::Error),
    /// The file is larger than the agent reads.
    #[error("{0} is {1} bytes, more than the 1 GiB the agent reads for USDT notes")]
    TooLarge(String, u64),
    /// Its notes could not be read: `(target, why)`.
    #[error("{0}: {1}")]
    Notes(String, #[source] usdt_notes::NotesError),
    /// No site of this provider and name: `(target, provider, name, the probes it has)`.
    #[error("{0} has no USDT probe {1}:{2} (its probes: {3})")]
    NoSuchProbe(String, String, String, String),
    /// The object has no `__bpf_usdt_specs` map.
    #[error(
        "the object has no map __bpf_usdt_specs: a usdt program must be built with libbpf's <bpf/usdt.bpf.h> (BPF_USDT)"
    )]
    NoSpecsMap,
    /// More sites than the spec map holds: `(sites, its max_entries)`.
    #[error(
        "the object's USDT probes have {0} sites, more than its __bpf_usdt_specs map holds ({1}; define BPF_USDT_MAX_SPEC_CNT larger)"
    )]
    TooManySites(u32, u32),
    /// Writing a spec failed.
    #[error("writing the argument spec of site {0}: {1}")]
    WriteSpec(u32, #[source] aya::maps::MapError),
}

/// Every site of every USDT point of `points` in its place (the other points unchanged), with
/// spec id 0 until [`write_specs`] numbers them.
pub(crate) fn expand(
    program: &str,
    points: Vec<AttachPoint>,
) -> Result<Vec<AttachPoint>, AttachError> {
    let mut out = Vec::with_capacity(points.len());
    for point in points {
        let AttachPoint::Usdt(u) = &point else {
            out.push(point);
            continue;
        };
        if u.site.is_some() {
            out.push(point);
            continue;
        }
        let fail = |e: UsdtError| {
            AttachError::Target(
                program.to_owned(),
                u.describe(),
                TargetError::Usdt(Box::new(e)),
            )
        };
        let sites = read_sites(&u.target).map_err(|e| match e {
            Ok(e) => fail(e),
            Err(target) => AttachError::Target(program.to_owned(), u.describe(), target),
        })?;
        let mine: Vec<UsdtSite> = sites
            .iter()
            .filter(|s| s.provider == u.provider && s.name == u.name)
            .cloned()
            .collect();
        if mine.is_empty() {
            let mut names: Vec<String> = sites
                .iter()
                .map(|s| format!("{}:{}", s.provider, s.name))
                .collect();
            names.dedup();
            names.sort();
            names.dedup();
            return Err(fail(UsdtError::NoSuchProbe(
                u.target.clone(),
                u.provider.clone(),
                u.name.clone(),
                names.join(", "),
            )));
        }
        for (index, site) in mine.into_iter().enumerate() {
            out.push(AttachPoint::Usdt(UsdtPoint {
                site: Some((index, site, 0)),
                ..u.clone()
            }));
        }
    }
    Ok(out)
}

/// The identity of a file's contents as `fstat` gives it: device, inode, size, modification
/// time. The notes of a file whose identity did not change are not read again (the reconciler
/// checks an adopted object's links on every pass).
type FileKey = (u64, u64, u64, i64, i64);

/// The sites of the files read last, by target path.
static SITES: std::sync::Mutex<Vec<(String, FileKey, Vec<UsdtSite>)>> =
    std::sync::Mutex::new(Vec::new());

/// At most this many files' sites are remembered.
const SITES_CACHED: usize = 32;

/// The USDT sites of a file, read through a descriptor checked to be a regular file.
fn read_sites(target: &str) -> Result<Vec<UsdtSite>, Result<UsdtError, TargetError>> {
    use std::os::unix::fs::MetadataExt as _;
    let checked = open_uprobe_target(target).map_err(Err)?;
    let mut file = std::fs::File::open(crate::fd::fd_path(&checked))
        .map_err(|e| Ok(UsdtError::Read(target.to_owned(), e)))?;
    let meta = file
        .metadata()
        .map_err(|e| Ok(UsdtError::Read(target.to_owned(), e)))?;
    let len = meta.len();
    let key = (meta.dev(), meta.ino(), len, meta.mtime(), meta.mtime_nsec());
    let cached = SITES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(t, k, _)| t == target && *k == key)
        .map(|(_, _, sites)| sites.clone());
    if let Some(sites) = cached {
        return Ok(sites);
    }
    if len > MAX_TARGET_SIZE {
        return Err(Ok(UsdtError::TooLarge(target.to_owned(), len)));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.by_ref()
        .take(MAX_TARGET_SIZE)
        .read_to_end(&mut bytes)
        .map_err(|e| Ok(UsdtError::Read(target.to_owned(), e)))?;
    let sites =
        usdt_notes::parse(&bytes).map_err(|e| Ok(UsdtError::Notes(target.to_owned(), e)))?;
    let mut cache = SITES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.retain(|(t, ..)| t != target);
    if cache.len() >= SITES_CACHED {
        cache.remove(0);
    }
    cache.push((target.to_owned(), key, sites.clone()));
    Ok(sites)
}

/// Numbers the USDT sites of `points` from `*next_id` and writes each one's argument spec into
/// the object's `__bpf_usdt_specs` map under its id. Ids are unique in the object (its programs
/// share the map).
pub(crate) fn write_specs(
    ebpf: &mut aya::Ebpf,
    program: &str,
    points: &mut [AttachPoint],
    next_id: &mut u32,
) -> Result<(), AttachError> {
    if !points.iter().any(|p| matches!(p, AttachPoint::Usdt(_))) {
        return Ok(());
    }
    let fail = |point: &UsdtPoint, e: UsdtError| {
        AttachError::Target(
            program.to_owned(),
            point.describe(),
            TargetError::Usdt(Box::new(e)),
        )
    };
    let first = points
        .iter()
        .find_map(|p| match p {
            AttachPoint::Usdt(u) => Some(u.clone()),
            _ => None,
        })
        .expect("checked above");
    let map = ebpf
        .map_mut(SPECS_MAP)
        .ok_or_else(|| fail(&first, UsdtError::NoSpecsMap))?;
    let mut specs: Array<&mut MapData, [u8; SPEC_SIZE]> =
        Array::try_from(map).map_err(|_| fail(&first, UsdtError::NoSpecsMap))?;
    let capacity = specs.len();
    let sites = points
        .iter()
        .filter(|p| matches!(p, AttachPoint::Usdt(_)))
        .count() as u32;
    if *next_id + sites > capacity {
        return Err(fail(
            &first,
            UsdtError::TooManySites(*next_id + sites, capacity),
        ));
    }
    for point in points.iter_mut() {
        let AttachPoint::Usdt(u) = point else {
            continue;
        };
        let id = *next_id;
        let Some((_, site, spec_id)) = u.site.as_mut() else {
            continue;
        };
        specs.set(id, site.spec_bytes(), 0).map_err(|e| {
            AttachError::Target(
                program.to_owned(),
                format!("USDT {}:{} of {}", u.provider, u.name, u.target),
                TargetError::Usdt(Box::new(UsdtError::WriteSpec(id, e))),
            )
        })?;
        *spec_id = id;
        *next_id += 1;
    }
    Ok(())
}
