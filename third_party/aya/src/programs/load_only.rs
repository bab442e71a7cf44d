//! bpfpin patch: programs of types aya 0.14 has no attach API for (`SEC("action")`,
//! `SEC("syscall")`, `SEC("lwt_in")`, `SEC("lwt_out")`, `SEC("lwt_xmit")`,
//! `SEC("lwt_seg6local")`). They load and pin; something else attaches them (tc actions, the
//! `bpf(BPF_PROG_RUN)` of a loader, `ip route ... encap bpf`).
use aya_obj::generated::{BPF_F_SLEEPABLE, bpf_prog_type};

use super::links::FdLink;
use crate::programs::{
    FdLinkId, ProgramData, ProgramError, define_link_wrapper, load_program_without_attach_type,
};

/// A program that is loaded and pinned only.
#[derive(Debug)]
pub struct LoadOnly {
    pub(crate) data: ProgramData<LoadOnlyLink>,
    pub(crate) prog_type: bpf_prog_type,
}

impl LoadOnly {
    /// Loads the program inside the kernel.
    pub fn load(&mut self) -> Result<(), ProgramError> {
        let Self { data, prog_type } = self;
        load_program_without_attach_type(*prog_type, data)
    }

    /// The kernel program type.
    pub fn kernel_prog_type(&self) -> bpf_prog_type {
        self.prog_type
    }

    pub(crate) fn set_sleepable(&mut self) {
        self.data.flags = BPF_F_SLEEPABLE;
    }
}

define_link_wrapper!(LoadOnlyLink, LoadOnlyLinkId, FdLink, FdLinkId, LoadOnly);
