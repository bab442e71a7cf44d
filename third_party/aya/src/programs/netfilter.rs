//! bpfpin patch: netfilter programs (`BPF_PROG_TYPE_NETFILTER`, kernel 6.4+), which aya 0.14
//! lacks.
use std::os::fd::AsFd;

use aya_obj::generated::{
    bpf_attach_type::BPF_NETFILTER, bpf_prog_type::BPF_PROG_TYPE_NETFILTER,
};

use super::links::FdLink;
use crate::{
    programs::{
        FdLinkId, ProgramData, ProgramError, ProgramType, define_link_wrapper,
        load_program_with_attach_type,
    },
    sys::{BpfLinkCreateArgs, LinkTarget, SyscallError, bpf_link_create},
};

/// A program run at a netfilter hook (`SEC("netfilter")`): it returns `NF_ACCEPT` (1) or
/// `NF_DROP` (0) for each packet. It is attached with a netfilter link in the network namespace of
/// the calling thread, at a protocol family (`NFPROTO_IPV4` 2, `NFPROTO_IPV6` 10), a hook
/// (`NF_INET_PRE_ROUTING` 0, `LOCAL_IN` 1, `FORWARD` 2, `LOCAL_OUT` 3, `POST_ROUTING` 4) and a
/// priority (lower runs first; neither `INT_MIN` nor `INT_MAX`).
///
/// # Minimum kernel version
///
/// The minimum kernel version required to use this feature is 6.4.
#[derive(Debug)]
#[doc(alias = "BPF_PROG_TYPE_NETFILTER")]
pub struct Netfilter {
    pub(crate) data: ProgramData<NetfilterLink>,
}

impl Netfilter {
    /// The type of the program according to the kernel.
    pub const PROGRAM_TYPE: ProgramType = ProgramType::Netfilter;

    /// Loads the program inside the kernel.
    pub fn load(&mut self) -> Result<(), ProgramError> {
        let Self { data } = self;
        load_program_with_attach_type(BPF_PROG_TYPE_NETFILTER, BPF_NETFILTER, data)
    }

    /// Attaches the program to a netfilter hook of the current network namespace. `flags` is 0 or
    /// `BPF_F_NETFILTER_IP_DEFRAG` (1, kernel 6.6+: packets are defragmented first).
    ///
    /// The returned value can be used to detach, see [`Netfilter::detach`].
    pub fn attach(
        &mut self,
        pf: u32,
        hooknum: u32,
        priority: i32,
        flags: u32,
    ) -> Result<NetfilterLinkId, ProgramError> {
        let prog_fd = self.fd()?;
        let prog_fd = prog_fd.as_fd();
        let args = BpfLinkCreateArgs::Netfilter {
            pf,
            hooknum,
            priority,
            flags,
        };
        let link_fd = bpf_link_create(prog_fd, LinkTarget::Iter, BPF_NETFILTER, 0, Some(args))
            .map_err(|io_error| SyscallError {
                call: "bpf_link_create",
                io_error,
            })?;
        self.data
            .links
            .insert(NetfilterLink::new(FdLink::new(link_fd)))
    }
}

define_link_wrapper!(NetfilterLink, NetfilterLinkId, FdLink, FdLinkId, Netfilter);
