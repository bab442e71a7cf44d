//! `bytecode.configMap` (cluster mode): the bytes of a key of a ConfigMap the agent watches. The
//! watch itself is cluster mode's; this is what an object is told when the key is not there.

use crate::error::{Reason, StatusError};

/// Why a `bytecode.configMap` gave no bytecode.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ConfigMapError {
    /// The ConfigMap has no such key (in `binaryData` or `data`).
    #[error("configMap {configmap} has no key {key}")]
    MissingKey { configmap: String, key: String },
    /// The ConfigMap does not exist.
    #[error("configMap {configmap} does not exist")]
    Absent { configmap: String },
    /// The watch of the ConfigMap fails (RBAC, API errors).
    #[error("configMap {configmap} cannot be read: {error}")]
    Unreadable { configmap: String, error: String },
}

impl StatusError for ConfigMapError {
    fn reason(&self) -> Reason {
        Reason::BytecodeUnavailable
    }
}
