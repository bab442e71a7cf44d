//! The bpfpin agent: loads eBPF ELF objects with aya, pins maps, programs and links under a
//! managed bpffs root, adopts what an earlier run pinned, and removes what nobody wants.
//!
//! Three concerns, one folder each:
//! - [`pin`], the kernel core: [`pin::reconcile::Reconciler`] makes a managed bpffs root equal to
//!   a set of desired objects (load, pin, attach, adopt, sweep). It knows nothing of Kubernetes
//!   nor of where bytecode comes from.
//! - The bytecode sources (a path, a URL, a ConfigMap, an OCI image) turn a spec's `bytecode` into
//!   ELF bytes.
//! - The two modes, [`local`] (manifests in a directory) and [`cluster`] (watches of the API),
//!   resolve bytecode and feed desired objects to the same reconciler.
//!
//! What tests, fuzz targets and benches need is `pub`; the rest is `pub(crate)`.
#![deny(missing_docs)]

pub mod backoff;
pub mod bytecode_path;
pub mod cluster;
pub mod downloads;
pub mod error;
pub mod fetch;
pub mod fetch_flags;
pub mod local;
pub mod manifest;
pub mod oci;
pub mod pin;
pub mod shutdown;
pub mod source_policy;

pub use pin::desired::DesiredObject;
pub use pin::reconcile::{Action, ObjectReport, PassReport, Reconciler};
