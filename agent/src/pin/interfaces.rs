//! Host interface discovery for `xdp` and `tc` (`interfaces` entries written `/<regex>/`, and
//! `primaryNodeInterface`).
//!
//! Before a version is built or adopted, each program's `attach` is resolved against the node's
//! interfaces as they are now ([`resolve`]): plain names stay as written (a missing one fails the
//! attach, naming it), each pattern adds the interfaces whose name it matches (none is no
//! error), and `primaryNodeInterface` adds the interface of the default route. The result names
//! interfaces only, so the attach step and the link names (`xdp-<interface>`,
//! `tc-<direction>-<interface>`) are those of plain names. When the set changes (an interface
//! appeared, went, or the default route moved), the pinned version no longer matches: the next
//! pass builds a new one, which keeps the unchanged programs (same ids, their links re-pinned
//! as they are) and the maps' contents, attaches on the new interfaces and leaves out the gone
//! ones, whose link pins go with the old version. A link whose interface went and came back
//! under the same name (the kernel detached the link: it reports interface 0) is attached again.
//!
//! The agent learns of link changes, and of default routes added or deleted, from the kernel
//! ([`crate::link_events`]), not by polling.

use std::borrow::Cow;
use std::path::Path;

use bpfpin_crds::{Attach, interface_pattern};

/// Why a program's host interfaces could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum InterfacesError {
    /// `primaryNodeInterface` is set and the node has no default route: `(program, attach kind)`.
    #[error(
        "{1}.primaryNodeInterface of program {0}: the node has no default route (none in /proc/net/route for IPv4, nor in /proc/net/ipv6_route for IPv6), so it has no primary interface"
    )]
    NoDefaultRoute(String, &'static str),
    /// The node's interfaces could not be listed: `(program, the error)`.
    #[error("listing the node's network interfaces for program {0}: {1}")]
    List(String, #[source] std::io::Error),
    /// A pattern is not a regular expression (the schema refuses it first): `(program, entry,
    /// the error)`.
    #[error("interface pattern {1} of program {0}: {2}")]
    Pattern(String, String, #[source] regex::Error),
}

/// The interfaces of this network namespace (the calling thread's), by name, sorted.
pub fn node_interfaces() -> std::io::Result<Vec<String>> {
    // SAFETY: if_nameindex has no preconditions; it returns NULL on failure, else an array ended
    // by an entry with index 0, freed below with if_freenameindex.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut at = list;
    // SAFETY: every entry up to the terminating one is valid, with a NUL-terminated name.
    unsafe {
        while (*at).if_index != 0 && !(*at).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*at).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            at = at.add(1);
        }
        libc::if_freenameindex(list);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The node's primary interface: that of the IPv4 default route with the lowest metric, else of
/// the IPv6 one; `None` without a default route. Read from the calling thread's network
/// namespace (`/proc/thread-self/net`).
pub fn primary_interface() -> Option<String> {
    let proc_net = Path::new("/proc/thread-self/net");
    let v4 = std::fs::read_to_string(proc_net.join("route")).unwrap_or_default();
    if let Some(name) = default_route_v4(&v4) {
        return Some(name);
    }
    let v6 = std::fs::read_to_string(proc_net.join("ipv6_route")).unwrap_or_default();
    default_route_v6(&v6)
}

const RTF_UP: u32 = 0x1;
const RTF_REJECT: u32 = 0x200;

/// The interface of the IPv4 default route of `/proc/net/route` (`Iface Destination Gateway
/// Flags RefCnt Use Metric Mask ...`, hex fields) with the lowest metric.
fn default_route_v4(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) =
                (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?, f.get(7)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let up = flags & RTF_UP != 0 && flags & RTF_REJECT == 0;
            let default = u32::from_str_radix(dest, 16).ok()? == 0
                && u32::from_str_radix(mask, 16).ok()? == 0;
            (up && default).then(|| (metric.parse::<u32>().unwrap_or(u32::MAX), iface.to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface of the IPv6 default route of `/proc/net/ipv6_route` (`dest dest_len src
/// src_len next_hop metric refcnt use flags iface`, hex fields) with the lowest metric. The
/// kernel's unreachable defaults on `lo` are rejects, not routes.
fn default_route_v6(table: &str) -> Option<String> {
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, len, metric, flags, iface) =
                (f.first()?, f.get(1)?, f.get(5)?, f.get(8)?, f.get(9)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let up = flags & RTF_UP != 0 && flags & RTF_REJECT == 0;
            let default = dest.bytes().all(|b| b == b'0') && u8::from_str_radix(len, 16).ok()? == 0;
            let metric = u32::from_str_radix(metric, 16).unwrap_or(u32::MAX);
            (up && default && *iface != "lo").then(|| (metric, iface.to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// `attach` with its host `interfaces` of `xdp` and `tc` resolved against the node's interfaces
/// now (see the module documentation); borrowed as it is when it names none by pattern or
/// `primaryNodeInterface`.
pub fn resolve<'a>(program: &str, attach: &'a Attach) -> Result<Cow<'a, Attach>, InterfacesError> {
    if !bpfpin_crds::follows_host_interfaces(attach) {
        return Ok(Cow::Borrowed(attach));
    }
    let mut listed: Option<Vec<String>> = None;
    let mut primary: Option<Option<String>> = None;
    let mut out = attach.clone();
    if let Some(x) = out.xdp.as_mut() {
        x.interfaces = expand(
            program,
            "xdp",
            &x.interfaces,
            x.primary_node_interface == Some(true),
            &mut listed,
            &mut primary,
        )?;
        x.primary_node_interface = None;
    }
    if let Some(t) = out.tc.as_mut() {
        t.interfaces = expand(
            program,
            "tc",
            &t.interfaces,
            t.primary_node_interface == Some(true),
            &mut listed,
            &mut primary,
        )?;
        t.primary_node_interface = None;
    }
    Ok(Cow::Owned(out))
}

/// The interfaces one list names now: its plain names in order, then what its patterns match
/// (sorted), then the primary interface; each once.
fn expand(
    program: &str,
    kind: &'static str,
    entries: &[String],
    with_primary: bool,
    listed: &mut Option<Vec<String>>,
    primary: &mut Option<Option<String>>,
) -> Result<Vec<String>, InterfacesError> {
    let mut out: Vec<String> = Vec::new();
    let push = |name: &str, out: &mut Vec<String>| {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    };
    for entry in entries.iter().filter(|e| interface_pattern(e).is_none()) {
        push(entry, &mut out);
    }
    let mut patterns = Vec::new();
    for entry in entries {
        if let Some(p) = interface_pattern(entry) {
            let re = regex::Regex::new(p)
                .map_err(|e| InterfacesError::Pattern(program.to_owned(), entry.to_string(), e))?;
            patterns.push(re);
        }
    }
    if !patterns.is_empty() {
        if listed.is_none() {
            *listed =
                Some(node_interfaces().map_err(|e| InterfacesError::List(program.to_owned(), e))?);
        }
        for name in listed.iter().flatten() {
            if patterns.iter().any(|p| p.is_match(name)) {
                push(name, &mut out);
            }
        }
    }
    if with_primary {
        let found = primary.get_or_insert_with(primary_interface);
        match found {
            Some(name) => push(name, &mut out),
            None => return Err(InterfacesError::NoDefaultRoute(program.to_owned(), kind)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_are_read_from_proc_net() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth1\t00000000\t0102A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
                  eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_route_v4(v4).as_deref(), Some("eth0"));
        let none = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(default_route_v4(none), None);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
                  fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     ens4\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003     ens4\n";
        assert_eq!(default_route_v6(v6).as_deref(), Some("ens4"));
    }
}
