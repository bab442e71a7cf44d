//! The OCI and Docker manifest types a pull reads, the choice of this node's platform in an
//! index, and the labels that make an image config a bytecode image.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The label listing an image's programs (`{"name": "type", ...}`).
pub const PROGRAMS_LABEL: &str = "io.ebpf.programs";
/// The label listing an image's maps (`{"name": "type", ...}`).
pub const MAPS_LABEL: &str = "io.ebpf.maps";
/// The label of bpfman's first bytecode-image format, accepted in place of [`PROGRAMS_LABEL`].
const LEGACY_PROGRAM_LABEL: &str = "io.ebpf.program_name";

/// The manifest media types asked for (`Accept`).
pub(crate) const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest or image config accepted.
pub(crate) const MAX_JSON: u64 = 4 << 20;
/// The most indexes followed from the reference to a manifest.
pub(crate) const MAX_INDEX_DEPTH: u32 = 2;
/// An OCI content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    #[serde(default)]
    pub(crate) size: u64,
    pub(crate) platform: Option<Platform>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct Platform {
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) os: String,
}

/// A manifest or an index, as far as pulling needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ManifestOrIndex {
    pub(crate) media_type: Option<String>,
    pub(crate) schema_version: Option<u32>,
    pub(crate) config: Option<Descriptor>,
    pub(crate) layers: Option<Vec<Descriptor>>,
    pub(crate) manifests: Option<Vec<Descriptor>>,
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
pub(crate) fn select_platform<'a>(
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
    config: Option<ImageConfigSection>,
}

#[derive(Deserialize)]
struct ImageConfigSection {
    #[serde(rename = "Labels")]
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

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

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
}
