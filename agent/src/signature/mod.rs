//! Signature verification of `bytecode.image`: cosign signatures checked offline after the
//! image's manifest digest is known and before any of its bytecode is used.
//!
//! - [`Mode`]: `enforce` fails an object whose image is not signed by a configured key or an
//!   allowed certificate identity ([`crate::error::Reason::SignatureInvalid`]), `warn` logs and
//!   pins, `off` checks nothing.
//! - Keys: every PEM file of `--image-verification-keys` ([`keys`]). Keyless: certificates of a
//!   sigstore trusted root bound to identities ([`keyless`]).
//! - The format: [`cosign`]. Results are cached by digest ([`cache`]) and kept in memory for
//!   status reports ([`verified`]).
//! - An object opts out with `spec.bytecode.skipSignatureVerification` only when the node allows
//!   it (`--image-verification-allow-opt-out`).
//!
//! The policy is the process's ([`install`], from the agent's flags): every pull of the agent
//! checks with it.

pub mod cache;
pub mod cosign;
pub mod flags;
pub mod keyless;
pub mod keys;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

pub use cosign::{SignatureError, SignatureStore, Signer, Verified, Verifiers};

use crate::error::ObjectError;
use keyless::KeylessPolicy;
use keys::KeySet;

/// What the agent does with an image's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Only images signed by a configured key (or an allowed certificate identity) are pinned.
    Enforce,
    /// Images are verified; one that fails is pinned with a warning in the log.
    Warn,
    /// No signature is checked.
    #[default]
    Off,
}

/// The cluster-wide (node-wide) verification policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// What to do.
    pub mode: Mode,
    /// The folder of public keys.
    pub keys_dir: Option<PathBuf>,
    /// Keyless verification: the trusted root and the identities.
    pub keyless: Option<KeylessPolicy>,
    /// Whether an object may skip verification (`spec.bytecode.skipSignatureVerification`).
    pub allow_opt_out: bool,
}

static POLICY: OnceLock<Policy> = OnceLock::new();

/// Makes `policy` the one every pull of this process checks with (once; later calls are
/// refused and return it).
pub fn install(policy: Policy) -> Result<(), Policy> {
    POLICY.set(policy)
}

/// The installed policy (`off` when none was).
pub fn installed() -> &'static Policy {
    static OFF: Policy = Policy {
        mode: Mode::Off,
        keys_dir: None,
        keyless: None,
        allow_opt_out: false,
    };
    POLICY.get().unwrap_or(&OFF)
}

/// The most results [`verified`] keeps (one per image digest the node pulled).
const MAX_REMEMBERED: usize = 4096;

fn remembered() -> &'static Mutex<BTreeMap<String, Verified>> {
    static VERIFIED: OnceLock<Mutex<BTreeMap<String, Verified>>> = OnceLock::new();
    VERIFIED.get_or_init(Default::default)
}

/// Who signed the image with manifest digest `digest`, as this process last verified it (by a
/// signature fetched or a result cached on the node): the key's name and fingerprint, or the
/// certificate's issuer and subject. `None` when it was not verified (policy `off`, an object
/// that opted out, a failure pinned in `warn` mode). For the status's provenance.
pub fn verified(digest: &str) -> Option<Verified> {
    remembered()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(digest)
        .cloned()
}

fn remember(verified: &Verified) {
    let mut map = remembered().lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= MAX_REMEMBERED && !map.contains_key(&verified.digest) {
        map.pop_first();
    }
    map.insert(verified.digest.clone(), verified.clone());
}

impl Policy {
    /// What signatures are verified with, read now (a rotated Secret or ConfigMap counts).
    pub fn verifiers(&self) -> Verifiers {
        let keys = match &self.keys_dir {
            Some(dir) => KeySet::load(dir),
            None => KeySet::default(),
        };
        let (keyless, keyless_broken) = match self.keyless.as_ref().map(KeylessPolicy::load) {
            Some(Ok(keyless)) => (Some(keyless), None),
            Some(Err(why)) => (None, Some(why)),
            None => (None, None),
        };
        Verifiers {
            keys,
            keyless,
            keyless_broken,
        }
    }

    /// Checks one image's signature: `Ok` when verified (or the mode lets it pass). The image
    /// pull's hook, with the [`installed`] policy: `image` is the reference as written, `digest`
    /// its manifest digest, `cache_dir` keeps results, and `opt_out` is the object's
    /// `spec.bytecode.skipSignatureVerification`.
    pub fn check(
        &self,
        cache_dir: Option<&Path>,
        image: &str,
        digest: &str,
        opt_out: bool,
        store: &mut dyn SignatureStore,
    ) -> Result<(), ObjectError> {
        if self.mode == Mode::Off {
            return Ok(());
        }
        if opt_out {
            if !self.allow_opt_out {
                return Err(SignatureError::OptOutRefused {
                    image: image.to_owned(),
                    mode: flags::mode_name(self.mode),
                }
                .into());
            }
            tracing::info!(
                image,
                digest,
                "signature not verified: the object opts out (spec.bytecode.skipSignatureVerification, --image-verification-allow-opt-out)"
            );
            return Ok(());
        }
        let verifiers = self.verifiers();
        let cache = cache_dir.map(cache::VerifiedCache);
        if let Some(verified) = cache.and_then(|c| c.get(digest, |s| verifiers.still_trusts(s))) {
            tracing::debug!(image, digest, signer = %verified.signer.describe(), "signature verified before");
            remember(&verified);
            return Ok(());
        }
        match cosign::verify(image, digest, &verifiers, store) {
            Ok(verified) => {
                tracing::info!(image, digest, signer = %verified.signer.describe(), "signature verified");
                if let Some(cache) = cache {
                    cache.put(&verified);
                }
                remember(&verified);
                Ok(())
            }
            Err(e) if self.mode == Mode::Warn => {
                tracing::warn!(image, digest, error = %e, "signature not verified; pinned anyway (--image-verification-policy warn)");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
