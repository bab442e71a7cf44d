//! The dispatcher's `.rodata` configuration (libxdp's `struct xdp_dispatcher_config`, version 2)
//! and how one program's place in the chain is described.

use bpfpin_crds::XdpAttach;
use bpfpin_crds::bpf_object::XdpAction;

/// Slots of a dispatcher (libxdp's `MAX_DISPATCHER_ACTIONS`).
pub const MAX_SLOTS: usize = 10;
/// `XDP_DISPATCHER_MAGIC`: 'X' + 'D' + 'P'.
pub const MAGIC: u8 = 236;
/// `XDP_DISPATCHER_VERSION`.
pub const VERSION: u8 = 2;
/// What an empty slot returns (`XDP_DISPATCHER_RETVAL`): its bit is in every chain mask, so a
/// slot whose program was detached passes the packet on.
pub const EMPTY_SLOT_RETVAL: u32 = 31;

/// The dispatcher's `conf`, byte for byte as the C source (and libxdp) lays it out.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// [`MAGIC`].
    pub magic: u8,
    /// [`VERSION`].
    pub dispatcher_version: u8,
    /// Slots in use, from slot 0.
    pub num_progs_enabled: u8,
    /// Loaded with XDP frags support (never, here).
    pub is_xdp_frags: u8,
    /// Per slot: bit `a` set = run the next slot after action `a`.
    pub chain_call_actions: [u32; MAX_SLOTS],
    /// Per slot: the program's priority (informational, read by libxdp).
    pub run_prios: [u32; MAX_SLOTS],
    /// Per slot: libxdp's program flags (the XDP frags flag; 0 here).
    pub program_flags: [u32; MAX_SLOTS],
}

// SAFETY: a repr(C) struct of integers without padding (4 + 3 * 40 bytes).
unsafe impl aya::Pod for Config {}

/// One program's place on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Lower runs first.
    pub priority: u32,
    /// Chain mask (`1 << action` for each action after which the next program runs, and the
    /// empty-slot bit).
    pub chain_mask: u32,
}

impl Share {
    /// The share an `attach.xdp` asks for: `None` when it attaches directly.
    pub fn of(xdp: &XdpAttach) -> Option<Share> {
        if !xdp.uses_dispatcher() {
            return None;
        }
        let actions: &[XdpAction] = if xdp.proceed_on.is_empty() {
            &[XdpAction::Pass]
        } else {
            &xdp.proceed_on
        };
        Some(Share {
            priority: u32::from(xdp.priority.unwrap_or(XdpAttach::DEFAULT_PRIORITY)),
            chain_mask: mask_of(actions),
        })
    }
}

/// The chain mask of a list of actions.
pub fn mask_of(actions: &[XdpAction]) -> u32 {
    actions
        .iter()
        .fold(1 << EMPTY_SLOT_RETVAL, |m, a| m | (1 << a.code()))
}

/// The configuration of a dispatcher running `slots` in this order.
pub fn config_for(slots: &[Share]) -> Config {
    let mut conf = Config {
        magic: MAGIC,
        dispatcher_version: VERSION,
        num_progs_enabled: slots.len() as u8,
        ..Config::default()
    };
    for (i, s) in slots.iter().enumerate() {
        conf.chain_call_actions[i] = s.chain_mask;
        conf.run_prios[i] = s.priority;
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_libxdps() {
        assert_eq!(std::mem::size_of::<Config>(), 124);
        assert_eq!(std::mem::offset_of!(Config, chain_call_actions), 4);
        assert_eq!(std::mem::offset_of!(Config, run_prios), 44);
        assert_eq!(std::mem::offset_of!(Config, program_flags), 84);
    }

    #[test]
    fn defaults_are_libxdps() {
        let x: XdpAttach = serde_json::from_str(r#"{"interfaces":["eth0"]}"#).expect("spec");
        assert_eq!(Share::of(&x), None, "no priority, no proceedOn: direct");
        let x: XdpAttach =
            serde_json::from_str(r#"{"interfaces":["eth0"],"proceedOn":["Drop","Pass"]}"#)
                .expect("spec");
        let share = Share::of(&x).expect("dispatcher");
        assert_eq!(share.priority, 50);
        assert_eq!(share.chain_mask, (1 << 31) | (1 << 1) | (1 << 2));
        let x: XdpAttach =
            serde_json::from_str(r#"{"interfaces":["eth0"],"priority":7}"#).expect("spec");
        assert_eq!(
            Share::of(&x).expect("dispatcher").chain_mask,
            (1 << 31) | (1 << 2)
        );
    }
}
