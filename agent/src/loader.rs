//! Builds one version of one object: parse the ELF, check it against the spec, load it with aya,
//! pin maps and programs into a fresh version directory and attach. Either the whole version is
//! built, or nothing of it is left behind (the version directory and the shared maps this attempt
//! created are removed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use aya::programs::{Program, ProgramError};
use aya::{Btf, EbpfError, EbpfLoader};
use aya_obj::maps::PinningType;
use base64::Engine as _;
use bpfpin_crds::BpfObjectSpec;

use crate::attach::{self, AttachPoint};
use crate::error::{ObjectError, Reason, verifier_log_tail};
use crate::fsops;
use crate::layout::Layout;

/// The kernel's BTF, parsed on first use: only fentry/fexit programs and objects with CO-RE
/// relocations need it, and parsing `/sys/kernel/btf/vmlinux` costs tens of ms and ~12 MiB.
#[derive(Debug, Default)]
pub struct KernelBtf(std::sync::OnceLock<Option<Btf>>);

impl KernelBtf {
    /// The parsed BTF, or `None` when the kernel has none.
    pub fn get(&self) -> Option<&Btf> {
        self.0.get_or_init(|| Btf::from_sys_fs().ok()).as_ref()
    }
}

/// A version that is fully pinned (and attached) in its version directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedVersion {
    /// The version directory's name.
    pub version: String,
    /// `(program, kernel program id)`, in spec order.
    pub programs: Vec<(String, u32)>,
    /// Map pins: private ones in the version directory, shared ones under `<root>/shared`.
    pub maps: Vec<PathBuf>,
    /// Link pins (in the version directory).
    pub links: Vec<PathBuf>,
    /// Shared map pins this object uses (explicit `pinPath`s and pin-by-name maps).
    pub shared: Vec<PathBuf>,
}

/// What the ELF says about the maps that end up shared, and which maps the object pins privately.
#[derive(Debug, Clone, Default)]
pub struct MapPlan {
    /// Map name → private pin (relative to the version directory: `maps/<name>`).
    pub private: Vec<String>,
    /// Map name → shared pin path.
    pub shared: BTreeMap<String, PathBuf>,
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Whether `name` is an ELF-internal map (`.rodata`, `.bss`, `.data`, ...): never pinned.
fn is_internal_map(name: &str) -> bool {
    name.starts_with('.')
}

/// How many names an error message lists (an object may have thousands of programs).
const LISTED_NAMES: usize = 20;

/// `a, b, c`, sorted, the first [`LISTED_NAMES`] and how many more.
fn name_list(mut names: Vec<&str>) -> String {
    names.sort_unstable();
    let more = names.len().saturating_sub(LISTED_NAMES);
    names.truncate(LISTED_NAMES);
    let mut out = names.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

/// Parses the ELF object; a panic inside the parser (a malformed object it does not check for) is
/// an `InvalidElf` of this object, not the end of the agent.
pub fn parse_elf(bytes: &[u8]) -> Result<aya_obj::Object, ObjectError> {
    let invalid = |why: String| {
        ObjectError::new(
            Reason::InvalidElf,
            format!("the bytecode is not a valid eBPF ELF object: {why}"),
        )
    };
    match std::panic::catch_unwind(|| aya_obj::Object::parse(bytes)) {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => Err(invalid(chain(&e))),
        Err(panic) => Err(invalid(format!(
            "the ELF parser failed on it ({})",
            panic_text(&*panic)
        ))),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Parses the ELF and decides where each map is pinned. Fails on a malformed ELF and on programs
/// or maps the spec names that the ELF does not have.
pub fn plan_maps(
    layout: &Layout,
    spec: &BpfObjectSpec,
    elf: &aya_obj::Object,
) -> Result<MapPlan, ObjectError> {
    for prog in &spec.programs {
        if !elf.programs.contains_key(&prog.name) {
            let have: Vec<&str> = elf.programs.keys().map(String::as_str).collect();
            return Err(ObjectError::new(
                Reason::ProgramNotFound,
                format!(
                    "program {} is not in the ELF object (it has: {})",
                    prog.name,
                    name_list(have)
                ),
            ));
        }
    }
    let mut plan = MapPlan::default();
    let listed: BTreeMap<&str, Option<&String>> = spec
        .maps
        .iter()
        .map(|m| (m.name.as_str(), m.pin_path.as_ref()))
        .collect();
    for name in listed.keys() {
        if !elf.maps.contains_key(*name) {
            let have: Vec<&str> = elf
                .maps
                .keys()
                .map(String::as_str)
                .filter(|n| !is_internal_map(n))
                .collect();
            return Err(ObjectError::new(
                Reason::MapNotFound,
                format!(
                    "map {name} is not in the ELF object (it has: {})",
                    name_list(have)
                ),
            ));
        }
    }
    let mut names: Vec<&String> = elf.maps.keys().collect();
    names.sort_unstable();
    for name in names {
        if is_internal_map(name) {
            continue;
        }
        let map = &elf.maps[name];
        match listed.get(name.as_str()) {
            Some(Some(pin_path)) => {
                plan.shared
                    .insert(name.clone(), layout.shared_map(pin_path));
            }
            _ if matches!(map.pinning(), PinningType::ByName) => {
                plan.shared.insert(name.clone(), layout.shared_map(name));
            }
            Some(None) => plan.private.push(name.clone()),
            None if spec.maps.is_empty() => plan.private.push(name.clone()),
            None => {}
        }
    }
    Ok(plan)
}

/// Whether a pinned map has the definition the ELF (with the spec's `maxEntries`) asks for.
fn definition_matches(
    pinned: &MapInfo,
    elf: &aya_obj::Map,
    max_entries: Option<u32>,
) -> Result<(), String> {
    let pinned_type = pinned.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
    let mismatches: Vec<String> = [
        ("type", pinned_type, elf.map_type()),
        ("key size", pinned.key_size(), elf.key_size()),
        ("value size", pinned.value_size(), elf.value_size()),
        (
            "max entries",
            pinned.max_entries(),
            max_entries.unwrap_or(elf.max_entries()),
        ),
        ("flags", pinned.map_flags(), elf.map_flags()),
    ]
    .into_iter()
    .filter(|(_, have, want)| have != want)
    .map(|(what, have, want)| format!("{what} {have} (pinned) != {want} (this object)"))
    .collect();
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches.join(", "))
    }
}

/// Undo of a failed build: what this attempt created outside its version directory.
#[derive(Debug, Default)]
struct Rollback {
    version_dir: Option<PathBuf>,
    created_shared: Vec<PathBuf>,
    /// `(link pin, program pin)`: links whose program this attempt replaced, and the program to
    /// put back.
    replaced_links: Vec<(PathBuf, PathBuf)>,
}

impl Rollback {
    fn undo(self, root: &Path) {
        for (link, prog) in &self.replaced_links {
            if let Err(e) = attach::restore_xdp_link(link, prog) {
                tracing::warn!(link = %link.display(), error = %e, "could not restore the previous program on a link");
            }
        }
        if let Some(dir) = &self.version_dir {
            fsops::remove_tree(root, dir);
        }
        for pin in &self.created_shared {
            fsops::remove_tree(root, pin);
        }
    }
}

/// Everything needed to build one version.
#[derive(Debug)]
pub struct BuildRequest<'a> {
    /// The object's name.
    pub object: &'a str,
    /// The spec.
    pub spec: &'a BpfObjectSpec,
    /// The ELF bytes (digest already checked).
    pub bytecode: &'a [u8],
    /// The new version's name.
    pub version: &'a str,
    /// The version directory currently swapped in, if any: maps with an unchanged definition
    /// are taken over from it (they keep their contents) and its XDP links are updated in place.
    pub previous: Option<&'a Path>,
}

/// Builds a version. On error nothing of the attempt remains.
pub fn build(
    layout: &Layout,
    btf: &KernelBtf,
    req: &BuildRequest<'_>,
) -> Result<PinnedVersion, ObjectError> {
    let mut rollback = Rollback::default();
    match build_inner(layout, btf, req, &mut rollback) {
        Ok(v) => Ok(v),
        Err(e) => {
            rollback.undo(layout.root());
            Err(e)
        }
    }
}

fn build_inner(
    layout: &Layout,
    btf: &KernelBtf,
    req: &BuildRequest<'_>,
    rollback: &mut Rollback,
) -> Result<PinnedVersion, ObjectError> {
    let spec = req.spec;
    if req.bytecode.len() as u64 > crate::bytecode_path::MAX_BYTES {
        return Err(ObjectError::new(
            Reason::InvalidElf,
            format!(
                "the bytecode is {} bytes, larger than the {} MiB limit for bytecode",
                req.bytecode.len(),
                crate::bytecode_path::MAX_BYTES >> 20
            ),
        ));
    }
    let elf = parse_elf(req.bytecode)?;
    let plan = plan_maps(layout, spec, &elf)?;

    // Shared pins that exist must have this object's definition; the others this attempt creates
    // (and removes again if it fails).
    for (name, path) in &plan.shared {
        fsops::confine(layout.root(), path)?;
        match MapInfo::from_pin(path) {
            Ok(info) => definition_matches(&info, &elf.maps[name], max_entries_of(spec, name))
                .map_err(|why| {
                    ObjectError::new(
                        Reason::MapConflict,
                        format!(
                            "map {name} conflicts with the map already shared at {}: {why}",
                            path.display()
                        ),
                    )
                })?,
            Err(_) => {
                if let Some(parent) = path.parent() {
                    fsops::create_dirs(layout.root(), parent)?;
                }
                rollback.created_shared.push(path.clone());
            }
        }
    }

    let globals: Vec<(&str, Vec<u8>)> = spec
        .global_data
        .iter()
        .map(|(name, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(|bytes| (name.as_str(), bytes))
                .map_err(|e| {
                    ObjectError::new(
                        Reason::InvalidGlobalData,
                        format!("globalData {name} is not valid base64: {e}"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    check_globals_against_btf(&elf, &globals)?;

    let mut loader = EbpfLoader::new();
    // Only the programs the spec names are relocated and loaded (the patched aya drops the
    // others after parsing): an object with thousands of programs costs what the named ones do.
    loader.programs(spec.programs.iter().map(|p| p.name.as_str()));
    // Without relocations the kernel's BTF is not needed (the patched aya then reads none).
    if elf.has_btf_relocations() {
        loader.btf(btf.get());
    }
    loader.default_map_pin_directory(layout.shared());
    for (name, bytes) in &globals {
        loader.override_global(name, bytes.as_slice(), true);
    }
    for (name, path) in &plan.shared {
        loader.map_pin_path(name, path.as_path());
    }
    for m in &spec.maps {
        if let Some(max) = m.max_entries {
            loader.map_max_entries(&m.name, max);
        }
    }
    // Programs that share an XDP interface are loaded as extensions of its dispatcher.
    for p in spec
        .programs
        .iter()
        .filter(|p| crate::xdp_dispatcher::wants_dispatcher(p))
    {
        loader.extension(&p.name);
    }
    // Keep the contents of maps whose definition did not change.
    let mut reused = BTreeSet::new();
    if let Some(prev) = req.previous {
        for name in &plan.private {
            let old = Layout::map_in(prev, name);
            if let Ok(info) = MapInfo::from_pin(&old)
                && definition_matches(&info, &elf.maps[name], max_entries_of(spec, name)).is_ok()
            {
                loader.map_pin_path(name, old);
                reused.insert(name.clone());
            }
        }
    }
    // aya parses the object again: the same panic guard as `parse_elf`.
    let mut ebpf =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.load(req.bytecode)))
            .map_err(|panic| {
                ObjectError::new(
                    Reason::InvalidElf,
                    format!(
                        "the bytecode is not a valid eBPF ELF object: loading failed on it ({})",
                        panic_text(&*panic)
                    ),
                )
            })?
            .map_err(|e| load_error(&e))?;

    let dir = layout.version(req.object, req.version);
    fsops::create_dirs(layout.root(), &dir)?;
    rollback.version_dir = Some(dir.clone());

    let mut programs = Vec::with_capacity(spec.programs.len());
    // Programs identical to the previous version's: that program object is kept (same id, same
    // links); the one just loaded is dropped.
    let mut kept: BTreeMap<String, Program> = BTreeMap::new();
    for prog_spec in &spec.programs {
        let name = prog_spec.name.as_str();
        let program = ebpf.program_mut(name).ok_or_else(|| {
            ObjectError::new(
                Reason::ProgramNotFound,
                format!("program {name} is not in the ELF object"),
            )
        })?;
        let btf_function = prog_spec
            .attach
            .as_ref()
            .and_then(AttachPoint::btf_function);
        match program {
            Program::Extension(ext) => crate::xdp_dispatcher::load(layout.root(), prog_spec, ext)?,
            _ => load_program(name, program, btf, btf_function)?,
        }
        let path = Layout::prog_in(&dir, name);
        fsops::create_dirs(layout.root(), path.parent().expect("progs/"))?;
        let previous = req
            .previous
            .and_then(|prev| same_as_previous(prev, name, program));
        let target = match previous {
            Some(old) => kept.entry(name.to_owned()).or_insert(old),
            None => program,
        };
        target
            .pin(&path)
            .map_err(|e| pin_error("program", name, &path, &e))?;
        let id = target
            .info()
            .map_err(|e| {
                ObjectError::new(Reason::LoadFailed, format!("program {name}: {}", chain(&e)))
            })?
            .id();
        programs.push((name.to_owned(), id));
    }
    if !kept.is_empty() {
        tracing::debug!(object = req.object, programs = ?kept.keys().collect::<Vec<_>>(), "kept unchanged programs");
    }

    fill_tail_calls(spec, &plan, &mut ebpf, &kept)?;

    let mut maps = Vec::new();
    for name in &plan.private {
        let path = Layout::map_in(&dir, name);
        let map = ebpf.map(name).ok_or_else(|| {
            ObjectError::new(Reason::MapNotFound, format!("map {name} was not created"))
        })?;
        fsops::create_dirs(layout.root(), path.parent().expect("maps/"))?;
        map.pin(&path)
            .map_err(|e| pin_error("map", name, &path, &e))?;
        maps.push(layout.public_path(req.object, &dir, &path));
    }
    let shared: Vec<PathBuf> = plan.shared.values().cloned().collect();
    maps.extend(shared.iter().cloned());

    // Attach last: everything that can fail without side effects on running traffic has passed.
    let mut links = Vec::new();
    for prog_spec in &spec.programs {
        let Some(attach) = &prog_spec.attach else {
            continue;
        };
        let name = prog_spec.name.as_str();
        for point in AttachPoint::all(attach) {
            let path = Layout::link_in(&dir, name, &point.link_name());
            fsops::create_dirs(layout.root(), path.parent().expect("links/<program>/"))?;
            let previous_link = req
                .previous
                .map(|p| Layout::link_in(p, name, &point.link_name()));
            if let Some(program) = kept.get_mut(name) {
                // The same program at the same point: its link simply moves to the new version.
                match previous_link.as_deref().filter(|p| p.exists()) {
                    Some(prev) => repin_link(prev, &path)?,
                    None => {
                        attach::attach_and_pin(program, name, &point, &path, None)?;
                    }
                }
            } else {
                let program = ebpf.program_mut(name).expect("loaded above");
                if let Some(replaced) =
                    attach::attach_and_pin(program, name, &point, &path, previous_link.as_deref())?
                {
                    let prev_prog =
                        Layout::prog_in(req.previous.expect("replaced a previous link"), name);
                    rollback.replaced_links.push((replaced, prev_prog));
                }
            }
            links.push(layout.public_path(req.object, &dir, &path));
        }
    }
    if !reused.is_empty() {
        tracing::debug!(object = req.object, maps = ?reused, "kept the contents of unchanged maps");
    }
    Ok(PinnedVersion {
        version: req.version.to_owned(),
        programs,
        maps,
        links,
        shared,
    })
}

/// The previous version's program `name` when the newly loaded one is the same program: same
/// type, same instructions (the kernel's tag) and the same maps. Programs that use global data get
/// a fresh `.rodata`/`.bss` map at every load, so they never match and are always reloaded.
fn same_as_previous(prev: &Path, name: &str, new: &Program) -> Option<Program> {
    use aya::programs::{
        KProbe, ProgramInfo, SchedClassifier, SocketFilter, TracePoint, UProbe, Xdp,
    };
    let old_path = Layout::prog_in(prev, name);
    let old = ProgramInfo::from_pin(&old_path).ok()?;
    let fresh = new.info().ok()?;
    let maps = |info: &ProgramInfo| {
        let mut ids = info.map_ids().ok().flatten().unwrap_or_default();
        ids.sort_unstable();
        ids
    };
    if old.tag() != fresh.tag()
        || old.program_type() != fresh.program_type()
        || maps(&old) != maps(&fresh)
    {
        return None;
    }
    let kept = match new {
        Program::TracePoint(_) => Program::TracePoint(TracePoint::from_pin(&old_path).ok()?),
        Program::Xdp(_) => Program::Xdp(
            Xdp::from_pin(&old_path, aya_obj::programs::XdpAttachType::Interface).ok()?,
        ),
        Program::SchedClassifier(_) => {
            Program::SchedClassifier(SchedClassifier::from_pin(&old_path).ok()?)
        }
        Program::KProbe(p) => Program::KProbe(KProbe::from_pin(&old_path, p.kind()).ok()?),
        Program::UProbe(p) => Program::UProbe(UProbe::from_pin(&old_path, p.kind()).ok()?),
        Program::SocketFilter(_) => Program::SocketFilter(SocketFilter::from_pin(&old_path).ok()?),
        _ => return None,
    };
    Some(kept)
}

/// Pins the link pinned at `from` also at `to`.
fn repin_link(from: &Path, to: &Path) -> Result<(), ObjectError> {
    use aya::programs::links::{FdLink, PinnedLink};
    let err = |e: &dyn std::error::Error| {
        ObjectError::new(
            Reason::PinFailed,
            format!("pinning link {} at {}: {e}", from.display(), to.display()),
        )
    };
    let link = PinnedLink::from_pin(from).map_err(|e| err(&e))?;
    FdLink::from(link).pin(to).map_err(|e| err(&e))?;
    Ok(())
}

fn max_entries_of(spec: &BpfObjectSpec, map: &str) -> Option<u32> {
    spec.maps
        .iter()
        .find(|m| m.name == map)
        .and_then(|m| m.max_entries)
}

/// Sets every `spec.tailCalls` entry and clears the other indices of those program arrays and of
/// the object's private program arrays (a map kept from the previous version would otherwise
/// still jump into the old programs).
fn fill_tail_calls(
    spec: &BpfObjectSpec,
    plan: &MapPlan,
    ebpf: &mut aya::Ebpf,
    kept: &BTreeMap<String, Program>,
) -> Result<(), ObjectError> {
    use aya::maps::ProgramArray;
    let mut by_map: BTreeMap<&str, Vec<(u32, &str)>> = BTreeMap::new();
    for name in &plan.private {
        if matches!(ebpf.map(name), Some(aya::maps::Map::ProgramArray(_))) {
            by_map.entry(name).or_default();
        }
    }
    for tc in &spec.tail_calls {
        by_map
            .entry(&tc.map)
            .or_default()
            .push((tc.index, &tc.program));
    }
    for (map, entries) in by_map {
        let mut fds = Vec::new();
        for (index, program) in &entries {
            // The pinned program: a kept one, or the one just loaded.
            let prog = kept
                .get(*program)
                .or_else(|| ebpf.program(program))
                .ok_or_else(|| {
                    ObjectError::new(
                        Reason::ProgramNotFound,
                        format!("tail call {map}[{index}]: program {program} is not loaded"),
                    )
                })?;
            let fd = prog
                .fd()
                .map_err(|e| {
                    ObjectError::new(
                        Reason::LoadFailed,
                        format!("tail call {map}[{index}] -> {program}: {}", chain(&e)),
                    )
                })?
                .try_clone()
                .map_err(|e| {
                    ObjectError::new(
                        Reason::LoadFailed,
                        format!("tail call {map}[{index}] -> {program}: {e}"),
                    )
                })?;
            fds.push((*index, fd));
        }
        let m = ebpf.map_mut(map).ok_or_else(|| {
            ObjectError::new(
                Reason::MapNotFound,
                format!("tail call map {map} is not in the ELF object"),
            )
        })?;
        let mut array: ProgramArray<&mut aya::maps::MapData> =
            ProgramArray::try_from(m).map_err(|e| {
                ObjectError::new(
                    Reason::InvalidSpec,
                    format!("tail call map {map}: {}", chain(&e)),
                )
            })?;
        let wanted: BTreeSet<u32> = fds.iter().map(|(i, _)| *i).collect();
        let stale: Vec<u32> = array
            .indices()
            .flatten()
            .filter(|i| !wanted.contains(i))
            .collect();
        for index in stale {
            let _ = array.clear_index(&index);
        }
        for (index, fd) in &fds {
            array.set(*index, fd, 0).map_err(|e| {
                ObjectError::new(
                    Reason::LoadFailed,
                    format!("setting tail call {map}[{index}]: {}", chain(&e)),
                )
            })?;
        }
    }
    Ok(())
}

fn pin_error(kind: &str, name: &str, path: &Path, err: &dyn std::error::Error) -> ObjectError {
    ObjectError::new(
        Reason::PinFailed,
        format!(
            "pinning {kind} {name} at {}: {}",
            path.display(),
            chain(err)
        ),
    )
}

/// Checks each `globalData` override against the variable's type in the object's BTF: it must
/// exist and the bytes must be exactly its size. Without BTF, aya's check (the ELF symbol's size)
/// is all there is.
#[doc(hidden)] // public for the fuzz targets (fuzz/fuzz_targets/elf_plan.rs)
pub fn check_globals_against_btf(
    elf: &aya_obj::Object,
    globals: &[(&str, Vec<u8>)],
) -> Result<(), ObjectError> {
    if globals.is_empty() {
        return Ok(());
    }
    let Some(vars) = elf
        .btf
        .as_ref()
        .and_then(|btf| crate::btf_vars::global_vars(&btf.to_bytes()))
    else {
        return Ok(());
    };
    for (name, bytes) in globals {
        let Some(var) = vars.get(*name) else {
            let known = vars.keys().map(String::as_str).collect::<Vec<_>>();
            return Err(ObjectError::new(
                Reason::InvalidGlobalData,
                if known.is_empty() {
                    format!("globalData {name}: the object declares no global variables")
                } else {
                    format!(
                        "globalData {name}: the object declares no global variable {name} (it has: {})",
                        known.join(", ")
                    )
                },
            ));
        };
        if bytes.len() as u64 != var.size {
            return Err(ObjectError::new(
                Reason::InvalidGlobalData,
                format!(
                    "globalData {name} is {} byte{}, but {name} in {} is a {} of {} bytes (from the object's BTF)",
                    bytes.len(),
                    if bytes.len() == 1 { "" } else { "s" },
                    var.section,
                    var.type_name,
                    var.size
                ),
            ));
        }
    }
    Ok(())
}

fn load_error(err: &EbpfError) -> ObjectError {
    match err {
        EbpfError::ParseError(aya_obj::ParseError::InvalidGlobalData { .. })
        | EbpfError::ParseError(aya_obj::ParseError::SymbolNotFound { .. }) => ObjectError::new(
            Reason::InvalidGlobalData,
            format!("globalData does not fit the ELF object: {}", chain(err)),
        ),
        EbpfError::ParseError(_) => ObjectError::new(
            Reason::InvalidElf,
            format!(
                "the bytecode is not a valid eBPF ELF object: {}",
                chain(err)
            ),
        ),
        _ => ObjectError::new(
            Reason::LoadFailed,
            format!("loading the ELF object: {}", chain(err)),
        ),
    }
}

fn program_error(name: &str, err: ProgramError) -> ObjectError {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => ObjectError::new(
            Reason::VerifierRejected,
            format!(
                "the verifier rejected program {name} ({io_error}); log tail:\n{}",
                verifier_log_tail(&verifier_log.to_string(), 8)
            ),
        ),
        other => ObjectError::new(
            Reason::LoadFailed,
            format!("loading program {name}: {}", chain(&other)),
        ),
    }
}

fn load_program(
    name: &str,
    program: &mut Program,
    btf: &KernelBtf,
    btf_function: Option<&str>,
) -> Result<(), ObjectError> {
    let needs_function = || {
        ObjectError::new(
            Reason::InvalidSpec,
            format!(
                "program {name} is an fentry/fexit program: attach.fentry or attach.fexit must name its kernel function"
            ),
        )
    };
    let no_btf = || {
        ObjectError::new(
            Reason::Unsupported,
            format!(
                "program {name} needs the kernel's BTF (/sys/kernel/btf/vmlinux), which this node lacks"
            ),
        )
    };
    let result = match program {
        Program::FEntry(p) => p.load(
            btf_function.ok_or_else(needs_function)?,
            btf.get().ok_or_else(no_btf)?,
        ),
        Program::FExit(p) => p.load(
            btf_function.ok_or_else(needs_function)?,
            btf.get().ok_or_else(no_btf)?,
        ),
        Program::TracePoint(p) => p.load(),
        Program::Xdp(p) => p.load(),
        Program::KProbe(p) => p.load(),
        Program::UProbe(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        Program::SocketFilter(p) => p.load(),
        Program::RawTracePoint(p) => p.load(),
        Program::PerfEvent(p) => p.load(),
        Program::SkMsg(p) => p.load(),
        Program::SockOps(p) => p.load(),
        other => {
            return Err(ObjectError::new(
                Reason::Unsupported,
                format!(
                    "program {name} has type {:?}, which bpfpin cannot load yet",
                    other.prog_type()
                ),
            ));
        }
    };
    let tracing = matches!(program, Program::FEntry(_) | Program::FExit(_));
    result.map_err(|e| {
        let mut err = program_error(name, e);
        if tracing && err.message.contains("os error 1)") {
            // EPERM with an empty log: the kernel refuses BPF trampolines (ftrace restricted).
            err.reason = Reason::LoadFailed;
            err.message.push_str(" (the kernel refused the fentry/fexit program: BPF trampolines are disabled or restricted on this node)");
        }
        err
    })
}
