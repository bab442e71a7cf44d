//! Where an object's bytecode comes from, in both modes: a file (`path`), a ConfigMap key
//! (`configmap`, cluster mode), a URL (`url`) or an OCI bytecode image (`image`). A mode turns
//! each object's spec into a [`Source`] and hands it to one [`Batch`], which reads paths at once,
//! checks `--require-digest`, and fetches urls and images in parallel at the end of the pass,
//! through one cache, one retry policy and one address policy (`--source-allow`).
//!
//! Nothing of the kernel core imports from here: the core gets bytes.

pub(crate) mod cache;
pub(crate) mod configmap;
mod digest;
mod downloads;
mod fetcher;
pub mod flags;
mod http;
pub mod image;
pub mod path;
pub mod policy;
mod resolve;
mod url;

pub use crate::fd::MAX_BYTES;
pub use downloads::{Downloads, MAX_PARALLEL};
pub use fetcher::Fetcher;
pub use path::BytecodeDirs;
pub(crate) use resolve::SourceError;
pub use resolve::{Batch, ImagePull, Source, check_digest_required};
