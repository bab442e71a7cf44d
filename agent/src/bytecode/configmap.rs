//! `bytecode.configMap` (cluster mode): the bytes of a key of a ConfigMap the agent watches. The
//! watch itself is cluster mode's; this is what an object is told when the key is not there.

use crate::error::{ObjectError, Reason};

/// Why a `bytecode.configMap` gave no bytecode.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigMapError {
    /// The ConfigMap has no such key (in `binaryData` or `data`).
    #[error("configMap {configmap} has no key {key}")]
    MissingKey {
        /// The ConfigMap, as `namespace/name`.
        configmap: String,
        /// The key `bytecode.configMap.key` names.
        key: String,
    },
    /// The ConfigMap does not exist.
    #[error("configMap {configmap} does not exist")]
    Absent {
        /// The ConfigMap, as `namespace/name`.
        configmap: String,
    },
    /// The watch of the ConfigMap fails (RBAC, API errors).
    #[error("configMap {configmap} cannot be read: {error}")]
    Unreadable {
        /// The ConfigMap, as `namespace/name`.
        configmap: String,
        /// What the API server answered its watch.
        error: String,
    },
}

impl From<ConfigMapError> for ObjectError {
    fn from(e: ConfigMapError) -> Self {
        ObjectError::new(Reason::BytecodeUnavailable, e.to_string())
    }
}
