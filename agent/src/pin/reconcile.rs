//! The core: make the managed root equal to the union of the desired objects. Shared by local and
//! cluster mode; knows nothing of Kubernetes.
//!
//! One pass: sweep `_staging`, then for each desired object adopt what is pinned (same version
//! key, pins present) or build a new version aside and swap it in with one rename; then remove
//! objects nobody wants, stale versions, and shared maps no object names.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aya::programs::ProgramInfo;

use super::attach::AttachPoint;
use super::desired::{DesiredObject, sha256_hex, version_key};
use super::fsops;
use super::fsops::FsError;
use super::internal_maps;
use super::layout::{Layout, SHARED_DIR, STAGING_DIR, VERSIONS_DIR};
use super::loader::LoadError;
use super::loader::{self, BuildRequest, PinnedVersion};
use super::map_memory::{self, Headroom};
use super::mounts;
use crate::error::{AgentError, ObjectError, Reason, StatusError};
use bpfpin_crds::validation::{ValidationError, validate_object_name};

/// Why a pass could not pin one object (besides a failed build, which is a [`LoadError`]).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The object's name could become another path of the root: nothing is done for it.
    #[error("{0}; nothing was pinned or removed for this object")]
    RefusedName(#[source] ValidationError),
    /// The spec breaks a rule of the CRD.
    #[error("{0}")]
    InvalidSpec(#[source] ValidationError),
    /// The bytecode could not be had (the source's error, as the mode reported it).
    #[error("{message}", message = .0.message)]
    Bytecode(ObjectError),
    /// The bytecode's digest is not the one the spec pins: `(its digest, spec.sha256)`.
    #[error("the bytecode's sha256 is {0}, spec.sha256 says {1}")]
    DigestMismatch(String, String),
    /// A shared map's pin path collides with other shared pins: `(map, object, pin path, what is
    /// in the way)`.
    #[error("map {0} of object {1} would be pinned at {path}, {3}; choose another pinPath", path = .2.display())]
    SharedPathTaken(String, String, PathBuf, Box<SharedPathProblem>),
    /// The object's new maps do not fit the agent's memory cgroup: `(object, bytes needed, the
    /// largest new maps listed, the cgroup's headroom)`.
    #[error("object {0}: its new maps need about {need}, but the agent's memory cgroup {cgroup} has {left} left (limit {limit}, used {usage}, {reserve} kept for the agent); map memory is charged to the agent's cgroup and stays charged while pinned: raise the agent's memory limit or lower spec.maps[].maxEntries", need = format!("{} ({})", map_memory::human(*.1), .2), cgroup = .3.cgroup.display(), left = map_memory::human(.3.left()), limit = map_memory::human(.3.limit), usage = map_memory::human(.3.usage), reserve = map_memory::human(map_memory::RESERVE))]
    InsufficientMemory(String, u64, String, Headroom),
    /// The object's symlink could not be pointed at the new version: `(step, object, the error)`.
    #[error("{0} for object {1}: {2}")]
    Swap(&'static str, String, #[source] std::io::Error),
    /// A path under the root was refused or could not be made.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The version could not be built.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// What is in the way of a shared map's pin path.
#[derive(Debug, thiserror::Error)]
pub enum SharedPathProblem {
    /// A directory on the way is a pinned map: `(the pin, its owners)`.
    #[error("below {path}, where {1} has a map pinned", path = .0.display())]
    BelowPin(PathBuf, String),
    /// The pin path is a directory of other shared maps: `(the pins listed, their owners)`.
    #[error("which is a directory holding the shared map(s) {0} of {1}")]
    HoldsPins(String, String),
    /// Something that is not a map is pinned there.
    #[error("where something that is not a map is pinned")]
    NotAMap,
}

impl StatusError for ReconcileError {
    fn reason(&self) -> Reason {
        match self {
            ReconcileError::RefusedName(..) | ReconcileError::InvalidSpec(_) => Reason::InvalidSpec,
            ReconcileError::Bytecode(e) => e.reason,
            ReconcileError::DigestMismatch(..) => Reason::DigestMismatch,
            ReconcileError::SharedPathTaken(..) => Reason::MapConflict,
            ReconcileError::InsufficientMemory(..) => Reason::InsufficientMemory,
            ReconcileError::Swap(..) => Reason::PinFailed,
            ReconcileError::Fs(e) => e.reason(),
            ReconcileError::Load(e) => e.reason(),
        }
    }
}

/// What a pass did with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Already pinned by this process at this version: nothing done.
    Unchanged,
    /// Pinned by an earlier run (or process) at this version: taken over, nothing reloaded.
    Adopted,
    /// Pinned for the first time.
    Created,
    /// A new version was swapped in.
    Updated,
    /// Could not be pinned; nothing of it is pinned.
    Failed,
    /// The new spec could not be pinned; the previous version stays pinned and running.
    KeptPrevious,
}

/// The outcome for one desired object.
#[derive(Debug, Clone)]
pub struct ObjectReport {
    /// The object's name (`metadata.name`).
    pub name: String,
    /// Its uid, as given.
    pub uid: Option<String>,
    /// Its generation, as given.
    pub generation: i64,
    /// What the pass did.
    pub action: Action,
    /// Why it failed (with `Failed` and `KeptPrevious`).
    pub error: Option<ObjectError>,
    /// What is pinned for it now (the previous version with `KeptPrevious`).
    pub pinned: Option<PinnedVersion>,
    /// `<root>/<object>`.
    pub path: PathBuf,
}

impl ObjectReport {
    /// Pinned at the desired spec.
    pub fn is_ready(&self) -> bool {
        self.error.is_none()
    }
}

/// The outcome of one pass.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    /// One entry per desired object, by name.
    pub objects: Vec<ObjectReport>,
    /// Objects removed because nothing wants them any more.
    pub removed: Vec<String>,
    /// Pins unlinked by the sweep (removed objects, stale versions, unknown entries, shared maps).
    pub unpinned: usize,
    /// Estimated bytes of the maps pinned for the objects of this pass (each shared map once):
    /// memory charged to the agent's memory cgroup (see [`super::map_memory`]).
    pub map_memory: u64,
    /// What the agent's memory cgroup has left after the pass, if it has a limit.
    pub memory_headroom: Option<u64>,
}

#[derive(Debug, Clone)]
struct Current {
    version: String,
    state: PinnedVersion,
    /// Estimated bytes of its maps: private ones (and those no pin holds but its programs), and
    /// each shared one by path.
    private_bytes: u64,
    shared_bytes: Vec<(PathBuf, u64)>,
}

/// The reconciler of one managed root.
#[derive(Debug)]
pub struct Reconciler {
    layout: Layout,
    btf: loader::KernelBtf,
    /// What this process knows is pinned, so steady-state passes make no BPF syscalls.
    known: HashMap<String, Current>,
    /// The map memory of the last pass, to log when it changes.
    last_map_memory: u64,
}

impl Reconciler {
    /// A reconciler for `<bpffs>/bpfpin`. Mounts bpffs at `bpffs` if needed and creates the root.
    pub fn new(bpffs: &Path) -> Result<Self, AgentError> {
        mounts::ensure_bpffs(bpffs)?;
        let layout = Layout::new(bpffs);
        let root = layout.root();
        if std::fs::symlink_metadata(root).is_err() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(fsops::DIR_MODE)
                .create(root)
                .map_err(|e| AgentError::io("creating", root, e))?;
        }
        fsops::check_root(root).map_err(|message| AgentError::Bpffs {
            path: root.to_path_buf(),
            message,
        })?;
        for dir in [root.join(VERSIONS_DIR), layout.staging(), layout.shared()] {
            fsops::create_dirs(root, &dir).map_err(|e| AgentError::Bpffs {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        }
        // The kernel's BTF is parsed once per process, not once per load.
        let btf = loader::KernelBtf::default();
        Ok(Self {
            layout,
            btf,
            known: HashMap::new(),
            last_map_memory: 0,
        })
    }

    /// The layout of the managed root.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// One pass over every desired object, then the sweep. Objects named in `hold` are left as
    /// they are, neither built nor swept (e.g. their manifest is unreadable right now); while any
    /// is held, shared maps are not swept either.
    pub fn reconcile(&mut self, desired: &[DesiredObject], hold: &BTreeSet<String>) -> PassReport {
        let mut report = PassReport::default();
        let root = self.layout.root().to_path_buf();
        report.unpinned += fsops::remove_tree(&root, &self.layout.staging());
        for dir in [
            self.layout.staging(),
            self.layout.shared(),
            root.join(VERSIONS_DIR),
        ] {
            if let Err(e) = fsops::create_dirs(&root, &dir) {
                tracing::error!(path = %dir.display(), error = %e, "cannot create an internal directory of the managed root");
            }
        }

        // An object whose name is not a valid object name is refused before anything touches a
        // path: its name could be an internal directory (`shared`, `_versions`) or another
        // object's path (`good/`, `_versions/good`). It takes no part in the sweep either.
        let mut sorted: Vec<&DesiredObject> = Vec::with_capacity(desired.len());
        for obj in desired {
            match validate_object_name(&obj.name) {
                Ok(()) => sorted.push(obj),
                Err(source) => report
                    .objects
                    .push(self.refused_name(obj, ReconcileError::RefusedName(source))),
            }
        }
        let hold: BTreeSet<&str> = hold
            .iter()
            .map(String::as_str)
            .filter(|h| validate_object_name(h).is_ok())
            .collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.dedup_by(|a, b| a.name == b.name);
        let mut shared_known = hold.is_empty();
        for obj in &sorted {
            let r = self.reconcile_object(obj, &sorted);
            if r.pinned.is_none() && self.current_version(&obj.name).is_some() {
                // Something is pinned that this pass could not describe: its shared maps are
                // unknown, so the shared sweep must wait.
                shared_known = false;
            }
            report.objects.push(r);
        }

        let wanted: BTreeSet<&str> = sorted
            .iter()
            .map(|o| o.name.as_str())
            .chain(hold.iter().copied())
            .collect();
        self.sweep_objects(&wanted, &mut report);
        // XDP dispatchers: slots of swept programs go, slots lost by a rolled-back update return.
        super::xdp_dispatcher::sync(self.layout.root());
        if shared_known {
            let mut keep: BTreeSet<PathBuf> = BTreeSet::new();
            for r in &report.objects {
                if let Some(p) = &r.pinned {
                    keep.extend(p.shared.iter().cloned());
                }
            }
            for obj in &sorted {
                for m in &obj.spec.maps {
                    if let Some(pin) = &m.pin_path {
                        keep.insert(self.layout.shared_map(pin));
                    }
                }
            }
            report.unpinned += self.sweep_shared(&keep);
        }
        self.account_memory(&mut report);
        report
    }

    /// Fills in the pass's map memory (objects pinned now, each shared map once) and headroom.
    fn account_memory(&mut self, report: &mut PassReport) {
        let mut shared: HashMap<&Path, u64> = HashMap::new();
        let mut private = 0;
        for r in report.objects.iter().filter(|r| r.pinned.is_some()) {
            if let Some(c) = self.known.get(&r.name) {
                private += c.private_bytes;
                for (path, bytes) in &c.shared_bytes {
                    shared.insert(path, *bytes);
                }
            }
        }
        report.map_memory = private + shared.values().sum::<u64>();
        report.memory_headroom = map_memory::headroom().map(|h| h.left());
        if report.map_memory != self.last_map_memory {
            self.last_map_memory = report.map_memory;
            tracing::info!(
                map_memory = report.map_memory,
                headroom = ?report.memory_headroom,
                "map memory pinned (estimated; charged to the agent's memory cgroup)"
            );
        }
    }

    fn current_version(&self, object: &str) -> Option<String> {
        let target = std::fs::read_link(self.layout.object(object)).ok()?;
        Layout::version_from_target(object, &target)
    }

    /// The report of an object refused for its name: nothing was read, built or removed for it.
    fn refused_name(&self, obj: &DesiredObject, refused: ReconcileError) -> ObjectReport {
        let error = ObjectError::from(refused);
        tracing::warn!(object = %obj.name, reason = %error.reason, error = %error.message, "object refused");
        ObjectReport {
            name: obj.name.clone(),
            uid: obj.uid.clone(),
            generation: obj.generation,
            action: Action::Failed,
            error: Some(error),
            pinned: None,
            path: self.layout.root().to_path_buf(),
        }
    }

    fn reconcile_object(&mut self, obj: &DesiredObject, all: &[&DesiredObject]) -> ObjectReport {
        let base = ObjectReport {
            name: obj.name.clone(),
            uid: obj.uid.clone(),
            generation: obj.generation,
            action: Action::Failed,
            error: None,
            pinned: None,
            path: self.layout.object(&obj.name),
        };
        self.remove_foreign_entry(&obj.name);
        let current = self.current_version(&obj.name);
        match self.pin_object(obj, all, current.as_deref()) {
            Ok((action, state)) => ObjectReport {
                action,
                pinned: Some(state),
                ..base
            },
            Err(error) => self.failed(obj, base, current, error.into()),
        }
    }

    /// Something at `<root>/<object>` that is not our symlink is garbage.
    fn remove_foreign_entry(&self, object: &str) {
        let path = self.layout.object(object);
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && (!meta.file_type().is_symlink() || self.current_version(object).is_none())
        {
            tracing::warn!(object, path = %path.display(), "removing an unknown entry where the object's symlink belongs");
            fsops::remove_tree(self.layout.root(), &path);
        }
    }

    /// Adopts the current version when it is the one the spec asks for, or builds a new one.
    fn pin_object(
        &mut self,
        obj: &DesiredObject,
        all: &[&DesiredObject],
        current: Option<&str>,
    ) -> Result<(Action, PinnedVersion), ReconcileError> {
        let (bytes, key) = self.prepare(obj)?;
        if let Some(version) = current
            && version.split('-').next() == Some(key.as_str())
            && let Some(adopted) = self.take_over(obj, version, &bytes)
        {
            return Ok(adopted);
        }
        self.build_version(obj, all, current, &key, &bytes)
    }

    /// Takes over the current version if every pin of it is there: `Unchanged` when this process
    /// already knew it, `Adopted` when an earlier run pinned it.
    fn take_over(
        &mut self,
        obj: &DesiredObject,
        version: &str,
        bytes: &[u8],
    ) -> Option<(Action, PinnedVersion)> {
        let state = self.adopt(obj, version, bytes)?;
        let known = self.known.get(&obj.name).filter(|c| c.version == version);
        let action = if known.is_some() {
            Action::Unchanged
        } else {
            let path = self.layout.object(&obj.name);
            tracing::info!(object = %obj.name, path = %path.display(), version, "adopted");
            Action::Adopted
        };
        let (private_bytes, shared_bytes) = match known {
            Some(c) => (c.private_bytes, c.shared_bytes.clone()),
            None => loader::parse_elf(bytes)
                .map(|elf| self.memory_of(obj, &elf))
                .unwrap_or_default(),
        };
        self.known.insert(
            obj.name.clone(),
            Current {
                version: version.to_owned(),
                state: state.clone(),
                private_bytes,
                shared_bytes,
            },
        );
        Some((action, state))
    }

    /// Builds a new version aside, checks first, and swaps it in; the previous version is removed
    /// once the new one is in place.
    fn build_version(
        &mut self,
        obj: &DesiredObject,
        all: &[&DesiredObject],
        current: Option<&str>,
        key: &str,
        bytes: &[u8],
    ) -> Result<(Action, PinnedVersion), ReconcileError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let version = format!("{key}-{nanos:x}");
        let previous = current.map(|v| self.layout.version(&obj.name, v));
        // Parsed once for the checks before the build (the loader parses what it loads itself).
        let elf = loader::parse_elf(bytes)?;
        self.check_shared_paths(obj, &elf, all)?;
        self.check_map_memory(obj, &elf, previous.as_deref())?;
        let (private_bytes, shared_bytes) = self.memory_of(obj, &elf);
        // The loader parses the bytes again: keeping this copy alive through the build would
        // hold two parsed objects at once (for a 50,000-program ELF, tens of MiB).
        drop(elf);
        let req = BuildRequest {
            object: &obj.name,
            spec: &obj.spec,
            bytecode: bytes,
            version: &version,
            previous: previous.as_deref(),
        };
        let built = loader::build(&self.layout, &self.btf, &req)?;
        if let Err(error) = self.swap(&obj.name, &version) {
            let dir = self.layout.version(&obj.name, &version);
            fsops::remove_tree(self.layout.root(), &dir);
            return Err(error);
        }
        if let Some(prev) = &previous {
            fsops::remove_tree(self.layout.root(), prev);
        }
        let path = self.layout.object(&obj.name);
        for (program, id) in &built.programs {
            tracing::info!(object = %obj.name, program, id, path = %path.join("progs").join(program).display(), "pinned");
        }
        let action = if current.is_some() {
            Action::Updated
        } else {
            Action::Created
        };
        tracing::info!(object = %obj.name, path = %path.display(), version, ?action, programs = built.programs.len(), maps = built.maps.len(), links = built.links.len(), "object pinned");
        self.known.insert(
            obj.name.clone(),
            Current {
                version,
                state: built.clone(),
                private_bytes,
                shared_bytes,
            },
        );
        Ok((action, built))
    }

    /// Validation, bytecode, digest: everything before touching bpffs.
    fn prepare(&self, obj: &DesiredObject) -> Result<(Vec<u8>, String), ReconcileError> {
        obj.spec
            .validate(&obj.name)
            .map_err(ReconcileError::InvalidSpec)?;
        for m in &obj.spec.maps {
            if let Some(pin) = &m.pin_path {
                fsops::confine(self.layout.root(), &self.layout.shared_map(pin))?;
            }
        }
        let bytes = obj.bytecode.clone().map_err(ReconcileError::Bytecode)?;
        let digest = sha256_hex(&bytes);
        if let Some(want) = &obj.spec.sha256
            && want != &digest
        {
            return Err(ReconcileError::DigestMismatch(digest, want.clone()));
        }
        Ok((bytes, version_key(&obj.spec, &digest)))
    }

    /// Refuses an object one of whose shared maps would be pinned at a directory holding other
    /// shared maps (it is the parent of their pin paths) or below a pinned map (a child of its
    /// pin path): building it would unlink those maps, or fail halfway.
    fn check_shared_paths(
        &self,
        obj: &DesiredObject,
        elf: &aya_obj::Object,
        all: &[&DesiredObject],
    ) -> Result<(), ReconcileError> {
        // A spec the loader refuses is reported by the loader, with its own reason.
        let Ok(plan) = loader::plan_maps(&self.layout, &obj.spec, elf) else {
            return Ok(());
        };
        let shared = self.layout.shared();
        for (map, path) in &plan.shared {
            let Ok(rel) = path.strip_prefix(&shared) else {
                continue;
            };
            let parts: Vec<_> = rel.components().collect();
            let mut here = shared.clone();
            for (i, part) in parts.iter().enumerate() {
                here.push(part);
                let Ok(meta) = std::fs::symlink_metadata(&here) else {
                    break;
                };
                let last = i + 1 == parts.len();
                let refuse = |problem: SharedPathProblem| {
                    Err(ReconcileError::SharedPathTaken(
                        map.clone(),
                        obj.name.clone(),
                        path.clone(),
                        Box::new(problem),
                    ))
                };
                if !last && !meta.is_dir() {
                    let owners = self.owners(std::slice::from_ref(&here), obj, all);
                    return refuse(SharedPathProblem::BelowPin(here.clone(), owners));
                }
                if last && meta.is_dir() {
                    let pins = fsops::pins_under(self.layout.root(), &here);
                    let listed: Vec<String> =
                        pins.iter().map(|p| p.display().to_string()).collect();
                    return refuse(SharedPathProblem::HoldsPins(
                        listed.join(", "),
                        self.owners(&pins, obj, all),
                    ));
                }
                if last && aya::maps::MapInfo::from_pin(&here).is_err() {
                    return refuse(SharedPathProblem::NotAMap);
                }
            }
        }
        Ok(())
    }

    /// Which objects own shared pins, for a message: `object a`, `objects a, b`.
    fn owners(&self, pins: &[PathBuf], asking: &DesiredObject, all: &[&DesiredObject]) -> String {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for (name, current) in &self.known {
            if current.state.shared.iter().any(|s| pins.contains(s)) {
                names.insert(name);
            }
        }
        for o in all {
            if o.spec.maps.iter().any(|m| {
                m.pin_path
                    .as_ref()
                    .is_some_and(|p| pins.contains(&self.layout.shared_map(p)))
            }) && o.name != asking.name
            {
                names.insert(&o.name);
            }
        }
        let list: Vec<&str> = names.into_iter().collect();
        match list.len() {
            0 => "no object this agent knows of (an orphan the sweep removes)".to_owned(),
            1 => format!("object {}", list[0]),
            _ => format!("objects {}", list.join(", ")),
        }
    }

    /// The estimated memory of an object's maps: `(private and unpinned, shared by path)`.
    fn memory_of(&self, obj: &DesiredObject, elf: &aya_obj::Object) -> (u64, Vec<(PathBuf, u64)>) {
        let shared = loader::plan_maps(&self.layout, &obj.spec, elf)
            .map(|p| p.shared)
            .unwrap_or_default();
        let mut private = 0;
        let mut by_path = Vec::new();
        for m in map_memory::estimate(&obj.spec, elf, |_| true) {
            match shared.get(&m.name) {
                Some(path) => by_path.push((path.clone(), m.bytes)),
                None => private += m.bytes,
            }
        }
        (private, by_path)
    }

    /// Refuses an object whose new maps (not the shared maps already pinned, not the private maps
    /// the previous version hands over) would not fit what the agent's memory cgroup has left,
    /// less [`map_memory::RESERVE`]: map memory is charged to that cgroup and stays charged while
    /// pinned, so a map that does not fit would get the agent OOM-killed.
    fn check_map_memory(
        &self,
        obj: &DesiredObject,
        elf: &aya_obj::Object,
        previous: Option<&Path>,
    ) -> Result<(), ReconcileError> {
        let Ok(plan) = loader::plan_maps(&self.layout, &obj.spec, elf) else {
            return Ok(());
        };
        let new = map_memory::estimate(&obj.spec, elf, |name| {
            if let Some(path) = plan.shared.get(name) {
                return std::fs::symlink_metadata(path).is_err();
            }
            !previous.is_some_and(|prev| {
                Layout::map_in(prev, name).exists() || internal_maps::pin_in(prev, name).exists()
            })
        });
        let need: u64 = new.iter().map(|m| m.bytes).sum();
        let Some(room) = map_memory::headroom() else {
            return Ok(());
        };
        let left = room.left().saturating_sub(map_memory::RESERVE);
        if need <= left {
            return Ok(());
        }
        let largest: Vec<String> = new
            .iter()
            .take(3)
            .map(|m| format!("{} {}", m.name, map_memory::human(m.bytes)))
            .collect();
        let largest = largest.join(", ");
        Err(ReconcileError::InsufficientMemory(
            obj.name.clone(),
            need,
            largest,
            room,
        ))
    }

    /// Reports a failure; a previous version, if any, stays pinned.
    fn failed(
        &mut self,
        obj: &DesiredObject,
        base: ObjectReport,
        current: Option<String>,
        error: ObjectError,
    ) -> ObjectReport {
        let pinned = current.as_ref().and_then(|v| {
            self.known
                .get(&obj.name)
                .filter(|c| &c.version == v)
                .map(|c| c.state.clone())
        });
        let action = if current.is_some() {
            Action::KeptPrevious
        } else {
            Action::Failed
        };
        tracing::warn!(object = %obj.name, reason = %error.reason, error = %error.message, kept_previous = current.is_some(), "object failed");
        ObjectReport {
            action,
            error: Some(error),
            pinned,
            ..base
        }
    }

    /// Describes a pinned version if every pin the spec implies is there.
    fn adopt(&self, obj: &DesiredObject, version: &str, bytes: &[u8]) -> Option<PinnedVersion> {
        let dir = self.layout.version(&obj.name, version);
        let mut links = Vec::new();
        for p in &obj.spec.programs {
            if !Layout::prog_in(&dir, &p.name).exists() {
                return None;
            }
            // Host interface patterns and primaryNodeInterface name the node's interfaces now: a
            // version made for another set is not adopted (a new one is built, see
            // super::interfaces), nor one whose link lost its interface.
            let attach = match &p.attach {
                Some(a) => Some(super::interfaces::resolve(&p.name, a).ok()?),
                None => None,
            };
            let follows = attach.as_ref().is_some_and(|a| matches!(a, Cow::Owned(_)));
            let points = attach.iter().flat_map(|a| AttachPoint::all(a)).collect();
            // A usdt point is one link per site of the probe in its target (attach/usdt.rs).
            let points = super::attach::usdt::expand(&p.name, points).ok()?;
            let mut expected = BTreeSet::new();
            for point in points {
                let link = Layout::link_in(&dir, &p.name, &point.link_name());
                if !link.exists() {
                    return None;
                }
                if follows
                    && matches!(point, AttachPoint::Xdp { .. } | AttachPoint::Tc { .. })
                    && super::attach::is_detached(&link)
                {
                    tracing::info!(object = %obj.name, link = %link.display(), "the link's interface went: attaching again");
                    return None;
                }
                expected.insert(point.link_name());
                links.push(self.layout.public_path(&obj.name, &dir, &link));
            }
            if follows && let Some(stale) = stale_interface_link(&dir, &p.name, &expected) {
                tracing::info!(object = %obj.name, link = %stale.display(), "the interface is gone or no longer matches: unpinning its link");
                return None;
            }
        }
        if let Some(known) = self.known.get(&obj.name).filter(|c| c.version == version) {
            return Some(known.state.clone());
        }
        let mut programs = Vec::new();
        for p in &obj.spec.programs {
            let info = ProgramInfo::from_pin(Layout::prog_in(&dir, &p.name)).ok()?;
            programs.push((p.name.clone(), info.id()));
        }
        let elf = loader::parse_elf(bytes).ok()?;
        let plan = loader::plan_maps(&self.layout, &obj.spec, &elf).ok()?;
        let mut maps = Vec::new();
        for name in &plan.private {
            let pin = Layout::map_in(&dir, name);
            if !pin.exists() {
                return None;
            }
            maps.push(self.layout.public_path(&obj.name, &dir, &pin));
        }
        // A version an older agent pinned without its internal maps gets them from its programs'
        // maps (so an upgrade adopts); where they cannot be found it is rebuilt.
        if !internal_maps::all_pinned(&dir, &elf) {
            let progs: Vec<PathBuf> = obj
                .spec
                .programs
                .iter()
                .map(|p| Layout::prog_in(&dir, &p.name))
                .collect();
            let root = self.layout.root();
            if !internal_maps::pin_from_programs(root, &dir, &elf, &obj.spec, &progs) {
                return None;
            }
        }
        for pin in internal_maps::pins(&dir, &elf) {
            maps.push(self.layout.public_path(&obj.name, &dir, &pin));
        }
        let shared: Vec<PathBuf> = plan.shared.values().cloned().collect();
        if shared.iter().any(|p| !p.exists()) {
            return None;
        }
        maps.extend(shared.iter().cloned());
        Some(PinnedVersion {
            version: version.to_owned(),
            programs,
            maps,
            links,
            shared,
        })
    }

    /// Points `<root>/<object>` at a version with one rename (atomic for readers).
    fn swap(&self, object: &str, version: &str) -> Result<(), ReconcileError> {
        let staged = self.layout.staging().join(object);
        let _ = std::fs::remove_file(&staged);
        let err = |step: &'static str, source: std::io::Error| {
            ReconcileError::Swap(step, object.to_owned(), source)
        };
        std::os::unix::fs::symlink(Layout::link_target(object, version), &staged)
            .map_err(|e| err("creating the version symlink", e))?;
        std::fs::rename(&staged, self.layout.object(object))
            .map_err(|e| err("swapping in the new version", e))
    }

    /// Removes objects nobody wants, unknown entries, and versions that are not current.
    fn sweep_objects(&mut self, wanted: &BTreeSet<&str>, report: &mut PassReport) {
        let root = self.layout.root().to_path_buf();
        for (name, kind) in fsops::list(&root, &root) {
            if [SHARED_DIR, VERSIONS_DIR, STAGING_DIR].contains(&name.as_str())
                || wanted.contains(name.as_str())
            {
                continue;
            }
            let path = root.join(&name);
            let n = fsops::remove_tree(&root, &path);
            report.unpinned += n;
            if self.known.remove(&name).is_some() || kind == fsops::EntryKind::Symlink {
                tracing::info!(object = %name, path = %path.display(), "object unpinned");
                report.removed.push(name);
            } else {
                tracing::info!(path = %path.display(), pins = n, "removed an unknown entry from the managed root");
            }
        }
        let versions = root.join(VERSIONS_DIR);
        for (name, kind) in fsops::list(&root, &versions) {
            let dir = versions.join(&name);
            if kind != fsops::EntryKind::Dir {
                report.unpinned += fsops::remove_tree(&root, &dir);
                continue;
            }
            let current = wanted
                .contains(name.as_str())
                .then(|| self.current_version(&name))
                .flatten();
            let mut any = false;
            for (v, _) in fsops::list(&root, &dir) {
                if Some(v.as_str()) == current.as_deref() {
                    any = true;
                    continue;
                }
                let path = dir.join(&v);
                let n = fsops::remove_tree(&root, &path);
                tracing::info!(object = %name, path = %path.display(), pins = n, "removed a stale version");
                report.unpinned += n;
            }
            if !any {
                fsops::remove_tree(&root, &dir);
            }
        }
    }

    /// Unlinks shared pins not in `keep`, then empty directories.
    fn sweep_shared(&self, keep: &BTreeSet<PathBuf>) -> usize {
        let root = self.layout.root();
        let shared = self.layout.shared();
        let mut count = 0;
        for (path, _) in fsops::files_under(root, &shared) {
            if !keep.contains(&path) {
                let n = fsops::remove_tree(root, &path);
                tracing::info!(path = %path.display(), "unpinned a shared map no object names");
                count += n;
            }
        }
        fsops::prune_empty_dirs(root, &shared);
        count
    }
}

/// A link of `program` in version `dir` on an interface its host `interfaces` no longer name
/// (`expected` holds the link names they name now); pod links are not this kind.
fn stale_interface_link(dir: &Path, program: &str, expected: &BTreeSet<String>) -> Option<PathBuf> {
    let links = dir.join("links").join(program);
    std::fs::read_dir(&links)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| {
            let netdev = ["xdp-", "tc-ingress-", "tc-egress-", "prio"]
                .iter()
                .any(|p| name.starts_with(p));
            netdev && !super::netns::PodHook::is_pod_link(name) && !expected.contains(name)
        })
        .map(|name| links.join(name))
}
