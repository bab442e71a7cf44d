//! One shutdown signal for the whole agent: the first SIGTERM/SIGINT asks for a clean stop, a
//! second one exits at once. Stopping never unpins anything: pins outlive the agent by design.

use tokio::signal::unix::{Signal, SignalKind, signal as unix_signal};

/// SIGTERM and SIGINT handlers, installed when this is made: made before the first pass, a signal
/// that arrives during it asks for a clean stop instead of killing the process.
#[derive(Debug)]
pub struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    /// Installs the handlers now (inside a Tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: unix_signal(SignalKind::terminate())?,
            int: unix_signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first signal; a second one exits the process with status 130.
    pub async fn requested(mut self) {
        self.wait_one().await;
        tokio::spawn(async move {
            self.wait_one().await;
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        });
    }

    async fn wait_one(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
