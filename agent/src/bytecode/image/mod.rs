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
//! - The `.o` is cached in the [`Fetcher`](crate::bytecode::Fetcher)'s cache by its digest, like
//!   a URL download, with an index from the image's manifest digest to it: a digest-pinned
//!   reference that was pulled once is served from the node without the network, and a tag that
//!   resolves to a known manifest downloads no blob.
//!
//! Hand-written rather than `oci-client` + `oci-spec`: that client is async on reqwest (a second
//! HTTP and TLS stack beside ureq, in a pipeline of threads) and owns the request loop, so the
//! per-connection `--source-allow` resolver, the per-object deadline across retries, the
//! Content-Length and body bounds before a byte is buffered, the https-only redirects and the
//! messages `agent/tests/hostile_servers.rs` and `image_source.rs` assert could not be kept.

mod auth;
pub mod challenge;
pub mod credentials;
mod error;
pub mod layer;
pub mod manifest;
mod pull;
pub mod reference;
mod session;

pub use challenge::{Challenge, parse_challenge};
pub use credentials::RegistryAuth;
pub use layer::extract_object;
pub use manifest::{check_labels, node_architecture};
pub use pull::pull;
pub use reference::ImageRef;
