//! Why a `bytecode.image` gave no bytecode, and the reason status reports for it.

use crate::error::{ObjectError, Reason};

/// Why a `bytecode.image` gave no bytecode.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse.
    #[error("bytecode.image {reference:?}: {why}")]
    InvalidReference {
        /// `bytecode.image` as written in the spec.
        reference: String,
        /// What the parser found wrong with it.
        why: String,
    },
    /// The image's `.o` is not the one `spec.sha256` pins.
    #[error("the .o of image {image} has sha256 {got}, spec.sha256 says {want}")]
    ObjectDigest {
        /// `bytecode.image` as written in the spec.
        image: String,
        /// The SHA-256 the image's `.o` has.
        got: String,
        /// The SHA-256 `spec.sha256` asks for.
        want: String,
    },
    /// The registry, its token service or the image's content failed a request or a check.
    #[error("image {image}: {message}")]
    Pull {
        /// `bytecode.image` as written in the spec.
        image: String,
        /// The reason status reports (`DigestMismatch` for a blob or manifest with another
        /// digest, `SourceNotAllowed` for a refused address).
        reason: Reason,
        /// What failed, naming the registry and the manifest, config, layer or token concerned.
        message: String,
    },
}

impl ImageError {
    /// The reason status reports.
    pub fn reason(&self) -> Reason {
        match self {
            ImageError::InvalidReference { .. } => Reason::InvalidSpec,
            ImageError::ObjectDigest { .. } => Reason::DigestMismatch,
            ImageError::Pull { reason, .. } => *reason,
        }
    }
}

impl From<ImageError> for ObjectError {
    fn from(e: ImageError) -> Self {
        ObjectError::new(e.reason(), e.to_string())
    }
}
