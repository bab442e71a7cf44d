//! Registry credentials from a docker `config.json` (`--registry-auth`) or an `imagePullSecret`'s
//! `.dockerconfigjson`: inline `auth` or `username`/`password` per registry, nothing else.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::pin::desired::sha256_hex;

/// One registry's credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credential {
    pub(crate) username: String,
    pub(crate) password: String,
}

/// Registry credentials by host, from a docker `config.json` (`{"auths": {"host": {"auth":
/// base64("user:password")}}}`, or `username`/`password`) or a Secret's `.dockerconfigjson`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    by_host: BTreeMap<String, Credential>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets: which registries have credentials only.
        f.debug_struct("RegistryAuth")
            .field("registries", &self.by_host.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: Option<BTreeMap<String, DockerAuth>>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers")]
    cred_helpers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl RegistryAuth {
    /// No credentials: every pull is anonymous.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Reads a docker `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_docker_config(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a docker `config.json` (also the legacy `.dockercfg`, the `auths` map alone).
    pub fn from_docker_config(json: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let config: DockerConfig = if value.get("auths").is_some() {
            serde_json::from_value(value).map_err(|e| format!("not a docker config.json: {e}"))?
        } else {
            DockerConfig {
                auths: Some(
                    serde_json::from_value(value)
                        .map_err(|e| format!("not a docker config.json: {e}"))?,
                ),
                creds_store: None,
                cred_helpers: None,
            }
        };
        if config.creds_store.is_some()
            || config.cred_helpers.as_ref().is_some_and(|h| !h.is_empty())
        {
            tracing::warn!(
                "credential helpers (credsStore, credHelpers) are not supported; only inline auths are used"
            );
        }
        let mut by_host = BTreeMap::new();
        for (key, entry) in config.auths.unwrap_or_default() {
            let credential = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| format!("auths.{key}.auth is not base64: {e}"))?;
                    let decoded = String::from_utf8(decoded)
                        .map_err(|_| format!("auths.{key}.auth is not UTF-8"))?;
                    let Some((username, password)) = decoded.split_once(':') else {
                        return Err(format!("auths.{key}.auth is not base64 of user:password"));
                    };
                    Credential {
                        username: username.to_owned(),
                        password: password.to_owned(),
                    }
                }
                (_, Some(username), Some(password)) => Credential { username, password },
                _ => {
                    tracing::warn!(
                        registry = %key,
                        "no auth or username/password for this registry (identity tokens are not supported); pulls from it are anonymous"
                    );
                    continue;
                }
            };
            by_host.insert(normalize_registry_key(&key), credential);
        }
        Ok(Self { by_host })
    }

    /// The registries that have credentials.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
    }

    /// Tells credentials apart without showing them (a hash of them all), so two pulls with
    /// different credentials are never taken for one.
    pub fn fingerprint(&self) -> String {
        let mut text = String::new();
        for (host, c) in &self.by_host {
            text.push_str(&format!("{host}\0{}\0{}\0", c.username, c.password));
        }
        sha256_hex(text.as_bytes())[..16].to_owned()
    }

    /// The credentials of `registry`, if any.
    pub(crate) fn for_registry(&self, registry: &str) -> Option<&Credential> {
        self.by_host.get(&normalize_registry_key(registry))
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/x` → `host:5000`.
fn normalize_registry_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_configs_give_credentials_by_registry() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
            "127.0.0.1:5000": {"username": "u", "password": "p:w"},
            "http://quay.io/v2/": {"auth": "cTpwOng="},
            "tokenonly.example": {"identitytoken": "x"}
        }, "credsStore": "desktop"}"#;
        let auth = RegistryAuth::from_docker_config(json).expect("parses");
        let user = |r: &str| {
            auth.for_registry(r)
                .map(|c| (c.username.clone(), c.password.clone()))
        };
        assert_eq!(user("docker.io"), Some(("user".into(), "pass".into())));
        assert_eq!(user("127.0.0.1:5000"), Some(("u".into(), "p:w".into())));
        assert_eq!(user("quay.io"), Some(("q".into(), "p:x".into())));
        assert_eq!(user("tokenonly.example"), None);
        assert_eq!(user("127.0.0.1:5001"), None);
        let debug = format!("{auth:?}");
        assert!(
            !debug.contains("pass") && debug.contains("quay.io"),
            "{debug}"
        );
        // The legacy .dockercfg: the auths map alone.
        let legacy = RegistryAuth::from_docker_config(br#"{"r.example": {"auth": "YTpi"}}"#)
            .expect("parses");
        assert_eq!(legacy.registries().collect::<Vec<_>>(), ["r.example"]);
        assert!(
            RegistryAuth::from_docker_config(b"{\"auths\": {\"x\": {\"auth\": \"%%\"}}}").is_err()
        );
        assert!(RegistryAuth::from_docker_config(b"not json").is_err());
    }
}
