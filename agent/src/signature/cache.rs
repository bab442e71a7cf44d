//! Verified results on the node, by manifest digest: `<cache>/<hex>.verified` holds the digest
//! and its signer (the fingerprint of the key that verified it, or the certificate identity and
//! the trusted root's fingerprint). A result counts while that signer is still trusted, so a
//! restart, or another object with the same image, needs no signature fetch, and a registry
//! outage cannot stop an image verified before from loading.

use std::path::{Path, PathBuf};

use super::cosign::{Signer, Verified};

/// The results kept in a cache folder (the fetch cache, beside the bytecode it verifies).
#[derive(Debug, Clone, Copy)]
pub struct VerifiedCache<'a>(pub &'a Path);

impl VerifiedCache<'_> {
    fn file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.0.join(format!("{hex}.verified"))
    }

    /// The result for `digest`, if its signer is one `trusted` accepts. (A record of an older
    /// form does not parse: the image's signature is fetched again.)
    pub fn get(&self, digest: &str, trusted: impl Fn(&Signer) -> bool) -> Option<Verified> {
        let text = std::fs::read(self.file(digest)).ok()?;
        let record: Verified = serde_json::from_slice(&text).ok()?;
        (record.digest == digest && trusted(&record.signer)).then_some(record)
    }

    /// Keeps `verified`; a failure to write only costs a fetch next time.
    pub fn put(&self, verified: &Verified) {
        let file = self.file(&verified.digest);
        let tmp = file.with_extension("verified.partial");
        // Written whole, then renamed: a crash never leaves half a record.
        let written = serde_json::to_vec(verified)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot cache a verified signature");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_counts_only_for_its_digest_and_a_trusted_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = VerifiedCache(dir.path());
        let digest = format!("sha256:{}", "a".repeat(64));
        let verified = Verified {
            digest: digest.clone(),
            signer: Signer::Key {
                name: "k.pub".into(),
                fingerprint: "sha256:f".into(),
            },
        };
        assert_eq!(cache.get(&digest, |_| true), None);
        cache.put(&verified);
        let trusted =
            |s: &Signer| matches!(s, Signer::Key { fingerprint, .. } if fingerprint == "sha256:f");
        assert_eq!(cache.get(&digest, trusted), Some(verified));
        assert_eq!(cache.get(&digest, |_| false), None, "the key was removed");
        let other = format!("sha256:{}", "b".repeat(64));
        std::fs::copy(cache.file(&digest), cache.file(&other)).expect("copy");
        assert_eq!(
            cache.get(&other, |_| true),
            None,
            "a record names its digest"
        );
    }
}
