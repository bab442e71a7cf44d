//! `bytecode.url`: HTTP(S) download with a mandatory SHA-256, a size limit, timeouts and retries,
//! cached on the node by digest so restarts and objects sharing a URL download it once. Every
//! object's fetch (url or image) has one time bound across its requests and retries
//! ([`Fetcher::deadline`]), connects only where `--source-allow` allows, and runs beside the
//! others ([`super::downloads`]), so one slow server delays nobody else.

use std::io::Read;
use std::time::Duration;

use super::cache::Cache;
use super::digest;
use super::fetcher::Fetcher;
use super::http::{self, Attempt, Deadline, describe, final_reason, is_final, seconds};
use crate::error::{Reason, StatusError};

/// Why a `bytecode.url` gave no bytecode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    /// The object names no `spec.sha256`.
    #[error("spec.sha256 is required when the bytecode comes from a url")]
    NoDigest,
    /// The download's SHA-256 is not `spec.sha256`.
    #[error("{url} has sha256 {got}, spec.sha256 says {want}")]
    DigestMismatch {
        url: String,
        got: String,
        want: String,
    },
    /// `--fetch-timeout` ran out before a complete answer.
    #[error(
        "downloading {url} timed out: no complete answer within {} (--fetch-timeout; attempts: {tries}; last error: {last})",
        seconds(*bound)
    )]
    TimedOut {
        url: String,
        bound: Duration,
        tries: u32,
        last: String,
    },
    /// Every attempt failed retryably.
    #[error("downloading {url} failed {tries} times; last error: {last}")]
    Failed {
        url: String,
        tries: u32,
        last: String,
    },
    /// A failure that trying again would not mend: a refused address, a redirect loop, a
    /// redirect off https.
    #[error("downloading {url}: {}", describe(source))]
    Refused { url: String, source: ureq::Error },
    /// The server answered a redirect it was not allowed to follow or a client error.
    #[error("downloading {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    /// The body is over the size limit.
    #[error("{url} is larger than the {} MiB limit for bytecode", limit >> 20)]
    TooLarge { url: String, limit: u64 },
}

impl StatusError for UrlError {
    fn reason(&self) -> Reason {
        match self {
            UrlError::NoDigest => Reason::InvalidSpec,
            UrlError::DigestMismatch { .. } => Reason::DigestMismatch,
            UrlError::Refused { source, .. } => final_reason(source),
            _ => Reason::BytecodeUnavailable,
        }
    }
}

impl Fetcher {
    /// The bytes at `url`, which must have digest `sha256`.
    pub(crate) fn fetch(&self, url: &str, sha256: Option<&str>) -> Result<Vec<u8>, UrlError> {
        let Some(want) = sha256 else {
            return Err(UrlError::NoDigest);
        };
        let cache = self.cache_dir.as_deref().map(Cache);
        if let Some(bytes) = cache.and_then(|c| c.object(want)) {
            tracing::debug!(url, "bytecode from the cache");
            return Ok(bytes);
        }
        let deadline = Deadline::start(self.deadline);
        let agent = http::agent(self, url.starts_with("https://"));
        let bytes = http::retry(self.attempts, &deadline, |left, attempt| {
            self.download(&agent, url, left).inspect_err(|e| {
                if let Attempt::Retry { why, .. } = e {
                    tracing::warn!(url, attempt, error = %why, "download failed");
                }
            })
        })
        .map_err(|e| match e {
            Ok(fatal) => fatal,
            Err(gave_up) if gave_up.timed_out => UrlError::TimedOut {
                url: url.into(),
                bound: deadline.bound(),
                tries: gave_up.tries,
                last: gave_up.last,
            },
            Err(gave_up) => UrlError::Failed {
                url: url.into(),
                tries: gave_up.tries,
                last: gave_up.last,
            },
        })?;
        digest::check(&bytes, want).map_err(|got| UrlError::DigestMismatch {
            url: url.into(),
            got,
            want: want.into(),
        })?;
        if let Some(cache) = cache {
            let _ = cache.store_object(&bytes);
        }
        tracing::info!(url, bytes = bytes.len(), "downloaded bytecode");
        Ok(bytes)
    }

    fn download(
        &self,
        agent: &ureq::Agent,
        url: &str,
        left: Duration,
    ) -> Result<Vec<u8>, Attempt<UrlError>> {
        let retry = |why: String| Attempt::Retry {
            why,
            transport: true,
        };
        let response = agent
            .get(url)
            .config()
            .timeout_global(Some(self.timeout.min(left)))
            .build()
            .call()
            .map_err(|e| {
                if is_final(&e) {
                    Attempt::Fatal(UrlError::Refused {
                        url: url.into(),
                        source: e,
                    })
                } else {
                    retry(describe(&e))
                }
            })?;
        let status = response.status().as_u16();
        if status >= 500 {
            return Err(retry(format!("HTTP {status}")));
        }
        if status >= 300 {
            return Err(Attempt::Fatal(UrlError::Status {
                url: url.into(),
                status,
            }));
        }
        let too_big = || {
            Attempt::Fatal(UrlError::TooLarge {
                url: url.into(),
                limit: self.max_bytes,
            })
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
            .map_err(|e| retry(format!("reading the body: {e}")))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(too_big());
        }
        Ok(bytes)
    }
}
