//! Verified results on the node, by manifest digest: `<cache>/<hex>.verified` holds the digest
//! and the fingerprint of the key that verified it. A result counts while that key is still
//! configured, so a restart, or another object with the same image, needs no signature fetch,
//! and a registry outage cannot stop an image verified before from loading.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cosign::Verified;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    digest: String,
    key_name: String,
    key_fingerprint: String,
}

/// The results kept in a cache folder (the fetch cache, beside the bytecode it verifies).
#[derive(Debug, Clone, Copy)]
pub struct VerifiedCache<'a>(pub &'a Path);

impl VerifiedCache<'_> {
    fn file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.0.join(format!("{hex}.verified"))
    }

    /// The result for `digest`, if it was verified with a key whose fingerprint `trusted` accepts.
    pub fn get(&self, digest: &str, trusted: impl Fn(&str) -> bool) -> Option<Verified> {
        let text = std::fs::read(self.file(digest)).ok()?;
        let record: Record = serde_json::from_slice(&text).ok()?;
        (record.digest == digest && trusted(&record.key_fingerprint)).then_some(Verified {
            digest: record.digest,
            key_name: record.key_name,
            key_fingerprint: record.key_fingerprint,
        })
    }

    /// Keeps `verified`; a failure to write only costs a fetch next time.
    pub fn put(&self, verified: &Verified) {
        let record = Record {
            digest: verified.digest.clone(),
            key_name: verified.key_name.clone(),
            key_fingerprint: verified.key_fingerprint.clone(),
        };
        let file = self.file(&verified.digest);
        let tmp = file.with_extension("verified.partial");
        // Written whole, then renamed: a crash never leaves half a record.
        let written = serde_json::to_vec(&record)
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
            key_name: "k.pub".into(),
            key_fingerprint: "sha256:f".into(),
        };
        assert_eq!(cache.get(&digest, |_| true), None);
        cache.put(&verified);
        assert_eq!(cache.get(&digest, |f| f == "sha256:f"), Some(verified));
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
