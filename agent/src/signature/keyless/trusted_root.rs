//! sigstore's `trusted_root.json` (the `TrustedRoot` message of sigstore's protobuf-specs, in
//! its JSON form, as `cosign trusted-root create` and sigstore's TUF repository write it): the
//! certificate authorities keyless certificates chain to (Fulcio's chains, root last) and the
//! transparency logs whose signed entry timestamps are trusted (Rekor's keys). CT log keys and
//! timestamp authorities are parsed past but not used (see docs/trust.md).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::pin::desired::sha256_hex;

/// The largest trusted root read (sigstore's public-good one is about 6 KiB).
const MAX_TRUSTED_ROOT: u64 = 1 << 20;

/// Why a trusted root cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustedRootError {
    /// The file cannot be read.
    #[error("cannot read the trusted root {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any trusted root.
    #[error("the trusted root {path} is over the {} MiB limit", MAX_TRUSTED_ROOT >> 20)]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a trusted root.
    #[error("the trusted root {path} is malformed: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// A time window (`validFor`), in seconds since the epoch; `None` is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// The first second.
    pub start: Option<i64>,
    /// The last second.
    pub end: Option<i64>,
}

impl Window {
    /// Whether `t` is in the window.
    pub fn contains(&self, t: i64) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

/// One certificate authority: its chain, intermediates first, the root last.
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    /// `uri` (e.g. `https://fulcio.sigstore.dev`), for messages.
    pub uri: String,
    /// DER certificates, intermediates first, the root (trust anchor) last.
    pub chain: Vec<Vec<u8>>,
    /// When certificates it issued are trusted.
    pub valid_for: Window,
}

/// One transparency log key.
#[derive(Debug, Clone)]
pub struct LogKey {
    /// `baseUrl`, for messages.
    pub base_url: String,
    /// The log ID: hex of `logId.keyId` (the sha256 of the key's DER).
    pub log_id: String,
    /// The DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// When its entries are trusted.
    pub valid_for: Window,
}

/// A parsed trusted root.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    /// The file, for messages.
    pub path: PathBuf,
    /// `sha256:<hex>` of the file: what verified results are cached with.
    pub fingerprint: String,
    /// Fulcio's (or another CA's) chains.
    pub authorities: Vec<CertificateAuthority>,
    /// Rekor's (or another log's) keys.
    pub tlogs: Vec<LogKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    tlogs: Vec<TransparencyLog>,
    #[serde(default)]
    certificate_authorities: Vec<Authority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransparencyLog {
    #[serde(default)]
    base_url: String,
    public_key: PublicKey,
    log_id: LogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKey {
    raw_bytes: String,
    #[serde(default)]
    valid_for: Option<ValidFor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Authority {
    #[serde(default)]
    uri: String,
    cert_chain: CertChain,
    #[serde(default)]
    valid_for: Option<ValidFor>,
}

#[derive(Deserialize)]
struct CertChain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct ValidFor {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
}

/// The media type prefix of the format read.
const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.trustedroot";

impl TrustedRoot {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, TrustedRootError> {
        let read = |source| TrustedRootError::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_TRUSTED_ROOT {
            return Err(TrustedRootError::TooLarge {
                path: path.to_owned(),
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        Self::parse(path, &bytes).map_err(|why| TrustedRootError::Malformed {
            path: path.to_owned(),
            why,
        })
    }

    /// Parses the bytes of a trusted root named `path`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, String> {
        let file: File = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if !file.media_type.is_empty() && !file.media_type.starts_with(MEDIA_TYPE) {
            return Err(format!(
                "its mediaType is {:?}, not {MEDIA_TYPE}+json",
                file.media_type
            ));
        }
        let b64 = |what: &str, text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("{what} is not base64: {e}"))
        };
        let mut authorities = Vec::new();
        for (i, ca) in file.certificate_authorities.iter().enumerate() {
            let what = format!("certificateAuthorities[{i}]");
            let chain = ca
                .cert_chain
                .certificates
                .iter()
                .map(|c| b64(&format!("a certificate of {what}"), &c.raw_bytes))
                .collect::<Result<Vec<_>, _>>()?;
            if chain.is_empty() {
                return Err(format!("{what} has no certificate"));
            }
            authorities.push(CertificateAuthority {
                uri: ca.uri.clone(),
                chain,
                valid_for: window(&what, ca.valid_for.as_ref())?,
            });
        }
        if authorities.is_empty() {
            return Err("it has no certificateAuthorities".into());
        }
        let mut tlogs = Vec::new();
        for (i, log) in file.tlogs.iter().enumerate() {
            let what = format!("tlogs[{i}]");
            tlogs.push(LogKey {
                base_url: log.base_url.clone(),
                log_id: hex::encode(b64(&format!("the logId of {what}"), &log.log_id.key_id)?),
                spki: b64(
                    &format!("the public key of {what}"),
                    &log.public_key.raw_bytes,
                )?,
                valid_for: window(&what, log.public_key.valid_for.as_ref())?,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            fingerprint: format!("sha256:{}", sha256_hex(bytes)),
            authorities,
            tlogs,
        })
    }
}

fn window(what: &str, valid_for: Option<&ValidFor>) -> Result<Window, String> {
    let Some(valid_for) = valid_for else {
        return Ok(Window::default());
    };
    let time = |t: &Option<String>| {
        t.as_deref()
            .map(|t| {
                t.parse::<jiff::Timestamp>()
                    .map(|t| t.as_second())
                    .map_err(|e| format!("the validFor of {what} is not an RFC 3339 time: {e}"))
            })
            .transpose()
    };
    Ok(Window {
        start: time(&valid_for.start)?,
        end: time(&valid_for.end)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigstore_shaped_roots_parse_and_bad_ones_say_why() {
        let root = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{"baseUrl": "https://rekor.example", "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": "AAEC", "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2021-01-12T11:53:27.000Z"}},
                "logId": {"keyId": "AAEC"}}],
            "certificateAuthorities": [{"subject": {"organization": "x", "commonName": "y"},
                "uri": "https://fulcio.example",
                "certChain": {"certificates": [{"rawBytes": "AQID"}, {"rawBytes": "BAUG"}]},
                "validFor": {"start": "2022-04-13T20:06:15.000Z", "end": "2030-01-01T00:00:00Z"}}],
            "ctlogs": [], "timestampAuthorities": []
        });
        let bytes = serde_json::to_vec(&root).expect("json");
        let parsed = TrustedRoot::parse(Path::new("r.json"), &bytes).expect("parses");
        assert_eq!(
            parsed.authorities[0].chain,
            vec![vec![1, 2, 3], vec![4, 5, 6]]
        );
        assert_eq!(parsed.tlogs[0].log_id, "000102");
        assert_eq!(parsed.authorities[0].valid_for.start, Some(1_649_880_375));
        assert!(parsed.authorities[0].valid_for.contains(1_700_000_000));
        assert!(!parsed.authorities[0].valid_for.contains(1_900_000_000));

        let bad = |root: serde_json::Value| {
            TrustedRoot::parse(
                Path::new("r.json"),
                &serde_json::to_vec(&root).expect("json"),
            )
            .expect_err("refused")
        };
        assert!(bad(serde_json::json!({"tlogs": []})).contains("no certificateAuthorities"));
        let e = bad(serde_json::json!({"certificateAuthorities": [
            {"certChain": {"certificates": [{"rawBytes": "%%"}]}}]}));
        assert!(e.contains("certificateAuthorities[0] is not base64"), "{e}");
        let e = bad(serde_json::json!({"certificateAuthorities": [
            {"certChain": {"certificates": [{"rawBytes": "AQID"}]}, "validFor": {"start": "soon"}}]}));
        assert!(e.contains("not an RFC 3339 time"), "{e}");
        let e = bad(serde_json::json!({"mediaType": "text/plain", "certificateAuthorities": []}));
        assert!(e.contains("its mediaType is"), "{e}");
    }
}
