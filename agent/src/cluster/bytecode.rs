//! Where a selected object's bytecode comes from in cluster mode: a file inside a
//! `--bytecode-dir`, a key of a watched ConfigMap, a URL (downloaded with a digest check, cached
//! by digest) or an OCI bytecode image (pulled with the node's `--registry-auth` credentials or
//! anonymously, cached by digest). An object whose bytecode is missing reports why; every other
//! object is unaffected. The sources themselves are [`crate::bytecode`]'s; this is what only
//! cluster mode knows: the watched ConfigMaps and the pull Secrets.

use bpfpin_crds::BpfObjectSpec;
use k8s_openapi::api::core::v1::Secret;

use super::configmaps::{ConfigMapCache, ConfigMapRef, ConfigMapState};
pub(crate) use crate::bytecode::Source;
use crate::bytecode::SourceError;
use crate::bytecode::configmap::ConfigMapError;
use crate::bytecode::image::RegistryAuth;

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
    let Some(source) = &spec.bytecode.config_map else {
        return Source::of(spec).unwrap_or_else(|| Source::Failed(SourceError::NoSource.into()));
    };
    let cm = ConfigMapRef::of(source);
    let configmap = cm.to_string();
    let failed = |e: ConfigMapError| Source::Failed(e.into());
    match configmaps.state(&cm) {
        None | Some(ConfigMapState::Syncing) => Source::Waiting,
        Some(ConfigMapState::Present(keys)) => match keys.get(&source.key) {
            Some(bytes) => Source::Bytes(bytes.clone()),
            None => failed(ConfigMapError::MissingKey {
                configmap,
                key: source.key.clone(),
            }),
        },
        Some(ConfigMapState::Absent) => failed(ConfigMapError::Absent { configmap }),
        Some(ConfigMapState::Unavailable(error)) => failed(ConfigMapError::Unreadable {
            configmap,
            error: error.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use bpfpin_crds::SecretReference;

    use super::*;
    use crate::bytecode::ImagePull;
    use crate::bytecode::path::read_path;
    use crate::error::Reason;

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
                skip_signature: false,
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
