//! Image references as Docker reads them: `[registry/]repository[:tag][@sha256:digest]`, and
//! where their API is (plain `http://` only for loopback registries).

use std::fmt;

use crate::bytecode::digest;

/// A parsed image reference: `[registry/]repository[:tag][@sha256:digest]`, as Docker reads it
/// (no registry: Docker Hub; a first component with a `.` or `:`, or `localhost`, is a registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference as written.
    pub original: String,
    /// `host[:port]` (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository (`library/x` for Docker Hub's official images).
    pub repository: String,
    /// The tag (`latest` when neither a tag nor a digest is given).
    pub tag: Option<String>,
    /// The pinned manifest digest, `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl ImageRef {
    /// Parses a reference; the error says what is wrong with it.
    pub fn parse(reference: &str) -> Result<Self, String> {
        if reference.is_empty() {
            return Err("the reference is empty".into());
        }
        if reference.contains("://") {
            return Err(
                "an image reference has no scheme: write registry/repository:tag or registry/repository@sha256:<digest>"
                    .into(),
            );
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("the reference contains whitespace".into());
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
            None => (reference, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            let mut chars = tag.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if !first_ok
                || tag.len() > 128
                || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                return Err(format!(
                    "invalid tag {tag:?}: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_ascii_lowercase(), rest.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
            _ => registry,
        };
        if !registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
        {
            return Err(format!("invalid registry host {registry:?}"));
        }
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || repository.len() > 255
            || !repository.split('/').all(valid_path_component)
        {
            return Err(format!(
                "invalid repository {repository:?}: lowercase letters and digits separated by '.', '_', '__', '-' or '/'"
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            original: reference.to_owned(),
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host without its port (and without IPv6 brackets).
    pub fn host(&self) -> &str {
        let r = self.registry.as_str();
        if let Some(rest) = r.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        r.rsplit_once(':').map_or(r, |(host, _)| host)
    }

    /// Whether the registry is on this host, where plain HTTP is allowed.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }

    /// The base URL of the repository's API: `<scheme>://<host>/v2/<repository>`.
    pub fn api_base(&self) -> String {
        let scheme = if self.is_loopback() { "http" } else { "https" };
        let host = if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        };
        format!("{scheme}://{host}/v2/{}", self.repository)
    }

    /// What the manifest is asked for by: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

/// `localhost` or a loopback address: the only hosts plain HTTP may reach.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `sha256:<64 lowercase hex>`, or why not.
pub(crate) fn parse_digest(digest: &str) -> Result<String, String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if digest::is_sha256_hex(hex) => Ok(digest.to_owned()),
        Some((algorithm, _)) if algorithm != "sha256" => Err(format!(
            "digest {digest:?}: only sha256 digests are supported"
        )),
        _ => Err(format!(
            "invalid digest {digest:?}: expected sha256:<64 lowercase hex digits>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_as_docker_reads_them() {
        let r = parse("quay.io/bpfman-bytecode/xdp_pass:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("quay.io", "bpfman-bytecode/xdp_pass", Some("v1"))
        );
        assert_eq!(r.api_base(), "https://quay.io/v2/bpfman-bytecode/xdp_pass");
        let r = parse("counter");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/counter", Some("latest"))
        );
        assert_eq!(
            r.api_base(),
            "https://registry-1.docker.io/v2/library/counter"
        );
        let r = parse(&format!("127.0.0.1:5000/a/b@{D}"));
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.api_base(), "http://127.0.0.1:5000/v2/a/b");
        let r = parse(&format!("localhost/x:v2@{D}"));
        assert_eq!((r.host(), r.tag.as_deref()), ("localhost", Some("v2")));
        assert_eq!(r.manifest_reference(), D, "a digest wins over a tag");
        assert!(parse("[::1]:5000/x").is_loopback());
        assert_eq!(parse("[::1]:5000/x").api_base(), "http://[::1]:5000/v2/x");
        // Only loopback hosts get plain HTTP.
        assert!(!parse("localhost.example.com/x").is_loopback());
        assert!(
            parse("registry.example:5000/x")
                .api_base()
                .starts_with("https://")
        );
        assert!(parse("10.0.0.1:5000/x").api_base().starts_with("https://"));
        assert!(parse("127.0.0.2:5000/x").api_base().starts_with("http://"));

        for bad in [
            "",
            "https://quay.io/x:v1",
            "quay.io/X:v1",
            "quay.io/x:",
            "quay.io/x:-v1",
            "quay.io/x@sha256:abc",
            "quay.io/x@sha512:abc",
            "quay.io//x",
            "quay.io/x y",
            "quay.io/x-/y",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} is refused");
        }
        assert!(
            ImageRef::parse("quay.io/x@sha512:abc")
                .expect_err("refused")
                .contains("only sha256")
        );
    }
}
