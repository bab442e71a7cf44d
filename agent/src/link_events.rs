//! The kernel's link events: an rtnetlink socket subscribed to `RTMGRP_LINK` that calls back
//! when an interface appears, is renamed or goes (`RTM_NEWLINK`, `RTM_DELLINK`), so that host
//! `interfaces` patterns and `primaryNodeInterface` ([`crate::pin::interfaces`]) follow the
//! node's links without polling. Both modes start it only while some selected object names host
//! interfaces that way ([`LinkWatch::ensure`]); the callback pokes the pass loop.
//!
//! A small raw socket over libc rather than a crate: no netlink crate is in the workspace's
//! lockfile (`rtnetlink` brings the `netlink-packet-*` family and its own async glue), and all
//! that is read here is two message types and one attribute. It runs on its own thread, blocked
//! in poll(2) on the socket and on a pipe that stops it: the agent's tokio is built without its
//! `net` feature (AsyncFd), and a thread that sleeps in the kernel costs no wake-up.
//!
//! `RTM_NEWLINK` also comes for every change of a link's flags or state; only a new interface
//! index, or a new name for one, calls back (what patterns match on). A lost event (the socket's
//! buffer overflowed, `ENOBUFS`) calls back too: the pass that follows reads the links anew.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_IFNAME: u16 = 3;
/// `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// `struct ifinfomsg`.
const IFINFO_LEN: usize = 16;

/// A running listener; dropping it stops its thread and closes the socket.
#[derive(Debug)]
pub struct LinkEvents {
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LinkEvents {
    /// Subscribes to the link events of the calling thread's network namespace and calls
    /// `on_change` on its own thread for each interface that appears, is renamed or goes.
    pub fn start(on_change: impl Fn() + Send + 'static) -> io::Result<Self> {
        let socket = open_socket()?;
        // Listed after the subscription, so an interface made in between is either known or
        // reported.
        let known = current_links();
        let (stop_read, stop_write) = pipe()?;
        let thread = std::thread::Builder::new()
            .name("link-events".into())
            .spawn(move || listen(socket, stop_read, known, on_change))?;
        Ok(Self {
            stop: Some(stop_write),
            thread: Some(thread),
        })
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
    /// Starts the listener when `needed` and not running (it then calls `on_change`), stops it
    /// when not `needed`. A socket that cannot be opened is logged: interfaces then change with
    /// the next pass something else starts.
    pub fn ensure<F: Fn() + Send + 'static>(&self, needed: bool, on_change: impl FnOnce() -> F) {
        let mut running = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match (needed, running.is_some()) {
            (true, false) => match LinkEvents::start(on_change()) {
                Ok(events) => {
                    tracing::info!(
                        "listening to the kernel's link events (host interface patterns, primaryNodeInterface)"
                    );
                    *running = Some(events);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen to the kernel's link events (rtnetlink): interfaces that appear or go are only seen at the next pass");
                }
            },
            (false, true) => {
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

/// The interfaces now, by index.
fn current_links() -> HashMap<i32, String> {
    let mut out = HashMap::new();
    for name in crate::pin::interfaces::node_interfaces().unwrap_or_default() {
        let Ok(c) = std::ffi::CString::new(name.clone()) else {
            continue;
        };
        // SAFETY: `c` is a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if let Ok(index) = i32::try_from(index)
            && index != 0
        {
            out.insert(index, name);
        }
    }
    out
}

fn listen(socket: OwnedFd, stop: OwnedFd, mut known: HashMap<i32, String>, on_change: impl Fn()) {
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
            changed |= apply(&buf[..len], &mut known);
        }
        if changed {
            on_change();
        }
    }
}

/// Applies one datagram of rtnetlink messages to `known`; whether an interface appeared, was
/// renamed or went.
fn apply(mut data: &[u8], known: &mut HashMap<i32, String>) -> bool {
    let u16_at = |b: &[u8], at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
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
            let mut name = None;
            let mut attrs = &msg[IFINFO_LEN..];
            while attrs.len() >= 4 {
                let alen = usize::from(u16_at(attrs, 0));
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                if u16_at(attrs, 2) == IFLA_IFNAME {
                    let value = &attrs[4..alen];
                    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                    name = Some(String::from_utf8_lossy(&value[..end]).into_owned());
                }
                attrs = &attrs[((alen + 3) & !3).min(attrs.len())..];
            }
            if kind == RTM_DELLINK {
                changed |= known.remove(&index).is_some();
            } else if let Some(name) = name
                && known.get(&index) != Some(&name)
            {
                known.insert(index, name);
                changed = true;
            }
        }
        let next = (len + 3) & !3;
        if next >= data.len() {
            break;
        }
        data = &data[next..];
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, index: i32, name: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let alen = 4 + name.len() + 1;
        attr.extend_from_slice(&(alen as u16).to_ne_bytes());
        attr.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        attr.extend_from_slice(name.as_bytes());
        attr.push(0);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let len = NLMSG_HDRLEN + IFINFO_LEN + attr.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&index.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn only_new_renamed_and_gone_interfaces_count() {
        let mut known = HashMap::from([(1, "lo".to_owned())]);
        // A flags change of a known link: no call.
        assert!(!apply(&message(RTM_NEWLINK, 1, "lo"), &mut known));
        let mut two = message(RTM_NEWLINK, 7, "veth0");
        two.extend(message(RTM_NEWLINK, 1, "lo"));
        assert!(apply(&two, &mut known));
        assert_eq!(known.get(&7).map(String::as_str), Some("veth0"));
        assert!(
            apply(&message(RTM_NEWLINK, 7, "eth9"), &mut known),
            "renamed"
        );
        assert!(apply(&message(RTM_DELLINK, 7, "eth9"), &mut known));
        assert!(!known.contains_key(&7));
        assert!(
            !apply(&message(RTM_DELLINK, 7, "eth9"), &mut known),
            "already gone"
        );
        assert!(
            !apply(&[1, 2, 3], &mut known),
            "short datagrams are ignored"
        );
    }
}
