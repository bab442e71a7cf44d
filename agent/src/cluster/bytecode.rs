//! Where a selected object's bytecode comes from in cluster mode: a file inside a
//! `--bytecode-dir`, a key of a watched ConfigMap, a URL (downloaded with a digest check, cached
//! by digest) or an OCI bytecode image (pulled with the node's `--registry-auth` credentials or
//! anonymously, cached by digest). An object whose bytecode is missing reports why; every other
//! object is unaffected.

use bpfpin_crds::{BpfObjectSpec, SecretReference};
use k8s_openapi::api::core::v1::Secret;

use super::configmaps::{ConfigMapCache, ConfigMapRef, ConfigMapState};
pub use crate::bytecode_path::read_path;
use crate::error::{ObjectError, Reason};
use crate::oci::RegistryAuth;

/// The bytecode of one object, as far as the (non-blocking) planning step can tell.
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
}

/// The registry credentials of a `kubernetes.io/dockerconfigjson` (or legacy
/// `kubernetes.io/dockercfg`) Secret.
pub fn registry_auth_of(secret: &Secret) -> Result<RegistryAuth, String> {
    let data = secret.data.as_ref();
    let Some(json) = data
        .and_then(|d| d.get(".dockerconfigjson"))
        .or_else(|| data.and_then(|d| d.get(".dockercfg")))
    else {
        return Err(format!(
            "has no .dockerconfigjson key (type {}); create it with kubectl create secret docker-registry",
            secret.type_.as_deref().unwrap_or("Opaque")
        ));
    };
    RegistryAuth::from_docker_config(&json.0)
}

/// The source of `spec`'s bytecode, looking ConfigMaps up in `configmaps`.
pub fn source_of(spec: &BpfObjectSpec, configmaps: &ConfigMapCache) -> Source {
    let bytecode = &spec.bytecode;
    if let Some(path) = &bytecode.path {
        return Source::Path(path.clone());
    }
    if let Some(source) = &bytecode.config_map {
        let cm = ConfigMapRef::of(source);
        let unavailable = |message: String| {
            Source::Failed(ObjectError::new(Reason::BytecodeUnavailable, message))
        };
        return match configmaps.state(&cm) {
            None | Some(ConfigMapState::Syncing) => Source::Waiting,
            Some(ConfigMapState::Present(keys)) => match keys.get(&source.key) {
                Some(bytes) => Source::Bytes(bytes.clone()),
                None => unavailable(format!("configMap {cm} has no key {}", source.key)),
            },
            Some(ConfigMapState::Absent) => unavailable(format!("configMap {cm} does not exist")),
            Some(ConfigMapState::Unavailable(error)) => {
                unavailable(format!("configMap {cm} cannot be read: {error}"))
            }
        };
    }
    if let Some(url) = &bytecode.url {
        return Source::Url(url.clone(), spec.sha256.clone());
    }
    if let Some(image) = &bytecode.image {
        return Source::Image(ImagePull {
            reference: image.clone(),
            sha256: spec.sha256.clone(),
            pull_secret: bytecode.image_pull_secret.clone(),
            auth: None,
        });
    }
    Source::Failed(ObjectError::new(
        Reason::InvalidSpec,
        "spec.bytecode names no source; set one of path, configMap, url, image",
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn spec(yaml: &str) -> BpfObjectSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    fn cm_spec() -> BpfObjectSpec {
        spec("bytecode: {configMap: {namespace: ns, name: cm, key: c.o}}\nprograms: [{name: p}]")
    }

    fn cm() -> ConfigMapRef {
        ConfigMapRef {
            namespace: "ns".into(),
            name: "cm".into(),
        }
    }

    #[test]
    fn configmap_sources() {
        let mut cache = ConfigMapCache::default();
        assert_eq!(source_of(&cm_spec(), &cache), Source::Waiting);
        cache.insert(
            cm(),
            ConfigMapState::Present([("c.o".to_owned(), b"elf".to_vec())].into()),
        );
        assert_eq!(
            source_of(&cm_spec(), &cache),
            Source::Bytes(b"elf".to_vec())
        );
        cache.insert(
            cm(),
            ConfigMapState::Present([("other".to_owned(), b"elf".to_vec())].into()),
        );
        let Source::Failed(e) = source_of(&cm_spec(), &cache) else {
            panic!("a missing key is a failure");
        };
        assert_eq!(e.reason, Reason::BytecodeUnavailable);
        assert_eq!(e.message, "configMap ns/cm has no key c.o");
        cache.insert(cm(), ConfigMapState::Absent);
        let Source::Failed(e) = source_of(&cm_spec(), &cache) else {
            panic!("a missing configmap is a failure");
        };
        assert!(e.message.contains("does not exist"));
    }

    #[test]
    fn urls_and_images_are_fetched_with_the_pass() {
        let cache = ConfigMapCache::default();
        assert_eq!(
            source_of(
                &spec("bytecode: {url: 'https://x/y.o'}\nsha256: x\nprograms: [{name: p}]"),
                &cache
            ),
            Source::Url("https://x/y.o".into(), Some("x".into()))
        );
        assert_eq!(
            source_of(
                &spec("bytecode: {image: 'quay.io/x:v1'}\nprograms: [{name: p}]"),
                &cache
            ),
            Source::Image(ImagePull {
                reference: "quay.io/x:v1".into(),
                sha256: None,
                pull_secret: None,
                auth: None,
            })
        );
        let Source::Image(pull) = source_of(
            &spec(
                "bytecode: {image: 'quay.io/x:v1', imagePullSecret: {namespace: ns, name: pull}}\nprograms: [{name: p}]",
            ),
            &cache,
        ) else {
            panic!("an image");
        };
        assert_eq!(
            pull.pull_secret,
            Some(SecretReference {
                namespace: "ns".into(),
                name: "pull".into()
            })
        );
        let Source::Failed(e) = source_of(&spec("bytecode: {}\nprograms: [{name: p}]"), &cache)
        else {
            panic!("no source is a failure");
        };
        assert_eq!(e.reason, Reason::InvalidSpec);
    }

    #[test]
    fn pull_secrets_hold_a_docker_config() {
        use k8s_openapi::ByteString;
        let secret = |key: &str, json: &str| Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some([(key.to_owned(), ByteString(json.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        let auth = registry_auth_of(&secret(
            ".dockerconfigjson",
            r#"{"auths": {"quay.io": {"auth": "dTpw"}}}"#,
        ))
        .expect("credentials");
        assert_eq!(auth.registries().collect::<Vec<_>>(), ["quay.io"]);
        let legacy = registry_auth_of(&secret(".dockercfg", r#"{"quay.io": {"auth": "dTpw"}}"#))
            .expect("credentials");
        assert_eq!(legacy, auth);
        assert!(
            registry_auth_of(&secret("token", "{}"))
                .expect_err("no key")
                .contains("no .dockerconfigjson")
        );
        assert!(registry_auth_of(&secret(".dockerconfigjson", "{")).is_err());
    }

    #[test]
    fn paths_must_stay_inside_the_bytecode_dirs() {
        let allowed = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(allowed.path().join("a.o"), b"elf").expect("write");
        std::fs::write(outside.path().join("b.o"), b"elf").expect("write");
        std::os::unix::fs::symlink(outside.path().join("b.o"), allowed.path().join("link.o"))
            .expect("symlink");
        let dirs = vec![PathBuf::from("/nonexistent/bpfpin"), allowed.path().into()];

        assert_eq!(read_path("a.o", &dirs), Ok(b"elf".to_vec()));
        let abs = allowed.path().join("a.o");
        assert_eq!(
            read_path(abs.to_str().expect("utf8"), &dirs),
            Ok(b"elf".to_vec())
        );
        let escape = outside.path().join("b.o");
        assert_eq!(
            read_path(escape.to_str().expect("utf8"), &dirs)
                .expect_err("fails")
                .reason,
            Reason::BytecodePathNotAllowed
        );
        assert_eq!(
            read_path("link.o", &dirs).expect_err("fails").reason,
            Reason::BytecodePathNotAllowed
        );
        assert_eq!(
            read_path("../b.o", &dirs).expect_err("fails").reason,
            Reason::BytecodeUnavailable
        );
        assert_eq!(
            read_path("missing.o", &dirs).expect_err("fails").reason,
            Reason::BytecodeUnavailable
        );
        assert!(
            read_path("a.o", &[PathBuf::from("/nonexistent/bpfpin")])
                .expect_err("fails")
                .message
                .contains("no bytecode folder")
        );
    }
}
