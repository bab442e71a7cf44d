//! Local mode: reconcile every `BpfObject` found in the YAML files of a folder, no cluster needed.
//! `bytecode.path` may be relative to the manifest's folder and must resolve (symlinks included)
//! inside the manifests folder or a `--bytecode-dir`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bpfpin_crds::validation::validate_object_name;

use crate::backoff::{Retries, sleep_until};
pub use crate::bytecode_path::{allowed_dirs, read_bytecode};
use crate::fetch::Fetcher;
use crate::manifest::{self, Problem};
use crate::pin::desired::DesiredObject;
use crate::pin::reconcile::{Action, PassReport, Reconciler};

/// Where local mode reads from.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The manifests folder.
    pub manifests: PathBuf,
    /// Extra folders bytecode may be read from.
    pub bytecode_dirs: Vec<PathBuf>,
    /// Downloads `bytecode.url` and pulls `bytecode.image`.
    pub fetcher: Fetcher,
}

/// The most manifest files (`*.yaml`, `*.yml`) in the folder.
pub const MAX_FILES: usize = 1000;

/// A manifest document that could not be turned into an object.
#[derive(Debug, Clone)]
pub struct ManifestError {
    /// The object's name, when the document has one.
    pub object: Option<String>,
    /// The file.
    pub file: PathBuf,
    /// What is wrong.
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
}

/// The folder could not be listed: nothing is reconciled (every pin stays).
#[derive(Debug, Clone)]
pub struct FolderError {
    /// The manifests folder.
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
    let mut objects: BTreeMap<String, DesiredObject> = BTreeMap::new();
    let mut errors = Vec::new();
    // Per file: the objects it names (valid, or refused under a valid name).
    let mut defined: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let allowed = allowed_dirs(config);
    let mut remote = crate::downloads::Batch::new(&config.fetcher);
    for file in files {
        let mut error = |object: Option<String>, problem, message: String| {
            errors.push(ManifestError {
                object,
                file: file.clone(),
                message,
                problem,
            });
        };
        let entries = match read_manifest_file(&file).and_then(|b| manifest::parse_file(&b)) {
            Ok(entries) => entries,
            Err(message) => {
                error(None, Problem::InvalidManifest, message);
                defined.insert(file.clone(), BTreeSet::new());
                continue;
            }
        };
        let names = defined.entry(file.clone()).or_default();
        for entry in entries {
            let (i, obj) = match entry {
                manifest::Entry::Object { document, object } => (document - 1, *object),
                manifest::Entry::Refused(e) => {
                    if let Some(n) = &e.object
                        && validate_object_name(n).is_ok()
                    {
                        names.insert(n.clone());
                    }
                    error(
                        e.object,
                        e.problem,
                        format!("document {}: {}", e.document, e.message),
                    );
                    continue;
                }
            };
            let name = obj
                .metadata
                .name
                .clone()
                .expect("parse_file checks the name");
            if objects.contains_key(&name) {
                error(
                    Some(name.clone()),
                    Problem::InvalidManifest,
                    format!(
                        "document {}: is defined twice; the first definition is used",
                        i + 1
                    ),
                );
                continue;
            }
            names.insert(name.clone());
            let folder = file.parent().unwrap_or(Path::new("."));
            // url and image sources are fetched together after the loop, in parallel.
            let bytecode = remote
                .defer(&name, &obj.spec)
                .unwrap_or_else(|| read_bytecode(&obj, folder, &allowed, &config.fetcher));
            objects.insert(
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
    remote.resolve(objects.values_mut());
    let broken: BTreeSet<&PathBuf> = errors.iter().map(|e| &e.file).collect();
    let first_pass = memory.held_by_file.is_none();
    let previous = memory.held_by_file.take().unwrap_or_default();
    // The first pass knows nothing of what a broken file held (a typo may have changed the name
    // too): it keeps every pinned object that no valid manifest claims.
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
            keeps.extend(
                previous
                    .get(&file)
                    .into_iter()
                    .flatten()
                    .filter(|n| !objects.contains_key(*n))
                    .cloned(),
            );
            keeps.extend(names.iter().filter(|n| !objects.contains_key(*n)).cloned());
            keeps.extend(unclaimed.iter().cloned());
            hold.extend(keeps.iter().cloned());
            held_by.insert(file.clone(), keeps.clone());
        }
        next.insert(file, names.into_iter().chain(keeps).collect());
    }
    memory.held_by_file = Some(next);
    Ok(Manifests {
        objects: objects.into_values().collect(),
        errors,
        hold,
        held_by,
    })
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

/// Prints a pass for a person: one line per object. Returns whether everything is pinned.
pub fn print_pass(report: &PassReport, errors: &[ManifestError]) -> bool {
    let mut ok = errors.is_empty();
    for e in errors {
        match &e.object {
            Some(name) => eprintln!(
                "{name}: FAILED {}: {}: {}",
                e.problem.as_str(),
                e.file.display(),
                e.message
            ),
            None => eprintln!(
                "{}: FAILED {}: {}",
                e.file.display(),
                e.problem.as_str(),
                e.message
            ),
        }
    }
    for r in &report.objects {
        match (&r.error, &r.pinned) {
            (None, Some(p)) => println!(
                "{}: {} at {} ({} programs, {} maps, {} links)",
                r.name,
                match r.action {
                    Action::Unchanged | Action::Adopted => "pinned (unchanged)",
                    Action::Updated => "updated",
                    _ => "pinned",
                },
                r.path.display(),
                p.programs.len(),
                p.maps.len(),
                p.links.len()
            ),
            (Some(e), _) => {
                ok = false;
                let kept = if r.action == Action::KeptPrevious {
                    " (the previous version stays pinned)"
                } else {
                    ""
                };
                eprintln!("{}: FAILED {}{kept}", r.name, e);
            }
            (None, None) => {}
        }
    }
    for name in &report.removed {
        println!("{name}: unpinned (no longer in the manifests)");
    }
    ok
}

/// One pass: read the manifests, reconcile, print. Returns whether everything is pinned.
pub fn run_once(reconciler: &mut Reconciler, config: &LocalConfig) -> bool {
    pass(reconciler, config, &mut ManifestMemory::default()).0
}

/// One pass: whether every object is pinned, and the report. A folder that cannot be listed is
/// not reconciled at all: every pin stays.
pub fn pass(
    reconciler: &mut Reconciler,
    config: &LocalConfig,
    memory: &mut ManifestMemory,
) -> (bool, PassReport) {
    let root = reconciler.layout().root().to_path_buf();
    let manifests = match read_manifests(config, memory, &root) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(folder = %e.folder.display(), error = %e.message, "manifests folder unreadable; nothing reconciled");
            eprintln!(
                "{}: FAILED InvalidManifest: {}",
                e.folder.display(),
                e.message
            );
            return (false, PassReport::default());
        }
    };
    // A broken file keeps what it held as it is: a typo must not unpin anything.
    let report = reconciler.reconcile(&manifests.objects, &manifests.hold);
    let ok = print_pass(&report, &manifests.errors);
    for (file, kept) in &manifests.held_by {
        // Only what is pinned: a new object with a typo has nothing to keep.
        let names: Vec<&str> = kept
            .iter()
            .filter(|n| std::fs::symlink_metadata(root.join(n)).is_ok())
            .map(String::as_str)
            .collect();
        if !names.is_empty() {
            eprintln!(
                "{}: keeps {} as pinned until it is fixed",
                file.display(),
                names.join(", ")
            );
        }
    }
    (ok, report)
}

/// First retry of an object whose bytecode or attach point is missing; doubles up to 5 min.
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// How often a folder that cannot be watched (its parent is missing too) is looked at again.
const UNWATCHED_POLL: Duration = Duration::from_secs(2);

/// Watches the folder and reconciles on every change until SIGTERM/SIGINT; pins persist. Objects
/// that failed for a reason that may go away by itself (a missing bytecode file or URL, an
/// interface or cgroup that does not exist yet) are retried with backoff. The folder's parent is
/// watched too, so a folder removed (every pin stays) or created later is noticed.
pub async fn watch(mut reconciler: Reconciler, config: LocalConfig) -> anyhow::Result<()> {
    use notify::{RecursiveMode, Watcher};
    use std::os::unix::fs::MetadataExt;
    // Before the first pass: a SIGTERM during it is a clean stop, not a kill.
    let mut stop = std::pin::pin!(crate::shutdown::Shutdown::install()?.requested());
    let folder = std::path::absolute(&config.manifests)?;
    let mut relevant = vec![folder.clone()];
    for dir in &config.bytecode_dirs {
        relevant.push(std::path::absolute(dir)?);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    {
        // A download that a pass stopped waiting for triggers a pass when it ends, rather than
        // waiting for the object's next retry.
        let tx = tx.clone();
        config.fetcher.downloads.on_done(move || {
            let _ = tx.send(());
        });
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the manifests makes access events: only changes count, or every pass would
        // trigger the next one. The parent's events count only for the folder itself.
        if event.is_ok_and(|e| {
            (e.kind.is_create() || e.kind.is_modify() || e.kind.is_remove())
                && e.paths
                    .iter()
                    .any(|p| relevant.iter().any(|r| p.starts_with(r)))
        }) {
            let _ = tx.send(());
        }
    })?;
    let parent_watched = match folder.parent() {
        Some(parent) => match watcher.watch(parent, RecursiveMode::NonRecursive) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(folder = %parent.display(), error = %e, "cannot watch the manifests folder's parent; looking again every 2 s");
                false
            }
        },
        None => false,
    };
    for dir in &config.bytecode_dirs {
        watcher.watch(dir, RecursiveMode::Recursive)?;
    }
    let mut retries = Retries::new(RETRY_BASE, RETRY_MAX);
    let mut memory = ManifestMemory::default();
    // The folder watched, by device and inode: `rm -rf` ends its watch (the kernel drops it) and a
    // folder created or renamed into place later needs a new one.
    let mut watched: Option<(u64, u64)> = None;
    loop {
        let now = std::fs::metadata(&folder)
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .map(|m| (m.dev(), m.ino()));
        if now != watched {
            if now.is_some() && watched.is_some() {
                let _ = watcher.unwatch(&folder);
            }
            watched = None;
            if now.is_some() {
                match watcher.watch(&folder, RecursiveMode::NonRecursive) {
                    Ok(()) => watched = now,
                    Err(e) => {
                        tracing::warn!(folder = %folder.display(), error = %e, "cannot watch the manifests folder; looking again every 2 s");
                    }
                }
            }
        }
        let cfg = config.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let (_, report) = pass(&mut reconciler, &cfg, &mut memory);
            (reconciler, memory, report)
        });
        let (r, m, report) = tokio::select! {
            done = &mut task => done?,
            () = &mut stop => {
                tracing::warn!("stop requested during a pass; stopping when it ends (a second signal exits now); pins stay in place");
                let _ = task.await;
                return Ok(());
            }
        };
        reconciler = r;
        memory = m;
        retries.record_pass(std::time::Instant::now(), &report);
        // Without a watch that would notice the folder (back), look again now and then.
        let poll = if watched.is_some() || parent_watched {
            None
        } else {
            Some(std::time::Instant::now() + UNWATCHED_POLL)
        };
        let due = match (retries.next_due(), poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            () = &mut stop => {
                tracing::info!("shutting down; pins stay in place");
                return Ok(());
            }
            Some(()) = rx.recv() => {
                // Editors write files in several steps: let them settle, then take every event.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
            }
            () = sleep_until(due) => {
                tracing::info!("retrying the objects whose bytecode or attach point was missing");
            }
        }
    }
}
