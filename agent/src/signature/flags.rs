//! The flags of both modes that set the verification policy: `--image-verification-policy`,
//! `--image-verification-keys`.

use std::path::PathBuf;

use super::keys::KeySet;
use super::{Mode, Policy};

/// Flags of image signature verification.
#[derive(Debug, Clone, clap::Args)]
pub struct VerificationFlags {
    /// Signature verification of bytecode.image: `enforce` pins only images with a cosign
    /// signature by one of --image-verification-keys (others fail with SignatureInvalid),
    /// `warn` verifies and pins anyway with a warning, `off` verifies nothing.
    #[arg(long, value_enum, default_value = "off")]
    pub image_verification_policy: Mode,
    /// A folder of cosign public keys (PEM, ECDSA P-256; one per file, as a mounted Secret or
    /// ConfigMap holds them), read again at every verification.
    #[arg(long, value_name = "DIR")]
    pub image_verification_keys: Option<PathBuf>,
}

impl VerificationFlags {
    /// The policy these flags describe; the error names the flag. A folder with no usable key
    /// is refused at start, so a typo does not fail every image later.
    pub fn policy(&self) -> Result<Policy, String> {
        let mode = self.image_verification_policy;
        if mode == Mode::Off {
            return Ok(Policy::default());
        }
        let Some(dir) = &self.image_verification_keys else {
            return Err(format!(
                "--image-verification-policy {} needs --image-verification-keys DIR",
                mode_name(mode)
            ));
        };
        let keys = KeySet::load(dir);
        for broken in &keys.broken {
            tracing::error!(error = %broken, "unusable image verification key");
        }
        if keys.usable.is_empty() {
            let why: Vec<String> = keys.broken.iter().map(ToString::to_string).collect();
            return Err(format!(
                "--image-verification-keys {}: no usable public key ({})",
                dir.display(),
                if why.is_empty() {
                    "the folder is empty".to_owned()
                } else {
                    why.join("; ")
                }
            ));
        }
        tracing::info!(policy = mode_name(mode), keys = %keys.names(), "image signature verification");
        Ok(Policy {
            mode,
            keys_dir: Some(dir.clone()),
        })
    }

    /// Installs the policy of these flags for the process.
    pub fn install(&self) -> Result<(), String> {
        let policy = self.policy()?;
        super::install(policy).map_err(|_| "the image verification policy is already set".into())
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Warn => "warn",
        Mode::Off => "off",
    }
}
