//! `bytecode.url`: HTTP(S) download with a mandatory SHA-256, a size limit, timeouts and retries,
//! cached on the node by digest so restarts and objects sharing a URL download it once.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use crate::desired::sha256_hex;
use crate::error::{ObjectError, Reason};

/// The largest bytecode accepted from a URL.
pub const MAX_BYTES: u64 = 32 << 20;

/// Downloads bytecode.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// Where downloads are kept, by digest (`<cache>/<sha256>.bpf.o`); `None` keeps nothing.
    pub cache_dir: Option<PathBuf>,
    /// Attempts per download (transport errors and 5xx are retried; 4xx are not).
    pub attempts: u32,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Size limit.
    pub max_bytes: u64,
    /// Credentials for `bytecode.image` registries (`--registry-auth`); anonymous by default.
    pub registry_auth: crate::oci::RegistryAuth,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self {
            cache_dir: None,
            attempts: 3,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_bytes: MAX_BYTES,
            registry_auth: crate::oci::RegistryAuth::anonymous(),
        }
    }
}

enum Attempt {
    Retry(String),
    Fatal(ObjectError),
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

    /// The bytes at `url`, which must have digest `sha256`.
    pub fn fetch(&self, url: &str, sha256: Option<&str>) -> Result<Vec<u8>, ObjectError> {
        let Some(want) = sha256 else {
            return Err(ObjectError::new(
                Reason::InvalidSpec,
                "spec.sha256 is required when the bytecode comes from a url",
            ));
        };
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{want}.bpf.o")));
        if let Some(path) = &cached
            && let Ok(bytes) = std::fs::read(path)
        {
            if sha256_hex(&bytes) == want {
                tracing::debug!(url, path = %path.display(), "bytecode from the cache");
                return Ok(bytes);
            }
            let _ = std::fs::remove_file(path); // corrupt: fetch again
        }
        let mut last = String::new();
        for attempt in 0..self.attempts.max(1) {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << (attempt - 1)));
            }
            match self.download(url) {
                Ok(bytes) => {
                    let got = sha256_hex(&bytes);
                    if got != want {
                        return Err(ObjectError::new(
                            Reason::DigestMismatch,
                            format!("{url} has sha256 {got}, spec.sha256 says {want}"),
                        ));
                    }
                    if let Some(path) = &cached {
                        let tmp = path.with_extension("partial");
                        if std::fs::write(&tmp, &bytes)
                            .and_then(|()| std::fs::rename(&tmp, path))
                            .is_err()
                        {
                            let _ = std::fs::remove_file(&tmp);
                        }
                    }
                    tracing::info!(url, bytes = bytes.len(), "downloaded bytecode");
                    return Ok(bytes);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => {
                    tracing::warn!(url, attempt = attempt + 1, error = %why, "download failed");
                    last = why;
                }
            }
        }
        Err(ObjectError::new(
            Reason::BytecodeUnavailable,
            format!(
                "downloading {url} failed {} times; last error: {last}",
                self.attempts.max(1)
            ),
        ))
    }

    fn download(&self, url: &str) -> Result<Vec<u8>, Attempt> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(self.connect_timeout))
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent
            .get(url)
            .call()
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        let status = response.status().as_u16();
        if status >= 500 {
            return Err(Attempt::Retry(format!("HTTP {status}")));
        }
        if status >= 300 {
            return Err(Attempt::Fatal(ObjectError::new(
                Reason::BytecodeUnavailable,
                format!("downloading {url}: HTTP {status}"),
            )));
        }
        let mut bytes = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(self.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(Attempt::Fatal(ObjectError::new(
                Reason::BytecodeUnavailable,
                format!(
                    "{url} is larger than the {} MiB limit for bytecode",
                    self.max_bytes >> 20
                ),
            )));
        }
        Ok(bytes)
    }
}
