//! The bpfpin agent: loads eBPF ELF objects with aya, pins maps, programs and links under a
//! managed bpffs root, adopts what an earlier run pinned, and removes what nobody wants.
//!
//! Three concerns, one folder each:
//! - [`pin`], the kernel core: [`pin::reconcile::Reconciler`] makes a managed bpffs root equal to
//!   a set of desired objects (load, pin, attach, adopt, sweep). It knows nothing of Kubernetes
//!   nor of where bytecode comes from.
//! - [`bytecode`], the sources (a path, a URL, a ConfigMap, an OCI image), turn a spec's `bytecode` into
//!   ELF bytes.
//! - The two modes, [`local`] (manifests in a directory) and [`cluster`] (watches of the API),
//!   resolve bytecode and feed desired objects to the same reconciler.
//!
//! What tests, fuzz targets and benches need is `pub`; the rest is `pub(crate)`.
#![deny(missing_docs)]

pub mod backoff;
pub mod bytecode;
pub mod cluster;
pub mod error;
pub mod fd;
pub mod link_events;
pub mod local;
pub mod pin;
// One shutdown signal for both modes (shared with the operator).
pub use bpfpin_runtime::shutdown;
pub mod signature;

pub use pin::desired::DesiredObject;
pub use pin::reconcile::{Action, ObjectReport, PassReport, Reconciler};
