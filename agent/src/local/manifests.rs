//! One pass's reading of the manifests folder, in stages: list the manifest files, read and parse
//! each strictly ([`super::manifest`]), resolve every object's bytecode through one
//! [`Batch`], then decide what each broken file keeps pinned as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bpfpin_crds::BpfObject;
use bpfpin_crds::validation::validate_object_name;

use super::LocalConfig;
use super::manifest::{self, Entry, Problem};
use crate::bytecode::{Batch, BytecodeDirs, Source, SourceError};
use crate::pin::desired::DesiredObject;

/// The most manifest files (`*.yaml`, `*.yml`) in the folder.
pub const MAX_FILES: usize = 1000;

/// A manifest document that could not be turned into an object.
#[derive(Debug, Clone)]
pub struct ManifestError {
    /// The object's name, when the document has one.
    pub object: Option<String>,
    /// The manifest file the document is in.
    pub file: PathBuf,
    /// What is wrong, naming the document or the field.
    pub message: String,
    /// The reason printed: `InvalidManifest`, or `InvalidSpec` for a rule of the CRD's CEL
    /// validations.
    pub problem: Problem,
}

/// The manifests folder as one pass sees it.
#[derive(Debug, Default)]
pub struct Manifests {
    /// The valid objects, with their bytecode.
    pub objects: Vec<DesiredObject>,
    /// Every file and document refused.
    pub errors: Vec<ManifestError>,
    /// Objects to keep exactly as they are because a file that holds (or may hold) them is broken.
    pub hold: BTreeSet<String>,
    /// Per broken file, the objects it keeps as they are.
    pub held_by: BTreeMap<PathBuf, BTreeSet<String>>,
}

/// What local mode remembers between passes: which objects each file held, so that a file broken
/// by an edit keeps exactly those.
#[derive(Debug, Default, Clone)]
pub struct ManifestMemory {
    held_by_file: Option<BTreeMap<PathBuf, BTreeSet<String>>>,
    /// What the objects of the last pass need followed: link events for host interface patterns,
    /// route events too for `primaryNodeInterface` (the watch then listens to them).
    pub(crate) follows_links: Option<crate::link_events::Follow>,
}

/// The folder could not be listed: nothing is reconciled (every pin stays).
#[derive(Debug, Clone)]
pub struct FolderError {
    /// The manifests folder that could not be listed.
    pub folder: PathBuf,
    /// Why it cannot be read.
    pub message: String,
}

/// The manifest files of the folder, sorted: `*.yaml`/`*.yml`, not hidden (editors' lock files and
/// the `..data` of a mounted ConfigMap start with `.`), directories left out.
fn manifest_files(folder: &Path) -> Result<Vec<PathBuf>, FolderError> {
    let fail = |message: String| FolderError {
        folder: folder.to_path_buf(),
        message,
    };
    let entries = std::fs::read_dir(folder).map_err(|e| {
        fail(format!(
            "cannot read the manifests folder: {e}; every pinned object is kept as it is"
        ))
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| fail(format!("cannot list the manifests folder: {e}")))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        files.push(entry.path());
        if files.len() > MAX_FILES {
            return Err(fail(format!(
                "holds more than {MAX_FILES} manifest files; every pinned object is kept as it is"
            )));
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a manifest file without blocking on a FIFO or a device: opened `O_NONBLOCK`, refused
/// unless it is a regular file, read up to the size limit.
fn read_manifest_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_dir() {
            "a directory"
        } else {
            "not a file"
        };
        return Err(format!("is not a regular file ({what})"));
    }
    if meta.len() > manifest::MAX_FILE_BYTES {
        return Err(format!(
            "is {} bytes, larger than {} bytes (the most one object may have in etcd); split it",
            meta.len(),
            manifest::MAX_FILE_BYTES
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(manifest::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(bytes)
}

/// The objects pinned under the managed root (entries with a valid object name).
fn pinned_objects(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| validate_object_name(n).is_ok())
        .collect()
}

/// Reads every `BpfObject` of the folder strictly ([`manifest::parse_file`]), with its bytecode,
/// and decides what broken files keep: the objects each held at the last pass, and on the first
/// pass (when nothing is known of them) every object pinned under `root` that no valid manifest
/// claims. Documents of other kinds are skipped.
pub fn read_manifests(
    config: &LocalConfig,
    memory: &mut ManifestMemory,
    root: &Path,
) -> Result<Manifests, FolderError> {
    let files = manifest_files(&config.manifests)?;
    let mut pass = Reading {
        objects: BTreeMap::new(),
        errors: Vec::new(),
        defined: BTreeMap::new(),
        dirs: BytecodeDirs::local(&config.manifests, &config.bytecode_dirs),
        remote: Batch::new(&config.fetcher),
    };
    for file in files {
        pass.file(file);
    }
    let Reading {
        mut objects,
        errors,
        defined,
        remote,
        ..
    } = pass;
    // url and image sources are fetched together, in parallel.
    remote.resolve(objects.values_mut());
    let (hold, held_by) = memory.keep_for_broken_files(&objects, &errors, defined, root);
    Ok(Manifests {
        objects: objects.into_values().collect(),
        errors,
        hold,
        held_by,
    })
}

/// What one pass has read so far.
struct Reading<'a> {
    objects: BTreeMap<String, DesiredObject>,
    errors: Vec<ManifestError>,
    /// Per file: the objects it names (valid, or refused under a valid name).
    defined: BTreeMap<PathBuf, BTreeSet<String>>,
    dirs: BytecodeDirs,
    remote: Batch<'a>,
}

impl Reading<'_> {
    fn error(&mut self, file: &Path, object: Option<String>, problem: Problem, message: String) {
        self.errors.push(ManifestError {
            object,
            file: file.to_path_buf(),
            message,
            problem,
        });
    }

    /// Reads one manifest file and each of its documents.
    fn file(&mut self, file: PathBuf) {
        let entries = match read_manifest_file(&file).and_then(|b| manifest::parse_file(&b)) {
            Ok(entries) => entries,
            Err(message) => {
                self.error(&file, None, Problem::InvalidManifest, message);
                self.defined.insert(file, BTreeSet::new());
                return;
            }
        };
        self.defined.entry(file.clone()).or_default();
        for entry in entries {
            match entry {
                Entry::Object { document, object } => self.object(&file, document, *object),
                Entry::Refused(e) => {
                    if let Some(n) = &e.object
                        && validate_object_name(n).is_ok()
                    {
                        self.name(&file, n);
                    }
                    let message = format!("document {}: {}", e.document, e.message);
                    self.error(&file, e.object, e.problem, message);
                }
            }
        }
    }

    fn name(&mut self, file: &Path, name: &str) {
        if let Some(names) = self.defined.get_mut(file) {
            names.insert(name.to_owned());
        }
    }

    /// Takes one valid object, unless another document defined it first, with its bytecode.
    fn object(&mut self, file: &Path, document: usize, obj: BpfObject) {
        let name = obj
            .metadata
            .name
            .clone()
            .expect("parse_file checks the name");
        if self.objects.contains_key(&name) {
            let message =
                format!("document {document}: is defined twice; the first definition is used");
            self.error(file, Some(name), Problem::InvalidManifest, message);
            return;
        }
        self.name(file, &name);
        let bytecode = self
            .remote
            .bytecode(&name, &obj.spec, Source::local(&obj.spec), &self.dirs)
            .unwrap_or_else(|| Err(SourceError::NotWaitedFor.into()));
        self.objects.insert(
            name.clone(),
            DesiredObject {
                name,
                uid: obj.metadata.uid.clone(),
                generation: obj.metadata.generation.unwrap_or(0),
                spec: obj.spec,
                bytecode,
            },
        );
    }
}

impl ManifestMemory {
    /// What each broken file keeps as it is (all of it in `.0`, per file in `.1`), remembering
    /// every file's objects for the next pass.
    fn keep_for_broken_files(
        &mut self,
        objects: &BTreeMap<String, DesiredObject>,
        errors: &[ManifestError],
        defined: BTreeMap<PathBuf, BTreeSet<String>>,
        root: &Path,
    ) -> (BTreeSet<String>, BTreeMap<PathBuf, BTreeSet<String>>) {
        let broken: BTreeSet<&PathBuf> = errors.iter().map(|e| &e.file).collect();
        let first_pass = self.held_by_file.is_none();
        let previous = self.held_by_file.take().unwrap_or_default();
        // The first pass knows nothing of what a broken file held (a typo may have changed the
        // name too): it keeps every pinned object that no valid manifest claims.
        let unclaimed: BTreeSet<String> = if first_pass && !broken.is_empty() {
            pinned_objects(root)
                .into_iter()
                .filter(|n| !objects.contains_key(n))
                .collect()
        } else {
            BTreeSet::new()
        };
        let mut hold = BTreeSet::new();
        let mut held_by = BTreeMap::new();
        let mut next = BTreeMap::new();
        for (file, names) in defined {
            let mut keeps = BTreeSet::new();
            if broken.contains(&file) {
                let unpinned = |n: &&String| !objects.contains_key(*n);
                keeps.extend(
                    previous
                        .get(&file)
                        .into_iter()
                        .flatten()
                        .filter(unpinned)
                        .cloned(),
                );
                keeps.extend(names.iter().filter(unpinned).cloned());
                keeps.extend(unclaimed.iter().cloned());
                hold.extend(keeps.iter().cloned());
                held_by.insert(file.clone(), keeps.clone());
            }
            next.insert(file, names.into_iter().chain(keeps).collect());
        }
        self.held_by_file = Some(next);
        (hold, held_by)
    }
}
