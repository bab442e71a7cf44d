//! One shutdown signal for the whole agent: the first SIGTERM/SIGINT asks for a clean stop, a
//! second one exits at once. Stopping never unpins anything: pins outlive the agent by design.

/// Resolves on the first SIGTERM or SIGINT; a second one exits the process with status 130.
pub async fn signal() {
    wait_one().await;
    tokio::spawn(async {
        wait_one().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_one() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
