//! Local mode: reconcile every `BpfObject` found in the YAML files of a folder, no cluster needed.
//! `bytecode.path` may be relative to the manifest's folder and must resolve (symlinks included)
//! inside the manifests folder or a `--bytecode-dir`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bpfpin_crds::BpfObject;
use serde::Deserialize;

use crate::backoff::{Retries, sleep_until};
pub use crate::bytecode_path::{allowed_dirs, read_bytecode};
use crate::desired::DesiredObject;
use crate::fetch::Fetcher;
use crate::reconcile::{Action, PassReport, Reconciler};

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

/// A manifest document that could not be turned into an object.
#[derive(Debug, Clone)]
pub struct ManifestError {
    /// The object's name, when the document has one.
    pub object: Option<String>,
    /// The file.
    pub file: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// Reads every `BpfObject` of the folder, with its bytecode. Documents of other kinds are skipped.
pub fn read_manifests(config: &LocalConfig) -> (Vec<DesiredObject>, Vec<ManifestError>) {
    let mut objects: BTreeMap<String, DesiredObject> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&config.manifests) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect(),
        Err(e) => {
            errors.push(ManifestError {
                object: None,
                file: config.manifests.clone(),
                message: format!("cannot read the manifests folder: {e}"),
            });
            return (Vec::new(), errors);
        }
    };
    files.sort();
    let allowed = allowed_dirs(config);
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ManifestError {
                    object: None,
                    file: file.clone(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = match serde_yaml::Value::deserialize(doc) {
                Ok(serde_yaml::Value::Null) => continue,
                Ok(v) => v,
                Err(e) => {
                    errors.push(ManifestError {
                        object: None,
                        file: file.clone(),
                        message: format!("document {}: not YAML: {e}", i + 1),
                    });
                    continue;
                }
            };
            if value.get("kind").and_then(|k| k.as_str()) != Some("BpfObject") {
                tracing::debug!(file = %file.display(), document = i + 1, "skipping a document that is not a BpfObject");
                continue;
            }
            let name = value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                .map(str::to_owned);
            let obj: BpfObject = match serde_yaml::from_value(value) {
                Ok(o) => o,
                Err(e) => {
                    errors.push(ManifestError {
                        object: name,
                        file: file.clone(),
                        message: format!("document {}: not a valid BpfObject: {e}", i + 1),
                    });
                    continue;
                }
            };
            let Some(name) = obj.metadata.name.clone() else {
                errors.push(ManifestError {
                    object: None,
                    file: file.clone(),
                    message: format!("document {}: metadata.name is missing", i + 1),
                });
                continue;
            };
            if objects.contains_key(&name) {
                errors.push(ManifestError {
                    object: Some(name.clone()),
                    file: file.clone(),
                    message: "is defined twice; the first definition is used".into(),
                });
                continue;
            }
            let folder = file.parent().unwrap_or(Path::new("."));
            let bytecode = read_bytecode(&obj, folder, &allowed, &config.fetcher);
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
    (objects.into_values().collect(), errors)
}

/// Prints a pass for a person: one line per object. Returns whether everything is pinned.
pub fn print_pass(report: &PassReport, errors: &[ManifestError]) -> bool {
    let mut ok = errors.is_empty();
    for e in errors {
        eprintln!(
            "{}: FAILED InvalidManifest: {}: {}",
            e.object.as_deref().unwrap_or("<unnamed>"),
            e.file.display(),
            e.message
        );
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
    pass(reconciler, config).0
}

/// One pass: whether every object is pinned, and the report.
fn pass(reconciler: &mut Reconciler, config: &LocalConfig) -> (bool, PassReport) {
    let (desired, errors) = read_manifests(config);
    // Objects whose manifest is broken are kept as they are: a typo must not unpin them.
    let hold = errors.iter().filter_map(|e| e.object.clone()).collect();
    let report = reconciler.reconcile(&desired, &hold);
    (print_pass(&report, &errors), report)
}

/// First retry of an object whose bytecode or attach point is missing; doubles up to 5 min.
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// Watches the folder and reconciles on every change until SIGTERM/SIGINT; pins persist. Objects
/// that failed for a reason that may go away by itself (a missing bytecode file or URL, an
/// interface or cgroup that does not exist yet) are retried with backoff.
pub async fn watch(mut reconciler: Reconciler, config: LocalConfig) -> anyhow::Result<()> {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the manifests makes access events: only changes count, or every pass would
        // trigger the next one.
        if event.is_ok_and(|e| e.kind.is_create() || e.kind.is_modify() || e.kind.is_remove()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&config.manifests, RecursiveMode::NonRecursive)?;
    for dir in &config.bytecode_dirs {
        watcher.watch(dir, RecursiveMode::Recursive)?;
    }
    let mut retries = Retries::new(RETRY_BASE, RETRY_MAX);
    let mut shutdown = std::pin::pin!(crate::shutdown::signal());
    loop {
        let cfg = config.clone();
        let (r, report) = tokio::task::spawn_blocking(move || {
            let (_, report) = pass(&mut reconciler, &cfg);
            (reconciler, report)
        })
        .await?;
        reconciler = r;
        retries.record_pass(std::time::Instant::now(), &report);
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down; pins stay in place");
                return Ok(());
            }
            Some(()) = rx.recv() => {
                // Editors write files in several steps: let them settle, then take every event.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
            }
            () = sleep_until(retries.next_due()) => {
                tracing::info!("retrying the objects whose bytecode or attach point was missing");
            }
        }
    }
}
