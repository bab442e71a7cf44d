//! cosign's signature format (the "simple signing" scheme of `cosign sign --key`): for an image
//! with manifest digest `sha256:<hex>`, the registry holds a manifest under the tag
//! `sha256-<hex>.sig` whose layers are payloads of media type
//! `application/vnd.dev.cosign.simplesigning.v1+json`, each with its ECDSA signature (base64 DER,
//! over the payload's bytes) in the annotation `dev.cosignproject.cosign/signature`. The payload
//! says which image it signs: `critical.image.docker-manifest-digest`.
//!
//! An image is verified when one of its payloads is signed by one of the keys and names the
//! image's digest. Everything is checked here, offline: no Rekor entry or certificate is needed
//! (or read) for key-based signatures.

use std::collections::BTreeMap;

use base64::Engine as _;
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier as _;
use serde::Deserialize;

use super::keyless::{CERTIFICATE_ANNOTATION, CertificateSigner, Keyless};
use super::keys::KeySet;
use crate::error::{ObjectError, Reason};

/// The media type of a cosign payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a payload's signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a payload that signs a container image.
const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The largest signature manifest read (cosign's hold one layer per signature: a few KiB).
pub const MAX_SIGNATURE_MANIFEST: u64 = 1 << 20;
/// The largest payload read (cosign's are under 1 KiB, plus the signer's annotations).
pub const MAX_PAYLOAD: u64 = 1 << 20;
/// The most signatures examined for one image.
pub const MAX_SIGNATURES: usize = 32;

/// What fetches the signature of an image from its registry: the pull's own session (same
/// credentials, same limits and time bound).
pub trait SignatureStore {
    /// The manifest under `tag` in the image's repository, or `None` when the registry has
    /// none (HTTP 404). At most `limit` bytes.
    fn signature_manifest(&mut self, tag: &str, limit: u64)
    -> Result<Option<Vec<u8>>, ObjectError>;
    /// The OCI 1.1 referrers index of `digest` (`/v2/<name>/referrers/<digest>`), or `None`
    /// when the registry has no referrers API (HTTP 404). At most `limit` bytes.
    fn signature_referrers(
        &mut self,
        digest: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ObjectError>;
    /// The blob `digest` (`sha256:<hex>`, checked), of `size` bytes as its descriptor says, at
    /// most `limit`.
    fn signature_payload(
        &mut self,
        digest: &str,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>, ObjectError>;
}

/// Why an image's signature did not verify.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The registry has no signature for the digest.
    #[error(
        "image {image}: not signed: the registry has no cosign signature for {digest} (no tag {tag}, no OCI 1.1 referrer)"
    )]
    Unsigned {
        /// The reference as written.
        image: String,
        /// The manifest digest.
        digest: String,
        /// The signature tag looked for.
        tag: String,
    },
    /// The signature manifest is not one cosign writes.
    #[error("image {image}: its signature manifest {tag} is malformed: {why}")]
    Malformed {
        /// The reference as written.
        image: String,
        /// The signature tag.
        tag: String,
        /// What is wrong with it.
        why: String,
    },
    /// No key to verify with.
    #[error("image {image}: no usable public key to verify its signature with: {why}")]
    NoKeys {
        /// The reference as written.
        image: String,
        /// Why the configured keys are unusable.
        why: String,
    },
    /// Signatures exist, and none is a valid signature of this digest by a configured key.
    #[error("image {image}: no signature of {digest} verifies with the configured keys ({keys}): {}", .verdicts.join("; "))]
    Rejected {
        /// The reference as written.
        image: String,
        /// The manifest digest.
        digest: String,
        /// The usable keys' names (and why others are unusable).
        keys: String,
        /// One verdict per signature examined.
        verdicts: Vec<String>,
    },
    /// The object opts out of verification and the node does not allow it.
    #[error(
        "image {image}: spec.bytecode.skipSignatureVerification is set, but this node verifies signatures (--image-verification-policy {mode}) and does not let objects opt out (--image-verification-allow-opt-out)"
    )]
    OptOutRefused {
        /// The reference as written.
        image: String,
        /// The node's mode.
        mode: &'static str,
    },
    /// The registry did not give the signature (unreachable, denied, over a size limit).
    #[error("{}", source.message)]
    Fetch {
        /// The reference as written.
        image: String,
        /// The registry error.
        #[source]
        source: ObjectError,
    },
}

impl crate::error::StatusError for SignatureError {
    fn reason(&self) -> Reason {
        match self {
            // The registry could not be asked: its own reason (unreachable, denied, too large).
            SignatureError::Fetch { source, .. } => source.reason,
            _ => Reason::SignatureInvalid,
        }
    }
}

/// A signature that verified: by whom, for which digest. This is what the agent reports as the
/// image's signer ([`super::verified`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    /// The manifest digest.
    pub digest: String,
    /// Who signed it.
    pub signer: Signer,
}

/// Who signed an image: a configured key, or a certificate bound to an identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Signer {
    /// A key of `--image-verification-keys`.
    Key {
        /// The key's file name.
        name: String,
        /// `sha256:<hex>` of its DER SubjectPublicKeyInfo.
        fingerprint: String,
    },
    /// A certificate of the trusted root with an allowed identity (keyless).
    Certificate(CertificateSigner),
}

impl Signer {
    /// `key cosign.pub`, `the certificate of "ci@example.com" (issuer "https://…")`.
    pub fn describe(&self) -> String {
        match self {
            Signer::Key { name, .. } => format!("key {name}"),
            Signer::Certificate(c) => {
                format!("the certificate of {:?} (issuer {:?})", c.subject, c.issuer)
            }
        }
    }
}

/// What signatures are verified with: the configured keys and the keyless policy.
#[derive(Debug, Default)]
pub struct Verifiers {
    /// The keys of `--image-verification-keys`.
    pub keys: KeySet,
    /// The trusted root and identities, when keyless verification is configured and they load.
    pub keyless: Option<Keyless>,
    /// Why keyless verification is configured but unusable (its files do not load).
    pub keyless_broken: Option<String>,
}

impl Verifiers {
    /// Whether nothing can verify a signature.
    fn is_empty(&self) -> bool {
        self.keys.usable.is_empty() && self.keyless.is_none()
    }

    /// Whether a signer verified before is still trusted.
    pub fn still_trusts(&self, signer: &Signer) -> bool {
        match signer {
            Signer::Key { fingerprint, .. } => self
                .keys
                .usable
                .iter()
                .any(|k| &k.fingerprint == fingerprint),
            Signer::Certificate(c) => self.keyless.as_ref().is_some_and(|k| k.still_trusts(c)),
        }
    }

    /// `cosign.pub; unusable: …`, then the keyless part when configured.
    fn describe(&self) -> String {
        let mut text = describe_keys(&self.keys);
        if let Some(keyless) = &self.keyless {
            text.push_str(&format!(
                "; keyless: trusted root {}",
                keyless.root.path.display()
            ));
        }
        if let Some(why) = &self.keyless_broken {
            text.push_str(&format!("; keyless unusable: {why}"));
        }
        text
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignatureManifest {
    #[serde(default)]
    layers: Option<Vec<Layer>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layer {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: PayloadImage,
}

#[derive(Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// `sha256-<hex>.sig`: the tag cosign stores the signatures of `digest` under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The `artifactType` of a cosign signature manifest stored as an OCI 1.1 referrer
/// (`cosign sign --registry-referrers-mode=oci-1-1`).
pub const SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    artifact_type: String,
}

/// The signature manifests of `digest` stored as OCI 1.1 referrers: from the referrers API, or
/// its fallback, an index tagged `sha256-<hex>` (what cosign writes to a registry without the
/// API). Each manifest is fetched by digest and checked against it. `Ok(None)`: no referrer.
fn referrer_manifests(
    digest: &str,
    store: &mut dyn SignatureStore,
    malformed: &dyn Fn(String) -> SignatureError,
    fetch: &dyn Fn(ObjectError) -> SignatureError,
) -> Result<Option<Vec<Vec<u8>>>, SignatureError> {
    let index = match store
        .signature_referrers(digest, MAX_SIGNATURE_MANIFEST)
        .map_err(fetch)?
    {
        Some(index) => index,
        None => match store
            .signature_manifest(&digest.replacen(':', "-", 1), MAX_SIGNATURE_MANIFEST)
            .map_err(fetch)?
        {
            Some(index) => index,
            None => return Ok(None),
        },
    };
    let index: Index = serde_json::from_slice(&index)
        .map_err(|e| malformed(format!("its referrers index is not JSON: {e}")))?;
    let signatures: Vec<&IndexEntry> = index
        .manifests
        .iter()
        .filter(|m| m.artifact_type == SIGNATURE_ARTIFACT)
        .collect();
    if signatures.is_empty() {
        return Ok(None);
    }
    if signatures.len() > MAX_SIGNATURES {
        return Err(malformed(format!(
            "its referrers index lists {} signatures, over the limit of {MAX_SIGNATURES}",
            signatures.len()
        )));
    }
    let mut manifests = Vec::new();
    let mut total = 0;
    for entry in signatures {
        let Some(bytes) = store
            .signature_manifest(&entry.digest, MAX_SIGNATURE_MANIFEST)
            .map_err(fetch)?
        else {
            return Err(malformed(format!(
                "its referrer {} is listed but missing",
                entry.digest
            )));
        };
        let got = format!("sha256:{}", crate::pin::desired::sha256_hex(&bytes));
        if got != entry.digest {
            return Err(malformed(format!(
                "its referrer {} has digest {got}",
                entry.digest
            )));
        }
        // All referrers together are held to the limit of one signature manifest.
        total += bytes.len() as u64;
        if total > MAX_SIGNATURE_MANIFEST {
            return Err(malformed(format!(
                "its referrers are over the {} MiB limit together",
                MAX_SIGNATURE_MANIFEST >> 20
            )));
        }
        manifests.push(bytes);
    }
    Ok(Some(manifests))
}

/// Verifies that the image `image` with manifest digest `digest` is signed by one of `keys`.
pub fn verify(
    image: &str,
    digest: &str,
    verifiers: &Verifiers,
    store: &mut dyn SignatureStore,
) -> Result<Verified, SignatureError> {
    let key_names = verifiers.describe();
    if verifiers.is_empty() {
        return Err(SignatureError::NoKeys {
            image: image.to_owned(),
            why: key_names,
        });
    }
    let tag = signature_tag(digest);
    let fetch = |source| SignatureError::Fetch {
        image: image.to_owned(),
        source,
    };
    let malformed = |why: String| SignatureError::Malformed {
        image: image.to_owned(),
        tag: tag.clone(),
        why,
    };
    let manifests = match store
        .signature_manifest(&tag, MAX_SIGNATURE_MANIFEST)
        .map_err(fetch)?
    {
        Some(manifest) => vec![manifest],
        None => match referrer_manifests(digest, store, &malformed, &fetch)? {
            Some(manifests) => manifests,
            None => {
                return Err(SignatureError::Unsigned {
                    image: image.to_owned(),
                    digest: digest.to_owned(),
                    tag: tag.clone(),
                });
            }
        },
    };
    let mut layers = Vec::new();
    for manifest in manifests {
        let manifest: SignatureManifest =
            serde_json::from_slice(&manifest).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let these = manifest.layers.unwrap_or_default();
        if these.is_empty() {
            return Err(malformed("it has no layers".into()));
        }
        layers.extend(these);
    }
    if layers.len() > MAX_SIGNATURES {
        return Err(malformed(format!(
            "it has {} layers, over the limit of {MAX_SIGNATURES} signatures",
            layers.len()
        )));
    }
    let mut verdicts = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        match check_layer(layer, digest, verifiers, store) {
            Ok(signer) => {
                return Ok(Verified {
                    digest: digest.to_owned(),
                    signer,
                });
            }
            Err(Verdict::Fetch(source)) => return Err(fetch(source)),
            Err(Verdict::No(why)) => verdicts.push(format!("signature {}: {why}", i + 1)),
        }
    }
    Err(SignatureError::Rejected {
        image: image.to_owned(),
        digest: digest.to_owned(),
        keys: key_names,
        verdicts,
    })
}

enum Verdict {
    No(String),
    Fetch(ObjectError),
}

/// Who signed one layer as a valid signature of `digest`, or why it is not one.
fn check_layer(
    layer: &Layer,
    digest: &str,
    verifiers: &Verifiers,
    store: &mut dyn SignatureStore,
) -> Result<Signer, Verdict> {
    let no = |why: String| Verdict::No(why);
    if layer.media_type != SIMPLE_SIGNING {
        return Err(no(format!(
            "its media type is {:?}, not {SIMPLE_SIGNING}",
            layer.media_type
        )));
    }
    let Some(encoded) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
        return Err(no(format!("it has no {SIGNATURE_ANNOTATION} annotation")));
    };
    let der = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| no(format!("its signature is not base64: {e}")))?;
    // Go's crypto/ecdsa does not normalize s; both forms are the same signature.
    let p256_signature = Signature::from_der(&der)
        .ok()
        .map(|s| s.normalize_s().unwrap_or(s));
    // A certificate's key may be another curve: its signature is checked by the certificate.
    let keyless = verifiers
        .keyless
        .as_ref()
        .filter(|_| layer.annotations.contains_key(CERTIFICATE_ANNOTATION));
    if p256_signature.is_none() && keyless.is_none() {
        return Err(no("its signature is not a DER ECDSA P-256 signature".into()));
    }
    if layer.size > MAX_PAYLOAD {
        return Err(no(format!(
            "its payload is {} bytes, over the {} MiB limit",
            layer.size,
            MAX_PAYLOAD >> 20
        )));
    }
    let payload = store
        .signature_payload(&layer.digest, layer.size, MAX_PAYLOAD)
        .map_err(Verdict::Fetch)?;
    let key = p256_signature.and_then(|signature| {
        verifiers
            .keys
            .usable
            .iter()
            .find(|k| k.key.verify(&payload, &signature).is_ok())
    });
    let signer = match (key, keyless) {
        (Some(key), _) => Signer::Key {
            name: key.name.clone(),
            fingerprint: key.fingerprint.clone(),
        },
        (None, Some(keyless)) => Signer::Certificate(
            keyless
                .verify(&layer.annotations, &payload, &der)
                .map_err(no)?,
        ),
        (None, None) if verifiers.keyless.is_some() => {
            return Err(no(format!(
                "it does not verify with any configured key, and carries no certificate ({CERTIFICATE_ANNOTATION})"
            )));
        }
        (None, None) => return Err(no("it does not verify with any configured key".into())),
    };
    let by = signer.describe();
    // Only a payload whose signature verified is read.
    let payload: Payload = serde_json::from_slice(&payload).map_err(|e| {
        no(format!(
            "verifies with {by} but its payload is not a cosign payload: {e}"
        ))
    })?;
    if payload.critical.kind != PAYLOAD_TYPE {
        return Err(no(format!(
            "verifies with {by} but its payload's type is {:?}, not {PAYLOAD_TYPE:?}",
            payload.critical.kind
        )));
    }
    let signed = payload.critical.image.docker_manifest_digest;
    if signed != digest {
        return Err(no(format!(
            "verifies with {by} but signs another image ({signed})"
        )));
    }
    Ok(signer)
}

/// `cosign.pub` or `cosign.pub; unusable: key x is not ...`.
fn describe_keys(keys: &KeySet) -> String {
    let mut text = if keys.usable.is_empty() {
        "none".to_owned()
    } else {
        keys.names()
    };
    if !keys.broken.is_empty() {
        let broken: Vec<String> = keys.broken.iter().map(ToString::to_string).collect();
        text.push_str(&format!("; unusable: {}", broken.join("; ")));
    }
    text
}

#[cfg(test)]
mod tests {
    //! The format's edge cases with payloads signed here, in Rust, in cosign's format (the
    //! signatures of the real `cosign` CLI are tested in agent/tests/image_signatures.rs).
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;

    use super::super::keys::PublicKey;
    use super::*;
    use crate::error::Reason;
    use crate::pin::desired::sha256_hex;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[derive(Default)]
    struct Store {
        manifests: BTreeMap<String, Vec<u8>>,
        blobs: BTreeMap<String, Vec<u8>>,
    }

    impl SignatureStore for Store {
        fn signature_manifest(
            &mut self,
            tag: &str,
            _limit: u64,
        ) -> Result<Option<Vec<u8>>, ObjectError> {
            Ok(self.manifests.get(tag).cloned())
        }
        fn signature_referrers(
            &mut self,
            digest: &str,
            _limit: u64,
        ) -> Result<Option<Vec<u8>>, ObjectError> {
            Ok(self.manifests.get(&format!("referrers/{digest}")).cloned())
        }
        fn signature_payload(
            &mut self,
            digest: &str,
            _size: u64,
            _limit: u64,
        ) -> Result<Vec<u8>, ObjectError> {
            self.blobs.get(digest).cloned().ok_or_else(|| {
                ObjectError::new(Reason::BytecodeUnavailable, format!("no blob {digest}"))
            })
        }
    }

    fn key(seed: u8) -> (SigningKey, Verifiers) {
        let signing = SigningKey::from_slice(&[seed; 32]).expect("key");
        let pem = p256::PublicKey::from(signing.verifying_key())
            .to_public_key_pem(Default::default())
            .expect("pem");
        let public = PublicKey::from_pem(&format!("key{seed}.pub"), &pem).expect("parses");
        (
            signing,
            Verifiers {
                keys: KeySet {
                    usable: vec![public],
                    broken: Vec::new(),
                },
                ..Verifiers::default()
            },
        )
    }

    fn payload(digest: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": "127.0.0.1:5000/x"},
                "image": {"docker-manifest-digest": digest},
                "type": PAYLOAD_TYPE,
            },
            "optional": null,
        }))
        .expect("json")
    }

    /// Stores a signature manifest for `for_digest` signing `payload` with `signer`.
    fn sign(store: &mut Store, for_digest: &str, payload: &[u8], signature: String) {
        let blob = format!("sha256:{}", sha256_hex(payload));
        store.blobs.insert(blob.clone(), payload.to_vec());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "layers": [{
                "mediaType": SIMPLE_SIGNING,
                "digest": blob,
                "size": payload.len(),
                "annotations": {SIGNATURE_ANNOTATION: signature},
            }],
        });
        store.manifests.insert(
            signature_tag(for_digest),
            serde_json::to_vec(&manifest).expect("json"),
        );
    }

    fn der(signer: &SigningKey, payload: &[u8]) -> String {
        let signature: Signature = signer.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    #[test]
    fn a_payload_signed_by_a_key_for_this_digest_verifies() {
        let (signer, keys) = key(1);
        let mut store = Store::default();
        let p = payload(DIGEST);
        sign(&mut store, DIGEST, &p, der(&signer, &p));
        let verified = verify("img", DIGEST, &keys, &mut store).expect("verifies");
        assert_eq!(
            verified.signer,
            Signer::Key {
                name: "key1.pub".into(),
                fingerprint: keys.keys.usable[0].fingerprint.clone()
            }
        );
    }

    #[test]
    fn every_way_of_not_being_signed_says_why() {
        let (signer, keys) = key(1);
        let (other_signer, _) = key(2);
        let message = |store: &mut Store| {
            verify("img", DIGEST, &keys, store)
                .expect_err("refused")
                .to_string()
        };

        let mut store = Store::default();
        assert!(message(&mut store).contains("not signed"), "unsigned");

        let p = payload(DIGEST);
        sign(&mut store, DIGEST, &p, der(&other_signer, &p));
        let m = message(&mut store);
        assert!(m.contains("does not verify with any configured key"), "{m}");

        let p = payload(OTHER);
        sign(&mut store, DIGEST, &p, der(&signer, &p));
        let m = message(&mut store);
        assert!(m.contains(&format!("signs another image ({OTHER})")), "{m}");

        sign(&mut store, DIGEST, &p, "%%%".into());
        assert!(message(&mut store).contains("not base64"));
        sign(&mut store, DIGEST, &p, "AAAA".into());
        assert!(message(&mut store).contains("not a DER ECDSA P-256 signature"));

        let p = b"{\"critical\": 1}".to_vec();
        sign(&mut store, DIGEST, &p, der(&signer, &p));
        assert!(message(&mut store).contains("not a cosign payload"));

        store
            .manifests
            .insert(signature_tag(DIGEST), b"not json".to_vec());
        assert!(message(&mut store).contains("malformed: not JSON"));
        let many: Vec<_> = (0..MAX_SIGNATURES + 1)
            .map(|_| serde_json::json!({"mediaType": SIMPLE_SIGNING, "digest": DIGEST}))
            .collect();
        store.manifests.insert(
            signature_tag(DIGEST),
            serde_json::to_vec(&serde_json::json!({"layers": many})).expect("json"),
        );
        assert!(message(&mut store).contains("over the limit of 32 signatures"));
        let huge = serde_json::json!({"layers": [{"mediaType": SIMPLE_SIGNING, "digest": DIGEST,
            "size": MAX_PAYLOAD + 1, "annotations": {SIGNATURE_ANNOTATION: der(&signer, b"x")}}]});
        store.manifests.insert(
            signature_tag(DIGEST),
            serde_json::to_vec(&huge).expect("json"),
        );
        assert!(message(&mut store).contains("over the 1 MiB limit"));

        let none = Verifiers::default();
        let e = verify("img", DIGEST, &none, &mut store).expect_err("no keys");
        assert!(e.to_string().contains("no usable public key"), "{e}");
    }

    #[test]
    fn referrers_are_read_from_the_api_and_checked_against_their_digests() {
        let (signer, keys) = key(1);
        let mut store = Store::default();
        let p = payload(DIGEST);
        // Stored under a scratch tag, then moved behind a referrers index by digest.
        sign(&mut store, OTHER, &p, der(&signer, &p));
        let manifest = store
            .manifests
            .remove(&signature_tag(OTHER))
            .expect("manifest");
        let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
        store.manifests.insert(manifest_digest.clone(), manifest);
        let index = |digest: &str| {
            serde_json::to_vec(&serde_json::json!({"manifests": [
                {"digest": "sha256:0000", "artifactType": "application/other"},
                {"digest": digest, "artifactType": SIGNATURE_ARTIFACT}]}))
            .expect("json")
        };
        store
            .manifests
            .insert(format!("referrers/{DIGEST}"), index(&manifest_digest));
        let verified = verify("img", DIGEST, &keys, &mut store).expect("verifies");
        assert!(matches!(verified.signer, Signer::Key { .. }));

        // A referrer whose bytes are not its digest is refused.
        let forged = format!("sha256:{}", "3".repeat(64));
        let bytes = store.manifests[&manifest_digest].clone();
        store.manifests.insert(forged.clone(), bytes);
        store
            .manifests
            .insert(format!("referrers/{DIGEST}"), index(&forged));
        let e = verify("img", DIGEST, &keys, &mut store).expect_err("forged");
        assert!(
            e.to_string()
                .contains(&format!("its referrer {forged} has digest")),
            "{e}"
        );
    }

    #[test]
    fn the_signature_tag_is_the_digest_with_a_dash() {
        assert_eq!(
            signature_tag(DIGEST),
            format!("sha256-{}.sig", &DIGEST[7..])
        );
    }
}
