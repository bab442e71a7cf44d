//! Keyless cosign signatures, verified offline: the signature layer carries a certificate
//! (`dev.sigstore.cosign/certificate`, and its chain in `dev.sigstore.cosign/chain`) instead of
//! being made with a configured key. It verifies when:
//!
//! 1. the payload's signature verifies with the certificate's key;
//! 2. the time is known: the Rekor bundle's integrated time when the layer carries a bundle
//!    whose signed entry timestamp verifies with the trusted root's log key ([`rekor`]);
//!    without a bundle, only when the policy does not require the transparency log
//!    ([`Transparency::Optional`]), and then the time is now;
//! 3. the certificate chains to a certificate authority of the trusted root at that time
//!    ([`certificate`]);
//! 4. its OIDC issuer and subject match one of the configured identities ([`identity`]).
//!
//! The caller then checks the payload names the image's digest, as for key-based signatures.

pub mod certificate;
pub mod identity;
pub mod rekor;
pub mod trusted_root;

use std::collections::BTreeMap;
use std::path::PathBuf;

use identity::{CertificateIdentity, Identity};
use trusted_root::TrustedRoot;

/// The annotation holding the signing certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// The annotation holding the certificate's chain (PEM, intermediates first).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";

/// Whether a keyless signature needs a transparency log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Transparency {
    /// A Rekor bundle is required: its integrated time is when the certificate must have been
    /// valid (Fulcio's certificates live 10 minutes).
    #[default]
    Require,
    /// A bundle is verified when present; without one, the certificate must be valid now.
    Optional,
}

/// The keyless part of the policy: where the trusted root and the identities are.
#[derive(Debug, Clone)]
pub struct KeylessPolicy {
    /// sigstore's `trusted_root.json`.
    pub trusted_root: PathBuf,
    /// The identities file.
    pub identities: PathBuf,
    /// Whether a Rekor bundle is needed.
    pub transparency: Transparency,
}

/// What a verified certificate said about its signer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSigner {
    /// The OIDC issuer.
    pub issuer: String,
    /// The subject (email or URI).
    pub subject: String,
    /// `sha256:<hex>` of the trusted root file it chained to.
    pub trusted_root: String,
    /// The Rekor integrated time, when a bundle was verified.
    #[serde(default)]
    pub integrated_time: Option<i64>,
}

/// The loaded trusted root and identities (read again at each verification, like the keys: a
/// rotated ConfigMap takes effect without a restart).
#[derive(Debug)]
pub struct Keyless {
    /// The trusted root.
    pub root: TrustedRoot,
    /// The identities allowed.
    pub identities: Vec<Identity>,
    /// Whether a Rekor bundle is needed.
    pub transparency: Transparency,
}

impl KeylessPolicy {
    /// Reads the files; the error says which and why.
    pub fn load(&self) -> Result<Keyless, String> {
        let root = TrustedRoot::load(&self.trusted_root).map_err(|e| e.to_string())?;
        let identities = identity::load(&self.identities).map_err(|e| e.to_string())?;
        Ok(Keyless {
            root,
            identities,
            transparency: self.transparency,
        })
    }
}

/// Seconds since the epoch, now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Keyless {
    /// Verifies a signature layer with a certificate: who signed, or why it does not verify.
    /// `annotations` are the layer's, `signature` the DER signature over `payload`.
    pub fn verify(
        &self,
        annotations: &BTreeMap<String, String>,
        payload: &[u8],
        signature: &[u8],
    ) -> Result<CertificateSigner, String> {
        self.verify_at(annotations, payload, signature, now())
    }

    fn verify_at(
        &self,
        annotations: &BTreeMap<String, String>,
        payload: &[u8],
        signature: &[u8],
        now: i64,
    ) -> Result<CertificateSigner, String> {
        let Some(pem) = annotations.get(CERTIFICATE_ANNOTATION) else {
            return Err(format!("it has no {CERTIFICATE_ANNOTATION} annotation"));
        };
        let leaf = certificate::pem_certificate(pem)
            .map_err(|e| format!("its certificate ({CERTIFICATE_ANNOTATION}) is {e}"))?;
        let chain = match annotations.get(CHAIN_ANNOTATION) {
            Some(pem) => certificate::pem_chain(pem.as_bytes())
                .map_err(|e| format!("its certificate chain ({CHAIN_ANNOTATION}) is {e}"))?,
            None => Vec::new(),
        };
        certificate::verify_signature(&leaf, payload, signature)?;
        let integrated_time = match annotations.get(rekor::BUNDLE_ANNOTATION) {
            Some(bundle) => Some(rekor::verify(
                &self.root, bundle, payload, signature, &leaf,
            )?),
            None if self.transparency == Transparency::Require => {
                return Err(format!(
                    "it has no Rekor bundle ({}), and the transparency log is required (--image-verification-transparency-log require)",
                    rekor::BUNDLE_ANNOTATION
                ));
            }
            None => None,
        };
        certificate::verify_chain(&self.root, &leaf, &chain, integrated_time.unwrap_or(now))?;
        let identity = CertificateIdentity::of(&leaf)
            .map_err(|e| format!("its certificate's identity cannot be read: {e}"))?;
        let Some((issuer, subject)) = identity.matching(&self.identities) else {
            return Err(format!(
                "its certificate's identity ({}) is not one of the allowed identities ({})",
                identity.describe(),
                self.identities
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        };
        Ok(CertificateSigner {
            issuer,
            subject,
            trusted_root: self.root.fingerprint.clone(),
            integrated_time,
        })
    }

    /// Whether a signer verified before is still trusted: the same trusted root, an identity
    /// still allowed.
    pub fn still_trusts(&self, signer: &CertificateSigner) -> bool {
        signer.trusted_root == self.root.fingerprint
            && self
                .identities
                .iter()
                .any(|id| id.issuer.matches(&signer.issuer) && id.subject.matches(&signer.subject))
    }
}

#[cfg(test)]
mod tests {
    //! The Rekor bundle path, with a certificate authority shaped like Fulcio's and a log key
    //! made here (the real cosign cannot log offline; agent/tests/image_signatures.rs verifies
    //! its tlog-less keyless signatures).
    use std::path::Path;

    use base64::Engine as _;
    use bpfpin_testkit::cosign_ca::{FulcioCa, Subject};
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};

    use super::*;
    use crate::pin::desired::sha256_hex;

    const ISSUER: &str = "https://issuer.test";
    const EMAIL: &str = "ci@bpfpin.test";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn spki(key: &SigningKey) -> Vec<u8> {
        p256::PublicKey::from(key.verifying_key())
            .to_public_key_der()
            .expect("der")
            .as_bytes()
            .to_vec()
    }

    /// The bundle Rekor would attach: `log` signs the entry for `payload`, `signature`, `cert`.
    fn bundle(
        log: &SigningKey,
        payload: &[u8],
        signature: &[u8],
        cert_pem: &str,
        time: i64,
    ) -> String {
        let body = serde_json::json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": sha256_hex(payload)}},
            "signature": {"content": b64(signature), "publicKey": {"content": b64(cert_pem.as_bytes())}}}});
        let body = b64(&serde_json::to_vec(&body).expect("json"));
        let log_id = sha256_hex(&spki(log));
        let canonical = format!(
            "{{\"body\":\"{body}\",\"integratedTime\":{time},\"logID\":\"{log_id}\",\"logIndex\":7}}"
        );
        let set: Signature = log.sign(canonical.as_bytes());
        serde_json::json!({"SignedEntryTimestamp": b64(set.to_der().as_bytes()),
            "Payload": {"body": body, "integratedTime": time, "logIndex": 7, "logID": log_id}})
        .to_string()
    }

    #[test]
    fn a_rekor_bundle_gives_the_time_the_certificate_must_have_been_valid_at() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = FulcioCa::new(dir.path(), "unit");
        let rekor = SigningKey::from_slice(&[9u8; 32]).expect("key");
        let stranger = SigningKey::from_slice(&[8u8; 32]).expect("key");
        let log_spki = spki(&rekor);
        let key_id = hex::decode(sha256_hex(&log_spki)).expect("hex");
        let root = serde_json::json!({
            "certificateAuthorities": [ca.trusted_root_entry()],
            "tlogs": [{"baseUrl": "https://rekor.test", "logId": {"keyId": b64(&key_id)},
                "publicKey": {"rawBytes": b64(&log_spki)}}]});
        let root = TrustedRoot::parse(
            Path::new("t.json"),
            &serde_json::to_vec(&root).expect("json"),
        )
        .expect("root");
        let mut keyless = Keyless {
            root,
            identities: identity::parse(&format!("- {{issuer: '{ISSUER}', subject: '{EMAIL}'}}"))
                .expect("ids"),
            transparency: Transparency::Require,
        };
        // Valid for an hour, two hours ago: expired now, valid when it was logged.
        let leaf = ca.issue(ISSUER, Subject::Email(EMAIL.into()), -7200, -3600);
        let key = SigningKey::from_pkcs8_der(&leaf.key_pkcs8).expect("leaf key");
        let payload = b"{\"critical\": {}}".as_slice();
        let signature: Signature = key.sign(payload);
        let signature = signature.to_der().as_bytes().to_vec();
        let now = now();
        let logged = now - 5400;
        let annotations = |bundle: Option<String>| {
            let mut a = BTreeMap::from([
                (CERTIFICATE_ANNOTATION.to_owned(), leaf.pem.clone()),
                (CHAIN_ANNOTATION.to_owned(), ca.chain_pem()),
            ]);
            if let Some(b) = bundle {
                a.insert(rekor::BUNDLE_ANNOTATION.to_owned(), b);
            }
            a
        };
        let verify = |keyless: &Keyless, bundle: Option<String>| {
            keyless.verify_at(&annotations(bundle), payload, &signature, now)
        };

        let signer = verify(
            &keyless,
            Some(bundle(&rekor, payload, &signature, &leaf.pem, logged)),
        )
        .expect("verifies at the logged time");
        assert_eq!(signer.integrated_time, Some(logged));
        assert_eq!(
            (signer.issuer.as_str(), signer.subject.as_str()),
            (ISSUER, EMAIL)
        );
        assert!(keyless.still_trusts(&signer));

        let refused = |bundle: Option<String>, keyless: &Keyless, why: &str| {
            let e = verify(keyless, bundle).expect_err(why);
            assert!(e.contains(why), "{e}");
        };
        refused(None, &keyless, "it has no Rekor bundle");
        refused(
            Some(bundle(&stranger, payload, &signature, &leaf.pem, logged)),
            &keyless,
            "which the trusted root does not list",
        );
        let mut forged: serde_json::Value =
            serde_json::from_str(&bundle(&rekor, payload, &signature, &leaf.pem, logged))
                .expect("json");
        forged["Payload"]["integratedTime"] = (logged + 1).into();
        refused(
            Some(forged.to_string()),
            &keyless,
            "does not verify with the key of log https://rekor.test",
        );
        refused(
            Some(bundle(
                &rekor,
                b"another payload",
                &signature,
                &leaf.pem,
                logged,
            )),
            &keyless,
            "its Rekor entry is for another payload",
        );
        let other = ca.issue(ISSUER, Subject::Email(EMAIL.into()), -7200, -3600);
        refused(
            Some(bundle(&rekor, payload, &signature, &other.pem, logged)),
            &keyless,
            "its Rekor entry is for another certificate",
        );
        refused(
            Some(bundle(&rekor, payload, &signature, &leaf.pem, now - 60)),
            &keyless,
            "the certificate chain expired at",
        );
        keyless.transparency = Transparency::Optional;
        refused(None, &keyless, "the certificate chain expired at");
        keyless.identities =
            identity::parse(&format!("- {{issuer: '{ISSUER}', subject: other@x}}")).expect("ids");
        assert!(
            !keyless.still_trusts(&signer),
            "an identity no longer allowed"
        );
    }
}
