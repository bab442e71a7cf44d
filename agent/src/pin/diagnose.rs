//! What an error message says about the kernel's side of a failure: which program holds an XDP
//! hook (rtnetlink's `IFLA_XDP`, as `bpf_xdp_query` reads it) and whether it is one of bpfpin's,
//! and which kind of program a program is when its type alone (`Tracing`) does not say.

use std::path::Path;

use aya::programs::{Program, ProgramInfo};

use super::layout::VERSIONS_DIR;

/// The libbpf name of a program's kind where aya's program type is shared by several
/// (`Tracing` is tp_btf, fentry, fexit and iter).
pub(crate) fn program_kind(program: &Program) -> String {
    let kind = match program {
        Program::BtfTracePoint(_) => "tp_btf",
        Program::FEntry(_) => "fentry",
        Program::FExit(_) => "fexit",
        Program::Iter(_) => "iter",
        Program::Lsm(_) => "lsm",
        Program::Extension(_) => "freplace",
        _ => return format!("{:?}", program.prog_type()),
    };
    format!("{:?}/{kind}", program.prog_type())
}

/// The program the kernel runs at XDP on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XdpHolder {
    /// Its kernel program id.
    pub id: u32,
    /// `native`, `generic`, `offloaded` or `multiple`.
    pub mode: &'static str,
}

/// The XDP program on `interface`, as rtnetlink reports it (`IFLA_XDP`, the vendored aya's
/// `netlink_xdp_query`); `None` when the interface has none or the kernel does not say.
pub(crate) fn xdp_holder(interface: &str) -> Option<XdpHolder> {
    let name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return None;
    }
    let (attached, id) = aya::netlink_xdp_query(i32::try_from(ifindex).ok()?).ok()?;
    Some(XdpHolder {
        id: Some(id).filter(|i| *i != 0)?,
        mode: xdp_mode(attached)?,
    })
}

/// The name of an `IFLA_XDP_ATTACHED` mode (`XDP_ATTACHED_DRV`, `_SKB`, `_HW`, `_MULTI`).
fn xdp_mode(attached: u8) -> Option<&'static str> {
    ["native", "generic", "offloaded", "multiple"]
        .get(usize::from(attached).checked_sub(1)?)
        .copied()
}

/// The kernel's name of a program, by id.
fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
}

/// The bpfpin program with kernel id `id`, found from a path inside the managed root (a link pin
/// `<root>/_versions/<object>/<version>/links/...`): `program <p> of object <o>`.
fn bpfpin_owner(inside_root: &Path, id: u32) -> Option<String> {
    let versions = inside_root
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == VERSIONS_DIR))?;
    let dirs = |p: &Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    for object in dirs(versions) {
        for version in dirs(&object) {
            for prog in dirs(&version.join("progs")) {
                if ProgramInfo::from_pin(&prog).is_ok_and(|i| i.id() == id) {
                    let name = |p: &Path| p.file_name()?.to_str().map(str::to_owned);
                    return Some(format!(
                        "program {} of bpfpin object {}",
                        name(&prog)?,
                        name(&object)?
                    ));
                }
            }
        }
    }
    None
}

/// Who holds XDP on `interface`, for a message: `program id 42 (xdp_pass, generic mode), which
/// is program pass of bpfpin object other` or `..., not one of bpfpin's objects`.
pub(crate) fn describe_xdp_holder(interface: &str, inside_root: &Path) -> String {
    let Some(holder) = xdp_holder(interface) else {
        return "a program the kernel did not name".into();
    };
    let name = program_name(holder.id).unwrap_or_else(|| "unnamed".into());
    let ours = match bpfpin_owner(inside_root, holder.id) {
        Some(owner) => format!("which is {owner}"),
        None => "not one of bpfpin's objects (attached by another tool: ip link, xdp-loader, ...)"
            .to_owned(),
    };
    format!(
        "program id {} ({name}, {} mode), {ours}",
        holder.id, holder.mode
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_xdp_modes_and_nothing_else() {
        let modes: Vec<_> = (0..=5).map(xdp_mode).collect();
        assert_eq!(
            modes,
            [
                None,
                Some("native"),
                Some("generic"),
                Some("offloaded"),
                Some("multiple"),
                None
            ]
        );
        assert_eq!(xdp_holder("bpfpin-no-such-interface"), None);
    }
}
