//! The bpfpin agent: loads eBPF ELF objects with aya, pins maps, programs and links under a
//! managed bpffs root, adopts what an earlier run pinned, and removes what nobody wants.
//!
//! [`reconcile::Reconciler`] is the core, free of Kubernetes; [`local`] and [`cluster`] mode feed it
//! desired objects.
#![deny(missing_docs)]

pub mod attach;
pub mod backoff;
pub mod btf_vars;
pub mod bytecode_path;
pub mod cluster;
pub mod desired;
pub mod downloads;
pub mod error;
pub mod fetch;
pub mod fetch_flags;
pub mod fsops;
pub mod layout;
pub mod loader;
pub mod local;
pub mod manifest;
pub mod map_memory;
pub mod mounts;
pub mod oci;
pub mod reconcile;
pub mod shutdown;
pub mod source_policy;
pub mod xdp_dispatcher;

pub use desired::DesiredObject;
pub use reconcile::{Action, ObjectReport, PassReport, Reconciler};
