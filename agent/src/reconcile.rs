//! The core: make the managed root equal to the union of the desired objects. Shared by local and
//! cluster mode; knows nothing of Kubernetes.
//!
//! One pass: sweep `_staging`, then for each desired object adopt what is pinned (same version
//! key, pins present) or build a new version aside and swap it in with one rename; then remove
//! objects nobody wants, stale versions, and shared maps no object names.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aya::programs::ProgramInfo;

use crate::attach::AttachPoint;
use crate::desired::{DesiredObject, sha256_hex, version_key};
use crate::error::{AgentError, ObjectError, Reason};
use crate::fsops;
use crate::layout::{Layout, SHARED_DIR, STAGING_DIR, VERSIONS_DIR};
use crate::loader::{self, BuildRequest, PinnedVersion};
use crate::mounts;

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
    /// The object.
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
}

#[derive(Debug, Clone)]
struct Current {
    version: String,
    state: PinnedVersion,
}

/// The reconciler of one managed root.
#[derive(Debug)]
pub struct Reconciler {
    layout: Layout,
    btf: loader::KernelBtf,
    /// What this process knows is pinned, so steady-state passes make no BPF syscalls.
    known: HashMap<String, Current>,
}

impl Reconciler {
    /// A reconciler for `<bpffs>/bpfpin`. Mounts bpffs at `bpffs` if needed and creates the root.
    pub fn new(bpffs: &Path) -> Result<Self, AgentError> {
        mounts::ensure_bpffs(bpffs)?;
        let layout = Layout::new(bpffs);
        let root = layout.root();
        if std::fs::symlink_metadata(root).is_ok_and(|m| !m.is_dir()) {
            return Err(AgentError::Bpffs {
                path: root.to_path_buf(),
                message: "the managed root exists and is not a directory (a symlink?); refusing to use it".into(),
            });
        }
        for dir in [
            root.to_path_buf(),
            root.join(VERSIONS_DIR),
            layout.staging(),
            layout.shared(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| AgentError::io("creating", &dir, e))?;
        }
        // The kernel's BTF is parsed once per process, not once per load.
        let btf = loader::KernelBtf::default();
        Ok(Self {
            layout,
            btf,
            known: HashMap::new(),
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
        let _ = std::fs::create_dir_all(self.layout.staging());
        let _ = std::fs::create_dir_all(self.layout.shared());
        let _ = std::fs::create_dir_all(root.join(VERSIONS_DIR));

        let mut sorted: Vec<&DesiredObject> = desired.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.dedup_by(|a, b| a.name == b.name);
        let mut shared_known = hold.is_empty();
        for obj in &sorted {
            let r = self.reconcile_object(obj);
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
            .chain(hold.iter().map(String::as_str))
            .collect();
        self.sweep_objects(&wanted, &mut report);
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
        report
    }

    fn current_version(&self, object: &str) -> Option<String> {
        let target = std::fs::read_link(self.layout.object(object)).ok()?;
        Layout::version_from_target(object, &target)
    }

    fn reconcile_object(&mut self, obj: &DesiredObject) -> ObjectReport {
        let path = self.layout.object(&obj.name);
        let base = ObjectReport {
            name: obj.name.clone(),
            uid: obj.uid.clone(),
            generation: obj.generation,
            action: Action::Failed,
            error: None,
            pinned: None,
            path: path.clone(),
        };
        // Something at <root>/<object> that is not our symlink is garbage.
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && (!meta.file_type().is_symlink() || self.current_version(&obj.name).is_none())
        {
            tracing::warn!(object = %obj.name, path = %path.display(), "removing an unknown entry where the object's symlink belongs");
            fsops::remove_tree(self.layout.root(), &path);
        }
        let current = self.current_version(&obj.name);

        let prepared = self.prepare(obj);
        let (bytes, key) = match prepared {
            Ok(p) => p,
            Err(error) => return self.failed(obj, base, current, error),
        };

        if let Some(version) = &current
            && version.split('-').next() == Some(key.as_str())
            && let Some(state) = self.adopt(obj, version, &bytes)
        {
            let action = if self
                .known
                .get(&obj.name)
                .is_some_and(|c| &c.version == version)
            {
                Action::Unchanged
            } else {
                tracing::info!(object = %obj.name, path = %path.display(), version, "adopted");
                Action::Adopted
            };
            self.known.insert(
                obj.name.clone(),
                Current {
                    version: version.clone(),
                    state: state.clone(),
                },
            );
            return ObjectReport {
                action,
                pinned: Some(state),
                ..base
            };
        }

        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let version = format!("{key}-{nanos:x}");
        let previous = current.as_ref().map(|v| self.layout.version(&obj.name, v));
        let req = BuildRequest {
            object: &obj.name,
            spec: &obj.spec,
            bytecode: &bytes,
            version: &version,
            previous: previous.as_deref(),
        };
        let built = match loader::build(&self.layout, &self.btf, &req) {
            Ok(b) => b,
            Err(error) => return self.failed(obj, base, current, error),
        };
        if let Err(error) = self.swap(&obj.name, &version) {
            fsops::remove_tree(
                self.layout.root(),
                &self.layout.version(&obj.name, &version),
            );
            return self.failed(obj, base, current, error);
        }
        if let Some(prev) = &previous {
            fsops::remove_tree(self.layout.root(), prev);
        }
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
            },
        );
        ObjectReport {
            action,
            pinned: Some(built),
            ..base
        }
    }

    /// Validation, bytecode, digest: everything before touching bpffs.
    fn prepare(&self, obj: &DesiredObject) -> Result<(Vec<u8>, String), ObjectError> {
        obj.spec
            .validate(&obj.name)
            .map_err(|e| ObjectError::new(Reason::InvalidSpec, e.to_string()))?;
        for m in &obj.spec.maps {
            if let Some(pin) = &m.pin_path {
                fsops::confine(self.layout.root(), &self.layout.shared_map(pin))?;
            }
        }
        let bytes = obj.bytecode.clone()?;
        let digest = sha256_hex(&bytes);
        if let Some(want) = &obj.spec.sha256
            && want != &digest
        {
            return Err(ObjectError::new(
                Reason::DigestMismatch,
                format!("the bytecode's sha256 is {digest}, spec.sha256 says {want}"),
            ));
        }
        Ok((bytes, version_key(&obj.spec, &digest)))
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
            for point in p.attach.iter().flat_map(AttachPoint::all) {
                let link = Layout::link_in(&dir, &p.name, &point.link_name());
                if !link.exists() {
                    return None;
                }
                links.push(self.layout.public_path(&obj.name, &dir, &link));
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
        let elf = aya_obj::Object::parse(bytes).ok()?;
        let plan = loader::plan_maps(&self.layout, &obj.spec, &elf).ok()?;
        let mut maps = Vec::new();
        for name in &plan.private {
            let pin = Layout::map_in(&dir, name);
            if !pin.exists() {
                return None;
            }
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
    fn swap(&self, object: &str, version: &str) -> Result<(), ObjectError> {
        let staged = self.layout.staging().join(object);
        let _ = std::fs::remove_file(&staged);
        let err = |what: &str, e: std::io::Error| {
            ObjectError::new(
                Reason::PinFailed,
                format!("{what} for object {object}: {e}"),
            )
        };
        std::os::unix::fs::symlink(Layout::link_target(object, version), &staged)
            .map_err(|e| err("creating the version symlink", e))?;
        std::fs::rename(&staged, self.layout.object(object))
            .map_err(|e| err("swapping in the new version", e))
    }

    /// Removes objects nobody wants, unknown entries, and versions that are not current.
    fn sweep_objects(&mut self, wanted: &BTreeSet<&str>, report: &mut PassReport) {
        let root = self.layout.root().to_path_buf();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if [SHARED_DIR, VERSIONS_DIR, STAGING_DIR].contains(&name.as_str())
                    || wanted.contains(name.as_str())
                {
                    continue;
                }
                let n = fsops::remove_tree(&root, &entry.path());
                report.unpinned += n;
                if self.known.remove(&name).is_some()
                    || entry.file_type().is_ok_and(|t| t.is_symlink())
                {
                    tracing::info!(object = %name, path = %entry.path().display(), "object unpinned");
                    report.removed.push(name);
                } else {
                    tracing::info!(path = %entry.path().display(), pins = n, "removed an unknown entry from the managed root");
                }
            }
        }
        let versions = root.join(VERSIONS_DIR);
        if let Ok(entries) = std::fs::read_dir(&versions) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let current = wanted
                    .contains(name.as_str())
                    .then(|| self.current_version(&name))
                    .flatten();
                let Ok(vers) = std::fs::read_dir(entry.path()) else {
                    report.unpinned += fsops::remove_tree(&root, &entry.path());
                    continue;
                };
                let mut any = false;
                for v in vers.flatten() {
                    if Some(v.file_name().to_string_lossy().as_ref()) == current.as_deref() {
                        any = true;
                        continue;
                    }
                    let n = fsops::remove_tree(&root, &v.path());
                    tracing::info!(object = %name, path = %v.path().display(), pins = n, "removed a stale version");
                    report.unpinned += n;
                }
                if !any {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
    }

    /// Unlinks shared pins not in `keep`, then empty directories.
    fn sweep_shared(&self, keep: &BTreeSet<PathBuf>) -> usize {
        fn walk(dir: &Path, keep: &BTreeSet<PathBuf>, root: &Path, count: &mut usize) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir {
                    walk(&path, keep, root, count);
                } else if !keep.contains(&path) {
                    let n = fsops::remove_tree(root, &path);
                    tracing::info!(path = %path.display(), "unpinned a shared map no object names");
                    *count += n;
                }
            }
        }
        let mut count = 0;
        let shared = self.layout.shared();
        walk(&shared, keep, self.layout.root(), &mut count);
        fsops::prune_empty_dirs(self.layout.root(), &shared);
        count
    }
}
