//! The bpfpin agent: loads eBPF ELF objects with aya, pins maps, programs and links under a
//! managed bpffs root, adopts what an earlier run pinned, and removes what nobody wants.
//!
//! [`reconcile::Reconciler`] is the core, free of Kubernetes; [`local`] and [`cluster`] mode feed it
//! desired objects.
#![deny(missing_docs)]

pub mod attach;
pub mod backoff;
pub mod btf_vars;
pub mod bytecode;
pub mod cluster;
pub mod desired;
pub mod error;
pub mod fd;
pub mod fsops;
pub mod layout;
pub mod loader;
pub mod local;
pub mod map_memory;
pub mod mounts;
pub mod reconcile;
// One shutdown signal for both modes (shared with the operator).
pub use bpfpin_runtime::shutdown;
pub mod signature;

pub use desired::DesiredObject;
pub use reconcile::{Action, ObjectReport, PassReport, Reconciler};
