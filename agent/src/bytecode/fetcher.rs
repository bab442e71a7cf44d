//! [`Fetcher`]: the settings and shared state of every url download and image pull of an agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::downloads::Downloads;
use super::image::credentials::RegistryAuth;
use super::policy::SourcePolicy;

/// Downloads `bytecode.url` and pulls `bytecode.image`: the node's cache, the time and size
/// bounds, the credentials and the address policy. Clones share the downloads under way.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// Where downloads are kept, by digest (`<cache>/<sha256>.bpf.o`); `None` keeps nothing.
    pub cache_dir: Option<PathBuf>,
    /// Attempts per download (transport errors and 5xx are retried; 4xx are not).
    pub attempts: u32,
    /// The bound on opening one connection.
    pub connect_timeout: Duration,
    /// Timeout of one request (reading the body included).
    pub timeout: Duration,
    /// The bound of one object's whole fetch: every request and retry of it (`--fetch-timeout`).
    pub deadline: Duration,
    /// The largest object accepted, in bytes.
    pub max_bytes: u64,
    /// Credentials for `bytecode.image` registries (`--registry-auth`); anonymous by default.
    pub registry_auth: RegistryAuth,
    /// Where downloads may connect (`--source-allow`).
    pub policy: Arc<SourcePolicy>,
    /// Every source must pin a digest (`--require-digest`): `spec.sha256`, or `@sha256:` for an
    /// image.
    pub require_digest: bool,
    /// How long a pass waits for downloads still running before it goes on without them (they
    /// keep running; the object's previous version stays pinned meanwhile). `None`: until every
    /// download is done (one-shot runs).
    pub pass_wait: Option<Duration>,
    /// The downloads under way, shared by the clones of this fetcher.
    pub downloads: Downloads,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self {
            cache_dir: None,
            attempts: 3,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(60),
            max_bytes: crate::fd::MAX_BYTES,
            registry_auth: RegistryAuth::anonymous(),
            policy: Arc::new(SourcePolicy::default()),
            require_digest: false,
            pass_wait: Some(Duration::from_secs(2)),
            downloads: Downloads::default(),
        }
    }
}

impl Fetcher {
    /// A fetcher caching in `cache_dir` (created if needed; without it nothing is cached).
    pub fn with_cache(cache_dir: Option<PathBuf>) -> Self {
        let cache_dir = cache_dir.filter(|d| match std::fs::create_dir_all(d) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "bytecode cache unavailable; URLs are downloaded on every pass");
                false
            }
        });
        Self {
            cache_dir,
            ..Self::default()
        }
    }
}
