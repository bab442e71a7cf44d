//! Builds one version of one object: parse the ELF, check it against the spec, load it with aya,
//! pin maps and programs into a fresh version directory and attach. Either the whole version is
//! built, or nothing of it is left behind (the version directory and the shared maps this attempt
//! created are removed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use aya::programs::{Program, ProgramError};
use aya::{Btf, EbpfError, EbpfLoader};
use aya_obj::maps::PinningType;
use base64::Engine as _;
use bpfpin_crds::BpfObjectSpec;

use super::attach::{self, AttachError, AttachPoint};
use super::fsops::{self, FsError};
use super::internal_maps::{InternalMapError, InternalMaps};
use super::layout::Layout;
use super::xdp_dispatcher;
use crate::error::{Reason, StatusError, chain, verifier_log_tail};

/// The kernel's BTF, parsed on first use: only fentry/fexit programs and objects with CO-RE
/// relocations need it, and parsing `/sys/kernel/btf/vmlinux` costs tens of ms and ~12 MiB.
#[derive(Debug, Default)]
pub(crate) struct KernelBtf(std::sync::OnceLock<Option<Btf>>);

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

/// Why a version could not be built. Each variant names the program, map or path concerned.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytecode is over the size limit of every source: `(its size, the limit)` in bytes.
    #[error("the bytecode is {0} bytes, larger than the {mib} MiB limit for bytecode", mib = .1 >> 20)]
    TooLarge(usize, u64),
    /// aya-obj refused the ELF.
    #[error("the bytecode is not a valid eBPF ELF object: {cause}", cause = chain(.0))]
    Parse(#[source] Box<aya_obj::ParseError>),
    /// The ELF parser panicked on the object: `(which parse, the panic's text)`; the parse is ours
    /// or the one in aya's load.
    #[error("the bytecode is not a valid eBPF ELF object: {0} ({1})")]
    ParserPanic(&'static str, String),
    /// A program the spec names is not in the ELF: `(program, the ELF's programs listed)`.
    #[error("program {0} is not in the ELF object (it has: {1})")]
    ProgramNotFound(String, String),
    /// A map the spec names is not in the ELF: `(map, the ELF's maps listed)`.
    #[error("map {0} is not in the ELF object (it has: {1})")]
    MapNotFound(String, String),
    /// A shared map is already pinned with another definition: `(map, shared pin, the fields that
    /// differ)`.
    #[error("map {0} conflicts with the map already shared at {path}: {2}", path = .1.display())]
    MapConflict(String, PathBuf, String),
    /// A `globalData` value is not base64: `(variable, the decoder's error)`.
    #[error("globalData {0} is not valid base64: {1}")]
    GlobalDataBase64(String, #[source] base64::DecodeError),
    /// A `globalData` variable is not declared, and the object declares none.
    #[error("globalData {0}: the object declares no global variables")]
    NoGlobals(String),
    /// A `globalData` variable is not declared: `(variable, the declared ones listed)`.
    #[error("globalData {0}: the object declares no global variable {0} (it has: {1})")]
    UnknownGlobal(String, String),
    /// A `globalData` value has another size than its variable: `(variable, the value's size, the
    /// variable's section, type and size)`.
    #[error("globalData {0} is {1} byte{plural}, but {0} in {2} is a {3} of {4} bytes (from the object's BTF)", plural = if *.1 == 1 { "" } else { "s" })]
    GlobalSize(String, usize, String, String, u64),
    /// aya refused to load the object (before any program is loaded).
    #[error("{message}", message = load_message(.0))]
    Load(#[source] Box<EbpfError>),
    /// A program is missing after aya's load.
    #[error("program {0} is not in the ELF object")]
    ProgramMissing(String),
    /// An fentry/fexit program whose spec names no kernel function.
    #[error(
        "program {0} is an fentry/fexit program: attach.fentry or attach.fexit must name its kernel function"
    )]
    NeedsFunction(String),
    /// A program needs the kernel's BTF, which the node lacks.
    #[error("program {0} needs the kernel's BTF (/sys/kernel/btf/vmlinux), which this node lacks")]
    NoKernelBtf(String),
    /// A program type bpfpin does not load: `(program, its section, its type)`.
    #[error("program {0} (section `{1}`) has type {2}, which bpfpin cannot load yet")]
    UnsupportedType(String, String, String),
    /// A `tp_btf`, `lsm` or `iter` program whose section names no attach target: `(program, its
    /// section)`.
    #[error(
        "program {0} (section `{1}`): the section must name its attach target (`tp_btf/<tracepoint>`, `lsm/<hook>`, `iter/<type>`)"
    )]
    NeedsTarget(String, String),
    /// The kernel refused a program and wrote no verifier log (it refused before verifying):
    /// `(program, the bpf(2) error)`.
    #[error("the kernel refused to load program {0} and gave no verifier log: {1}")]
    NoVerifierLog(String, #[source] std::io::Error),
    /// The verifier refused a program: `(program, the bpf(2) error, the verifier log's tail)`.
    #[error("the verifier rejected program {0} ({1}); log tail:\n{2}")]
    Verifier(String, #[source] std::io::Error, String),
    /// A program could not be loaded for another reason: `(program, aya's error)`.
    #[error("loading program {0}: {cause}", cause = chain(.1))]
    ProgramLoad(String, #[source] Box<ProgramError>),
    /// The kernel refused an fentry/fexit program with EPERM: trampolines are off.
    #[error(
        "{0} (the kernel refused the fentry/fexit program: BPF trampolines are disabled or restricted on this node)"
    )]
    TrampolinesRefused(#[source] Box<LoadError>),
    /// The kernel refused an lsm program with EPERM: trampolines are off, or the BPF LSM is not
    /// active.
    #[error(
        "{0} (the kernel refused the lsm program: BPF trampolines are disabled or restricted on this node, or the bpf LSM is not active; see /sys/kernel/security/lsm)"
    )]
    LsmRefused(#[source] Box<LoadError>),
    /// The id of a pinned program could not be read: `(program, aya's error)`.
    #[error("program {0}: {cause}", cause = chain(.1))]
    ProgramInfo(String, #[source] Box<ProgramError>),
    /// A program or map could not be pinned: `("program" or "map", its name, the pin path,
    /// aya's error)`.
    #[error("pinning {0} {1} at {path}: {cause}", path = .2.display(), cause = chain(.3))]
    Pin(&'static str, String, PathBuf, #[source] aya::pin::PinError),
    /// A private map aya should have created is missing.
    #[error("map {0} was not created")]
    MapNotCreated(String),
    /// A tail call names a program that is not loaded: `(program array, index, program)`.
    #[error("tail call {0}[{1}]: program {2} is not loaded")]
    TailCallProgram(String, u32, String),
    /// A tail call's program has no descriptor: `(program array, index, program, aya's error)`.
    #[error("tail call {0}[{1}] -> {2}: {cause}", cause = chain(.3))]
    TailCallFd(String, u32, String, #[source] Box<ProgramError>),
    /// A tail call's program descriptor could not be duplicated: `(program array, index,
    /// program, the error)`.
    #[error("tail call {0}[{1}] -> {2}: {3}")]
    TailCallDup(String, u32, String, #[source] std::io::Error),
    /// A tail call names a map that is not in the ELF.
    #[error("tail call map {0} is not in the ELF object")]
    TailCallMapMissing(String),
    /// A tail call names a map that is not a program array: `(map, aya's error)`.
    #[error("tail call map {0}: {cause}", cause = chain(.1))]
    TailCallMapType(String, #[source] Box<aya::maps::MapError>),
    /// A tail call could not be set: `(program array, index, aya's error)`.
    #[error("setting tail call {0}[{1}]: {cause}", cause = chain(.2))]
    TailCallSet(String, u32, #[source] Box<aya::maps::MapError>),
    /// A path under the managed root was refused or could not be made.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A program could not be attached.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// An internal map (`.bss`, `.data`, `.rodata`) could not be pinned.
    #[error(transparent)]
    InternalMap(#[from] InternalMapError),
    /// A program's attach cannot be had from its section, or contradicts it.
    #[error(transparent)]
    AutoAttach(#[from] super::auto_attach::AutoAttachError),
}

impl StatusError for LoadError {
    fn reason(&self) -> Reason {
        use LoadError as E;
        match self {
            E::TooLarge(..) | E::Parse(..) | E::ParserPanic(..) => Reason::InvalidElf,
            E::ProgramNotFound(..) | E::ProgramMissing(..) | E::TailCallProgram(..) => {
                Reason::ProgramNotFound
            }
            E::MapNotFound(..) | E::MapNotCreated(..) | E::TailCallMapMissing(..) => {
                Reason::MapNotFound
            }
            E::MapConflict(..) => Reason::MapConflict,
            E::GlobalDataBase64(..)
            | E::NoGlobals(..)
            | E::UnknownGlobal(..)
            | E::GlobalSize(..) => Reason::InvalidGlobalData,
            E::Load(source) => match &**source {
                EbpfError::ParseError(
                    aya_obj::ParseError::InvalidGlobalData { .. }
                    | aya_obj::ParseError::SymbolNotFound { .. },
                ) => Reason::InvalidGlobalData,
                EbpfError::ParseError(_) => Reason::InvalidElf,
                // libbpf compatibility: a listed program whose section aya cannot load.
                EbpfError::UnsupportedProgramSection { .. } => Reason::Unsupported,
                _ => Reason::LoadFailed,
            },
            E::NeedsFunction(..) | E::NeedsTarget(..) | E::TailCallMapType(..) => {
                Reason::InvalidSpec
            }
            E::NoKernelBtf(..) | E::UnsupportedType(..) => Reason::Unsupported,
            E::Verifier(..) => Reason::VerifierRejected,
            E::ProgramLoad(..)
            | E::NoVerifierLog(..)
            | E::TrampolinesRefused(..)
            | E::LsmRefused(..)
            | E::ProgramInfo(..)
            | E::TailCallFd(..)
            | E::TailCallDup(..)
            | E::TailCallSet(..) => Reason::LoadFailed,
            E::Pin(..) => Reason::PinFailed,
            E::Fs(e) => e.reason(),
            E::Attach(e) => e.reason(),
            E::InternalMap(e) => e.reason(),
            E::AutoAttach(e) => e.reason(),
        }
    }
}

/// The message of an error of aya's object load, by what it concerns.
fn load_message(err: &EbpfError) -> String {
    match err {
        EbpfError::ParseError(
            aya_obj::ParseError::InvalidGlobalData { .. }
            | aya_obj::ParseError::SymbolNotFound { .. },
        ) => format!("globalData does not fit the ELF object: {}", chain(err)),
        EbpfError::ParseError(_) => format!(
            "the bytecode is not a valid eBPF ELF object: {}",
            chain(err)
        ),
        EbpfError::UnsupportedProgramSection { .. } => err.to_string(),
        _ => format!("loading the ELF object: {}", chain(err)),
    }
}

/// Parses the ELF object; a panic inside the parser (a malformed object it does not check for) is
/// an `InvalidElf` of this object, not the end of the agent.
pub(crate) fn parse_elf(bytes: &[u8]) -> Result<aya_obj::Object, LoadError> {
    match std::panic::catch_unwind(|| aya_obj::Object::parse(bytes)) {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(source)) => Err(LoadError::Parse(Box::new(source))),
        Err(panic) => Err(LoadError::ParserPanic(
            "the ELF parser failed on it",
            panic_text(&*panic),
        )),
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
) -> Result<MapPlan, LoadError> {
    for prog in &spec.programs {
        if !elf.programs.contains_key(&prog.name) {
            let have: Vec<&str> = elf.programs.keys().map(String::as_str).collect();
            return Err(LoadError::ProgramNotFound(
                prog.name.clone(),
                name_list(have),
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
            return Err(LoadError::MapNotFound((*name).to_owned(), name_list(have)));
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
        let (netfilter, xdp): (Vec<_>, Vec<_>) = self
            .replaced_links
            .iter()
            .partition(|(link, _)| attach::is_netfilter_link(link));
        for (link, prog) in xdp {
            if let Err(e) = attach::restore_xdp_link(link, prog) {
                tracing::warn!(link = %link.display(), error = %e, "could not restore the previous program on a link");
            }
        }
        if let Some(dir) = &self.version_dir {
            fsops::remove_tree(root, dir);
        }
        // A netfilter priority holds one program: the failed version's link is gone now.
        for (link, prog) in netfilter {
            if let Err(e) = attach::restore_netfilter_link(link, prog) {
                tracing::warn!(link = %link.display(), error = %e, "could not attach the previous netfilter program again");
            }
        }
        for pin in &self.created_shared {
            fsops::remove_tree(root, pin);
        }
    }
}

/// Everything needed to build one version.
#[derive(Debug)]
pub(crate) struct BuildRequest<'a> {
    /// The object's name.
    pub object: &'a str,
    /// The object's spec: programs, maps, global data, tail calls and attach points.
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
pub(crate) fn build(
    layout: &Layout,
    btf: &KernelBtf,
    req: &BuildRequest<'_>,
) -> Result<PinnedVersion, LoadError> {
    let mut attempt = Attempt {
        layout,
        req,
        dir: layout.version(req.object, req.version),
        rollback: Rollback::default(),
        attach: BTreeMap::new(),
    };
    match attempt.run(btf) {
        Ok(v) => Ok(v),
        Err(e) => {
            attempt.rollback.undo(layout.root());
            Err(e)
        }
    }
}

/// One build of one version, stage by stage; what it created outside its directory is in
/// `rollback`.
struct Attempt<'a> {
    layout: &'a Layout,
    req: &'a BuildRequest<'a>,
    /// The new version directory.
    dir: PathBuf,
    rollback: Rollback,
    /// Each attached program's attach point, with what `attach: {}` takes from the section
    /// filled in (auto-attach).
    attach: BTreeMap<String, bpfpin_crds::Attach>,
}

/// Programs identical to the previous version's, by name: that program object is kept (same id,
/// same links) and the one just loaded is dropped.
type Kept = BTreeMap<String, Program>;

impl Attempt<'_> {
    /// The stages, in order: everything that can fail without touching bpffs first, attaching
    /// (the only stage running traffic sees) last.
    fn run(&mut self, btf: &KernelBtf) -> Result<PinnedVersion, LoadError> {
        let (elf, plan) = self.check_elf()?;
        self.attach = resolve_attach(self.req.spec, &elf)?;
        self.prepare_shared(&elf, &plan)?;
        let globals = decode_globals(self.req.spec)?;
        check_globals_against_btf(&elf, &globals)?;
        let internal = InternalMaps::plan(self.req.object, &elf, &globals, self.req.previous);
        let (mut ebpf, reused) = self.load(btf, &elf, &plan, &globals, &internal)?;
        fsops::create_dirs(self.layout.root(), &self.dir)?;
        self.rollback.version_dir = Some(self.dir.clone());
        let (programs, mut kept) = self.pin_programs(&mut ebpf, btf)?;
        fill_tail_calls(self.req.spec, &plan, &mut ebpf, &kept)?;
        let mut maps = self.pin_maps(&ebpf, &plan)?;
        maps.extend(internal.pin(&ebpf, self.layout, self.req.object, &self.dir)?);
        let shared: Vec<PathBuf> = plan.shared.values().cloned().collect();
        maps.extend(shared.iter().cloned());
        let links = self.attach_all(&mut ebpf, &mut kept)?;
        if !reused.is_empty() {
            tracing::debug!(object = self.req.object, maps = ?reused, "kept the contents of unchanged maps");
        }
        Ok(PinnedVersion {
            version: self.req.version.to_owned(),
            programs,
            maps,
            links,
            shared,
        })
    }

    /// The size limit, the parse, and the spec's programs and maps against the ELF.
    fn check_elf(&self) -> Result<(aya_obj::Object, MapPlan), LoadError> {
        let limit = crate::fd::MAX_BYTES;
        if self.req.bytecode.len() as u64 > limit {
            return Err(LoadError::TooLarge(self.req.bytecode.len(), limit));
        }
        let elf = parse_elf(self.req.bytecode)?;
        let plan = plan_maps(self.layout, self.req.spec, &elf)?;
        Ok((elf, plan))
    }

    /// Shared pins that exist must have this object's definition; the others this attempt creates
    /// (and removes again if it fails).
    fn prepare_shared(&mut self, elf: &aya_obj::Object, plan: &MapPlan) -> Result<(), LoadError> {
        let root = self.layout.root();
        for (name, path) in &plan.shared {
            fsops::confine(root, path)?;
            match MapInfo::from_pin(path) {
                Ok(info) => {
                    let max = max_entries_of(self.req.spec, name);
                    definition_matches(&info, &elf.maps[name], max)
                        .map_err(|why| LoadError::MapConflict(name.clone(), path.clone(), why))?
                }
                Err(_) => {
                    if let Some(parent) = path.parent() {
                        fsops::create_dirs(root, parent)?;
                    }
                    self.rollback.created_shared.push(path.clone());
                }
            }
        }
        Ok(())
    }

    /// aya's load of the object (maps created or reused, nothing pinned yet), and the private
    /// maps taken over from the previous version.
    fn load(
        &self,
        btf: &KernelBtf,
        elf: &aya_obj::Object,
        plan: &MapPlan,
        globals: &[(&str, Vec<u8>)],
        internal: &InternalMaps,
    ) -> Result<(aya::Ebpf, BTreeSet<String>), LoadError> {
        let spec = self.req.spec;
        let mut loader = EbpfLoader::new();
        // Only the programs the spec names are relocated and loaded (the patched aya drops the
        // others after parsing): an object with thousands of programs costs what the named ones do.
        loader.programs(spec.programs.iter().map(|p| p.name.as_str()));
        // Without relocations the kernel's BTF is not needed (the patched aya then reads none).
        if elf.has_btf_relocations() {
            loader.btf(btf.get());
        }
        // `.kconfig` externs (`CONFIG_*`) read the node's kernel configuration.
        if !elf.kconfig_externs().is_empty() {
            loader.kconfig(kernel_config().clone());
        }
        loader.default_map_pin_directory(self.layout.shared());
        for (name, bytes) in globals {
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
        // XDP programs that share an interface are loaded as extensions of its dispatcher (a
        // program of another type keeps its own type, and its attach reports the wrong type).
        let is_xdp = |name: &str| {
            elf.programs
                .get(name)
                .is_some_and(|p| matches!(p.section, aya_obj::ProgramSection::Xdp { .. }))
        };
        for p in spec
            .programs
            .iter()
            .filter(|p| xdp_dispatcher::wants_dispatcher(p) && is_xdp(&p.name))
        {
            loader.extension(&p.name);
        }
        // Keep the contents of maps whose definition did not change.
        let mut reused = BTreeSet::new();
        if let Some(prev) = self.req.previous {
            for name in &plan.private {
                let old = Layout::map_in(prev, name);
                if let Ok(info) = MapInfo::from_pin(&old)
                    && definition_matches(&info, &elf.maps[name], max_entries_of(spec, name))
                        .is_ok()
                {
                    loader.map_pin_path(name, old);
                    reused.insert(name.clone());
                }
            }
        }
        // Internal maps whose layout (and `.rodata` values) did not change: opened, not made.
        for (name, old) in internal.reused() {
            loader.map_pin_path(name, old);
            reused.insert(name.to_owned());
        }
        // aya parses the object again: the same panic guard as `parse_elf`.
        let bytecode = self.req.bytecode;
        let ebpf = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.load(bytecode)))
            .map_err(|panic| LoadError::ParserPanic("loading failed on it", panic_text(&*panic)))?
            .map_err(|source| LoadError::Load(Box::new(source)))?;
        Ok((ebpf, reused))
    }

    /// Loads each program into the kernel and pins it; an unchanged program keeps its previous
    /// version's program object. Returns `(program, kernel id)` in spec order.
    fn pin_programs(
        &self,
        ebpf: &mut aya::Ebpf,
        btf: &KernelBtf,
    ) -> Result<(Vec<(String, u32)>, Kept), LoadError> {
        let spec = self.req.spec;
        let mut programs = Vec::with_capacity(spec.programs.len());
        let mut kept = Kept::new();
        for prog_spec in &spec.programs {
            let name = prog_spec.name.as_str();
            let program = ebpf
                .program_mut(name)
                .ok_or_else(|| LoadError::ProgramMissing(name.to_owned()))?;
            let btf_function = self.attach.get(name).and_then(AttachPoint::btf_function);
            match program {
                Program::Extension(ext) => {
                    let xdp = self.attach.get(name).and_then(|a| a.xdp.as_ref());
                    xdp_dispatcher::load(self.layout.root(), prog_spec, xdp, ext)
                        .map_err(AttachError::from)?
                }
                _ => load_program(name, program, btf, btf_function)?,
            }
            let path = Layout::prog_in(&self.dir, name);
            fsops::create_dirs(self.layout.root(), path.parent().expect("progs/"))?;
            let previous = self
                .req
                .previous
                .and_then(|prev| same_as_previous(prev, name, program));
            let target = match previous {
                Some(old) => kept.entry(name.to_owned()).or_insert(old),
                None => program,
            };
            target.pin(&path).map_err(|source| {
                LoadError::Pin("program", name.to_owned(), path.clone(), source)
            })?;
            let info = target
                .info()
                .map_err(|source| LoadError::ProgramInfo(name.to_owned(), Box::new(source)))?;
            programs.push((name.to_owned(), info.id()));
        }
        if !kept.is_empty() {
            tracing::debug!(object = self.req.object, programs = ?kept.keys().collect::<Vec<_>>(), "kept unchanged programs");
        }
        Ok((programs, kept))
    }

    /// Pins the private maps; returns their public paths.
    fn pin_maps(&self, ebpf: &aya::Ebpf, plan: &MapPlan) -> Result<Vec<PathBuf>, LoadError> {
        let mut maps = Vec::new();
        for name in &plan.private {
            let path = Layout::map_in(&self.dir, name);
            let map = ebpf
                .map(name)
                .ok_or_else(|| LoadError::MapNotCreated(name.clone()))?;
            fsops::create_dirs(self.layout.root(), path.parent().expect("maps/"))?;
            map.pin(&path)
                .map_err(|source| LoadError::Pin("map", name.clone(), path.clone(), source))?;
            maps.push(self.layout.public_path(self.req.object, &self.dir, &path));
        }
        Ok(maps)
    }

    /// Attaches every program at every point and pins the links; returns their public paths.
    fn attach_all(
        &mut self,
        ebpf: &mut aya::Ebpf,
        kept: &mut Kept,
    ) -> Result<Vec<PathBuf>, LoadError> {
        let mut links = Vec::new();
        let mut usdt_spec_ids = 0;
        for prog_spec in &self.req.spec.programs {
            let Some(attach) = self.attach.get(&prog_spec.name) else {
                continue;
            };
            let name = prog_spec.name.as_str();
            // A usdt point becomes one point per site, each with its spec in the object's
            // __bpf_usdt_specs map (attach/usdt.rs).
            let mut points = attach::usdt::expand(name, AttachPoint::all(attach))?;
            attach::usdt::write_specs(ebpf, name, &mut points, &mut usdt_spec_ids)?;
            // sk_msg/sk_skb attach to a socket map of the object: its descriptor, taken before the
            // program is borrowed.
            let maps = attach::SockMaps::of(ebpf, &points)
                .map_err(|e| AttachError::SockMapFd(name.to_owned(), e))?;
            for point in points {
                let path = Layout::link_in(&self.dir, name, &point.link_name());
                fsops::create_dirs(self.layout.root(), path.parent().expect("links/<program>/"))?;
                let previous_link = self
                    .req
                    .previous
                    .map(|p| Layout::link_in(p, name, &point.link_name()));
                if let Some(program) = kept.get_mut(name) {
                    // The same program at the same point: its link simply moves to the new version.
                    // A link whose interface went is not moved: the program attaches again.
                    match previous_link
                        .as_deref()
                        .filter(|p| p.exists() && !attach::is_detached(p))
                    {
                        Some(prev) => attach::repin_link(prev, &path)?,
                        None => {
                            attach::attach_and_pin(program, name, &point, &path, None, &maps)?;
                        }
                    }
                } else {
                    let program = ebpf.program_mut(name).expect("loaded above");
                    let previous_link = previous_link.as_deref();
                    if let Some(replaced) =
                        attach::attach_and_pin(program, name, &point, &path, previous_link, &maps)?
                    {
                        let prev = self.req.previous.expect("replaced a previous link");
                        let prev_prog = Layout::prog_in(prev, name);
                        self.rollback.replaced_links.push((replaced, prev_prog));
                    }
                }
                links.push(self.layout.public_path(self.req.object, &self.dir, &path));
            }
        }
        Ok(links)
    }
}

/// The kernel's configuration, for `.kconfig` externs: `/proc/config.gz` (CONFIG_IKCONFIG_PROC),
/// else `/boot/config-$(uname -r)`, as libbpf looks; empty when neither is there (then a non-weak
/// `CONFIG_*` extern fails the load naming it). Read once: it does not change while the kernel
/// runs.
fn kernel_config() -> &'static HashMap<String, aya_obj::kconfig::KconfigValue> {
    static CONFIG: std::sync::OnceLock<HashMap<String, aya_obj::kconfig::KconfigValue>> =
        std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        use std::io::Read as _;
        let mut text = String::new();
        let from_proc = std::fs::File::open("/proc/config.gz").and_then(|f| {
            flate2::read::GzDecoder::new(f)
                .take(16 << 20)
                .read_to_string(&mut text)
        });
        if from_proc.is_err() {
            text.clear();
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            text = std::fs::read_to_string(format!("/boot/config-{}", release.trim()))
                .unwrap_or_default();
        }
        aya_obj::kconfig::parse_kconfig(&text).into_iter().collect()
    })
}

/// Every listed program's attach point, with auto-attach applied: checked against, or taken from,
/// its ELF section (see `auto_attach`). Before anything is loaded, so a bad one pins nothing.
fn resolve_attach(
    spec: &BpfObjectSpec,
    elf: &aya_obj::Object,
) -> Result<BTreeMap<String, bpfpin_crds::Attach>, LoadError> {
    let mut out = BTreeMap::new();
    for p in &spec.programs {
        let (Some(attach), Some(prog)) = (&p.attach, elf.programs.get(&p.name)) else {
            continue;
        };
        let resolved = super::auto_attach::resolve_on_node(&p.name, &prog.section_name, attach)?;
        // Host interface patterns and primaryNodeInterface, as the node has them now.
        let resolved = super::interfaces::resolve(&p.name, &resolved)
            .map_err(AttachError::from)?
            .into_owned();
        out.insert(p.name.clone(), resolved);
    }
    Ok(out)
}

/// The spec's `globalData`, base64-decoded.
fn decode_globals(spec: &BpfObjectSpec) -> Result<Vec<(&str, Vec<u8>)>, LoadError> {
    spec.global_data
        .iter()
        .map(|(name, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(|bytes| (name.as_str(), bytes))
                .map_err(|source| LoadError::GlobalDataBase64(name.clone(), source))
        })
        .collect()
}

/// The previous version's program `name` when the newly loaded one is the same program: same
/// type, same instructions (the kernel's tag) and the same maps. Programs that use global data
/// match when their internal maps were reused (`super::internal_maps`).
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
        // Issue 13's kinds. A sockmap takes one program per attach type: a reloaded copy of an
        // unchanged sk_msg/sk_skb program could not attach to the kept map (EBUSY).
        other => return same_as_previous_more(&old_path, other),
    };
    Some(kept)
}

/// `same_as_previous` for issue 13's program types.
fn same_as_previous_more(old_path: &Path, new: &Program) -> Option<Program> {
    use aya::programs::{
        CgroupDevice, CgroupSysctl, Iter, PerfEvent, RawTracePoint, SkLookup, SkMsg, SkSkb, SockOps,
    };
    let kept = match new {
        Program::RawTracePoint(_) => {
            Program::RawTracePoint(RawTracePoint::from_pin(old_path).ok()?)
        }
        Program::SockOps(_) => Program::SockOps(SockOps::from_pin(old_path).ok()?),
        Program::CgroupSysctl(_) => Program::CgroupSysctl(CgroupSysctl::from_pin(old_path).ok()?),
        Program::CgroupDevice(_) => Program::CgroupDevice(CgroupDevice::from_pin(old_path).ok()?),
        Program::SkLookup(_) => Program::SkLookup(SkLookup::from_pin(old_path).ok()?),
        Program::SkMsg(_) => Program::SkMsg(SkMsg::from_pin(old_path).ok()?),
        Program::SkSkb(p) => Program::SkSkb(SkSkb::from_pin(old_path, p.kind()).ok()?),
        Program::PerfEvent(_) => Program::PerfEvent(PerfEvent::from_pin(old_path).ok()?),
        Program::Iter(_) => Program::Iter(Iter::from_pin(old_path).ok()?),
        Program::Netfilter(_) => {
            Program::Netfilter(aya::programs::Netfilter::from_pin(old_path).ok()?)
        }
        _ => return None,
    };
    Some(kept)
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
    kept: &Kept,
) -> Result<(), LoadError> {
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
        for &(index, program) in &entries {
            // The pinned program: a kept one, or the one just loaded.
            let prog = kept
                .get(program)
                .or_else(|| ebpf.program(program))
                .ok_or_else(|| {
                    LoadError::TailCallProgram(map.to_owned(), index, program.to_owned())
                })?;
            let fd = prog
                .fd()
                .map_err(|source| {
                    LoadError::TailCallFd(
                        map.to_owned(),
                        index,
                        program.to_owned(),
                        Box::new(source),
                    )
                })?
                .try_clone()
                .map_err(|source| {
                    LoadError::TailCallDup(map.to_owned(), index, program.to_owned(), source)
                })?;
            fds.push((index, fd));
        }
        let m = ebpf
            .map_mut(map)
            .ok_or_else(|| LoadError::TailCallMapMissing(map.to_owned()))?;
        let mut array: ProgramArray<&mut aya::maps::MapData> = ProgramArray::try_from(m)
            .map_err(|source| LoadError::TailCallMapType(map.to_owned(), Box::new(source)))?;
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
            array.set(*index, fd, 0).map_err(|source| {
                LoadError::TailCallSet(map.to_owned(), *index, Box::new(source))
            })?;
        }
    }
    Ok(())
}

/// Checks each `globalData` override against the variable's type in the object's BTF: it must
/// exist and the bytes must be exactly its size. Without BTF, aya's check (the ELF symbol's size)
/// is all there is.
#[doc(hidden)] // public for the fuzz targets (fuzz/fuzz_targets/elf_plan.rs)
pub fn check_globals_against_btf(
    elf: &aya_obj::Object,
    globals: &[(&str, Vec<u8>)],
) -> Result<(), LoadError> {
    if globals.is_empty() {
        return Ok(());
    }
    let Some(vars) = elf
        .btf
        .as_ref()
        .and_then(|btf| super::btf_vars::global_vars(&btf.to_bytes()))
    else {
        return Ok(());
    };
    for (name, bytes) in globals {
        let Some(var) = vars.get(*name) else {
            let known = vars.keys().map(String::as_str).collect::<Vec<_>>();
            let name = (*name).to_owned();
            return Err(if known.is_empty() {
                LoadError::NoGlobals(name)
            } else {
                LoadError::UnknownGlobal(name, known.join(", "))
            });
        };
        if bytes.len() as u64 != var.size {
            return Err(LoadError::GlobalSize(
                (*name).to_owned(),
                bytes.len(),
                var.section.clone(),
                var.type_name.clone(),
                var.size,
            ));
        }
    }
    Ok(())
}

/// The error of a program's load: the verifier's verdict, or aya's error.
fn program_error(name: &str, err: ProgramError) -> LoadError {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => match verifier_log_tail(&verifier_log.to_string(), 8) {
            tail if tail.is_empty() => LoadError::NoVerifierLog(name.to_owned(), io_error),
            tail => LoadError::Verifier(name.to_owned(), io_error, tail),
        },
        source => LoadError::ProgramLoad(name.to_owned(), Box::new(source)),
    }
}

fn load_program(
    name: &str,
    program: &mut Program,
    btf: &KernelBtf,
    btf_function: Option<&str>,
) -> Result<(), LoadError> {
    let needs_function = || LoadError::NeedsFunction(name.to_owned());
    let no_btf = || LoadError::NoKernelBtf(name.to_owned());
    // libbpf compatibility: `tp_btf/<tracepoint>`, `lsm/<hook>` and `iter/<type>` name the
    // program's BTF attach target in its section, as libbpf reads it.
    let section = program.section_name().unwrap_or_default().to_owned();
    let target = section
        .split_once('/')
        .map(|(_, t)| t)
        .filter(|t| !t.is_empty());
    let needs_target = || LoadError::NeedsTarget(name.to_owned(), section.clone());
    let result = match program {
        Program::BtfTracePoint(p) => p.load(
            target.ok_or_else(needs_target)?,
            btf.get().ok_or_else(no_btf)?,
        ),
        Program::Lsm(p) => p.load(
            target.ok_or_else(needs_target)?,
            btf.get().ok_or_else(no_btf)?,
        ),
        Program::Iter(p) => p.load(
            target.ok_or_else(needs_target)?,
            btf.get().ok_or_else(no_btf)?,
        ),
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
        // libbpf compatibility: program types that load without an attach target.
        Program::CgroupSock(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupSockopt(p) => p.load(),
        Program::CgroupSysctl(p) => p.load(),
        Program::CgroupDevice(p) => p.load(),
        Program::SkSkb(p) => p.load(),
        Program::SkLookup(p) => p.load(),
        Program::SkReuseport(p) => p.load(),
        Program::FlowDissector(p) => p.load(),
        Program::LircMode2(p) => p.load(),
        // Issue 13's hook kinds: netfilter, and the types bpfpin loads and pins only.
        Program::Netfilter(p) => p.load(),
        Program::LoadOnly(p) => p.load(),
        other => {
            return Err(LoadError::UnsupportedType(
                name.to_owned(),
                section.clone(),
                format!("{:?}", other.prog_type()),
            ));
        }
    };
    let tracing = matches!(program, Program::FEntry(_) | Program::FExit(_));
    let lsm = matches!(program, Program::Lsm(_));
    result.map_err(|e| {
        let err = program_error(name, e);
        let eperm = err.to_string().contains("os error 1)");
        if tracing && eperm {
            // EPERM with an empty log: the kernel refuses BPF trampolines (ftrace restricted).
            LoadError::TrampolinesRefused(Box::new(err))
        } else if lsm && eperm {
            LoadError::LsmRefused(Box::new(err))
        } else {
            err
        }
    })
}
