//! The node's one bytecode cache, shared by url downloads and image pulls: `<dir>/<sha256>.bpf.o`
//! for every object; for images also `<dir>/<manifest sha256>.image`, holding the `.o`'s sha256,
//! and `<dir>/<sha256 of the reference>.tag`, holding the manifest digest a tag had at its last
//! pull. Every file is written whole or not at all, and an object is served only when its bytes
//! still have its digest.

use std::path::{Path, PathBuf};

use super::digest;
use crate::pin::desired::sha256_hex;

/// The cache in a folder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cache<'a>(pub(crate) &'a Path);

impl Cache<'_> {
    /// The object with digest `hex`, unless it is missing or corrupt (then it is removed).
    pub(crate) fn object(&self, hex: &str) -> Option<Vec<u8>> {
        let path = self.0.join(format!("{hex}.bpf.o"));
        let bytes = std::fs::read(&path).ok()?;
        if digest::check(&bytes, hex).is_ok() {
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(&path); // corrupt: fetch again
            None
        }
    }

    /// Keeps `bytes` under their digest, which is returned.
    pub(crate) fn store_object(&self, bytes: &[u8]) -> std::io::Result<String> {
        let hex = sha256_hex(bytes);
        write_atomically(&self.0.join(format!("{hex}.bpf.o")), bytes)?;
        Ok(hex)
    }

    fn index(&self, manifest_digest: &str) -> PathBuf {
        let hex = manifest_digest
            .strip_prefix("sha256:")
            .unwrap_or(manifest_digest);
        self.0.join(format!("{hex}.image"))
    }

    /// The object of the image whose manifest has `manifest_digest`, if it was pulled before.
    pub(crate) fn object_of_image(&self, manifest_digest: &str) -> Option<Vec<u8>> {
        let index = self.index(manifest_digest);
        let hex = std::fs::read_to_string(&index).ok()?;
        let hex = hex.trim();
        if !digest::is_sha256_hex(hex) {
            let _ = std::fs::remove_file(&index);
            return None;
        }
        self.object(hex)
    }

    /// Keeps the object of the image whose manifest has `manifest_digest`.
    pub(crate) fn store_image(&self, manifest_digest: &str, bytes: &[u8]) {
        let written = self
            .store_object(bytes)
            .and_then(|hex| write_atomically(&self.index(manifest_digest), hex.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot cache bytecode");
        }
    }

    fn tag_file(&self, tag: &str) -> PathBuf {
        self.0.join(format!("{}.tag", sha256_hex(tag.as_bytes())))
    }

    /// What the tag `registry/repository:tag` pointed to at its last pull, as written.
    pub(crate) fn digest_of_tag(&self, tag: &str) -> Option<String> {
        let digest = std::fs::read_to_string(self.tag_file(tag)).ok()?;
        Some(digest.trim().to_owned())
    }

    /// Remembers that `tag` pointed to `digest`.
    pub(crate) fn store_tag(&self, tag: &str, digest: &str) {
        if self.digest_of_tag(tag).as_deref() != Some(digest)
            && let Err(e) = write_atomically(&self.tag_file(tag), digest.as_bytes())
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot cache a tag's digest");
        }
    }
}

/// Writes `path` whole or not at all: a `.partial` file renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_cache_maps_manifest_digests_to_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache(dir.path());
        assert_eq!(cache.object_of_image(D), None);
        cache.store_image(D, b"elf");
        assert_eq!(cache.object_of_image(D), Some(b"elf".to_vec()));
        let object = dir.path().join(format!("{}.bpf.o", sha256_hex(b"elf")));
        assert!(object.exists(), "shared with url downloads: <sha256>.bpf.o");
        std::fs::write(&object, b"corrupt").expect("write");
        assert_eq!(
            cache.object_of_image(D),
            None,
            "a corrupt object is not served"
        );
        assert!(!object.exists());
    }
}
