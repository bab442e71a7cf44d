//! The certificate of a keyless signature: its chain to a certificate authority of the trusted
//! root at a given time (path building, validity, basic constraints, the code-signing EKU:
//! rustls-webpki, the verifier rustls uses), and the signature of the payload with its key.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_cert::Certificate;
use x509_cert::der::{Decode as _, DecodePem as _, Encode as _};

use super::trusted_root::{CertificateAuthority, TrustedRoot};

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER content bytes: Fulcio's leaf EKU.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// The most certificates read from a chain annotation (Fulcio's chains hold 2).
const MAX_CHAIN: usize = 8;

/// The algorithms certificates may be signed with (Fulcio: ECDSA P-384 CA, P-256 leaves).
static CHAIN_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
];

/// The algorithms a payload may be signed with by a certificate's key (cosign's leaves are
/// ECDSA; its signatures are ASN.1 DER).
static PAYLOAD_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
];

/// The DER certificates of a PEM text (one or more `CERTIFICATE` blocks).
pub fn pem_chain(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let certs =
        Certificate::load_pem_chain(pem).map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.len() > MAX_CHAIN {
        return Err(format!(
            "{} certificates, over the limit of {MAX_CHAIN}",
            certs.len()
        ));
    }
    certs
        .iter()
        .map(|c| {
            c.to_der()
                .map_err(|e| format!("a certificate cannot be encoded: {e}"))
        })
        .collect()
}

/// One PEM certificate, as DER.
pub fn pem_certificate(pem: &str) -> Result<Vec<u8>, String> {
    let cert =
        Certificate::from_pem(pem.trim()).map_err(|e| format!("not a PEM certificate: {e}"))?;
    cert.to_der()
        .map_err(|e| format!("it cannot be encoded: {e}"))
}

/// Whether `signature` (DER) over `payload` verifies with the key of `leaf` (DER).
pub fn verify_signature(leaf: &[u8], payload: &[u8], signature: &[u8]) -> Result<(), String> {
    let leaf = CertificateDer::from(leaf);
    let cert = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("its certificate cannot be parsed: {e:?}"))?;
    if PAYLOAD_ALGS
        .iter()
        .any(|alg| cert.verify_signature(*alg, payload, signature).is_ok())
    {
        Ok(())
    } else {
        Err("it does not verify with its certificate's key".into())
    }
}

/// The authority of `root` that `leaf` (DER) chains to at `time` (seconds since the epoch),
/// through the authority's intermediates or `intermediates` (the signature's chain annotation;
/// only the trusted root's anchors are trusted), or why none does.
pub fn verify_chain<'r>(
    root: &'r TrustedRoot,
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    time: i64,
) -> Result<&'r CertificateAuthority, String> {
    let leaf = CertificateDer::from(leaf);
    let cert = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("its certificate cannot be parsed: {e:?}"))?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(time).unwrap_or(0)));
    let mut why = Vec::new();
    for ca in &root.authorities {
        if !ca.valid_for.contains(time) {
            why.push(format!("{}: not valid at {}", name(ca), timestamp(time)));
            continue;
        }
        let Some((anchor, own)) = ca.chain.split_last() else {
            continue;
        };
        let anchor = CertificateDer::from(anchor.as_slice());
        let anchor = match webpki::anchor_from_trusted_cert(&anchor) {
            Ok(anchor) => anchor,
            Err(e) => {
                why.push(format!(
                    "{}: its root certificate is unusable: {e:?}",
                    name(ca)
                ));
                continue;
            }
        };
        // A self-signed certificate of the annotation (its root, as cosign writes the chain) is
        // no intermediate: only the trusted root's anchors are trusted.
        let candidates: Vec<CertificateDer<'_>> = own
            .iter()
            .chain(intermediates.iter().filter(|c| !self_signed(c)))
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        match cert.verify_for_usage(
            CHAIN_ALGS,
            &[anchor],
            &candidates,
            at,
            webpki::KeyUsage::required(CODE_SIGNING),
            None,
            None,
        ) {
            Ok(_) => return Ok(ca),
            Err(e) => why.push(format!("{}: {}", name(ca), chain_error(&e, time))),
        }
    }
    Err(format!(
        "its certificate is not trusted: {}",
        why.join("; ")
    ))
}

/// Whether the DER certificate `der` names itself as its issuer.
fn self_signed(der: &[u8]) -> bool {
    Certificate::from_der(der).is_ok_and(|c| c.tbs_certificate.subject == c.tbs_certificate.issuer)
}

fn name(ca: &CertificateAuthority) -> String {
    if ca.uri.is_empty() {
        "certificate authority".into()
    } else {
        format!("certificate authority {}", ca.uri)
    }
}

/// `2026-12-02T03:00:00Z`.
fn timestamp(t: i64) -> String {
    jiff::Timestamp::from_second(t).map_or_else(|_| t.to_string(), |t| t.to_string())
}

fn unix(t: UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

/// webpki's verdict in words.
fn chain_error(e: &webpki::Error, time: i64) -> String {
    match e {
        webpki::Error::CertExpired { not_after, .. } => format!(
            "the certificate chain expired at {} (checked at {})",
            timestamp(unix(*not_after)),
            timestamp(time)
        ),
        webpki::Error::CertNotValidYet { not_before, .. } => format!(
            "the certificate chain is valid only from {} (checked at {})",
            timestamp(unix(*not_before)),
            timestamp(time)
        ),
        webpki::Error::UnknownIssuer => "the certificate does not chain to its root".into(),
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "the certificate is not for code signing (extended key usage)".into()
        }
        other => format!("the certificate chain is invalid: {other:?}"),
    }
}
