//! The flags of both modes that bound and restrict url and image sources: `--fetch-timeout`,
//! `--source-allow`, `--require-digest`.

use std::time::Duration;

use super::fetcher::Fetcher;
use super::policy::SourcePolicy;

/// Flags of the url and image sources.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchFlags {
    /// The time bound of one object's url download or image pull, every request and retry
    /// included (500ms, 30s, 2m). Other objects never wait for it.
    #[arg(long, default_value = "60s", value_parser = bpfpin_runtime::duration::parse_positive)]
    pub fetch_timeout: Duration,
    /// Where url and image sources may connect, checked on the address of every connection
    /// (after DNS; redirects and token services included): a CIDR (10.0.0.0/8), an IP or a host
    /// name; repeatable. Default: every address except link-local ones (169.254.0.0/16,
    /// fe80::/10, where cloud metadata services answer).
    #[arg(long = "source-allow", value_name = "CIDR|IP|HOST")]
    pub source_allow: Vec<String>,
    /// Refuse every object whose source pins no digest: spec.sha256 for path, url and
    /// configMap, a reference with @sha256: for an image (reason DigestRequired).
    #[arg(long)]
    pub require_digest: bool,
}

impl FetchFlags {
    /// Sets these flags on `fetcher`; the error names the flag.
    pub fn apply(&self, fetcher: &mut Fetcher) -> Result<(), String> {
        fetcher.deadline = self.fetch_timeout;
        fetcher.timeout = fetcher.timeout.min(self.fetch_timeout);
        fetcher.policy = SourcePolicy::parse(&self.source_allow)
            .map_err(|e| format!("--source-allow {e}"))?
            .into();
        fetcher.require_digest = self.require_digest;
        Ok(())
    }
}
