//! One shared shutdown signal: the first SIGTERM or SIGINT starts a graceful shutdown (the
//! controller finishes running reconciles, the lease is released); a second one exits at once.

use tokio::sync::watch;

/// Resolves when shutdown was requested. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Exit code of a forced shutdown (as for SIGINT).
const FORCED_EXIT: i32 = 130;

impl Shutdown {
    /// Installs the signal handlers.
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

    /// A signal that never fires, for tests.
    #[cfg(test)]
    pub fn never() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Resolves once shutdown is requested.
    pub async fn wait(mut self) {
        // An Err means the sender is gone, which only happens when the process is exiting.
        let _ = self.0.wait_for(|requested| *requested).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_resolves_on_request() {
        let (tx, s) = Shutdown::never();
        let waiter = tokio::spawn(s.wait());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tx.send_replace(true);
        waiter.await.expect("joined");
    }
}
