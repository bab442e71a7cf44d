//! Log setup: `tracing` to stderr, the level from `RUST_LOG` (default `info`), as text or JSON.

use clap::ValueEnum;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter of `RUST_LOG` when it is set and not empty (an invalid one falls back to `info`,
/// as before), else none: then the level is a plain `info`, which costs nothing to build. A
/// one-shot run (`local --once`) is over in about a millisecond, so it builds no directive filter
/// it was not given (measured: within the noise of an idle run, docs/performance.md finding 7).
fn env_filter() -> Option<EnvFilter> {
    let set = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some_and(|v| !v.is_empty());
    set.then(|| EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
}

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let env = env_filter();
    // Exactly one of the two filters is present.
    let level = env.is_none().then_some(LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(env).with(level);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
}
