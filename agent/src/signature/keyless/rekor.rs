//! The Rekor bundle cosign attaches to a signature it logged (`dev.sigstore.cosign/bundle`): a
//! signed entry timestamp (SET), Rekor's signature over the entry it integrated and when. It
//! proves, offline, that the signature existed at `integratedTime`, which is the time a
//! short-lived Fulcio certificate must have been valid at.
//!
//! Checked here: the SET with the trusted root's key for the entry's `logID` (valid then), and
//! that the entry (a `hashedrekord`) is this signature: the payload's sha256, the signature
//! bytes and the certificate. Not checked: inclusion proofs (not in this bundle form).

use base64::Engine as _;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use serde::Deserialize;
use webpki::RawPublicKeyEntity;

use super::trusted_root::TrustedRoot;
use crate::pin::desired::sha256_hex;

/// The annotation holding the bundle.
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Bundle {
    signed_entry_timestamp: String,
    payload: Entry,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

#[derive(Deserialize)]
struct Body {
    kind: String,
    spec: Spec,
}

#[derive(Deserialize)]
struct Spec {
    data: Data,
    signature: SignatureSpec,
}

#[derive(Deserialize)]
struct Data {
    hash: Hash,
}

#[derive(Deserialize)]
struct Hash {
    algorithm: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignatureSpec {
    content: String,
    public_key: PublicKeyContent,
}

#[derive(Deserialize)]
struct PublicKeyContent {
    content: String,
}

/// The signature algorithms a log key may use (Rekor's are ECDSA P-256).
static LOG_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// Verifies the bundle `bundle` of a signature `signature` (DER) over `payload` made with the
/// certificate `cert` (DER): the integrated time, or why not.
pub fn verify(
    root: &TrustedRoot,
    bundle: &str,
    payload: &[u8],
    signature: &[u8],
    cert: &[u8],
) -> Result<i64, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bundle: Bundle =
        serde_json::from_str(bundle).map_err(|e| format!("its Rekor bundle is malformed: {e}"))?;
    let entry = &bundle.payload;
    let Some(log) = root.tlogs.iter().find(|l| l.log_id == entry.log_id) else {
        return Err(format!(
            "its Rekor bundle is from log {}, which the trusted root does not list",
            entry.log_id
        ));
    };
    if !log.valid_for.contains(entry.integrated_time) {
        return Err(format!(
            "its Rekor bundle's time {} is outside the validity of log {}'s key",
            entry.integrated_time, log.base_url
        ));
    }
    // What Rekor signs: the entry as RFC 8785 canonical JSON. Its four fields are an ASCII
    // base64 string, a hex string and two integers, so serde_json's output of a map in key order
    // is already canonical.
    let canonical = serde_json::to_vec(&std::collections::BTreeMap::from([
        ("body", serde_json::Value::from(entry.body.as_str())),
        ("integratedTime", entry.integrated_time.into()),
        ("logID", entry.log_id.as_str().into()),
        ("logIndex", entry.log_index.into()),
    ]))
    .map_err(|e| format!("its Rekor entry cannot be encoded: {e}"))?;
    let set = b64
        .decode(bundle.signed_entry_timestamp.trim())
        .map_err(|e| format!("its Rekor SignedEntryTimestamp is not base64: {e}"))?;
    let spki = SubjectPublicKeyInfoDer::from(log.spki.as_slice());
    let key = RawPublicKeyEntity::try_from(&spki).map_err(|e| {
        format!(
            "the trusted root's key of log {} is unusable: {e:?}",
            log.base_url
        )
    })?;
    if !LOG_ALGS
        .iter()
        .any(|alg| key.verify_signature(*alg, &canonical, &set).is_ok())
    {
        return Err(format!(
            "its Rekor SignedEntryTimestamp does not verify with the key of log {}",
            log.base_url
        ));
    }
    // The log vouches for an entry; it must be this signature's.
    let body = b64
        .decode(entry.body.trim())
        .map_err(|e| format!("its Rekor entry body is not base64: {e}"))?;
    let body: Body = serde_json::from_slice(&body)
        .map_err(|e| format!("its Rekor entry is not a hashedrekord: {e}"))?;
    if body.kind != "hashedrekord" {
        return Err(format!(
            "its Rekor entry is a {:?}, not a hashedrekord",
            body.kind
        ));
    }
    let hash = &body.spec.data.hash;
    if hash.algorithm != "sha256" || hash.value != sha256_hex(payload) {
        return Err("its Rekor entry is for another payload".into());
    }
    if b64
        .decode(body.spec.signature.content.trim())
        .ok()
        .as_deref()
        != Some(signature)
    {
        return Err("its Rekor entry is for another signature".into());
    }
    let logged_cert = b64
        .decode(body.spec.signature.public_key.content.trim())
        .ok()
        .and_then(|pem| super::certificate::pem_chain(&pem).ok())
        .and_then(|certs| certs.into_iter().next());
    if logged_cert.as_deref() != Some(cert) {
        return Err("its Rekor entry is for another certificate".into());
    }
    Ok(entry.integrated_time)
}
