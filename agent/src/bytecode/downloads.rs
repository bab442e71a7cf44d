//! The url and image downloads of a pass run in parallel, each on its own thread and under its own
//! time bound, instead of one after another inside the pass: a server that never answers holds
//! only its own object. A pass waits for them up to
//! [`Fetcher::pass_wait`](super::Fetcher::pass_wait); a download still running then keeps
//! running, its object fails this pass with `BytecodeUnavailable` ("still downloading", retried
//! with backoff; its previous version stays pinned), and the next pass takes its result.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{ObjectError, Reason};

/// An object's bytecode, or why there is none.
pub(crate) type Outcome = Result<Vec<u8>, ObjectError>;

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
    pub(crate) fn start(&self, key: &str, job: impl FnOnce() -> Outcome + Send + 'static) {
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
    pub(crate) fn wait(&self, keys: &[&str], until: Option<Instant>) {
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
    pub(crate) fn take(&self, keys: &[&str]) -> HashMap<String, Result<Outcome, Instant>> {
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
}
