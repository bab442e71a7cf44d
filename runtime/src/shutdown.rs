//! One shutdown signal per process: the first SIGTERM or SIGINT asks for a clean stop (the
//! operator finishes running reconciles and releases its lease; the agent finishes its pass and
//! leaves every pin in place), a second one exits at once.

use tokio::sync::watch;

/// Resolves when shutdown was requested. Cheap to clone; the handlers are installed when it is
/// made, so a signal that arrives before anyone waits (e.g. during the agent's first pass) still
/// asks for a clean stop instead of killing the process.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Exit code of a forced shutdown (as for SIGINT).
const FORCED_EXIT: i32 = 130;

impl Shutdown {
    /// Installs the signal handlers (inside a Tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(
                signal = which,
                "shutting down gracefully; send it again to force"
            );
            tx.send_replace(true);
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::warn!(signal = which, "forced shutdown");
            std::process::exit(FORCED_EXIT);
        });
        Ok(Self(rx))
    }

    /// A signal that fires only when the returned sender says so, for tests.
    pub fn manual() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Resolves once shutdown is requested.
    pub async fn requested(mut self) {
        // An Err means the sender is gone, which only happens when the process is exiting.
        let _ = self.0.wait_for(|requested| *requested).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_resolves_on_request() {
        let (tx, s) = Shutdown::manual();
        let waiter = tokio::spawn(s.requested());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tx.send_replace(true);
        waiter.await.expect("joined");
    }
}
