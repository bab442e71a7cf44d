//! Test harnesses shared by the agent's integration tests (`agent/tests/common` re-exports them)
//! and the e2e suite: one copy, so no test includes another crate's files by path.
//!
//! - [`registry`]: a real OCI registry (CNCF distribution) on loopback, with htpasswd or token
//!   auth, and the images the tests push to it.
//! - [`hostile`]: HTTP servers on loopback that misbehave on purpose, and the agent run with its
//!   peak memory.
//! - [`http`]: the request reading both servers above share.
//! - [`cgroup`], [`memory_cgroup`]: the host's cgroup v2 mount, a memory cgroup with a limit.
//! - [`cosign`]: the real `cosign` CLI: key pairs and signatures stored in the registry.
//! - [`cosign_ca`]: certificate authorities shaped like Fulcio's, their leaf certificates and
//!   sigstore trusted roots, for keyless signatures made with the real `cosign`.

pub mod cgroup;
pub mod cosign;
pub mod cosign_ca;
pub mod hostile;
pub mod http;
pub mod memory_cgroup;
pub mod registry;
