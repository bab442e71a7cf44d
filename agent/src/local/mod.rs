//! Local mode: reconcile every `BpfObject` found in the YAML files of a folder, no cluster needed.
//! `bytecode.path` may be relative to the manifest's folder and must resolve (symlinks included)
//! inside the manifests folder or a `--bytecode-dir`.

use std::path::PathBuf;

use crate::bytecode::Fetcher;
use crate::pin::reconcile::{Action, PassReport, Reconciler};

pub mod manifest;
mod manifests;
mod watch;

pub use manifests::{
    FolderError, MAX_FILES, ManifestError, ManifestMemory, Manifests, read_manifests,
};
pub use watch::watch;

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

/// Prints a pass for a person: one line per object. Returns whether everything is pinned.
pub fn print_pass(report: &PassReport, errors: &[ManifestError]) -> bool {
    let mut ok = errors.is_empty();
    for e in errors {
        // Named by its object when it has one (then the file follows the reason), else its file.
        let file = e.file.display();
        let (who, at) = match &e.object {
            Some(name) => (name.clone(), format!("{file}: ")),
            None => (file.to_string(), String::new()),
        };
        eprintln!("{who}: FAILED {}: {at}{}", e.problem.as_str(), e.message);
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
    memory.follows_links = crate::link_events::Follow::needed(
        manifests
            .objects
            .iter()
            .flat_map(|o| o.spec.programs.iter().filter_map(|p| p.attach.as_ref())),
    );
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
