//! Where a selected object's bytecode comes from in cluster mode: a file inside a
//! `--bytecode-dir`, or a key of a watched ConfigMap. a URL (downloaded with a digest check,
//! cached by digest). `image` is not implemented yet and fails with `UnsupportedSource`; the object then reports why, and every other object is
//! unaffected.

use std::path::{Path, PathBuf};

use bpfpin_crds::BpfObjectSpec;

use super::configmaps::{ConfigMapCache, ConfigMapRef, ConfigMapState};
use crate::error::{ObjectError, Reason};
use crate::local::resolve_path;

/// The bytecode of one object, as far as the (non-blocking) planning step can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file to read (on the blocking pool, with the pass).
    Path(String),
    /// The bytes, from a ConfigMap.
    Bytes(Vec<u8>),
    /// A URL to download (on the blocking pool, with the pass), with the digest it must have.
    Url(String, Option<String>),
    /// Why there is no bytecode.
    Failed(ObjectError),
    /// The ConfigMap's watch has not listed it yet: leave the object as it is for now.
    Waiting,
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
    let kind = if bytecode.image.is_some() {
        "image"
    } else {
        return Source::Failed(ObjectError::new(
            Reason::InvalidSpec,
            "spec.bytecode names no source; set one of path, configMap, url, image",
        ));
    };
    Source::Failed(ObjectError::new(
        Reason::UnsupportedSource,
        format!(
            "bytecode.{kind} is not supported by the agent yet; use bytecode.path, bytecode.configMap or bytecode.url"
        ),
    ))
}

/// Reads `bytecode.path`, which must resolve (symlinks included) inside one of `dirs`. A relative
/// path is taken relative to the first of `dirs` where it exists.
pub fn read_path(path: &str, dirs: &[PathBuf]) -> Result<Vec<u8>, ObjectError> {
    let allowed: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect();
    let Some(first) = allowed.first() else {
        return Err(ObjectError::new(
            Reason::BytecodeUnavailable,
            format!(
                "bytecode {path}: no bytecode folder exists on this node ({})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let relative = Path::new(path);
    let folder = if relative.is_absolute() {
        Path::new("/")
    } else {
        allowed
            .iter()
            .find(|d| d.join(relative).exists())
            .unwrap_or(first)
    };
    let real = resolve_path(relative, folder, &allowed)?;
    std::fs::read(&real).map_err(|e| {
        ObjectError::new(
            Reason::BytecodeUnavailable,
            format!("reading bytecode {}: {e}", real.display()),
        )
    })
}

#[cfg(test)]
mod tests {
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
    fn url_and_image_are_unsupported() {
        let cache = ConfigMapCache::default();
        for yaml in [
            "bytecode: {url: 'https://x/y.o'}\nsha256: x\nprograms: [{name: p}]",
            "bytecode: {image: 'quay.io/x:v1'}\nprograms: [{name: p}]",
        ] {
            let Source::Failed(e) = source_of(&spec(yaml), &cache) else {
                panic!("unsupported");
            };
            assert_eq!(e.reason, Reason::UnsupportedSource);
        }
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
