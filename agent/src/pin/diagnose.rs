//! What an error message says about the kernel's side of a failure: which program holds an XDP
//! hook (rtnetlink's `IFLA_XDP`, as `bpf_xdp_query` reads it) and whether it is one of bpfpin's,
//! and which kind of program a program is when its type alone (`Tracing`) does not say.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

// rtnetlink constants (include/uapi/linux/{netlink,rtnetlink,if_link}.h).
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// The XDP program on `interface`, from one `RTM_GETLINK` (hand-written: no netlink crate is in
/// the tree, and this one read-only query on an error path does not warrant one); `None` when
/// the interface has none or the kernel does not say.
pub(crate) fn xdp_holder(interface: &str) -> Option<XdpHolder> {
    let name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return None;
    }
    // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    req[0..4].copy_from_slice(&((NLMSG_HDRLEN + IFINFOMSG_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[NLMSG_HDRLEN] = libc::AF_UNSPEC as u8;
    req[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: `req` is valid for its length.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent != req.len() as isize {
        return None;
    }
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `buf` is valid for its length.
    let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let got = usize::try_from(got).ok()?;
    parse_link_reply(&buf[..got])
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Netlink attributes in `b`: `(type, payload)`.
fn attributes(b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(kind)) = (u16_at(b, at), u16_at(b, at + 2)) {
        let len = usize::from(len);
        let Some(payload) = b.get(at + 4..at + len) else {
            break;
        };
        if len < 4 {
            break;
        }
        out.push((kind & NLA_TYPE_MASK, payload));
        at += (len + 3) & !3;
    }
    out
}

/// The XDP program of an `RTM_NEWLINK` reply.
fn parse_link_reply(msg: &[u8]) -> Option<XdpHolder> {
    let len = usize::try_from(u32_at(msg, 0)?).ok()?;
    let kind = u16_at(msg, 4)?;
    if kind == NLMSG_ERROR || kind != RTM_NEWLINK {
        return None;
    }
    let attrs = msg.get(NLMSG_HDRLEN + IFINFOMSG_LEN..len.min(msg.len()))?;
    let (_, xdp) = attributes(attrs)
        .into_iter()
        .find(|(t, _)| *t == IFLA_XDP)?;
    let mut id = None;
    let mut mode = "unknown";
    for (t, payload) in attributes(xdp) {
        match t {
            IFLA_XDP_PROG_ID => id = u32_at(payload, 0),
            IFLA_XDP_ATTACHED => {
                mode = match payload.first() {
                    Some(1) => "native",
                    Some(2) => "generic",
                    Some(3) => "offloaded",
                    Some(4) => "multiple",
                    _ => return None,
                }
            }
            _ => {}
        }
    }
    Some(XdpHolder {
        id: id.filter(|i| *i != 0)?,
        mode,
    })
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
        return "a program the kernel did not name (rtnetlink reports no XDP program id)".into();
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

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend(((4 + payload.len()) as u16).to_ne_bytes());
        a.extend(kind.to_ne_bytes());
        a.extend(payload);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn reply(attrs: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
        m.extend(attrs);
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        m
    }

    #[test]
    fn reads_the_xdp_program_of_a_link_reply() {
        let mut nested = attr(IFLA_XDP_ATTACHED, &[2]);
        nested.extend(attr(IFLA_XDP_PROG_ID, &42u32.to_ne_bytes()));
        let mut attrs = attr(3, b"eth0\0"); // IFLA_IFNAME first
        attrs.extend(attr(IFLA_XDP | 0x8000, &nested)); // NLA_F_NESTED set
        assert_eq!(
            parse_link_reply(&reply(&attrs)),
            Some(XdpHolder {
                id: 42,
                mode: "generic"
            })
        );
        let none = attr(IFLA_XDP, &attr(IFLA_XDP_ATTACHED, &[0]));
        assert_eq!(parse_link_reply(&reply(&none)), None);
        assert_eq!(parse_link_reply(&[1, 2, 3]), None);
    }
}
