//! Which addresses `bytecode.url` and `bytecode.image` (registries, token services, redirects)
//! may connect to: `--source-allow CIDR|IP|host` (repeatable). A download is a request from the
//! host's network, so the check is made on the address each connection goes to, after DNS: a name
//! that resolves to a forbidden address is refused, whatever the URL said. Without the flag, every
//! address but link-local ones (`169.254.0.0/16`, `fe80::/10`: cloud metadata services) is allowed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// One `--source-allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Addresses in `net/prefix` (an IP alone is a /32 or /128).
    Net(IpAddr, u8),
    /// A host name (lowercase) as written in the URL or the image reference: any address it
    /// resolves to.
    Host(String),
}

impl Rule {
    /// Parses `10.0.0.0/8`, `192.168.1.10`, `fd00::/8`, `::1` or `registry.example.com`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some((ip, prefix)) = text.split_once('/') {
            let ip: IpAddr = ip
                .parse()
                .map_err(|e| format!("{text:?}: {ip:?} is not an IP address: {e}"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?;
            return Ok(Rule::Net(ip, prefix));
        }
        if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse() {
            let prefix = if matches!(ip, IpAddr::V4(_)) { 32 } else { 128 };
            return Ok(Rule::Net(ip, prefix));
        }
        let valid = !text.is_empty()
            && text.len() <= 253
            && text.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if valid {
            Ok(Rule::Host(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{text:?} is neither a CIDR (10.0.0.0/8), an IP address nor a host name"
            ))
        }
    }

    fn allows(&self, host: &str, ip: IpAddr) -> bool {
        match self {
            Rule::Host(name) => host.eq_ignore_ascii_case(name),
            Rule::Net(net, prefix) => in_net(ip, *net, *prefix),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Net(ip, prefix) => write!(f, "{ip}/{prefix}"),
            Rule::Host(name) => f.write_str(name),
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is its IPv4 address: it reaches the same host.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (canonical(ip), canonical(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The addresses downloads may connect to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourcePolicy {
    /// `None`: the default (everything but link-local addresses).
    allow: Option<Vec<Rule>>,
}

impl SourcePolicy {
    /// Only the addresses of `rules` (none: the default policy).
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            allow: (!rules.is_empty()).then_some(rules),
        }
    }

    /// Parses the values of `--source-allow`.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, String> {
        values
            .iter()
            .map(|v| Rule::parse(v.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// Whether a connection to `ip`, reached through the name `host`, is allowed.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match &self.allow {
            None => !is_link_local(canonical(ip)),
            Some(rules) => rules.iter().any(|r| r.allows(host, ip)),
        }
    }

    /// What is allowed, for messages.
    pub fn describe(&self) -> String {
        match &self.allow {
            None => "every address but link-local ones (the default)".to_owned(),
            Some(rules) => rules
                .iter()
                .map(Rule::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4 == Ipv4Addr::UNSPECIFIED,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == Ipv6Addr::UNSPECIFIED,
    }
}

/// The start of the message of a refused connection, so callers tell it from transport errors.
pub(crate) const REFUSED: &str = "not allowed by --source-allow";

/// A resolver that keeps only the allowed addresses of a name: ureq connects only to what the
/// resolver returns, redirects and token services included, so nothing reaches a refused address.
#[derive(Debug, Clone)]
pub(crate) struct PolicyResolver {
    policy: Arc<SourcePolicy>,
}

impl PolicyResolver {
    /// A resolver enforcing `policy`.
    pub(crate) fn new(policy: Arc<SourcePolicy>) -> Self {
        Self { policy }
    }
}

impl Resolver for PolicyResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = DefaultResolver::default().resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or_default();
        let mut kept = self.empty();
        let mut refused = Vec::new();
        for addr in resolved.iter().copied() {
            if self.policy.allows(host, addr.ip()) {
                kept.push(addr);
            } else {
                refused.push(addr.ip().to_string());
            }
        }
        if kept.is_empty() {
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{host} ({}) is {REFUSED} (allowed: {})",
                    refused.join(", "),
                    self.policy.describe()
                ),
            )));
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn rules_parse() {
        assert_eq!(Rule::parse("10.0.0.0/8"), Ok(Rule::Net(ip("10.0.0.0"), 8)));
        assert_eq!(Rule::parse("::1"), Ok(Rule::Net(ip("::1"), 128)));
        assert_eq!(Rule::parse("[::1]"), Ok(Rule::Net(ip("::1"), 128)));
        assert_eq!(Rule::parse("Quay.IO"), Ok(Rule::Host("quay.io".to_owned())));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "",
            "a..b",
            "a b",
            "http://x",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_refuses_link_local_only() {
        let p = SourcePolicy::default();
        assert!(p.allows("x", ip("127.0.0.1")));
        assert!(p.allows("x", ip("10.1.2.3")));
        assert!(p.allows("x", ip("2001:db8::1")));
        assert!(!p.allows("x", ip("169.254.169.254")));
        assert!(!p.allows("x", ip("::ffff:169.254.169.254")));
        assert!(!p.allows("x", ip("fe80::1")));
        assert!(!p.allows("x", ip("0.0.0.0")));
    }

    #[test]
    fn rules_match_addresses_and_names() {
        let p = SourcePolicy::parse(&["10.0.0.0/8", "::1", "registry.example"]).expect("parse");
        assert!(p.allows("anything", ip("10.255.0.1")));
        assert!(p.allows("anything", ip("::ffff:10.0.0.1")));
        assert!(!p.allows("anything", ip("11.0.0.1")));
        assert!(p.allows("[::1]", ip("::1")));
        assert!(!p.allows("anything", ip("127.0.0.1")));
        assert!(p.allows("REGISTRY.example", ip("192.0.2.1")));
        assert!(!p.allows("other.example", ip("192.0.2.1")));
        let all = SourcePolicy::parse(&["0.0.0.0/0"]).expect("parse");
        assert!(all.allows("x", ip("169.254.169.254")));
        assert!(
            !all.allows("x", ip("::1")),
            "an IPv4 rule says nothing of IPv6"
        );
        assert_eq!(p.describe(), "10.0.0.0/8, ::1/128, registry.example");
    }
}
