//! `bytecode.url`: HTTP(S) download with a mandatory SHA-256, a size limit, timeouts and retries,
//! cached on the node by digest so restarts and objects sharing a URL download it once. Every
//! object's fetch (url or image) has one time bound across its requests and retries
//! ([`Fetcher::deadline`]), connects only where [`SourcePolicy`] allows, and runs beside the
//! others ([`crate::downloads`]), so one slow server delays nobody else.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::downloads::Downloads;
use crate::error::{ObjectError, Reason};
use crate::pin::desired::sha256_hex;
use crate::source_policy::{PolicyResolver, REFUSED, SourcePolicy};

/// The largest bytecode accepted from a URL.
pub const MAX_BYTES: u64 = 32 << 20;
/// The most redirects a download follows.
pub const MAX_REDIRECTS: u32 = 5;
/// The largest response head (status line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Downloads bytecode.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// Where downloads are kept, by digest (`<cache>/<sha256>.bpf.o`); `None` keeps nothing.
    pub cache_dir: Option<PathBuf>,
    /// Attempts per download (transport errors and 5xx are retried; 4xx are not).
    pub attempts: u32,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one request (reading the body included).
    pub timeout: Duration,
    /// The bound of one object's whole fetch: every request and retry of it (`--fetch-timeout`).
    pub deadline: Duration,
    /// Size limit.
    pub max_bytes: u64,
    /// Credentials for `bytecode.image` registries (`--registry-auth`); anonymous by default.
    pub registry_auth: crate::oci::RegistryAuth,
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
            max_bytes: MAX_BYTES,
            registry_auth: crate::oci::RegistryAuth::anonymous(),
            policy: Arc::new(SourcePolicy::default()),
            require_digest: false,
            pass_wait: Some(Duration::from_secs(2)),
            downloads: Downloads::default(),
        }
    }
}

enum Attempt {
    Retry(String),
    Fatal(ObjectError),
}

/// The clock of one object's fetch: what is left of [`Fetcher::deadline`].
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: Instant,
    bound: Duration,
}

impl Deadline {
    /// Starts now.
    pub fn start(bound: Duration) -> Self {
        Self {
            start: Instant::now(),
            bound,
        }
    }

    /// What is left, if anything.
    pub fn remaining(&self) -> Option<Duration> {
        self.bound
            .checked_sub(self.start.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// The bound, for messages.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Sleeps `d`, or until the deadline if that is sooner; false when nothing is left after.
    pub fn sleep(&self, d: Duration) -> bool {
        match self.remaining() {
            Some(left) => {
                std::thread::sleep(d.min(left));
                self.remaining().is_some()
            }
            None => false,
        }
    }
}

/// `60 s`, `1.5 s`: a duration for messages.
pub fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Whether an error of ureq will not go away by trying again: a refused address, a redirect
/// loop or a redirect to a scheme or address not allowed.
pub fn is_final(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => io.to_string().contains(REFUSED),
        ureq::Error::TooManyRedirects
        | ureq::Error::RequireHttpsOnly(_)
        | ureq::Error::BadUri(_)
        | ureq::Error::Http(_) => true,
        _ => false,
    }
}

/// The reason of a final error: `SourceNotAllowed` for a refused address.
pub fn final_reason(e: &ureq::Error) -> Reason {
    match e {
        ureq::Error::Io(io) if io.to_string().contains(REFUSED) => Reason::SourceNotAllowed,
        _ => Reason::BytecodeUnavailable,
    }
}

/// Describes an error of ureq in words a user acts on.
pub fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::TooManyRedirects => {
            format!("more than {MAX_REDIRECTS} redirects (a redirect loop?)")
        }
        ureq::Error::RequireHttpsOnly(why) => format!(
            "refused to leave https ({why}): plain http is only allowed for a source that starts on it"
        ),
        ureq::Error::Timeout(_) => "timed out".to_owned(),
        ureq::Error::Io(io) if io.to_string().contains(REFUSED) => io.to_string(),
        e => e.to_string(),
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

    /// An HTTP agent for downloads: the source policy on every connection (redirects and token
    /// services included), no proxy (the policy could not see where it connects), bounded
    /// redirects and headers, https kept once started on it.
    pub fn http_agent(&self, https_only: bool) -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(self.connect_timeout))
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .https_only(https_only)
            .proxy(None)
            .max_redirects(MAX_REDIRECTS)
            .max_response_header_size(MAX_HEADER_BYTES)
            .build();
        ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            PolicyResolver::new(self.policy.clone()),
        )
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
        let deadline = Deadline::start(self.deadline);
        let agent = self.http_agent(url.starts_with("https://"));
        let mut last = String::new();
        let mut tries = 0;
        for attempt in 0..self.attempts.max(1) {
            if attempt > 0 && !deadline.sleep(Duration::from_millis(200 << (attempt - 1))) {
                break;
            }
            let Some(left) = deadline.remaining() else {
                break;
            };
            tries += 1;
            match self.download(&agent, url, left) {
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
        if deadline.remaining().is_none() {
            return Err(ObjectError::new(
                Reason::BytecodeUnavailable,
                format!(
                    "downloading {url} timed out: no complete answer within {} (--fetch-timeout; attempts: {tries}; last error: {last})",
                    seconds(deadline.bound())
                ),
            ));
        }
        Err(ObjectError::new(
            Reason::BytecodeUnavailable,
            format!("downloading {url} failed {tries} times; last error: {last}"),
        ))
    }

    fn download(&self, agent: &ureq::Agent, url: &str, left: Duration) -> Result<Vec<u8>, Attempt> {
        let response = agent
            .get(url)
            .config()
            .timeout_global(Some(self.timeout.min(left)))
            .build()
            .call()
            .map_err(|e| {
                if is_final(&e) {
                    Attempt::Fatal(ObjectError::new(
                        final_reason(&e),
                        format!("downloading {url}: {}", describe(&e)),
                    ))
                } else {
                    Attempt::Retry(describe(&e))
                }
            })?;
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
        let too_big = || {
            Attempt::Fatal(ObjectError::new(
                Reason::BytecodeUnavailable,
                format!(
                    "{url} is larger than the {} MiB limit for bytecode",
                    self.max_bytes >> 20
                ),
            ))
        };
        // A declared length over the limit is refused before a byte of the body is read.
        let declared = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_bytes) {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(self.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Attempt::Retry(format!("reading the body: {e}")))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(too_big());
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_that_starts_on_https_never_goes_to_plain_http() {
        // The check ureq makes on every hop, redirects included, before any connection.
        let fetcher = Fetcher::default();
        let e = fetcher
            .http_agent(true)
            .get("http://127.0.0.1:1/x.o")
            .call()
            .expect_err("refused");
        assert!(matches!(e, ureq::Error::RequireHttpsOnly(_)), "{e}");
        assert!(is_final(&e));
        assert!(
            describe(&e).starts_with("refused to leave https"),
            "{}",
            describe(&e)
        );
    }

    #[test]
    fn a_fetch_stops_at_its_deadline() {
        let d = Deadline::start(Duration::from_millis(50));
        assert!(d.remaining().is_some());
        assert!(
            !d.sleep(Duration::from_secs(5)),
            "the sleep ends at the deadline"
        );
        assert_eq!(d.remaining(), None);
        assert_eq!(seconds(Duration::from_secs(60)), "60 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
