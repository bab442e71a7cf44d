//! The url and image downloads of a pass run in parallel, each on its own thread and under its own
//! time bound, instead of one after another inside the pass: a server that never answers holds
//! only its own object. A pass waits for them up to [`Fetcher::pass_wait`]; a download still
//! running then keeps running, its object fails this pass with `BytecodeUnavailable` ("still
//! downloading", retried with backoff; its previous version stays pinned), and the next pass takes
//! its result.
//!
//! [`Batch`] is what a mode uses: it defers the url and image sources of the objects it reads,
//! checks `--require-digest` for every source, and fills the bytecode in at the end.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bpfpin_crds::BpfObjectSpec;

use crate::error::{ObjectError, Reason};
use crate::fetch::{Fetcher, seconds};
use crate::oci::{ImageRef, RegistryAuth};
use crate::pin::desired::DesiredObject;

type Outcome = Result<Vec<u8>, ObjectError>;

/// A finished download nobody took is dropped after this long (its object was deleted).
const UNCLAIMED: Duration = Duration::from_secs(600);
/// The most downloads at once: each may hold up to a 32 MiB body and a 32 MiB object in memory.
pub const MAX_PARALLEL: usize = 4;

#[derive(Debug)]
enum Slot {
    /// `abandoned`: a pass stopped waiting for it, so its end should wake the next one.
    Running {
        started: Instant,
        abandoned: bool,
    },
    Done {
        outcome: Outcome,
        at: Instant,
    },
}

type Hook = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Shared {
    slots: Mutex<HashMap<String, Slot>>,
    changed: Condvar,
    active: Mutex<usize>,
    freed: Condvar,
    on_done: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: a finished slot holds up to 32 MiB of bytecode.
        let slots = self.slots.try_lock().map_or(0, |s| s.len());
        f.debug_struct("Downloads")
            .field("slots", &slots)
            .finish_non_exhaustive()
    }
}

/// The downloads under way or finished and not yet taken, by source; shared by a fetcher's clones.
#[derive(Debug, Clone, Default)]
pub struct Downloads(Arc<Shared>);

impl Downloads {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.0.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `job` under `key` unless a download of that key is running or finished untaken.
    fn start(&self, key: &str, job: impl FnOnce() -> Outcome + Send + 'static) {
        let mut slots = self.lock();
        if slots.contains_key(key) {
            return;
        }
        slots.insert(
            key.to_owned(),
            Slot::Running {
                started: Instant::now(),
                abandoned: false,
            },
        );
        drop(slots);
        let this = self.clone();
        let owned = key.to_owned();
        let spawned = std::thread::Builder::new()
            .name("bpfpin-fetch".into())
            .spawn(move || {
                let outcome = this.limited(job);
                let previous = this.lock().insert(
                    owned,
                    Slot::Done {
                        outcome,
                        at: Instant::now(),
                    },
                );
                this.0.changed.notify_all();
                if matches!(
                    previous,
                    Some(Slot::Running {
                        abandoned: true,
                        ..
                    })
                ) {
                    let hook = this
                        .0
                        .on_done
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    if let Some(hook) = hook {
                        hook();
                    }
                }
            });
        if let Err(e) = spawned {
            self.lock().insert(
                key.to_owned(),
                Slot::Done {
                    outcome: Err(ObjectError::new(
                        Reason::BytecodeUnavailable,
                        format!("cannot start a download thread: {e}"),
                    )),
                    at: Instant::now(),
                },
            );
        }
    }

    /// Calls `hook` when a download that a pass stopped waiting for ends, so that a pass takes
    /// its result now rather than at the object's next retry.
    pub fn on_done(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self
            .0
            .on_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(hook));
    }

    /// Runs `job` once fewer than [`MAX_PARALLEL`] others run.
    fn limited(&self, job: impl FnOnce() -> Outcome) -> Outcome {
        let shared = &self.0;
        let mut active = shared.active.lock().unwrap_or_else(PoisonError::into_inner);
        while *active >= MAX_PARALLEL {
            active = shared
                .freed
                .wait(active)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *active += 1;
        drop(active);
        let outcome = job();
        *shared.active.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        shared.freed.notify_one();
        outcome
    }

    /// Waits until every one of `keys` is done, or until `until`.
    fn wait(&self, keys: &[&str], until: Option<Instant>) {
        let mut slots = self.lock();
        loop {
            let running = keys
                .iter()
                .any(|k| matches!(slots.get(*k), Some(Slot::Running { .. })));
            if !running {
                return;
            }
            slots = match until {
                None => self
                    .0
                    .changed
                    .wait(slots)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(t) => {
                    let Some(left) = t.checked_duration_since(Instant::now()) else {
                        return;
                    };
                    self.0
                        .changed
                        .wait_timeout(slots, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// The outcomes of `keys`, taking the finished ones; `Err(started)` for those still running.
    fn take(&self, keys: &[&str]) -> HashMap<String, Result<Outcome, Instant>> {
        let mut slots = self.lock();
        let now = Instant::now();
        slots.retain(
            |_, s| !matches!(s, Slot::Done { at, .. } if now.duration_since(*at) > UNCLAIMED),
        );
        let mut out = HashMap::new();
        for key in keys {
            match slots.get_mut(*key) {
                Some(Slot::Running { started, abandoned }) => {
                    *abandoned = true;
                    out.insert((*key).to_owned(), Err(*started));
                }
                Some(Slot::Done { .. }) => {
                    if let Some(Slot::Done { outcome, .. }) = slots.remove(*key) {
                        out.insert((*key).to_owned(), Ok(outcome));
                    }
                }
                None => {}
            }
        }
        out
    }

    /// How many downloads are running now.
    pub fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| matches!(s, Slot::Running { .. }))
            .count()
    }
}

/// A url or image source to fetch.
#[derive(Debug, Clone)]
pub enum Remote {
    /// `bytecode.url` with `spec.sha256`.
    Url {
        /// The URL.
        url: String,
        /// `spec.sha256`.
        sha256: Option<String>,
    },
    /// `bytecode.image`.
    Image {
        /// The reference.
        reference: String,
        /// `spec.sha256`.
        sha256: Option<String>,
        /// The credentials to pull with.
        auth: RegistryAuth,
    },
}

impl Remote {
    /// What a download is known by: the same source (and credentials) downloads once.
    fn key(&self) -> String {
        match self {
            Remote::Url { url, sha256 } => format!("url {url} {}", sha256.as_deref().unwrap_or("")),
            Remote::Image {
                reference,
                sha256,
                auth,
            } => format!(
                "image {reference} {} {}",
                sha256.as_deref().unwrap_or(""),
                auth.fingerprint()
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            Remote::Url { url, .. } => url.clone(),
            Remote::Image { reference, .. } => format!("image {reference}"),
        }
    }

    fn run(self, fetcher: &Fetcher) -> Outcome {
        match self {
            Remote::Url { url, sha256 } => fetcher.fetch(&url, sha256.as_deref()),
            Remote::Image {
                reference,
                sha256,
                auth,
            } => crate::oci::pull(fetcher, &auth, &reference, sha256.as_deref()),
        }
    }
}

/// `--require-digest`: the object's source must pin what it loads. `sha256` is `spec.sha256`;
/// `image` the image reference, when the source is one.
pub fn check_digest_required(fetcher: &Fetcher, spec: &BpfObjectSpec) -> Result<(), ObjectError> {
    if !fetcher.require_digest {
        return Ok(());
    }
    let source = &spec.bytecode;
    if let Some(image) = &source.image {
        // An unparsable reference is reported by the pull itself.
        let pinned = ImageRef::parse(image).map_or(true, |r| r.digest.is_some());
        return if pinned {
            Ok(())
        } else {
            Err(ObjectError::new(
                Reason::DigestRequired,
                format!(
                    "bytecode.image {image} names no digest and --require-digest is set: write it as registry/repository@sha256:<digest>"
                ),
            ))
        };
    }
    if spec.sha256.is_some() {
        return Ok(());
    }
    let kind = if source.url.is_some() {
        "bytecode.url"
    } else if source.config_map.is_some() {
        "bytecode.configMap"
    } else {
        "bytecode.path"
    };
    Err(ObjectError::new(
        Reason::DigestRequired,
        format!("spec.sha256 is missing and --require-digest is set: every {kind} source needs it"),
    ))
}

/// The url and image sources of one pass, fetched together at its end ([`Batch::resolve`]).
#[derive(Debug)]
pub struct Batch<'a> {
    fetcher: &'a Fetcher,
    deferred: Vec<(String, Remote)>,
}

impl<'a> Batch<'a> {
    /// An empty batch.
    pub fn new(fetcher: &'a Fetcher) -> Self {
        Self {
            fetcher,
            deferred: Vec::new(),
        }
    }

    fn pending() -> Outcome {
        Err(ObjectError::new(
            Reason::BytecodeUnavailable,
            "internal error: the download of this object was not waited for",
        ))
    }

    /// For an object read from a manifest: `None` when its bytecode is read by the caller (a
    /// path or a ConfigMap); otherwise what to put in its `bytecode` until [`Batch::resolve`]
    /// fills it in (or a `--require-digest` failure).
    pub fn defer(&mut self, object: &str, spec: &BpfObjectSpec) -> Option<Outcome> {
        if let Err(e) = check_digest_required(self.fetcher, spec) {
            return Some(Err(e));
        }
        let source = &spec.bytecode;
        let remote = if let Some(url) = &source.url {
            Remote::Url {
                url: url.clone(),
                sha256: spec.sha256.clone(),
            }
        } else if let Some(image) = &source.image {
            Remote::Image {
                reference: image.clone(),
                sha256: spec.sha256.clone(),
                auth: self.fetcher.registry_auth.clone(),
            }
        } else {
            return None;
        };
        Some(self.add(object, remote))
    }

    /// Defers `remote` for `object`; returns the placeholder for its `bytecode`.
    pub fn add(&mut self, object: &str, remote: Remote) -> Outcome {
        self.deferred.push((object.to_owned(), remote));
        Self::pending()
    }

    /// Starts every deferred download, waits for them up to [`Fetcher::pass_wait`] and fills in
    /// the bytecode of their objects among `objects`.
    pub fn resolve<'o>(self, objects: impl IntoIterator<Item = &'o mut DesiredObject>) {
        if self.deferred.is_empty() {
            return;
        }
        let downloads = &self.fetcher.downloads;
        let keys: Vec<String> = self.deferred.iter().map(|(_, r)| r.key()).collect();
        for ((_, remote), key) in self.deferred.iter().zip(&keys) {
            let fetcher = self.fetcher.clone();
            let remote = remote.clone();
            downloads.start(key, move || remote.run(&fetcher));
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        downloads.wait(&refs, self.fetcher.pass_wait.map(|w| Instant::now() + w));
        let taken = downloads.take(&refs);
        let mut by_object: HashMap<String, Outcome> = HashMap::new();
        for ((object, remote), key) in self.deferred.into_iter().zip(&keys) {
            let outcome = match taken.get(key) {
                Some(Ok(outcome)) => outcome.clone(),
                Some(Err(started)) => Err(ObjectError::new(
                    Reason::BytecodeUnavailable,
                    format!(
                        "still downloading {} (for {}; bounded by --fetch-timeout {}); the previous version, if any, stays pinned",
                        remote.describe(),
                        seconds(started.elapsed()),
                        seconds(self.fetcher.deadline)
                    ),
                )),
                None => Self::pending(),
            };
            by_object.insert(object, outcome);
        }
        for obj in objects {
            if let Some(outcome) = by_object.remove(&obj.name) {
                obj.bytecode = outcome;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_download_does_not_hold_a_fast_one_and_is_taken_later() {
        let downloads = Downloads::default();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        downloads.start("slow", move || {
            let _ = rx.recv();
            Ok(b"slow".to_vec())
        });
        downloads.start("fast", || Ok(b"fast".to_vec()));
        downloads.start("fast", || panic!("started twice"));
        let t = Instant::now();
        downloads.wait(
            &["slow", "fast"],
            Some(Instant::now() + Duration::from_millis(200)),
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        let taken = downloads.take(&["slow", "fast"]);
        assert_eq!(taken["fast"], Ok(Ok(b"fast".to_vec())));
        assert!(taken["slow"].is_err(), "still running");
        assert_eq!(downloads.running(), 1);
        let (woken_tx, woken) = std::sync::mpsc::channel();
        let woken_tx = Mutex::new(woken_tx);
        downloads.on_done(move || {
            let _ = woken_tx.lock().expect("lock").send(());
        });
        tx.send(()).expect("release");
        woken
            .recv_timeout(Duration::from_secs(5))
            .expect("the end of an abandoned download wakes a pass");
        downloads.wait(&["slow"], None);
        assert_eq!(downloads.take(&["slow"])["slow"], Ok(Ok(b"slow".to_vec())));
        assert!(downloads.take(&["slow"]).is_empty(), "taken once");
        // One a pass waited for to its end wakes nobody.
        downloads.start("waited", || Ok(Vec::new()));
        downloads.wait(&["waited"], None);
        assert!(woken.recv_timeout(Duration::from_millis(200)).is_err());
    }

    fn spec(yaml: &str) -> BpfObjectSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    #[test]
    fn require_digest_wants_a_sha256_or_a_pinned_image() {
        let strict = Fetcher {
            require_digest: true,
            ..Fetcher::default()
        };
        let d = "0".repeat(64);
        for ok in [
            format!("bytecode: {{path: a.o}}\nsha256: '{d}'\nprograms: [{{name: p}}]"),
            format!("bytecode: {{image: 'quay.io/x@sha256:{d}'}}\nprograms: [{{name: p}}]"),
        ] {
            assert_eq!(check_digest_required(&strict, &spec(&ok)), Ok(()), "{ok}");
        }
        for (bad, says) in [
            (
                "bytecode: {path: a.o}\nprograms: [{name: p}]",
                "bytecode.path",
            ),
            (
                "bytecode: {url: 'http://x/a.o'}\nprograms: [{name: p}]",
                "bytecode.url",
            ),
            (
                "bytecode: {configMap: {namespace: n, name: c, key: k}}\nprograms: [{name: p}]",
                "bytecode.configMap",
            ),
            (
                "bytecode: {image: 'quay.io/x:v1'}\nprograms: [{name: p}]",
                "@sha256:",
            ),
        ] {
            let e = check_digest_required(&strict, &spec(bad)).expect_err(bad);
            assert_eq!(e.reason, Reason::DigestRequired);
            assert!(e.message.contains(says), "{}", e.message);
        }
        let lax = Fetcher::default();
        assert_eq!(
            check_digest_required(&lax, &spec("bytecode: {path: a.o}\nprograms: [{name: p}]")),
            Ok(())
        );
    }
}
