//! Local watch mode: a pass on every change of the manifests or bytecode folders (and, while an
//! object names host interfaces by pattern or `primaryNodeInterface`, of the node's links, and for
//! `primaryNodeInterface` of its default routes), and
//! retries of objects whose failure may go away by itself, until SIGTERM/SIGINT. Pins persist.

use std::time::Duration;

use super::{LocalConfig, ManifestMemory, pass};
use crate::backoff::{Retries, sleep_until};
use crate::pin::reconcile::Reconciler;

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
    let link_tx = tx.clone();
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
    let links = crate::link_events::LinkWatch::default();
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
        // Host interfaces that appear or go (and default routes that move) wake a pass while an
        // object follows them.
        links.ensure(memory.follows_links, || {
            let tx = link_tx.clone();
            move || {
                let _ = tx.send(());
            }
        });
        retries.record_pass(std::time::Instant::now(), &report);
        // Without a watch that would notice the folder (back), look again now and then.
        let poll = if watched.is_some() || parent_watched {
            None
        } else {
            Some(std::time::Instant::now() + UNWATCHED_POLL)
        };
        let due = retries.next_due().into_iter().chain(poll).min();
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
