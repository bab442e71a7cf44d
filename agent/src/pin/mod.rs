//! The kernel core: make the managed bpffs root equal to the desired objects. [`reconcile`] runs
//! a pass; [`loader`] builds one version of one object (ELF checks, load, pins) and [`attach`]
//! attaches its programs with pinned links; [`layout`] names every path and [`fsops`] touches
//! them without leaving the root; [`map_memory`] checks that new maps fit the agent's memory
//! cgroup; [`btf_vars`] reads the global variables `globalData` overrides; [`internal_maps`] pins
//! and reuses the maps that hold them; [`xdp_dispatcher`] shares
//! an XDP interface among programs (libxdp's protocol) and places tcx programs by priority.
//! Nothing here imports a bytecode source or a mode.

pub mod attach;
pub mod auto_attach;
pub mod btf_vars;
pub mod containers;
pub mod desired;
pub mod diagnose;
pub mod fsops;
pub mod interfaces;
pub mod internal_maps;
pub mod kallsyms;
pub mod layout;
pub mod loader;
pub mod map_memory;
pub mod mounts;
pub mod netns;
pub mod pod_cgroup;
pub mod reconcile;
pub mod section_status;
pub mod usdt_notes;
pub mod xdp_dispatcher;
