//! The HTTP session of one image pull: the manifest, index and blob requests with their size,
//! digest and https guards, the one retry policy of [`crate::bytecode::http`], and a bearer
//! token or basic credentials reused for every request once a 401 asked for them ([`super::auth`]).

use std::fmt;
use std::io::Read;
use std::time::Duration;

use serde::Deserialize;

use super::challenge::parse_challenge;
use super::credentials::RegistryAuth;
use super::error::ImageError;
use super::manifest::{
    Descriptor, MANIFEST_TYPES, MAX_INDEX_DEPTH, MAX_JSON, ManifestOrIndex, node_architecture,
    select_platform,
};
use super::reference::{ImageRef, parse_digest};
use crate::bytecode::digest;
use crate::bytecode::fetcher::Fetcher;
use crate::bytecode::http::{self, Attempt, Deadline, describe, final_reason, is_final, seconds};
use crate::error::ObjectError;
use crate::error::Reason;

/// One response, read whole.
/// What a GET found: the answer, or a 404 with its body (for the registry's error text).
enum Answer {
    Found(Got),
    NotFound(Vec<u8>),
}

pub(crate) struct Got {
    status: u16,
    content_type: Option<String>,
    challenge: Option<String>,
    body: Vec<u8>,
}

/// The requests of one pull: one agent, one authorization reused for every request.
pub(crate) struct Session<'a> {
    pub(crate) fetcher: &'a Fetcher,
    pub(crate) auth: &'a RegistryAuth,
    pub(crate) image: &'a ImageRef,
    pub(crate) agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
    /// The last request gave up on transport errors, 429 or 5xx.
    pub(crate) unreachable: bool,
    /// The bound of the whole pull.
    deadline: Deadline,
}

impl<'a> Session<'a> {
    pub(crate) fn new(fetcher: &'a Fetcher, auth: &'a RegistryAuth, image: &'a ImageRef) -> Self {
        // Plain HTTP only to this host, redirects included.
        let agent = http::agent(fetcher, !image.is_loopback());
        Self {
            fetcher,
            auth,
            image,
            agent,
            base: image.api_base(),
            authorization: None,
            unreachable: false,
            deadline: Deadline::start(fetcher.deadline),
        }
    }

    /// What is left of the pull's time bound for one request, or the error saying it ran out.
    pub(crate) fn time_left(&self, what: &str) -> Result<Duration, ImageError> {
        self.deadline
            .remaining()
            .map(|left| left.min(self.fetcher.timeout))
            .ok_or_else(|| {
                self.fail(format!(
                    "registry {} timed out: the {what} did not arrive within {} (--fetch-timeout)",
                    self.image.registry,
                    seconds(self.deadline.bound())
                ))
            })
    }

    /// A failure of this pull that is retried later (`BytecodeUnavailable`).
    pub(crate) fn fail(&self, message: impl fmt::Display) -> ImageError {
        self.error(Reason::BytecodeUnavailable, message)
    }

    pub(crate) fn error(&self, reason: Reason, message: impl fmt::Display) -> ImageError {
        ImageError::Pull {
            image: self.image.to_string(),
            reason,
            message: message.to_string(),
        }
    }

    /// The manifest (or index) at `reference`, with its digest, checked against `pinned`.
    pub(crate) fn manifest(
        &mut self,
        reference: &str,
        pinned: Option<&str>,
    ) -> Result<(String, ManifestOrIndex), ImageError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let got = self.get(&url, MANIFEST_TYPES, MAX_JSON, "manifest")?;
        let digest = digest::of(&got.body);
        if let Some(pinned) = pinned
            && digest != pinned
        {
            return Err(self.error(
                Reason::DigestMismatch,
                format!("the registry served a manifest with digest {digest}, the reference pins {pinned}"),
            ));
        }
        let manifest: ManifestOrIndex = serde_json::from_slice(&got.body)
            .map_err(|e| self.fail(format!("its manifest is not JSON: {e}")))?;
        let media_type = manifest
            .media_type
            .clone()
            .or(got.content_type)
            .unwrap_or_default();
        if manifest.schema_version == Some(1)
            || media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
        {
            return Err(self.fail("it is a Docker schema 1 manifest, which is not supported; push it again as an OCI or Docker schema 2 image",
            ));
        }
        Ok((digest, manifest))
    }

    /// Follows an index to this node's platform.
    pub(crate) fn follow_index(
        &mut self,
        manifest: ManifestOrIndex,
        depth: u32,
    ) -> Result<ManifestOrIndex, ImageError> {
        let Some(entries) = &manifest.manifests else {
            return Ok(manifest);
        };
        if depth >= MAX_INDEX_DEPTH {
            return Err(self.fail("its indexes nest too deep"));
        }
        let entry = select_platform(entries, node_architecture())
            .map_err(|why| self.fail(why))?
            .clone();
        let digest =
            parse_digest(&entry.digest).map_err(|why| self.fail(format!("its index: {why}")))?;
        let (_, next) = self.manifest(&digest, Some(&digest))?;
        self.follow_index(next, depth + 1)
    }

    /// A blob, checked against its descriptor.
    pub(crate) fn blob(
        &mut self,
        descriptor: &Descriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, ImageError> {
        let digest = parse_digest(&descriptor.digest)
            .map_err(|why| self.fail(format!("its {what}: {why}")))?;
        if descriptor.size > limit {
            return Err(self.fail(format!(
                "its {what} is {} bytes, over the {} MiB limit",
                descriptor.size,
                limit >> 20
            )));
        }
        let url = format!("{}/blobs/{digest}", self.base);
        let got = self.get(&url, "*/*", limit, what)?;
        let actual = digest::of(&got.body);
        if actual != digest {
            return Err(self.error(
                Reason::DigestMismatch,
                format!("its {what} blob {digest} arrived with digest {actual}"),
            ));
        }
        Ok(got.body)
    }

    /// GET with retries (transport errors, 429 and 5xx) and authentication on a 401 challenge;
    /// a 404 is an error naming `what`.
    fn get(&mut self, url: &str, accept: &str, limit: u64, what: &str) -> Result<Got, ImageError> {
        match self.get_if_exists(url, accept, limit, what)? {
            Answer::Found(got) => Ok(got),
            Answer::NotFound(body) => Err(self.fail(format!(
                "{what} not found in registry {} (HTTP 404{})",
                self.image.registry,
                registry_error(&body)
            ))),
        }
    }

    /// [`Self::get`], where a 404 is an answer (a signature that was never pushed), not an error.
    fn get_if_exists(
        &mut self,
        url: &str,
        accept: &str,
        limit: u64,
        what: &str,
    ) -> Result<Answer, ImageError> {
        let mut authenticated = false;
        loop {
            let got = self.send(url, accept, limit, what)?;
            match got.status {
                200..=299 => return Ok(Answer::Found(got)),
                401 if !authenticated => {
                    authenticated = true;
                    let challenge = got.challenge.as_deref().and_then(parse_challenge);
                    self.authorization = Some(self.authenticate(challenge)?);
                }
                401 => {
                    // With credentials, a bearer token refused for `insufficient_scope`: the
                    // token service took the credentials but granted no pull on the repository.
                    let insufficient_scope = got
                        .challenge
                        .as_deref()
                        .and_then(parse_challenge)
                        .and_then(|c| c.params.get("error").cloned())
                        .is_some_and(|e| e == "insufficient_scope");
                    return Err(match self.auth.for_registry(&self.image.registry) {
                        Some(c) if insufficient_scope => self.fail(format!(
                                "registry {} denied {:?} access to repository {} (HTTP 401, insufficient_scope: the token service granted no pull)",
                                self.image.registry, c.username, self.image.repository
                            ),
                        ),
                        _ => self.unauthorized(),
                    });
                }
                403 => {
                    return Err(self.fail(format!(
                        "registry {} denied access to the {what} (HTTP 403{})",
                        self.image.registry,
                        registry_error(&got.body)
                    )));
                }
                404 => return Ok(Answer::NotFound(got.body)),
                status => {
                    return Err(self.fail(format!(
                        "registry {} answered HTTP {status} for the {what}{}",
                        self.image.registry,
                        registry_error(&got.body)
                    )));
                }
            }
        }
    }

    /// One request, retried on transport errors, 429 and 5xx.
    fn send(&mut self, url: &str, accept: &str, limit: u64, what: &str) -> Result<Got, ImageError> {
        let retried = http::retry(self.fetcher.attempts, &self.deadline, |_, attempt| {
            let got = match self.once(url, accept, limit, what) {
                Ok(got) if got.status == 429 || got.status >= 500 => Err(Attempt::Retry {
                    why: format!("HTTP {}{}", got.status, registry_error(&got.body)),
                    transport: false,
                }),
                other => other,
            };
            if let Err(Attempt::Retry { why, .. }) = &got {
                tracing::warn!(image = %self.image, attempt, error = %why, "registry request failed");
            }
            got
        });
        let gave_up = match retried {
            Ok(got) => return Ok(got),
            Err(Ok(fatal)) => return Err(fatal),
            Err(Err(gave_up)) => gave_up,
        };
        self.unreachable = true;
        let last = gave_up.last;
        if gave_up.timed_out {
            return Err(self.fail(format!(
                    "registry {} timed out: the {what} did not arrive within {} (--fetch-timeout); last error: {last}",
                    self.image.registry,
                    seconds(self.deadline.bound())
                ),
            ));
        }
        let state = if gave_up.transport {
            "unreachable"
        } else {
            "failing"
        };
        Err(self.fail(format!(
            "registry {} {state}: fetching the {what} failed {} times; last error: {last}",
            self.image.registry, gave_up.tries
        )))
    }

    fn once(
        &self,
        url: &str,
        accept: &str,
        limit: u64,
        what: &str,
    ) -> Result<Got, Attempt<ImageError>> {
        let left = self.time_left(what).map_err(Attempt::Fatal)?;
        let mut request = self.agent.get(url).header("Accept", accept);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request
            .config()
            .timeout_global(Some(left))
            .build()
            .call()
            .map_err(|e| match e {
                ureq::Error::RequireHttpsOnly(_) => Attempt::Fatal(self.fail(format!("registry {} redirected the {what} to plain http, which is only allowed for loopback registries", self.image.registry),
                )),
                e if is_final(&e) => Attempt::Fatal(self.error(
                    final_reason(&e),
                    format!("registry {}: the {what}: {}", self.image.registry, describe(&e)),
                )),
                e => Attempt::Retry {
                    why: describe(&e),
                    transport: true,
                },
            })?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let content_type = header("content-type");
        let challenge = header("www-authenticate");
        let declared = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if (200..300).contains(&status) && declared.is_some_and(|n| n > limit) {
            return Err(Attempt::Fatal(self.fail(format!(
                "its {what} is over the {} MiB limit (Content-Length {})",
                limit >> 20,
                declared.unwrap_or_default()
            ))));
        }
        // Error bodies are short: read little of them.
        let limit = if (200..300).contains(&status) {
            limit
        } else {
            64 << 10
        };
        let mut body = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|e| Attempt::Retry {
                why: e.to_string(),
                transport: true,
            })?;
        if (200..300).contains(&status) && body.len() as u64 > limit {
            return Err(Attempt::Fatal(
                self.fail(format!("its {what} is over the {} MiB limit", limit >> 20)),
            ));
        }
        Ok(Got {
            status,
            content_type,
            challenge,
            body,
        })
    }
}

/// The signature of an image is fetched by the session that pulls it ([`crate::signature`]):
/// the same credentials, time bound and retries.
impl crate::signature::SignatureStore for Session<'_> {
    fn signature_manifest(
        &mut self,
        tag: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ObjectError> {
        let url = format!("{}/manifests/{tag}", self.base);
        // A 404 is "not signed", which the policy judges; every other failure is the registry's.
        match self.get_if_exists(&url, MANIFEST_TYPES, limit, "signature manifest")? {
            Answer::Found(got) => Ok(Some(got.body)),
            Answer::NotFound(_) => Ok(None),
        }
    }

    fn signature_referrers(
        &mut self,
        digest: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, ObjectError> {
        let url = format!("{}/referrers/{digest}", self.base);
        // A registry without the OCI 1.1 referrers API answers 404: the tag fallback is asked.
        match self.get_if_exists(
            &url,
            "application/vnd.oci.image.index.v1+json",
            limit,
            "signature referrers",
        )? {
            Answer::Found(got) => Ok(Some(got.body)),
            Answer::NotFound(_) => Ok(None),
        }
    }

    fn signature_payload(
        &mut self,
        digest: &str,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>, ObjectError> {
        let descriptor = Descriptor {
            media_type: String::new(),
            digest: digest.to_owned(),
            size,
            platform: None,
            annotations: Default::default(),
        };
        Ok(self.blob(&descriptor, limit, "signature payload")?)
    }
}

/// `, MANIFEST_UNKNOWN: manifest unknown` from a registry's error body, or nothing.
pub(crate) fn registry_error(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<RegistryError>,
    }
    #[derive(Deserialize)]
    struct RegistryError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<Errors>(body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| format!(", {}: {}", e.code, e.message))
        .unwrap_or_default()
}
