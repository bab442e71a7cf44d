//! `bytecode.image`: an OCI image in bpfman's bytecode-image format (one layer, a tar gzipped or
//! not, holding the ELF object; labels `io.ebpf.programs` / `io.ebpf.maps` in its config), pulled
//! over the OCI distribution API.
//!
//! - The manifest is asked for as an OCI manifest or index or a Docker v2 schema 2 manifest or
//!   list; an index leads to this node's platform (`linux/<arch>`) or to its only manifest.
//! - Every blob is checked against its descriptor's sha256; a reference that pins a digest
//!   (`repo@sha256:...`) must get a manifest with that digest; `spec.sha256`, when set, must be the
//!   `.o`'s.
//! - Anonymous, or with credentials of a docker `config.json` (`--registry-auth`): HTTP basic or
//!   the bearer-token challenge (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`).
//! - Plain `http://` only for loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`), https
//!   for every other, redirects included.
//! - The `.o` is cached in the [`Fetcher`]'s cache by its digest, like a URL download, with an
//!   index from the image's manifest digest to it: a digest-pinned reference that was pulled once
//!   is served from the node without the network, and a tag that resolves to a known manifest
//!   downloads no blob.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{ObjectError, Reason};
use crate::fetch::{Deadline, Fetcher, describe, final_reason, is_final, seconds};
use crate::pin::desired::sha256_hex;

/// The label listing an image's programs (`{"name": "type", ...}`).
pub const PROGRAMS_LABEL: &str = "io.ebpf.programs";
/// The label listing an image's maps (`{"name": "type", ...}`).
pub const MAPS_LABEL: &str = "io.ebpf.maps";
/// The label of bpfman's first bytecode-image format, accepted in place of [`PROGRAMS_LABEL`].
const LEGACY_PROGRAM_LABEL: &str = "io.ebpf.program_name";

/// The manifest media types asked for (`Accept`).
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest or image config accepted.
const MAX_JSON: u64 = 4 << 20;
/// The most indexes followed from the reference to a manifest.
const MAX_INDEX_DEPTH: u32 = 2;
/// The most entries a layer may have (a bytecode image holds a few files).
pub const MAX_LAYER_ENTRIES: usize = 10_000;
/// The largest token service answer accepted.
const MAX_TOKEN: u64 = 1 << 20;

/// A parsed image reference: `[registry/]repository[:tag][@sha256:digest]`, as Docker reads it
/// (no registry: Docker Hub; a first component with a `.` or `:`, or `localhost`, is a registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference as written.
    pub original: String,
    /// `host[:port]` (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository (`library/x` for Docker Hub's official images).
    pub repository: String,
    /// The tag (`latest` when neither a tag nor a digest is given).
    pub tag: Option<String>,
    /// The pinned manifest digest, `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl ImageRef {
    /// Parses a reference; the error says what is wrong with it.
    pub fn parse(reference: &str) -> Result<Self, String> {
        if reference.is_empty() {
            return Err("the reference is empty".into());
        }
        if reference.contains("://") {
            return Err(
                "an image reference has no scheme: write registry/repository:tag or registry/repository@sha256:<digest>"
                    .into(),
            );
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("the reference contains whitespace".into());
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
            None => (reference, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            let mut chars = tag.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if !first_ok
                || tag.len() > 128
                || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                return Err(format!(
                    "invalid tag {tag:?}: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_ascii_lowercase(), rest.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
            _ => registry,
        };
        if !registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
        {
            return Err(format!("invalid registry host {registry:?}"));
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || repository.len() > 255
            || !repository.split('/').all(valid_path_component)
        {
            return Err(format!(
                "invalid repository {repository:?}: lowercase letters and digits separated by '.', '_', '__', '-' or '/'"
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            original: reference.to_owned(),
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host without its port (and without IPv6 brackets).
    pub fn host(&self) -> &str {
        let r = self.registry.as_str();
        if let Some(rest) = r.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        r.rsplit_once(':').map_or(r, |(host, _)| host)
    }

    /// Whether the registry is on this host, where plain HTTP is allowed.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }

    /// The base URL of the repository's API: `<scheme>://<host>/v2/<repository>`.
    pub fn api_base(&self) -> String {
        let scheme = if self.is_loopback() { "http" } else { "https" };
        let host = if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        };
        format!("{scheme}://{host}/v2/{}", self.repository)
    }

    /// What the manifest is asked for by: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn parse_digest(digest: &str) -> Result<String, String> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(digest.to_owned())
        }
        Some((algorithm, _)) if algorithm != "sha256" => Err(format!(
            "digest {digest:?}: only sha256 digests are supported"
        )),
        _ => Err(format!(
            "invalid digest {digest:?}: expected sha256:<64 lowercase hex digits>"
        )),
    }
}

/// One registry's credentials.
#[derive(Clone, PartialEq, Eq)]
struct Credential {
    username: String,
    password: String,
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
    #[serde(default)]
    auths: Option<BTreeMap<String, DockerAuth>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
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

    fn for_registry(&self, registry: &str) -> Option<&Credential> {
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

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercase).
    pub scheme: String,
    /// Its parameters (`realm`, `service`, `scope`), names lowercase.
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://x/token",service="x",scope="repository:a:pull"` (quoted or bare
/// values; commas inside quotes kept).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if name.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_owned();
        }
        params.insert(name, value);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An OCI content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// The size in bytes.
    #[serde(default)]
    pub size: u64,
    /// For index entries: the platform.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Annotations (index entries: buildx marks attestations with them).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
}

/// A manifest or an index, as far as pulling needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOrIndex {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// This node's architecture as OCI platforms name it.
pub fn node_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The entry of an index to follow: `linux/<arch>`, or the only one (attestations aside).
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    architecture: &str,
) -> Result<&'a Descriptor, String> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.annotations
                .get("vnd.docker.reference.type")
                .is_none_or(|t| t != "attestation-manifest")
        })
        .collect();
    if let Some(d) = candidates.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == architecture)
    }) {
        return Ok(d);
    }
    match candidates.as_slice() {
        [only] => Ok(only),
        [] => Err("the image index lists no manifest".into()),
        several => Err(format!(
            "the image index has no linux/{architecture} manifest (it has {})",
            several
                .iter()
                .map(|d| d.platform.as_ref().map_or_else(
                    || "no platform".to_owned(),
                    |p| format!("{}/{}", p.os, p.architecture)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ImageConfigSection>,
}

#[derive(Deserialize)]
struct ImageConfigSection {
    #[serde(default, rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

/// The labels of an image config that make it a bytecode image; the error says what is missing.
pub fn check_labels(config: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let config: ImageConfig =
        serde_json::from_slice(config).map_err(|e| format!("its config is not JSON: {e}"))?;
    let labels = config.config.and_then(|c| c.labels).unwrap_or_default();
    if let Some(programs) = labels.get(PROGRAMS_LABEL) {
        serde_json::from_str::<BTreeMap<String, String>>(programs).map_err(|e| {
            format!(
                "its label {PROGRAMS_LABEL} is not a JSON object of program names to types: {e}"
            )
        })?;
    } else if !labels.contains_key(LEGACY_PROGRAM_LABEL) {
        return Err(format!(
            "it is not a bytecode image: its config has no {PROGRAMS_LABEL} label"
        ));
    }
    if let Some(maps) = labels.get(MAPS_LABEL) {
        serde_json::from_str::<BTreeMap<String, String>>(maps).map_err(|e| {
            format!("its label {MAPS_LABEL} is not a JSON object of map names to types: {e}")
        })?;
    }
    Ok(labels)
}

/// The single `*.o` regular file of a layer (a tar, gzipped or not): its path and bytes.
pub fn extract_object(layer: &[u8], max_bytes: u64) -> Result<(String, Vec<u8>), String> {
    let reader: Box<dyn Read + '_> = if layer.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else if layer.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err("its layer is zstd-compressed; push it as a tar or a gzipped tar".into());
    } else {
        Box::new(layer)
    };
    // A bound on what is decompressed, against gzip bombs.
    let mut archive = tar::Archive::new(reader.take(max_bytes.saturating_mul(4) + (1 << 20)));
    let entries = archive
        .entries()
        .map_err(|e| format!("its layer is not a tar archive: {e}"))?;
    let mut objects: Vec<String> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    let mut found: Option<Vec<u8>> = None;
    let mut not_regular: Vec<String> = Vec::new();
    for (i, entry) in entries.enumerate() {
        if i >= MAX_LAYER_ENTRIES {
            return Err(format!(
                "its layer has more than {MAX_LAYER_ENTRIES} entries; a bytecode image holds a few files"
            ));
        }
        let mut entry = entry.map_err(|e| format!("its layer is not a valid tar archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("its layer has an invalid path: {e}"))?
            .to_string_lossy()
            .into_owned();
        // Nothing is written to disk, but a name that climbs out is no bytecode image.
        if path.starts_with('/') || path.split('/').any(|c| c == "..") {
            let shown: String = path.chars().take(200).collect();
            return Err(format!(
                "its layer has an entry with an unsafe path {shown:?}"
            ));
        }
        let path = path.trim_start_matches("./").to_owned();
        let file_name = path.rsplit('/').next().unwrap_or(&path);
        // Links, devices, FIFOs and directories hold no bytecode: only regular files count.
        let kind = entry.header().entry_type();
        if !kind.is_file() || file_name.starts_with(".wh.") {
            if path.ends_with(".o") && !kind.is_dir() && not_regular.len() < 10 {
                not_regular.push(format!(
                    "{} is a {kind:?}",
                    path.chars().take(200).collect::<String>()
                ));
            }
            continue;
        }
        if !path.ends_with(".o") {
            if others.len() < 10 {
                others.push(path.chars().take(200).collect());
            }
            continue;
        }
        if objects.len() >= 10 {
            continue;
        }
        objects.push(path);
        if objects.len() == 1 {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(max_bytes + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("reading {} from its layer: {e}", objects[0]))?;
            if bytes.len() as u64 > max_bytes {
                return Err(format!(
                    "{} is larger than the {} MiB limit for bytecode",
                    objects[0],
                    max_bytes >> 20
                ));
            }
            found = Some(bytes);
        }
    }
    match (objects.as_slice(), found) {
        ([one], Some(bytes)) => Ok((one.clone(), bytes)),
        ([], _) if !not_regular.is_empty() => Err(format!(
            "its layer has no regular *.o file ({}, not a regular file)",
            not_regular.join(", ")
        )),
        ([], _) => {
            let listed = if others.is_empty() {
                "it holds no file".to_owned()
            } else {
                format!("it holds {}", others.join(", "))
            };
            Err(format!("its layer has no *.o file ({listed})"))
        }
        (several, _) => Err(format!(
            "its layer has several *.o files ({}); a bytecode image holds one",
            several.join(", ")
        )),
    }
}

/// The `.o` of `reference`, which must have digest `sha256` when set. Digest-pinned references
/// pulled before are served from the cache without the network.
pub fn pull(
    fetcher: &Fetcher,
    auth: &RegistryAuth,
    reference: &str,
    sha256: Option<&str>,
) -> Result<Vec<u8>, ObjectError> {
    let image = ImageRef::parse(reference).map_err(|why| {
        ObjectError::new(
            Reason::InvalidSpec,
            format!("bytecode.image {reference:?}: {why}"),
        )
    })?;
    let cache = fetcher.cache_dir.as_deref().map(Cache);
    if let (Some(cache), Some(digest)) = (&cache, &image.digest)
        && let Some(bytes) = cache.object_of(digest)
    {
        tracing::debug!(image = %image, "bytecode from the cache");
        return check_object(&image, bytes, sha256);
    }
    let mut session = Session::new(fetcher, auth, &image);
    let (digest, manifest) = match session
        .manifest(image.manifest_reference(), image.digest.as_deref())
    {
        Ok(found) => found,
        Err(e) => {
            // A registry outage does not take a tag away: its digest at the last pull stands.
            if session.unreachable
                && let Some(cache) = &cache
                && let Some(digest) = cache.digest_of_tag(&image)
                && let Some(bytes) = cache.object_of(&digest)
            {
                tracing::warn!(image = %image, %digest, error = %e, "registry unreachable: using the digest of the tag's last pull");
                return check_object(&image, bytes, sha256);
            }
            return Err(e);
        }
    };
    if let Some(cache) = &cache
        && let Some(bytes) = cache.object_of(&digest)
    {
        tracing::debug!(image = %image, %digest, "the manifest is known: bytecode from the cache");
        cache.store_tag(&image, &digest);
        return check_object(&image, bytes, sha256);
    }
    // Two objects pulling one image at once (a tag and its digest) download its blobs once: the
    // second waits for the first, then finds the .o in the cache.
    let lock = digest_lock(&digest);
    let _pulling = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(cache) = &cache
        && let Some(bytes) = cache.object_of(&digest)
    {
        cache.store_tag(&image, &digest);
        return check_object(&image, bytes, sha256);
    }
    let manifest = session.follow_index(manifest, 0)?;
    let invalid = |why: String| {
        ObjectError::new(Reason::BytecodeUnavailable, format!("image {image}: {why}"))
    };
    let Some(config) = &manifest.config else {
        return Err(invalid("its manifest has no config".into()));
    };
    let layers = manifest.layers.as_deref().unwrap_or_default();
    let [layer] = layers else {
        return Err(invalid(format!(
            "it has {} layers; a bytecode image has one, holding the .o",
            layers.len()
        )));
    };
    let config = session.blob(config, MAX_JSON, "config")?;
    let labels = check_labels(&config).map_err(invalid)?;
    tracing::debug!(
        image = %image,
        programs = labels.get(PROGRAMS_LABEL).map(String::as_str).unwrap_or(""),
        maps = labels.get(MAPS_LABEL).map(String::as_str).unwrap_or(""),
        "bytecode image config"
    );
    let layer = session.blob(layer, fetcher.max_bytes.saturating_add(1 << 20), "layer")?;
    let (path, bytes) = extract_object(&layer, fetcher.max_bytes).map_err(invalid)?;
    let bytes = check_object(&image, bytes, sha256)?;
    if let Some(cache) = &cache {
        cache.store(&digest, &bytes);
        cache.store_tag(&image, &digest);
    }
    tracing::info!(image = %image, %digest, file = %path, bytes = bytes.len(), "pulled bytecode image");
    Ok(bytes)
}

/// One lock per manifest digest being pulled (dropped with its last user).
fn digest_lock(digest: &str) -> std::sync::Arc<std::sync::Mutex<()>> {
    use std::sync::{Arc, Mutex, OnceLock, Weak};
    static LOCKS: OnceLock<Mutex<BTreeMap<String, Weak<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks.retain(|_, w| w.strong_count() > 0);
    if let Some(lock) = locks.get(digest).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(Mutex::new(()));
    locks.insert(digest.to_owned(), Arc::downgrade(&lock));
    lock
}

fn check_object(
    image: &ImageRef,
    bytes: Vec<u8>,
    sha256: Option<&str>,
) -> Result<Vec<u8>, ObjectError> {
    if let Some(want) = sha256 {
        let got = sha256_hex(&bytes);
        if got != want {
            return Err(ObjectError::new(
                Reason::DigestMismatch,
                format!("the .o of image {image} has sha256 {got}, spec.sha256 says {want}"),
            ));
        }
    }
    Ok(bytes)
}

/// The fetch cache, shared with `bytecode.url`: `<dir>/<sha256>.bpf.o`, and for images
/// `<dir>/<manifest sha256>.image` holding the `.o`'s sha256 and `<dir>/<sha256 of the
/// reference>.tag` holding the manifest digest a tag had at its last pull.
struct Cache<'a>(&'a Path);

impl Cache<'_> {
    fn tag_file(&self, image: &ImageRef) -> Option<PathBuf> {
        let tag = image.tag.as_deref().filter(|_| image.digest.is_none())?;
        let key = format!("{}/{}:{tag}", image.registry, image.repository);
        Some(self.0.join(format!("{}.tag", sha256_hex(key.as_bytes()))))
    }

    fn digest_of_tag(&self, image: &ImageRef) -> Option<String> {
        let digest = std::fs::read_to_string(self.tag_file(image)?).ok()?;
        parse_digest(digest.trim()).ok()
    }

    fn store_tag(&self, image: &ImageRef, digest: &str) {
        if let Some(file) = self.tag_file(image)
            && self.digest_of_tag(image).as_deref() != Some(digest)
            && let Err(e) = write_atomically(&file, digest.as_bytes())
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot cache a tag's digest");
        }
    }

    fn index(&self, manifest_digest: &str) -> PathBuf {
        let hex = manifest_digest
            .strip_prefix("sha256:")
            .unwrap_or(manifest_digest);
        self.0.join(format!("{hex}.image"))
    }

    fn object_of(&self, manifest_digest: &str) -> Option<Vec<u8>> {
        let index = self.index(manifest_digest);
        let hex = std::fs::read_to_string(&index).ok()?;
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let _ = std::fs::remove_file(&index);
            return None;
        }
        let path = self.0.join(format!("{hex}.bpf.o"));
        let bytes = std::fs::read(&path).ok()?;
        if sha256_hex(&bytes) == hex {
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(&path); // corrupt: pull again
            None
        }
    }

    fn store(&self, manifest_digest: &str, bytes: &[u8]) {
        let hex = sha256_hex(bytes);
        let object = self.0.join(format!("{hex}.bpf.o"));
        let written = write_atomically(&object, bytes)
            .and_then(|()| write_atomically(&self.index(manifest_digest), hex.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot cache bytecode");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// One response, read whole.
struct Got {
    status: u16,
    content_type: Option<String>,
    challenge: Option<String>,
    body: Vec<u8>,
}

enum Attempt {
    Retry(String),
    Fatal(ObjectError),
}

/// The requests of one pull: one agent, one authorization reused for every request.
struct Session<'a> {
    fetcher: &'a Fetcher,
    auth: &'a RegistryAuth,
    image: &'a ImageRef,
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
    /// The last request gave up on transport errors, 429 or 5xx.
    unreachable: bool,
    /// The bound of the whole pull.
    deadline: Deadline,
}

impl<'a> Session<'a> {
    fn new(fetcher: &'a Fetcher, auth: &'a RegistryAuth, image: &'a ImageRef) -> Self {
        // Plain HTTP only to this host, redirects included.
        let agent = fetcher.http_agent(!image.is_loopback());
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
    fn time_left(&self, what: &str) -> Result<Duration, ObjectError> {
        self.deadline
            .remaining()
            .map(|left| left.min(self.fetcher.timeout))
            .ok_or_else(|| {
                self.error(
                    Reason::BytecodeUnavailable,
                    format!(
                        "registry {} timed out: the {what} did not arrive within {} (--fetch-timeout)",
                        self.image.registry,
                        seconds(self.deadline.bound())
                    ),
                )
            })
    }

    fn error(&self, reason: Reason, message: impl fmt::Display) -> ObjectError {
        ObjectError::new(reason, format!("image {}: {message}", self.image))
    }

    /// The manifest (or index) at `reference`, with its digest, checked against `pinned`.
    fn manifest(
        &mut self,
        reference: &str,
        pinned: Option<&str>,
    ) -> Result<(String, ManifestOrIndex), ObjectError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let got = self.get(&url, MANIFEST_TYPES, MAX_JSON, "manifest")?;
        let digest = format!("sha256:{}", sha256_hex(&got.body));
        if let Some(pinned) = pinned
            && digest != pinned
        {
            return Err(self.error(
                Reason::DigestMismatch,
                format!("the registry served a manifest with digest {digest}, the reference pins {pinned}"),
            ));
        }
        let manifest: ManifestOrIndex = serde_json::from_slice(&got.body).map_err(|e| {
            self.error(
                Reason::BytecodeUnavailable,
                format!("its manifest is not JSON: {e}"),
            )
        })?;
        let media_type = manifest
            .media_type
            .clone()
            .or(got.content_type)
            .unwrap_or_default();
        if manifest.schema_version == Some(1)
            || media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
        {
            return Err(self.error(
                Reason::BytecodeUnavailable,
                "it is a Docker schema 1 manifest, which is not supported; push it again as an OCI or Docker schema 2 image",
            ));
        }
        Ok((digest, manifest))
    }

    /// Follows an index to this node's platform.
    fn follow_index(
        &mut self,
        manifest: ManifestOrIndex,
        depth: u32,
    ) -> Result<ManifestOrIndex, ObjectError> {
        let Some(entries) = &manifest.manifests else {
            return Ok(manifest);
        };
        if depth >= MAX_INDEX_DEPTH {
            return Err(self.error(Reason::BytecodeUnavailable, "its indexes nest too deep"));
        }
        let entry = select_platform(entries, node_architecture())
            .map_err(|why| self.error(Reason::BytecodeUnavailable, why))?
            .clone();
        let digest = parse_digest(&entry.digest)
            .map_err(|why| self.error(Reason::BytecodeUnavailable, format!("its index: {why}")))?;
        let (_, next) = self.manifest(&digest, Some(&digest))?;
        self.follow_index(next, depth + 1)
    }

    /// A blob, checked against its descriptor.
    fn blob(
        &mut self,
        descriptor: &Descriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, ObjectError> {
        let digest = parse_digest(&descriptor.digest)
            .map_err(|why| self.error(Reason::BytecodeUnavailable, format!("its {what}: {why}")))?;
        if descriptor.size > limit {
            return Err(self.error(
                Reason::BytecodeUnavailable,
                format!(
                    "its {what} is {} bytes, over the {} MiB limit",
                    descriptor.size,
                    limit >> 20
                ),
            ));
        }
        let url = format!("{}/blobs/{digest}", self.base);
        let got = self.get(&url, "*/*", limit, what)?;
        let actual = format!("sha256:{}", sha256_hex(&got.body));
        if actual != digest {
            return Err(self.error(
                Reason::DigestMismatch,
                format!("its {what} blob {digest} arrived with digest {actual}"),
            ));
        }
        Ok(got.body)
    }

    /// GET with retries (transport errors, 429 and 5xx) and authentication on a 401 challenge.
    fn get(&mut self, url: &str, accept: &str, limit: u64, what: &str) -> Result<Got, ObjectError> {
        let mut authenticated = false;
        loop {
            let got = self.send(url, accept, limit, what)?;
            match got.status {
                200..=299 => return Ok(got),
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
                        Some(c) if insufficient_scope => self.error(
                            Reason::BytecodeUnavailable,
                            format!(
                                "registry {} denied {:?} access to repository {} (HTTP 401, insufficient_scope: the token service granted no pull)",
                                self.image.registry, c.username, self.image.repository
                            ),
                        ),
                        _ => self.unauthorized(),
                    });
                }
                403 => {
                    return Err(self.error(
                        Reason::BytecodeUnavailable,
                        format!(
                            "registry {} denied access to the {what} (HTTP 403{})",
                            self.image.registry,
                            registry_error(&got.body)
                        ),
                    ));
                }
                404 => {
                    return Err(self.error(
                        Reason::BytecodeUnavailable,
                        format!(
                            "{what} not found in registry {} (HTTP 404{})",
                            self.image.registry,
                            registry_error(&got.body)
                        ),
                    ));
                }
                status => {
                    return Err(self.error(
                        Reason::BytecodeUnavailable,
                        format!(
                            "registry {} answered HTTP {status} for the {what}{}",
                            self.image.registry,
                            registry_error(&got.body)
                        ),
                    ));
                }
            }
        }
    }

    fn unauthorized(&self) -> ObjectError {
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
        self.error(Reason::BytecodeUnavailable, message)
    }

    /// The `Authorization` header answering a challenge.
    fn authenticate(&self, challenge: Option<Challenge>) -> Result<String, ObjectError> {
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
                    return Err(self.error(
                        Reason::BytecodeUnavailable,
                        format!(
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
                    return Err(self.error(
                        Reason::BytecodeUnavailable,
                        format!("the token service {realm} is not https"),
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
            other => Err(self.error(
                Reason::BytecodeUnavailable,
                format!(
                    "registry {} asks for {other} authentication, which is not supported (basic and bearer are)",
                    self.image.registry
                ),
            )),
        }
    }

    /// A bearer token from the token service.
    fn token(&self, url: &str, basic: Option<String>) -> Result<String, ObjectError> {
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
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
                let reason = if is_final(&e) {
                    final_reason(&e)
                } else {
                    Reason::BytecodeUnavailable
                };
                self.error(
                    reason,
                    format!("token service {service} unreachable: {}", describe(&e)),
                )
            })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(MAX_TOKEN + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                self.error(
                    Reason::BytecodeUnavailable,
                    format!("reading from token service {service}: {e}"),
                )
            })?;
        if body.len() as u64 > MAX_TOKEN {
            return Err(self.error(
                Reason::BytecodeUnavailable,
                format!(
                    "token service {service} answered more than {} MiB",
                    MAX_TOKEN >> 20
                ),
            ));
        }
        if status == 401 || status == 403 {
            return Err(match self.auth.for_registry(&self.image.registry) {
                Some(c) => self.error(
                    Reason::BytecodeUnavailable,
                    format!(
                        "token service {service} refused the credentials of {:?} (HTTP {status})",
                        c.username
                    ),
                ),
                None => self.error(
                    Reason::BytecodeUnavailable,
                    format!(
                        "token service {service} requires credentials (HTTP {status}) and none are configured for registry {}",
                        self.image.registry
                    ),
                ),
            });
        }
        if !(200..300).contains(&status) {
            return Err(self.error(
                Reason::BytecodeUnavailable,
                format!("token service {service} answered HTTP {status}"),
            ));
        }
        let token: Token = serde_json::from_slice(&body).map_err(|e| {
            self.error(
                Reason::BytecodeUnavailable,
                format!("token service {service} answered no JSON token: {e}"),
            )
        })?;
        match token.token.or(token.access_token) {
            Some(t) if !t.is_empty() => Ok(format!("Bearer {t}")),
            _ => Err(self.error(
                Reason::BytecodeUnavailable,
                format!("token service {service} answered no token"),
            )),
        }
    }

    /// One request, retried on transport errors, 429 and 5xx.
    fn send(
        &mut self,
        url: &str,
        accept: &str,
        limit: u64,
        what: &str,
    ) -> Result<Got, ObjectError> {
        let attempts = self.fetcher.attempts.max(1);
        let mut last = String::new();
        let mut unreachable = false;
        for attempt in 0..attempts {
            if attempt > 0
                && !self
                    .deadline
                    .sleep(Duration::from_millis(200 << (attempt - 1)))
            {
                break;
            }
            if self.deadline.remaining().is_none() {
                break;
            }
            match self.once(url, accept, limit, what) {
                Ok(got) if got.status == 429 || got.status >= 500 => {
                    unreachable = false;
                    last = format!("HTTP {}{}", got.status, registry_error(&got.body));
                }
                Ok(got) => return Ok(got),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => {
                    unreachable = true;
                    last = why;
                }
            }
            tracing::warn!(image = %self.image, attempt = attempt + 1, error = %last, "registry request failed");
        }
        self.unreachable = true;
        if self.deadline.remaining().is_none() {
            return Err(self.error(
                Reason::BytecodeUnavailable,
                format!(
                    "registry {} timed out: the {what} did not arrive within {} (--fetch-timeout); last error: {last}",
                    self.image.registry,
                    seconds(self.deadline.bound())
                ),
            ));
        }
        let state = if unreachable {
            "unreachable"
        } else {
            "failing"
        };
        Err(self.error(
            Reason::BytecodeUnavailable,
            format!(
                "registry {} {state}: fetching the {what} failed {attempts} times; last error: {last}",
                self.image.registry
            ),
        ))
    }

    fn once(&self, url: &str, accept: &str, limit: u64, what: &str) -> Result<Got, Attempt> {
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
                ureq::Error::RequireHttpsOnly(_) => Attempt::Fatal(self.error(
                    Reason::BytecodeUnavailable,
                    format!("registry {} redirected the {what} to plain http, which is only allowed for loopback registries", self.image.registry),
                )),
                e if is_final(&e) => Attempt::Fatal(self.error(
                    final_reason(&e),
                    format!("registry {}: the {what}: {}", self.image.registry, describe(&e)),
                )),
                e => Attempt::Retry(describe(&e)),
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
            return Err(Attempt::Fatal(self.error(
                Reason::BytecodeUnavailable,
                format!(
                    "its {what} is over the {} MiB limit (Content-Length {})",
                    limit >> 20,
                    declared.unwrap_or_default()
                ),
            )));
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
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        if (200..300).contains(&status) && body.len() as u64 > limit {
            return Err(Attempt::Fatal(self.error(
                Reason::BytecodeUnavailable,
                format!("its {what} is over the {} MiB limit", limit >> 20),
            )));
        }
        Ok(Got {
            status,
            content_type,
            challenge,
            body,
        })
    }
}

/// `, MANIFEST_UNKNOWN: manifest unknown` from a registry's error body, or nothing.
fn registry_error(body: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_as_docker_reads_them() {
        let r = parse("quay.io/bpfman-bytecode/xdp_pass:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("quay.io", "bpfman-bytecode/xdp_pass", Some("v1"))
        );
        assert_eq!(r.api_base(), "https://quay.io/v2/bpfman-bytecode/xdp_pass");
        let r = parse("counter");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/counter", Some("latest"))
        );
        assert_eq!(
            r.api_base(),
            "https://registry-1.docker.io/v2/library/counter"
        );
        let r = parse(&format!("127.0.0.1:5000/a/b@{D}"));
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.api_base(), "http://127.0.0.1:5000/v2/a/b");
        let r = parse(&format!("localhost/x:v2@{D}"));
        assert_eq!((r.host(), r.tag.as_deref()), ("localhost", Some("v2")));
        assert_eq!(r.manifest_reference(), D, "a digest wins over a tag");
        assert!(parse("[::1]:5000/x").is_loopback());
        assert_eq!(parse("[::1]:5000/x").api_base(), "http://[::1]:5000/v2/x");
        // Only loopback hosts get plain HTTP.
        assert!(!parse("localhost.example.com/x").is_loopback());
        assert!(
            parse("registry.example:5000/x")
                .api_base()
                .starts_with("https://")
        );
        assert!(parse("10.0.0.1:5000/x").api_base().starts_with("https://"));
        assert!(parse("127.0.0.2:5000/x").api_base().starts_with("http://"));

        for bad in [
            "",
            "https://quay.io/x:v1",
            "quay.io/X:v1",
            "quay.io/x:",
            "quay.io/x:-v1",
            "quay.io/x@sha256:abc",
            "quay.io/x@sha512:abc",
            "quay.io//x",
            "quay.io/x y",
            "quay.io/x-/y",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} is refused");
        }
        assert!(
            ImageRef::parse("quay.io/x@sha512:abc")
                .expect_err("refused")
                .contains("only sha256")
        );
    }

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .expect("challenge");
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="my \"realm\"""#).expect("challenge");
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], r#"my "realm""#);
        let c = parse_challenge("Bearer realm=https://x/t, service=x").expect("challenge");
        assert_eq!(c.params["realm"], "https://x/t");
        assert_eq!(c.params["service"], "x");
        assert!(parse_challenge("").is_none());
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

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

    fn descriptor(arch: Option<&str>, attestation: bool) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: D.into(),
            size: 1,
            platform: arch.map(|a| Platform {
                architecture: a.into(),
                os: if a == "unknown" { "unknown" } else { "linux" }.into(),
            }),
            annotations: if attestation {
                [(
                    "vnd.docker.reference.type".to_owned(),
                    "attestation-manifest".to_owned(),
                )]
                .into()
            } else {
                BTreeMap::new()
            },
        }
    }

    #[test]
    fn an_index_leads_to_this_platform_or_its_only_manifest() {
        let both = [
            descriptor(Some("arm64"), false),
            descriptor(Some("amd64"), false),
        ];
        let chosen = select_platform(&both, "amd64").expect("amd64");
        assert_eq!(
            chosen.platform.as_ref().map(|p| p.architecture.as_str()),
            Some("amd64")
        );
        let err = select_platform(&both, "s390x").expect_err("no s390x");
        assert!(err.contains("linux/arm64, linux/amd64"), "{err}");
        let only = [
            descriptor(Some("arm64"), false),
            descriptor(Some("unknown"), true),
        ];
        assert_eq!(
            select_platform(&only, "amd64")
                .expect("only")
                .platform
                .as_ref()
                .map(|p| p.architecture.as_str()),
            Some("arm64")
        );
        assert!(select_platform(&[], "amd64").is_err());
    }

    #[test]
    fn configs_must_carry_the_bytecode_labels() {
        let ok = br#"{"config": {"Labels": {"io.ebpf.programs": "{\"count_getpid\": \"tracepoint\"}", "io.ebpf.maps": "{\"counts\": \"array\"}"}}}"#;
        assert!(check_labels(ok).is_ok());
        let legacy = br#"{"config": {"Labels": {"io.ebpf.program_name": "pass"}}}"#;
        assert!(check_labels(legacy).is_ok());
        let none = br#"{"config": {}}"#;
        assert!(
            check_labels(none)
                .expect_err("no labels")
                .contains("no io.ebpf.programs label")
        );
        let bad = br#"{"config": {"Labels": {"io.ebpf.programs": "pass"}}}"#;
        assert!(
            check_labels(bad)
                .expect_err("bad label")
                .contains("not a JSON object")
        );
        assert!(check_labels(b"[").is_err());
    }

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, path, *data)
                .expect("append");
        }
        builder.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("gzip");
        encoder.finish().expect("gzip")
    }

    #[test]
    fn the_layer_must_hold_exactly_one_object() {
        let one = tar(&[("./bpf.o", b"elf"), ("README", b"hi")]);
        assert_eq!(
            extract_object(&one, 1 << 20),
            Ok(("bpf.o".into(), b"elf".to_vec()))
        );
        assert_eq!(
            extract_object(&gzip(&one), 1 << 20),
            Ok(("bpf.o".into(), b"elf".to_vec()))
        );
        let nested = tar(&[("opt/bytecode/prog.o", b"elf2")]);
        assert_eq!(
            extract_object(&gzip(&nested), 1 << 20),
            Ok(("opt/bytecode/prog.o".into(), b"elf2".to_vec()))
        );
        let none = tar(&[("README", b"hi")]);
        let err = extract_object(&none, 1 << 20).expect_err("none");
        assert!(
            err.contains("no *.o file") && err.contains("README"),
            "{err}"
        );
        let two = tar(&[("a.o", b"1"), ("b.o", b"2")]);
        let err = extract_object(&gzip(&two), 1 << 20).expect_err("two");
        assert!(err.contains("several *.o files (a.o, b.o)"), "{err}");
        let big = tar(&[("big.o", &[0u8; 2048])]);
        assert!(
            extract_object(&big, 1024)
                .expect_err("big")
                .contains("limit")
        );
        assert!(
            extract_object(b"\x28\xb5\x2f\xfdxxxx", 1024)
                .expect_err("zstd")
                .contains("zstd")
        );
        assert!(extract_object(&gzip(b"not a tar at all, no"), 1024).is_err());
    }

    #[test]
    fn the_cache_maps_manifest_digests_to_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache(dir.path());
        assert_eq!(cache.object_of(D), None);
        cache.store(D, b"elf");
        assert_eq!(cache.object_of(D), Some(b"elf".to_vec()));
        let object = dir.path().join(format!("{}.bpf.o", sha256_hex(b"elf")));
        assert!(object.exists(), "shared with url downloads: <sha256>.bpf.o");
        std::fs::write(&object, b"corrupt").expect("write");
        assert_eq!(cache.object_of(D), None, "a corrupt object is not served");
        assert!(!object.exists());
    }

    #[test]
    fn a_pinned_reference_in_the_cache_needs_no_network() {
        let dir = tempfile::tempdir().expect("tempdir");
        Cache(dir.path()).store(D, b"elf");
        let fetcher = Fetcher::with_cache(Some(dir.path().into()));
        // Nothing listens on port 1: only the cache can answer.
        let reference = format!("127.0.0.1:1/x@{D}");
        let auth = RegistryAuth::anonymous();
        assert_eq!(pull(&fetcher, &auth, &reference, None), Ok(b"elf".to_vec()));
        assert_eq!(
            pull(&fetcher, &auth, &reference, Some(&sha256_hex(b"elf"))),
            Ok(b"elf".to_vec())
        );
        let err = pull(&fetcher, &auth, &reference, Some(&"0".repeat(64))).expect_err("mismatch");
        assert_eq!(err.reason, Reason::DigestMismatch);
        let err = pull(&fetcher, &auth, "NOT A REF", None).expect_err("invalid");
        assert_eq!(err.reason, Reason::InvalidSpec);
    }
}
