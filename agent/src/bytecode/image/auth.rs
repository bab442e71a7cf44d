//! Answers to a registry's 401: HTTP basic with the registry's credentials, or a bearer token
//! from the token service its challenge names (https, or plain http on loopback only).

use std::io::Read;

use base64::Engine as _;
use serde::Deserialize;

use super::challenge::{Challenge, percent_encode};
use super::credentials::Credential;
use super::error::ImageError;
use super::reference::is_loopback_host;
use super::session::Session;
use crate::bytecode::http::{describe, final_reason};

/// The largest token service answer accepted.
const MAX_TOKEN: u64 = 1 << 20;

impl Session<'_> {
    pub(crate) fn unauthorized(&self) -> ImageError {
        let message = match self.auth.for_registry(&self.image.registry) {
            Some(c) => format!(
                "registry {} refused the credentials of {:?} (HTTP 401)",
                self.image.registry, c.username
            ),
            None => format!(
                "registry {} requires credentials (HTTP 401) and none are configured for it",
                self.image.registry
            ),
        };
        self.fail(message)
    }

    /// The `Authorization` header answering a challenge.
    pub(crate) fn authenticate(&self, challenge: Option<Challenge>) -> Result<String, ImageError> {
        let credential = self.auth.for_registry(&self.image.registry);
        let basic = |c: &Credential| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        };
        let Some(challenge) = challenge else {
            return Err(self.unauthorized());
        };
        match challenge.scheme.as_str() {
            "basic" => credential.map(basic).ok_or_else(|| self.unauthorized()),
            "bearer" => {
                let Some(realm) = challenge.params.get("realm") else {
                    return Err(self.fail(format!(
                            "registry {} sent a bearer challenge without a realm",
                            self.image.registry
                        ),
                    ));
                };
                let realm_ok = realm.starts_with("https://")
                    || realm
                        .strip_prefix("http://")
                        .and_then(|r| r.split(['/', '?']).next())
                        .is_some_and(|authority| {
                            is_loopback_host(
                                authority
                                    .strip_prefix('[')
                                    .and_then(|a| a.split(']').next())
                                    .unwrap_or_else(|| {
                                        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
                                    }),
                            )
                        });
                if !realm_ok {
                    return Err(self.fail(format!("the token service {realm} is not https"),
                    ));
                }
                let scope = challenge
                    .params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.image.repository));
                let mut url = format!(
                    "{realm}{}scope={}",
                    if realm.contains('?') { '&' } else { '?' },
                    percent_encode(&scope)
                );
                if let Some(service) = challenge.params.get("service") {
                    url.push_str(&format!("&service={}", percent_encode(service)));
                }
                self.token(&url, credential.map(basic))
            }
            other => Err(self.fail(format!(
                    "registry {} asks for {other} authentication, which is not supported (basic and bearer are)",
                    self.image.registry
                ),
            )),
        }
    }

    /// A bearer token from the token service.
    fn token(&self, url: &str, basic: Option<String>) -> Result<String, ImageError> {
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let service = url.split('?').next().unwrap_or(url);
        let left = self.time_left("token")?;
        let mut request = self.agent.get(url);
        if let Some(basic) = &basic {
            request = request.header("Authorization", basic);
        }
        let response = request
            .config()
            .timeout_global(Some(left))
            .build()
            .call()
            .map_err(|e| {
                // A refused address is `SourceNotAllowed`; anything else is retried later.
                let message = format!("token service {service} unreachable: {}", describe(&e));
                self.error(final_reason(&e), message)
            })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(MAX_TOKEN + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.fail(format!("reading from token service {service}: {e}")))?;
        if body.len() as u64 > MAX_TOKEN {
            return Err(self.fail(format!(
                "token service {service} answered more than {} MiB",
                MAX_TOKEN >> 20
            )));
        }
        if status == 401 || status == 403 {
            return Err(match self.auth.for_registry(&self.image.registry) {
                Some(c) => self.fail(format!(
                        "token service {service} refused the credentials of {:?} (HTTP {status})",
                        c.username
                    ),
                ),
                None => self.fail(format!(
                        "token service {service} requires credentials (HTTP {status}) and none are configured for registry {}",
                        self.image.registry
                    ),
                ),
            });
        }
        if !(200..300).contains(&status) {
            return Err(self.fail(format!("token service {service} answered HTTP {status}")));
        }
        let token: Token = serde_json::from_slice(&body).map_err(|e| {
            self.fail(format!(
                "token service {service} answered no JSON token: {e}"
            ))
        })?;
        match token.token.or(token.access_token) {
            Some(t) if !t.is_empty() => Ok(format!("Bearer {t}")),
            _ => Err(self.fail(format!("token service {service} answered no token"))),
        }
    }
}
