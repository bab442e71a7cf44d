//! The pull of one `bytecode.image`: the node's cache first (a pinned digest pulled before needs
//! no network, and an unreachable registry leaves a tag at the digest of its last pull), then the
//! manifest, the config's labels and the one layer's `.o`, each checked against its digest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use super::credentials::RegistryAuth;
use super::error::ImageError;
use super::layer::extract_object;
use super::manifest::{MAPS_LABEL, MAX_JSON, PROGRAMS_LABEL, check_labels};
use super::reference::{ImageRef, parse_digest};
use super::session::Session;
use crate::bytecode::cache::Cache;
use crate::bytecode::digest;
use crate::bytecode::fetcher::Fetcher;
use crate::error::{ObjectError, Reason};

/// The `.o` of `reference`, which must have digest `sha256` when set. Digest-pinned references
/// pulled before are served from the cache without the network. `skip_signature` is the
/// object's `spec.bytecode.skipSignatureVerification` (honoured only when the node allows it).
pub fn pull(
    fetcher: &Fetcher,
    auth: &RegistryAuth,
    reference: &str,
    sha256: Option<&str>,
    skip_signature: bool,
) -> Result<Vec<u8>, ObjectError> {
    Ok(pull_image(
        fetcher,
        auth,
        reference,
        sha256,
        skip_signature,
    )?)
}

fn pull_image(
    fetcher: &Fetcher,
    auth: &RegistryAuth,
    reference: &str,
    sha256: Option<&str>,
    skip_signature: bool,
) -> Result<Vec<u8>, ImageError> {
    let image = ImageRef::parse(reference).map_err(|why| ImageError::InvalidReference {
        reference: reference.to_owned(),
        why,
    })?;
    let cache = fetcher.cache_dir.as_deref().map(Cache);
    let tag = tag_key(&image);
    let verify = |session: &mut Session, digest: &str| {
        crate::signature::installed()
            .check(
                fetcher.cache_dir.as_deref(),
                reference,
                digest,
                skip_signature,
                session,
            )
            .map_err(ImageError::Signature)
    };
    if let (Some(cache), Some(digest)) = (&cache, &image.digest)
        && let Some(bytes) = cache.object_of_image(digest)
    {
        tracing::debug!(image = %image, "bytecode from the cache");
        verify(&mut Session::new(fetcher, auth, &image), digest)?;
        return check_object(&image, bytes, sha256);
    }
    let mut session = Session::new(fetcher, auth, &image);
    let (digest, manifest) = match session
        .manifest(image.manifest_reference(), image.digest.as_deref())
    {
        Ok(found) => found,
        Err(e) => {
            // A registry outage does not take a tag away: its digest at the last pull stands.
            if session.unreachable
                && let Some(cache) = &cache
                && let Some(tag) = &tag
                && let Some(digest) = cache.digest_of_tag(tag).and_then(|d| parse_digest(&d).ok())
                && let Some(bytes) = cache.object_of_image(&digest)
            {
                tracing::warn!(image = %image, %digest, error = %e, "registry unreachable: using the digest of the tag's last pull");
                verify(&mut session, &digest)?;
                return check_object(&image, bytes, sha256);
            }
            return Err(e);
        }
    };
    // Before any blob: a refused image downloads nothing more.
    verify(&mut session, &digest)?;
    let known = |cache: &Cache| {
        let bytes = cache.object_of_image(&digest)?;
        if let Some(tag) = &tag {
            cache.store_tag(tag, &digest);
        }
        Some(bytes)
    };
    if let Some(bytes) = cache.as_ref().and_then(known) {
        tracing::debug!(image = %image, %digest, "the manifest is known: bytecode from the cache");
        return check_object(&image, bytes, sha256);
    }
    // Two objects pulling one image at once (a tag and its digest) download its blobs once: the
    // second waits for the first, then finds the .o in the cache.
    let lock = digest_lock(&digest);
    let _pulling = lock.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(bytes) = cache.as_ref().and_then(known) {
        return check_object(&image, bytes, sha256);
    }
    let manifest = session.follow_index(manifest, 0)?;
    let invalid = |why: String| ImageError::Pull {
        image: image.to_string(),
        reason: Reason::BytecodeUnavailable,
        message: why,
    };
    let Some(config) = &manifest.config else {
        return Err(invalid("its manifest has no config".into()));
    };
    let layers = manifest.layers.as_deref().unwrap_or_default();
    let [layer] = layers else {
        return Err(invalid(format!(
            "it has {} layers; a bytecode image has one, holding the .o",
            layers.len()
        )));
    };
    let config = session.blob(config, MAX_JSON, "config")?;
    let labels = check_labels(&config).map_err(invalid)?;
    tracing::debug!(
        image = %image,
        programs = labels.get(PROGRAMS_LABEL).map(String::as_str).unwrap_or(""),
        maps = labels.get(MAPS_LABEL).map(String::as_str).unwrap_or(""),
        "bytecode image config"
    );
    let layer = session.blob(layer, fetcher.max_bytes.saturating_add(1 << 20), "layer")?;
    let (path, bytes) = extract_object(&layer, fetcher.max_bytes).map_err(invalid)?;
    let bytes = check_object(&image, bytes, sha256)?;
    if let Some(cache) = &cache {
        cache.store_image(&digest, &bytes);
        if let Some(tag) = &tag {
            cache.store_tag(tag, &digest);
        }
    }
    tracing::info!(image = %image, %digest, file = %path, bytes = bytes.len(), "pulled bytecode image");
    Ok(bytes)
}

/// What the cache knows a tag by, `registry/repository:tag`; `None` for a digest-pinned reference.
fn tag_key(image: &ImageRef) -> Option<String> {
    let tag = image.tag.as_deref().filter(|_| image.digest.is_none())?;
    Some(format!("{}/{}:{tag}", image.registry, image.repository))
}

/// One lock per manifest digest being pulled (dropped with its last user).
fn digest_lock(digest: &str) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<BTreeMap<String, Weak<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    locks.retain(|_, w| w.strong_count() > 0);
    if let Some(lock) = locks.get(digest).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(Mutex::new(()));
    locks.insert(digest.to_owned(), Arc::downgrade(&lock));
    lock
}

fn check_object(
    image: &ImageRef,
    bytes: Vec<u8>,
    sha256: Option<&str>,
) -> Result<Vec<u8>, ImageError> {
    if let Some(want) = sha256 {
        digest::check(&bytes, want).map_err(|got| ImageError::ObjectDigest {
            image: image.to_string(),
            got,
            want: want.to_owned(),
        })?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin::desired::sha256_hex;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_pinned_reference_in_the_cache_needs_no_network() {
        let dir = tempfile::tempdir().expect("tempdir");
        Cache(dir.path()).store_image(D, b"elf");
        let fetcher = Fetcher::with_cache(Some(dir.path().into()));
        // Nothing listens on port 1: only the cache can answer.
        let reference = format!("127.0.0.1:1/x@{D}");
        let auth = RegistryAuth::anonymous();
        assert_eq!(
            pull(&fetcher, &auth, &reference, None, false),
            Ok(b"elf".to_vec())
        );
        assert_eq!(
            pull(
                &fetcher,
                &auth,
                &reference,
                Some(&sha256_hex(b"elf")),
                false
            ),
            Ok(b"elf".to_vec())
        );
        let err =
            pull(&fetcher, &auth, &reference, Some(&"0".repeat(64)), false).expect_err("mismatch");
        assert_eq!(err.reason, Reason::DigestMismatch);
        let err = pull(&fetcher, &auth, "NOT A REF", None, false).expect_err("invalid");
        assert_eq!(err.reason, Reason::InvalidSpec);
    }
}
