//! The kernel's link and route events: an rtnetlink socket subscribed to `RTMGRP_LINK` that calls
//! back when an interface appears, is renamed or goes (`RTM_NEWLINK`, `RTM_DELLINK`), so that host
//! `interfaces` patterns and `primaryNodeInterface` ([`crate::pin::interfaces`]) follow the node's
//! links without polling; while an object uses `primaryNodeInterface` ([`Follow::LinksAndRoutes`])
//! the same socket is also a member of `RTMGRP_IPV4_ROUTE` and `RTMGRP_IPV6_ROUTE` (and
//! `RTMGRP_IPV4_IFADDR`, see below), and a default route added or deleted calls back too, so the
//! link moves with the default route. Both modes start it only while some selected object names
//! host interfaces that way ([`LinkWatch::ensure`]); the callback pokes the pass loop.
//!
//! A small raw socket over libc rather than a crate: no netlink crate is in the workspace's
//! lockfile (`rtnetlink` brings the `netlink-packet-*` family and its own async glue), and all that
//! is read here is five message types and two attributes. It runs on its own thread, blocked in
//! poll(2) on the socket and on a pipe that stops it: the agent's tokio is built without its `net`
//! feature (AsyncFd), and a thread that sleeps in the kernel costs no wake-up. Following routes or
//! not is a change of the socket's group memberships (`NETLINK_ADD_MEMBERSHIP`,
//! `NETLINK_DROP_MEMBERSHIP`), not a new socket: nothing is lost in between.
//!
//! The filtering is cheap, and done on the thread, so that busy tables wake no pass: `RTM_NEWLINK`
//! also comes for every change of a link's flags or state; only a new interface index, or a new
//! name for one, calls back (what patterns match on). Of the route events (`RTM_NEWROUTE`,
//! `RTM_DELROUTE`), only those of a default route (destination length 0) of the main table call
//! back: not a prefix route, nor the local table's routes. The kernel deletes IPv4 routes without
//! telling when their interface is set down or loses its last IPv4 address; so while routes are
//! followed, a link whose administrative state (`IFF_UP`) changes calls back too, and so does an
//! IPv4 address deleted (`RTM_DELADDR`: the socket then also joins `RTMGRP_IPV4_IFADDR`, whose
//! `RTM_NEWADDR`, lifetimes renewed, is ignored); the pass reads the default route anew. A lost
//! event (the socket's buffer overflowed, `ENOBUFS`) calls back too: the pass that follows reads
//! links and routes anew.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bpfpin_crds::Attach;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const IFLA_IFNAME: u16 = 3;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
/// The multicast groups (numbers, not `RTMGRP_*` bits) of IPv4 address changes and of IPv4 and
/// IPv6 route changes.
const RTNLGRP_IPV4_IFADDR: libc::c_int = 5;
const RTNLGRP_IPV4_ROUTE: libc::c_int = 7;
const RTNLGRP_IPV6_ROUTE: libc::c_int = 11;
/// `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// `struct ifinfomsg`.
const IFINFO_LEN: usize = 16;
/// `struct rtmsg`.
const RTMSG_LEN: usize = 12;

/// What the listener follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Interfaces that appear, are renamed or go (host interface patterns).
    Links,
    /// That, and default routes added or deleted, links set up or down and IPv4 addresses
    /// deleted (`primaryNodeInterface`).
    LinksAndRoutes,
}

impl Follow {
    /// What the given attach points need followed: `None` when none names host interfaces by
    /// pattern or `primaryNodeInterface`.
    pub fn needed<'a>(attaches: impl IntoIterator<Item = &'a Attach>) -> Option<Self> {
        let mut out = None;
        for attach in attaches {
            if !bpfpin_crds::follows_host_interfaces(attach) {
                continue;
            }
            let primary = attach
                .xdp
                .as_ref()
                .is_some_and(|x| x.primary_node_interface == Some(true))
                || attach
                    .tc
                    .as_ref()
                    .is_some_and(|t| t.primary_node_interface == Some(true));
            if primary {
                return Some(Self::LinksAndRoutes);
            }
            out = Some(Self::Links);
        }
        out
    }

    fn routes(self) -> bool {
        self == Self::LinksAndRoutes
    }
}

/// A running listener; dropping it stops its thread and closes the socket.
#[derive(Debug)]
pub struct LinkEvents {
    socket: Arc<OwnedFd>,
    routes: Arc<AtomicBool>,
    follow: Follow,
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LinkEvents {
    /// Subscribes to the link events (and, for [`Follow::LinksAndRoutes`], the route events) of
    /// the calling thread's network namespace and calls `on_change` on its own thread for each
    /// interface that appears, is renamed or goes (and each default route added or deleted, each
    /// link set up or down, each IPv4 address deleted).
    pub fn start(follow: Follow, on_change: impl Fn() + Send + 'static) -> io::Result<Self> {
        let socket = Arc::new(open_socket()?);
        let routes = Arc::new(AtomicBool::new(false));
        // Listed after the subscription, so an interface made in between is either known or
        // reported.
        let known = current_links();
        let (stop_read, stop_write) = pipe()?;
        let mut events = Self {
            socket: socket.clone(),
            routes: routes.clone(),
            follow: Follow::Links,
            stop: Some(stop_write),
            thread: None,
        };
        events.set_follow(follow)?;
        events.thread = Some(
            std::thread::Builder::new()
                .name("link-events".into())
                .spawn(move || listen(&socket, stop_read, known, &routes, on_change))?,
        );
        Ok(events)
    }

    /// What it follows.
    pub fn follow(&self) -> Follow {
        self.follow
    }

    /// Follows routes or not from now on: joins or leaves the route groups on the same socket.
    pub fn set_follow(&mut self, follow: Follow) -> io::Result<()> {
        if follow == self.follow {
            return Ok(());
        }
        let option = if follow.routes() {
            libc::NETLINK_ADD_MEMBERSHIP
        } else {
            libc::NETLINK_DROP_MEMBERSHIP
        };
        for group in [RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_IPV4_IFADDR] {
            // SAFETY: setsockopt with a valid socket and an int of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    self.socket.as_raw_fd(),
                    libc::SOL_NETLINK,
                    option,
                    (&raw const group).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        self.routes.store(follow.routes(), Ordering::Relaxed);
        self.follow = follow;
        Ok(())
    }
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        // Closing the pipe's write end makes its read end readable (end of file): the thread
        // leaves its poll and returns.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The listener of an agent, started and stopped as the selected objects need it.
#[derive(Debug, Clone, Default)]
pub struct LinkWatch(Arc<Mutex<Option<LinkEvents>>>);

impl LinkWatch {
    /// Starts the listener when `needed` and not running (it then calls `on_change`), changes
    /// what it follows when that changed, stops it when nothing is `needed`. A socket that cannot
    /// be opened is logged: interfaces (and routes) then change with the next pass something
    /// else starts.
    pub fn ensure<F: Fn() + Send + 'static>(
        &self,
        needed: Option<Follow>,
        on_change: impl FnOnce() -> F,
    ) {
        let mut running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match (needed, running.as_ref().map(LinkEvents::follow)) {
            (Some(follow), None) => match LinkEvents::start(follow, on_change()) {
                Ok(events) => {
                    if follow.routes() {
                        tracing::info!(
                            "listening to the kernel's link events and default route events (primaryNodeInterface)"
                        );
                    } else {
                        tracing::info!(
                            "listening to the kernel's link events (host interface patterns)"
                        );
                    }
                    *running = Some(events);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen to the kernel's link events (rtnetlink): interfaces that appear or go, and default routes that move, are only seen at the next pass");
                }
            },
            (Some(follow), Some(now)) if now != follow => {
                let Some(events) = running.as_mut() else {
                    return;
                };
                match events.set_follow(follow) {
                    Ok(()) if follow.routes() => tracing::info!(
                        "an object uses primaryNodeInterface: listening to default route events too"
                    ),
                    Ok(()) => tracing::info!(
                        "no object uses primaryNodeInterface any more: stopped listening to route events"
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "cannot change the rtnetlink groups the link listener is a member of: default routes that move are only seen at the next pass");
                    }
                }
            }
            (None, Some(_)) => {
                *running = None;
                tracing::info!(
                    "no object follows host interfaces any more: stopped listening to link events"
                );
            }
            _ => {}
        }
    }

    /// Whether the listener runs.
    pub fn is_running(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

fn open_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zeroed is its documented initial state.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = libc::RTMGRP_LINK as u32;
    // SAFETY: `addr` is a valid sockaddr_nl of the size given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A known interface: its name and whether it is administratively up.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    name: String,
    up: bool,
}

/// The interfaces now, by index.
fn current_links() -> HashMap<i32, Link> {
    let mut out = HashMap::new();
    // SAFETY: plain socket(2), for SIOCGIFFLAGS; closed when dropped.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    // SAFETY: a new descriptor nothing else owns (when valid).
    let ioctl_socket = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
    for name in crate::pin::interfaces::node_interfaces().unwrap_or_default() {
        let Ok(c) = std::ffi::CString::new(name.clone()) else {
            continue;
        };
        // SAFETY: `c` is a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        let up = ioctl_socket
            .as_ref()
            .is_some_and(|s| link_up(s, c.as_bytes()));
        if let Ok(index) = i32::try_from(index)
            && index != 0
        {
            out.insert(index, Link { name, up });
        }
    }
    out
}

/// Whether the interface `name` has `IFF_UP` (SIOCGIFFLAGS).
fn link_up(socket: &OwnedFd, name: &[u8]) -> bool {
    // SAFETY: ifreq is plain data; zeroed is a valid request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return false;
    }
    for (to, from) in req.ifr_name.iter_mut().zip(name) {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads a NUL-terminated name from and writes flags into `req`.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) };
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    rc == 0 && i32::from(unsafe { req.ifr_ifru.ifru_flags }) & libc::IFF_UP != 0
}

fn listen(
    socket: &OwnedFd,
    stop: OwnedFd,
    mut known: HashMap<i32, Link>,
    routes: &AtomicBool,
    on_change: impl Fn(),
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` holds two valid pollfd entries.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(%error, "poll on the link events socket failed; no longer listening");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        let mut changed = false;
        loop {
            // SAFETY: `buf` is writable for its length.
            let got = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if got < 0 {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        // Events were lost: what changed is unknown, so everything may have.
                        tracing::debug!("link events overflowed the socket buffer");
                        known = current_links();
                        changed = true;
                        continue;
                    }
                    _ => {
                        tracing::warn!(%error, "reading link events failed; no longer listening");
                        return;
                    }
                }
            }
            let len = usize::try_from(got).unwrap_or(0);
            changed |= apply(&buf[..len], &mut known, routes.load(Ordering::Relaxed));
        }
        if changed {
            on_change();
        }
    }
}

/// Applies one datagram of rtnetlink messages to `known`; whether an interface appeared, was
/// renamed or went, or (with `routes`) a default route of the main table was added or deleted,
/// a link was set up or down, or an IPv4 address was deleted.
fn apply(mut data: &[u8], known: &mut HashMap<i32, Link>, routes: bool) -> bool {
    let mut changed = false;
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        let kind = u16_at(data, 4);
        let msg = &data[NLMSG_HDRLEN..len];
        if (kind == RTM_NEWLINK || kind == RTM_DELLINK) && msg.len() >= IFINFO_LEN {
            let index = i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]);
            let flags = u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]);
            let up = flags & libc::IFF_UP as u32 != 0;
            let mut name = None;
            for (kind, value) in attributes(&msg[IFINFO_LEN..]) {
                if kind == IFLA_IFNAME {
                    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                    name = Some(String::from_utf8_lossy(&value[..end]).into_owned());
                }
            }
            if kind == RTM_DELLINK {
                changed |= known.remove(&index).is_some();
            } else if let Some(name) = name {
                let link = Link { name, up };
                match known.insert(index, link.clone()) {
                    Some(was) if was.name == link.name => changed |= routes && was.up != link.up,
                    _ => changed = true,
                }
            }
        } else if routes && (kind == RTM_NEWROUTE || kind == RTM_DELROUTE) && msg.len() >= RTMSG_LEN
        {
            let dst_len = msg[1];
            let mut table = u32::from(msg[4]);
            for (kind, value) in attributes(&msg[RTMSG_LEN..]) {
                if kind == RTA_TABLE && value.len() >= 4 {
                    table = u32::from_ne_bytes([value[0], value[1], value[2], value[3]]);
                }
            }
            changed |= dst_len == 0 && table == RT_TABLE_MAIN;
        } else if routes && kind == RTM_DELADDR {
            // The IPv4 routes of an interface whose last address went go without a route event.
            changed = true;
        }
        let next = (len + 3) & !3;
        if next >= data.len() {
            break;
        }
        data = &data[next..];
    }
    changed
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

/// The `(type, value)` of each attribute (`struct rtattr`) in `attrs`.
fn attributes(mut attrs: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if attrs.len() < 4 {
            return None;
        }
        let alen = usize::from(u16_at(attrs, 0));
        if alen < 4 || alen > attrs.len() {
            return None;
        }
        let out = (u16_at(attrs, 2), &attrs[4..alen]);
        attrs = &attrs[((alen + 3) & !3).min(attrs.len())..];
        Some(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u16, len: usize) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m
    }

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        attr.extend_from_slice(&kind.to_ne_bytes());
        attr.extend_from_slice(value);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        attr
    }

    fn link_message(kind: u16, index: i32, name: &str, up: bool) -> Vec<u8> {
        let mut value = name.as_bytes().to_vec();
        value.push(0);
        let attr = attribute(IFLA_IFNAME, &value);
        let mut m = header(kind, NLMSG_HDRLEN + IFINFO_LEN + attr.len());
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&index.to_ne_bytes());
        let flags: u32 = if up { libc::IFF_UP as u32 } else { 0 };
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&attr);
        m
    }

    fn message(kind: u16, index: i32, name: &str) -> Vec<u8> {
        link_message(kind, index, name, true)
    }

    /// A route message: `table` in `rtm_table`, and in `RTA_TABLE` when `attr_table`.
    fn route_message(kind: u16, dst_len: u8, table: u8, attr_table: Option<u32>) -> Vec<u8> {
        let attr = attr_table.map_or_else(Vec::new, |t| attribute(RTA_TABLE, &t.to_ne_bytes()));
        let mut m = header(kind, NLMSG_HDRLEN + RTMSG_LEN + attr.len());
        m.extend_from_slice(&[libc::AF_INET as u8, dst_len, 0, 0, table, 3, 0, 1]);
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&attr);
        m
    }

    fn known_lo() -> HashMap<i32, Link> {
        HashMap::from([(
            1,
            Link {
                name: "lo".to_owned(),
                up: true,
            },
        )])
    }

    #[test]
    fn only_new_renamed_and_gone_interfaces_count() {
        let mut known = known_lo();
        // A flags change of a known link: no call.
        assert!(!apply(&message(RTM_NEWLINK, 1, "lo"), &mut known, false));
        let mut two = message(RTM_NEWLINK, 7, "veth0");
        two.extend(message(RTM_NEWLINK, 1, "lo"));
        assert!(apply(&two, &mut known, false));
        assert_eq!(known.get(&7).map(|l| l.name.as_str()), Some("veth0"));
        assert!(
            apply(&message(RTM_NEWLINK, 7, "eth9"), &mut known, false),
            "renamed"
        );
        assert!(apply(&message(RTM_DELLINK, 7, "eth9"), &mut known, false));
        assert!(!known.contains_key(&7));
        assert!(
            !apply(&message(RTM_DELLINK, 7, "eth9"), &mut known, false),
            "already gone"
        );
        assert!(
            !apply(&[1, 2, 3], &mut known, false),
            "short datagrams are ignored"
        );
        // Links set down or up count only while routes are followed.
        assert!(!apply(
            &link_message(RTM_NEWLINK, 1, "lo", false),
            &mut known,
            false
        ));
        assert!(apply(
            &link_message(RTM_NEWLINK, 1, "lo", true),
            &mut known,
            true
        ));
        assert!(!apply(
            &link_message(RTM_NEWLINK, 1, "lo", true),
            &mut known,
            true
        ));
        // Route messages count only while routes are followed.
        assert!(!apply(
            &route_message(RTM_NEWROUTE, 0, 254, None),
            &mut known,
            false
        ));
    }

    #[test]
    fn only_default_routes_of_the_main_table_count() {
        let mut known = known_lo();
        let mut yes = |m: Vec<u8>| apply(&m, &mut known, true);
        assert!(yes(route_message(RTM_NEWROUTE, 0, 254, None)));
        assert!(yes(route_message(RTM_DELROUTE, 0, 254, None)));
        assert!(yes(route_message(RTM_NEWROUTE, 0, 254, Some(254))));
        assert!(!yes(route_message(RTM_NEWROUTE, 24, 254, None)), "a prefix");
        assert!(
            !yes(route_message(RTM_NEWROUTE, 0, 255, None)),
            "local table"
        );
        assert!(
            !yes(route_message(RTM_NEWROUTE, 0, 252, Some(1000))),
            "a table past 255 (RT_TABLE_COMPAT and RTA_TABLE)"
        );
        let mut two = route_message(RTM_NEWROUTE, 32, 255, None);
        two.extend(route_message(RTM_DELROUTE, 0, 254, None));
        assert!(yes(two), "the second of a datagram");
        let deladdr = header(RTM_DELADDR, NLMSG_HDRLEN + 8)
            .into_iter()
            .chain([0; 8])
            .collect::<Vec<u8>>();
        assert!(apply(&deladdr, &mut known, true), "an address deleted");
        assert!(!apply(&deladdr, &mut known, false), "links only");
        let newaddr = header(20, NLMSG_HDRLEN + 8)
            .into_iter()
            .chain([0; 8])
            .collect::<Vec<u8>>();
        assert!(!apply(&newaddr, &mut known, true), "an address added");
    }
}
