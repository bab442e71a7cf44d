//! Who a keyless signature must come from: an OIDC issuer and a subject, each exact or a regular
//! expression, as Fulcio writes them into its certificates (the issuer in the extension
//! `1.3.6.1.4.1.57264.1.8`, or the older `.1.1`; the subject as the SAN: an email or a URI).
//! The identities are a YAML (or JSON) list in the file of `--image-verification-identities`.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use x509_cert::der::asn1::{ObjectIdentifier, Utf8StringRef};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// Fulcio's OIDC issuer extension (a DER UTF8String).
pub const ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's older OIDC issuer extension (the raw bytes of the URL).
pub const ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// subjectAltName.
const SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
/// The largest identities file read.
const MAX_FILE: u64 = 1 << 20;
/// The most identities a file may list.
const MAX_IDENTITIES: usize = 256;

/// Why the identities file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file cannot be read.
    #[error("cannot read the identities {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a list of identities.
    #[error("the identities {path} are malformed: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// One side of an identity: a string compared whole, or a pattern the whole string must match.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Equal, byte for byte.
    Exact(String),
    /// Matches the whole string (anchored: `^(?:re)$`).
    Regex(Regex),
}

impl Pattern {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == value,
            Pattern::Regex(re) => re.is_match(value),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Exact(s) => write!(f, "{s:?}"),
            // The pattern as written, without the anchors added here.
            Pattern::Regex(re) => {
                let text = re.as_str();
                let text = text
                    .strip_prefix("^(?:")
                    .and_then(|t| t.strip_suffix(")$"))
                    .unwrap_or(text);
                write!(f, "/{text}/")
            }
        }
    }
}

/// An identity a certificate may have.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The OIDC issuer.
    pub issuer: Pattern,
    /// The subject (the SAN: email or URI).
    pub subject: Pattern,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "issuer {} subject {}", self.issuer, self.subject)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    issuer_reg_exp: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    subject_reg_exp: Option<String>,
}

fn pattern(
    i: usize,
    what: &str,
    exact: Option<String>,
    re: Option<String>,
) -> Result<Pattern, String> {
    match (exact, re) {
        (Some(s), None) if !s.is_empty() => Ok(Pattern::Exact(s)),
        (None, Some(re)) if !re.is_empty() => Regex::new(&format!("^(?:{re})$"))
            .map(Pattern::Regex)
            .map_err(|e| {
                format!(
                    "identity {}: {what}RegExp is not a regular expression: {e}",
                    i + 1
                )
            }),
        (Some(_), Some(_)) => Err(format!(
            "identity {}: set one of {what} and {what}RegExp, not both",
            i + 1
        )),
        _ => Err(format!(
            "identity {}: it needs a non-empty {what} or {what}RegExp",
            i + 1
        )),
    }
}

/// Parses a YAML/JSON list of `{issuer | issuerRegExp, subject | subjectRegExp}`.
pub fn parse(text: &str) -> Result<Vec<Identity>, String> {
    let entries: Vec<Entry> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if entries.is_empty() {
        return Err("the list is empty".into());
    }
    if entries.len() > MAX_IDENTITIES {
        return Err(format!(
            "it lists {} identities, over the limit of {MAX_IDENTITIES}",
            entries.len()
        ));
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            Ok(Identity {
                issuer: pattern(i, "issuer", e.issuer, e.issuer_reg_exp)?,
                subject: pattern(i, "subject", e.subject, e.subject_reg_exp)?,
            })
        })
        .collect()
}

/// Reads the identities of `path`.
pub fn load(path: &Path) -> Result<Vec<Identity>, IdentityError> {
    let read = |source| IdentityError::Read {
        path: path.to_owned(),
        source,
    };
    let malformed = |why| IdentityError::Malformed {
        path: path.to_owned(),
        why,
    };
    if std::fs::metadata(path).map_err(read)?.len() > MAX_FILE {
        return Err(malformed(format!("over the {} MiB limit", MAX_FILE >> 20)));
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse(&text).map_err(malformed)
}

/// What a certificate says about who it was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    /// The OIDC issuer (Fulcio's extension), if any.
    pub issuer: Option<String>,
    /// The SAN's emails and URIs.
    pub subjects: Vec<String>,
}

impl CertificateIdentity {
    /// Reads the issuer extension and the SAN of the DER certificate `der`.
    pub fn of(der: &[u8]) -> Result<Self, String> {
        let cert =
            Certificate::from_der(der).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        let mut issuer_v1 = None;
        let mut issuer_v2 = None;
        let mut subjects = Vec::new();
        for ext in cert.tbs_certificate.extensions.iter().flatten() {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == ISSUER_V2 {
                let s = Utf8StringRef::from_der(value).map_err(|e| {
                    format!("its OIDC issuer extension {ISSUER_V2} is not a UTF8String: {e}")
                })?;
                issuer_v2 = Some(s.as_str().to_owned());
            } else if ext.extn_id == ISSUER_V1 {
                let s = std::str::from_utf8(value)
                    .map_err(|_| format!("its OIDC issuer extension {ISSUER_V1} is not UTF-8"))?;
                issuer_v1 = Some(s.to_owned());
            } else if ext.extn_id == SAN {
                let san = SubjectAltName::from_der(value)
                    .map_err(|e| format!("its subjectAltName is malformed: {e}"))?;
                for name in san.0 {
                    match name {
                        GeneralName::Rfc822Name(s) => subjects.push(s.as_str().to_owned()),
                        GeneralName::UniformResourceIdentifier(s) => {
                            subjects.push(s.as_str().to_owned())
                        }
                        // Other forms (DNS names, Fulcio's otherName username) are not subjects
                        // an identity can name here.
                        _ => {}
                    }
                }
            }
        }
        // Both forms hold the same URL when both are present; the newer one wins, as in cosign.
        Ok(Self {
            issuer: issuer_v2.or(issuer_v1),
            subjects,
        })
    }

    /// The first identity of `allowed` this certificate has: `(issuer, subject)`.
    pub fn matching(&self, allowed: &[Identity]) -> Option<(String, String)> {
        let issuer = self.issuer.as_deref()?;
        allowed
            .iter()
            .filter(|id| id.issuer.matches(issuer))
            .find_map(|id| self.subjects.iter().find(|s| id.subject.matches(s)))
            .map(|s| (issuer.to_owned(), s.clone()))
    }

    /// `issuer "…" subject "…"`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "issuer {} subject {}",
            self.issuer
                .as_deref()
                .map_or_else(|| "(none)".to_owned(), |i| format!("{i:?}")),
            if self.subjects.is_empty() {
                "(none)".to_owned()
            } else {
                self.subjects
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_exact_or_anchored_regex_and_bad_lists_say_why() {
        let ids = parse(
            "- {issuer: https://idp.example, subject: ci@example.com}\n\
             - {issuerRegExp: 'https://.*\\.example', subjectRegExp: '.*@team\\.example'}\n",
        )
        .expect("parses");
        let cert = |issuer: &str, subject: &str| CertificateIdentity {
            issuer: Some(issuer.into()),
            subjects: vec![subject.into()],
        };
        assert!(
            cert("https://idp.example", "ci@example.com")
                .matching(&ids)
                .is_some()
        );
        assert!(
            cert("https://idp.example", "other@example.com")
                .matching(&ids)
                .is_none()
        );
        assert!(
            cert("https://x.example", "a@team.example")
                .matching(&ids)
                .is_some()
        );
        // Anchored: a suffix or prefix does not make a match.
        assert!(
            cert("https://x.example.evil", "a@team.example")
                .matching(&ids)
                .is_none()
        );
        assert!(
            cert("https://x.example", "a@team.example.evil")
                .matching(&ids)
                .is_none()
        );
        assert_eq!(
            ids[1].to_string(),
            "issuer /https://.*\\.example/ subject /.*@team\\.example/"
        );

        assert!(parse("[]").expect_err("empty").contains("empty"));
        let e = parse("- {issuer: a}").expect_err("no subject");
        assert!(
            e.contains("identity 1: it needs a non-empty subject or subjectRegExp"),
            "{e}"
        );
        let e = parse("- {issuer: a, issuerRegExp: b, subject: c}").expect_err("both");
        assert!(e.contains("not both"), "{e}");
        let e = parse("- {issuer: a, subjectRegExp: '('}").expect_err("bad regex");
        assert!(
            e.contains("subjectRegExp is not a regular expression"),
            "{e}"
        );
        let e = parse("- {issuer: a, subject: b, email: c}").expect_err("unknown field");
        assert!(e.contains("unknown field"), "{e}");
    }
}
