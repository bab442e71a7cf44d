//! The one resolve of both modes: an object's [`Source`] becomes its bytecode. A path is read,
//! ConfigMap bytes are taken as they are, and url and image sources are deferred to the end of
//! the pass ([`Batch::resolve`]), where they are fetched in parallel ([`super::downloads`]).
//! `--require-digest` is checked here, once, for every source.

use std::collections::HashMap;
use std::time::Instant;

use bpfpin_crds::{BpfObjectSpec, SecretReference};

use super::downloads::Outcome;
use super::fetcher::Fetcher;
use super::http::seconds;
use super::image::{self, ImageRef, RegistryAuth};
use super::path::BytecodeDirs;
use crate::error::{ObjectError, Reason, StatusError};
use crate::pin::desired::DesiredObject;

/// Where an object's bytecode comes from, as far as a mode can tell without blocking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file to read (on the blocking pool, with the pass).
    Path(String),
    /// The bytes, from a ConfigMap.
    Bytes(Vec<u8>),
    /// A URL to download (on the blocking pool, with the pass), with the digest it must have.
    Url(String, Option<String>),
    /// An OCI bytecode image to pull (on the blocking pool, with the pass).
    Image(ImagePull),
    /// Why there is no bytecode.
    Failed(ObjectError),
    /// The ConfigMap's watch has not listed it yet: leave the object as it is for now.
    Waiting,
}

/// An image to pull, with the digest its `.o` must have and the credentials to pull it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePull {
    /// `bytecode.image`.
    pub reference: String,
    /// `spec.sha256`.
    pub sha256: Option<String>,
    /// `bytecode.imagePullSecret`.
    pub pull_secret: Option<SecretReference>,
    /// The pull secret's credentials once read; `None` pulls with the node's `--registry-auth`
    /// (or anonymously).
    pub auth: Option<RegistryAuth>,
    /// `bytecode.skipSignatureVerification`.
    pub skip_signature: bool,
}

/// Why an object's source gives no bytecode, before any byte is read.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SourceError {
    /// `--require-digest` is set and the image reference pins no digest.
    #[error(
        "bytecode.image {image} names no digest and --require-digest is set: write it as registry/repository@sha256:<digest>"
    )]
    ImageDigestRequired { image: String },
    /// `--require-digest` is set and `spec.sha256` is missing.
    #[error("spec.sha256 is missing and --require-digest is set: every {kind} source needs it")]
    DigestRequired { kind: &'static str },
    /// A ConfigMap source in local mode.
    #[error(
        "bytecode.configMap is not available in local mode; use bytecode.path, bytecode.url or bytecode.image"
    )]
    ConfigMapInLocalMode,
    /// `spec.bytecode` names no source.
    #[error("spec.bytecode names no source; set one of path, configMap, url, image")]
    NoSource,
    /// A deferred download whose result the pass did not take (a bug if it is ever seen).
    #[error("internal error: the download of this object was not waited for")]
    NotWaitedFor,
    /// The download runs on past the pass's wait.
    #[error(
        "still downloading {what} (for {}; bounded by --fetch-timeout {}); the previous version, if any, stays pinned",
        seconds(started.elapsed()),
        seconds(*bound)
    )]
    StillDownloading {
        what: String,
        started: Instant,
        bound: std::time::Duration,
    },
}

impl StatusError for SourceError {
    fn reason(&self) -> Reason {
        match self {
            SourceError::ImageDigestRequired { .. } | SourceError::DigestRequired { .. } => {
                Reason::DigestRequired
            }
            SourceError::ConfigMapInLocalMode => Reason::UnsupportedSource,
            SourceError::NoSource => Reason::InvalidSpec,
            SourceError::NotWaitedFor | SourceError::StillDownloading { .. } => {
                Reason::BytecodeUnavailable
            }
        }
    }
}

impl Source {
    /// The source of `spec` in local mode, where there are no ConfigMaps and no pull secrets.
    pub fn local(spec: &BpfObjectSpec) -> Source {
        let bytecode = &spec.bytecode;
        if bytecode.config_map.is_some() {
            return Source::Failed(SourceError::ConfigMapInLocalMode.into());
        }
        Source::of(spec).unwrap_or_else(|| Source::Failed(SourceError::NoSource.into()))
    }

    /// The path, url or image source of `spec` (not a ConfigMap, which a mode looks up).
    pub fn of(spec: &BpfObjectSpec) -> Option<Source> {
        let bytecode = &spec.bytecode;
        if let Some(path) = &bytecode.path {
            return Some(Source::Path(path.clone()));
        }
        if let Some(url) = &bytecode.url {
            return Some(Source::Url(url.clone(), spec.sha256.clone()));
        }
        let image = bytecode.image.as_ref()?;
        Some(Source::Image(ImagePull {
            reference: image.clone(),
            sha256: spec.sha256.clone(),
            pull_secret: bytecode.image_pull_secret.clone(),
            auth: None,
            skip_signature: bytecode.skip_signature_verification,
        }))
    }
}

/// A url or image source to fetch.
#[derive(Debug, Clone)]
enum Remote {
    /// `bytecode.url` with `spec.sha256`.
    Url { url: String, sha256: Option<String> },
    /// `bytecode.image`.
    Image {
        reference: String,
        sha256: Option<String>,
        auth: RegistryAuth,
        skip_signature: bool,
    },
}

impl Remote {
    /// What a download is known by: the same source (and credentials) downloads once.
    fn key(&self) -> String {
        match self {
            Remote::Url { url, sha256 } => format!("url {url} {}", sha256.as_deref().unwrap_or("")),
            Remote::Image {
                reference,
                sha256,
                auth,
                skip_signature,
            } => format!(
                "image {reference} {} {} {skip_signature}",
                sha256.as_deref().unwrap_or(""),
                auth.fingerprint()
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            Remote::Url { url, .. } => url.clone(),
            Remote::Image { reference, .. } => format!("image {reference}"),
        }
    }

    fn run(self, fetcher: &Fetcher) -> Outcome {
        match self {
            Remote::Url { url, sha256 } => Ok(fetcher.fetch(&url, sha256.as_deref())?),
            Remote::Image {
                reference,
                sha256,
                auth,
                skip_signature,
            } => image::pull(
                fetcher,
                &auth,
                &reference,
                sha256.as_deref(),
                skip_signature,
            ),
        }
    }
}

/// `--require-digest`: the object's source must pin what it loads: `spec.sha256`, or for an
/// image a reference with `@sha256:`.
pub fn check_digest_required(fetcher: &Fetcher, spec: &BpfObjectSpec) -> Result<(), ObjectError> {
    if !fetcher.require_digest {
        return Ok(());
    }
    let source = &spec.bytecode;
    if let Some(image) = &source.image {
        // An unparsable reference is reported by the pull itself.
        let pinned = ImageRef::parse(image).map_or(true, |r| r.digest.is_some());
        return if pinned {
            Ok(())
        } else {
            Err(SourceError::ImageDigestRequired {
                image: image.clone(),
            }
            .into())
        };
    }
    if spec.sha256.is_some() {
        return Ok(());
    }
    let kind = if source.url.is_some() {
        "bytecode.url"
    } else if source.config_map.is_some() {
        "bytecode.configMap"
    } else {
        "bytecode.path"
    };
    Err(SourceError::DigestRequired { kind }.into())
}

/// The url and image sources of one pass, fetched together at its end ([`Batch::resolve`]).
#[derive(Debug)]
pub struct Batch<'a> {
    fetcher: &'a Fetcher,
    deferred: Vec<(String, Remote)>,
}

impl<'a> Batch<'a> {
    /// A batch that defers nothing yet, fetching with `fetcher`.
    pub fn new(fetcher: &'a Fetcher) -> Self {
        Self {
            fetcher,
            deferred: Vec::new(),
        }
    }

    fn pending() -> Outcome {
        Err(SourceError::NotWaitedFor.into())
    }

    /// The one resolve of both modes: `None` for an object to leave as it is this pass (its
    /// ConfigMap is not listed yet); otherwise its bytecode, or what to put in its `bytecode`
    /// until [`Batch::resolve`] fills it in (url and image sources), or why there is none.
    pub fn bytecode(
        &mut self,
        object: &str,
        spec: &BpfObjectSpec,
        source: Source,
        dirs: &BytecodeDirs,
    ) -> Option<Outcome> {
        Some(match (check_digest_required(self.fetcher, spec), source) {
            (_, Source::Waiting) => return None,
            (_, Source::Failed(error)) | (Err(error), _) => Err(error),
            (Ok(()), Source::Path(path)) => dirs.read(&path).map_err(ObjectError::from),
            (Ok(()), Source::Bytes(bytes)) => Ok(bytes),
            (Ok(()), Source::Url(url, sha256)) => self.add(object, Remote::Url { url, sha256 }),
            (Ok(()), Source::Image(pull)) => self.add(
                object,
                Remote::Image {
                    auth: pull
                        .auth
                        .unwrap_or_else(|| self.fetcher.registry_auth.clone()),
                    reference: pull.reference,
                    sha256: pull.sha256,
                    skip_signature: pull.skip_signature,
                },
            ),
        })
    }

    /// Defers `remote` for `object`; returns the placeholder for its `bytecode`.
    fn add(&mut self, object: &str, remote: Remote) -> Outcome {
        self.deferred.push((object.to_owned(), remote));
        Self::pending()
    }

    /// Starts every deferred download, waits for them up to [`Fetcher::pass_wait`] and fills in
    /// the bytecode of their objects among `objects`.
    pub fn resolve<'o>(self, objects: impl IntoIterator<Item = &'o mut DesiredObject>) {
        if self.deferred.is_empty() {
            return;
        }
        let downloads = &self.fetcher.downloads;
        let keys: Vec<String> = self.deferred.iter().map(|(_, r)| r.key()).collect();
        for ((_, remote), key) in self.deferred.iter().zip(&keys) {
            let fetcher = self.fetcher.clone();
            let remote = remote.clone();
            downloads.start(key, move || remote.run(&fetcher));
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        downloads.wait(&refs, self.fetcher.pass_wait.map(|w| Instant::now() + w));
        let taken = downloads.take(&refs);
        let mut by_object: HashMap<String, Outcome> = HashMap::new();
        for ((object, remote), key) in self.deferred.into_iter().zip(&keys) {
            let outcome = match taken.get(key) {
                Some(Ok(outcome)) => outcome.clone(),
                Some(Err(started)) => Err(SourceError::StillDownloading {
                    what: remote.describe(),
                    started: *started,
                    bound: self.fetcher.deadline,
                }
                .into()),
                None => Self::pending(),
            };
            by_object.insert(object, outcome);
        }
        for obj in objects {
            if let Some(outcome) = by_object.remove(&obj.name) {
                obj.bytecode = outcome;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BpfObjectSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    #[test]
    fn require_digest_wants_a_sha256_or_a_pinned_image() {
        let strict = Fetcher {
            require_digest: true,
            ..Fetcher::default()
        };
        let d = "0".repeat(64);
        for ok in [
            format!("bytecode: {{path: a.o}}\nsha256: '{d}'\nprograms: [{{name: p}}]"),
            format!("bytecode: {{image: 'quay.io/x@sha256:{d}'}}\nprograms: [{{name: p}}]"),
        ] {
            assert_eq!(check_digest_required(&strict, &spec(&ok)), Ok(()), "{ok}");
        }
        for (bad, says) in [
            (
                "bytecode: {path: a.o}\nprograms: [{name: p}]",
                "bytecode.path",
            ),
            (
                "bytecode: {url: 'http://x/a.o'}\nprograms: [{name: p}]",
                "bytecode.url",
            ),
            (
                "bytecode: {configMap: {namespace: n, name: c, key: k}}\nprograms: [{name: p}]",
                "bytecode.configMap",
            ),
            (
                "bytecode: {image: 'quay.io/x:v1'}\nprograms: [{name: p}]",
                "@sha256:",
            ),
        ] {
            let e = check_digest_required(&strict, &spec(bad)).expect_err(bad);
            assert_eq!(e.reason, Reason::DigestRequired);
            assert!(e.message.contains(says), "{}", e.message);
        }
        let lax = Fetcher::default();
        assert_eq!(
            check_digest_required(&lax, &spec("bytecode: {path: a.o}\nprograms: [{name: p}]")),
            Ok(())
        );
    }
}
