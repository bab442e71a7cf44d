//! The flags of both modes that set the verification policy: `--image-verification-policy`,
//! `--image-verification-keys`, the keyless ones (`--image-verification-trusted-root`,
//! `--image-verification-identities`, `--image-verification-transparency-log`) and
//! `--image-verification-allow-opt-out`.

use std::path::PathBuf;

use super::keyless::{KeylessPolicy, Transparency};
use super::keys::KeySet;
use super::{Mode, Policy};

/// Flags of image signature verification.
#[derive(Debug, Clone, clap::Args)]
pub struct VerificationFlags {
    /// Signature verification of bytecode.image: `enforce` pins only images with a cosign
    /// signature by one of --image-verification-keys or by a certificate of
    /// --image-verification-trusted-root with an allowed identity (others fail with
    /// SignatureInvalid), `warn` verifies and pins anyway with a warning, `off` verifies nothing.
    #[arg(long, value_enum, default_value = "off")]
    pub image_verification_policy: Mode,
    /// A folder of cosign public keys (PEM, ECDSA P-256; one per file, as a mounted Secret or
    /// ConfigMap holds them), read again at every verification.
    #[arg(long, value_name = "DIR")]
    pub image_verification_keys: Option<PathBuf>,
    /// Keyless signatures: sigstore's trusted_root.json (Fulcio CA chains, Rekor keys), read
    /// again at every verification. Needs --image-verification-identities.
    #[arg(long, value_name = "FILE", requires = "image_verification_identities")]
    pub image_verification_trusted_root: Option<PathBuf>,
    /// Keyless signatures: a YAML list of the identities allowed to sign, each
    /// `{issuer | issuerRegExp, subject | subjectRegExp}` (the certificate's OIDC issuer and its
    /// email or URI SAN; a RegExp matches the whole value).
    #[arg(
        long,
        value_name = "FILE",
        requires = "image_verification_trusted_root"
    )]
    pub image_verification_identities: Option<PathBuf>,
    /// Keyless signatures: `require` a Rekor bundle (its signed time is when the certificate must
    /// have been valid), or accept signatures without one (`optional`) when the certificate is
    /// valid now.
    #[arg(long, value_enum, default_value = "require")]
    pub image_verification_transparency_log: Transparency,
    /// Let an object skip verification with spec.bytecode.skipSignatureVerification; without
    /// this flag such an object fails with SignatureInvalid.
    #[arg(long)]
    pub image_verification_allow_opt_out: bool,
}

impl VerificationFlags {
    /// The policy these flags describe; the error names the flag. A folder with no usable key,
    /// or a trusted root or identities file that does not load, is refused at start, so a typo
    /// does not fail every image later.
    pub fn policy(&self) -> Result<Policy, String> {
        let mode = self.image_verification_policy;
        if mode == Mode::Off {
            return Ok(Policy::default());
        }
        let keyless = match (
            &self.image_verification_trusted_root,
            &self.image_verification_identities,
        ) {
            (Some(trusted_root), Some(identities)) => Some(KeylessPolicy {
                trusted_root: trusted_root.clone(),
                identities: identities.clone(),
                transparency: self.image_verification_transparency_log,
            }),
            _ => None,
        };
        if let Some(keyless) = &keyless {
            let loaded = keyless
                .load()
                .map_err(|why| format!("--image-verification-trusted-root/identities: {why}"))?;
            tracing::info!(
                trusted_root = %keyless.trusted_root.display(),
                authorities = loaded.root.authorities.len(),
                tlogs = loaded.root.tlogs.len(),
                identities = loaded.identities.len(),
                transparency_log = ?keyless.transparency,
                "keyless image signature verification"
            );
        }
        let keys_dir = match &self.image_verification_keys {
            Some(dir) => {
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
                Some(dir.clone())
            }
            None if keyless.is_some() => None,
            None => {
                return Err(format!(
                    "--image-verification-policy {} needs --image-verification-keys DIR (or --image-verification-trusted-root FILE with --image-verification-identities FILE)",
                    mode_name(mode)
                ));
            }
        };
        Ok(Policy {
            mode,
            keys_dir,
            keyless,
            allow_opt_out: self.image_verification_allow_opt_out,
        })
    }

    /// Installs the policy of these flags for the process.
    pub fn install(&self) -> Result<(), String> {
        let policy = self.policy()?;
        super::install(policy).map_err(|_| "the image verification policy is already set".into())
    }
}

/// The flag value of `mode`.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Warn => "warn",
        Mode::Off => "off",
    }
}
