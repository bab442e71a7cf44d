//! Signature verification of `bytecode.image`: cosign signatures (key-based, offline) checked
//! after the image's manifest digest is known and before any of its bytecode is used.
//!
//! - [`Mode`]: `enforce` fails an object whose image is not signed by a configured key
//!   ([`crate::error::Reason::SignatureInvalid`]), `warn` logs and pins, `off` checks nothing.
//! - Keys: every PEM file of `--image-verification-keys` ([`keys`]).
//! - The format: [`cosign`]. Results are cached by digest ([`cache`]).
//!
//! The policy is the process's ([`install`], from the agent's flags): every pull of the agent
//! checks with it.

pub mod cache;
pub mod cosign;
pub mod flags;
pub mod keys;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use cosign::{SignatureError, SignatureStore, Verified};

use crate::error::ObjectError;
use keys::KeySet;

/// What the agent does with an image's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Only images signed by a configured key are pinned.
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
    };
    POLICY.get().unwrap_or(&OFF)
}

/// The hook of the image pull: checks the signature of `image` (the reference as written),
/// whose manifest digest is `digest`, with the installed policy; `cache_dir` keeps results.
pub fn check(
    cache_dir: Option<&Path>,
    image: &str,
    digest: &str,
    store: &mut dyn SignatureStore,
) -> Result<(), ObjectError> {
    installed().check(cache_dir, image, digest, store)
}

impl Policy {
    /// Checks one image's signature: `Ok` when verified (or the mode lets it pass).
    pub fn check(
        &self,
        cache_dir: Option<&Path>,
        image: &str,
        digest: &str,
        store: &mut dyn SignatureStore,
    ) -> Result<(), ObjectError> {
        if self.mode == Mode::Off {
            return Ok(());
        }
        let keys = match &self.keys_dir {
            Some(dir) => KeySet::load(dir),
            None => KeySet::default(),
        };
        let cache = cache_dir.map(cache::VerifiedCache);
        let trusted = |fingerprint: &str| keys.usable.iter().any(|k| k.fingerprint == fingerprint);
        if let Some(verified) = cache.and_then(|c| c.get(digest, trusted)) {
            tracing::debug!(image, digest, key = %verified.key_name, "signature verified before");
            return Ok(());
        }
        match cosign::verify(image, digest, &keys, store) {
            Ok(verified) => {
                tracing::info!(image, digest, key = %verified.key_name, "signature verified");
                if let Some(cache) = cache {
                    cache.put(&verified);
                }
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
