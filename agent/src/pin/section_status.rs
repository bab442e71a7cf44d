//! What bpfpin does with each libbpf section prefix: attaches it (`supported`), loads and pins it
//! only (`load-only`: something outside bpfpin runs it), refuses it (`unsupported`: aya cannot load
//! it), or leaves it to USDT support. Derived from the two places that decide it: aya-obj's section
//! parser (which program type, or `Unsupported`) and the auto-attach table
//! ([`super::auto_attach::PREFIXES`]). The README's table of every prefix is checked against it.

use std::str::FromStr;

use aya_obj::ProgramSection;

use super::auto_attach::{Derive, PREFIXES};

/// What bpfpin does with a section prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixStatus {
    /// Loaded, pinned and attached through an attach kind.
    Supported,
    /// Loaded and pinned; bpfpin makes no link for it.
    LoadOnly,
    /// A listed program of this section fails its object (`Unsupported`).
    Unsupported,
    /// USDT probes (their own section of the README).
    Usdt,
}

impl PrefixStatus {
    /// The word the README's table uses.
    pub fn as_str(self) -> &'static str {
        match self {
            PrefixStatus::Supported => "supported",
            PrefixStatus::LoadOnly => "load-only",
            PrefixStatus::Unsupported => "unsupported",
            PrefixStatus::Usdt => "usdt (see its section)",
        }
    }
}

/// A section name with the prefix `prefix` (an entry of [`PREFIXES`]; one ending in `/` gets a
/// target).
fn sample(prefix: &str) -> String {
    match prefix.strip_suffix('/') {
        Some(kind) if kind.starts_with("uprobe") || kind.starts_with("uretprobe") => {
            format!("{prefix}bin:f")
        }
        Some(_) => format!("{prefix}x"),
        None => prefix.to_owned(),
    }
}

/// The status of a section prefix: `None` when libbpf does not know it either.
pub fn prefix_status(prefix: &str) -> Option<PrefixStatus> {
    if prefix.starts_with("usdt") {
        return Some(PrefixStatus::Usdt);
    }
    let section = ProgramSection::from_str(&sample(prefix)).ok()?;
    Some(match section {
        ProgramSection::Unsupported { reason, .. } => {
            if reason.contains("libbpf knows no such") {
                return None;
            }
            PrefixStatus::Unsupported
        }
        // Parsed, but the agent loads neither (freplace is the XDP dispatcher's own type).
        ProgramSection::Extension | ProgramSection::LsmCgroup => PrefixStatus::Unsupported,
        _ => match PREFIXES.iter().find(|(p, _)| *p == prefix) {
            Some((_, Derive::Nothing(_))) => PrefixStatus::LoadOnly,
            _ => PrefixStatus::Supported,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the README's table of every prefix: `(prefix, status word)`.
    fn readme_rows() -> Vec<(String, String)> {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let table = readme
            .split_once("### Every libbpf section prefix")
            .expect("a README section `### Every libbpf section prefix`")
            .1;
        table
            .lines()
            .skip_while(|l| !l.starts_with("| prefix |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                assert_eq!(cells.len(), 6, "4 columns: {l}");
                let prefix = cells[1].trim_matches('`').to_owned();
                let status = match cells[4].split_once(':') {
                    Some((word, _)) => word.trim().to_owned(),
                    None => cells[4].to_owned(),
                };
                (prefix, status)
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_prefix_with_its_status() {
        let rows = readme_rows();
        assert!(rows.len() >= PREFIXES.len(), "{} rows", rows.len());
        let mut missing = Vec::new();
        for (prefix, _) in PREFIXES {
            let want = prefix_status(prefix)
                .unwrap_or_else(|| panic!("{prefix} is in PREFIXES but does not parse"));
            match rows.iter().find(|(p, _)| p == prefix) {
                None => missing.push(format!("| `{prefix}` | … | … | {} |", want.as_str())),
                Some((_, got)) => assert_eq!(
                    got,
                    want.as_str(),
                    "the README says {prefix} is {got}, the code makes it {}",
                    want.as_str()
                ),
            }
        }
        assert!(
            missing.is_empty(),
            "prefixes missing from the README's table:\n{}",
            missing.join("\n")
        );
        // And every row is a prefix libbpf knows, with the status the code gives it.
        for (prefix, got) in &rows {
            let want = prefix_status(prefix)
                .unwrap_or_else(|| panic!("the README lists {prefix}, which is no libbpf prefix"));
            assert_eq!(got, want.as_str(), "{prefix}");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (prefix, _) in &rows {
            assert!(seen.insert(prefix), "{prefix} has two rows");
        }
    }

    #[test]
    fn statuses_of_some_prefixes() {
        use PrefixStatus as S;
        for (prefix, want) in [
            ("tracepoint/", S::Supported),
            ("tp_btf/", S::Supported),
            ("lsm.s/", S::Supported),
            ("ksyscall/", S::Supported),
            ("netfilter", S::Supported),
            ("cgroup/connect_unix", S::Supported),
            ("syscall", S::LoadOnly),
            ("lwt_xmit", S::LoadOnly),
            ("socket", S::LoadOnly),
            ("kprobe.multi/", S::Unsupported),
            ("tp.s/", S::Unsupported),
            ("raw_tp.w/", S::Unsupported),
            ("struct_ops/", S::Unsupported),
            ("freplace/", S::Unsupported),
            ("lsm_cgroup/", S::Unsupported),
            ("usdt", S::Usdt),
        ] {
            assert_eq!(prefix_status(prefix), Some(want), "{prefix}");
        }
        assert_eq!(prefix_status("nonsense"), None);
    }
}
