//! Why a `bytecode.image` gave no bytecode, and the reason status reports for it.

use crate::error::{ObjectError, Reason, StatusError};

/// Why a `bytecode.image` gave no bytecode.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ImageError {
    /// The reference does not parse.
    #[error("bytecode.image {reference:?}: {why}")]
    InvalidReference { reference: String, why: String },
    /// The image's `.o` is not the one `spec.sha256` pins.
    #[error("the .o of image {image} has sha256 {got}, spec.sha256 says {want}")]
    ObjectDigest {
        image: String,
        got: String,
        want: String,
    },
    /// The registry, its token service or the image's content failed a request or a check.
    #[error("image {image}: {message}")]
    Pull {
        image: String,
        reason: Reason,
        message: String,
    },
    /// The signature policy refused the image ([`crate::signature`]): its reason and message.
    #[error("{}", .0.message)]
    Signature(ObjectError),
}

impl StatusError for ImageError {
    fn reason(&self) -> Reason {
        match self {
            ImageError::InvalidReference { .. } => Reason::InvalidSpec,
            ImageError::ObjectDigest { .. } => Reason::DigestMismatch,
            ImageError::Pull { reason, .. } => *reason,
            ImageError::Signature(e) => e.reason,
        }
    }
}
