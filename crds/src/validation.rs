//! Validation of the names that become bpffs paths.
//!
//! The CRD schema carries the same rules as CEL (see [`crate::bpf_object`]), so the API server
//! refuses bad objects at admission; the agent checks again here because local mode has no API
//! server and because a pin path is a filesystem path on a node, where being wrong is not an option.

use std::fmt;

/// The longest `BpfObject` name: a DNS label, so that `<object>-<hash>` version directories stay
/// well under bpffs' 255-byte name limit.
pub const MAX_OBJECT_NAME_LEN: usize = 63;
/// The longest ELF map or program name accepted in a spec.
pub const MAX_ELF_NAME_LEN: usize = 128;
/// The longest shared `pinPath`.
pub const MAX_PIN_PATH_LEN: usize = 200;
/// The most segments a shared `pinPath` may have.
pub const MAX_PIN_PATH_SEGMENTS: usize = 8;
/// Object names that are directories of the pin layout itself.
pub const RESERVED_OBJECT_NAMES: &[&str] = &["shared"];

/// Why a name or path was refused. The message is a sentence a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The field that holds the value, e.g. `spec.maps[0].pinPath`.
    pub field: String,
    /// The refused value.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.field, self.value, self.reason)
    }
}

impl std::error::Error for ValidationError {}

fn refuse(field: &str, value: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A `BpfObject` name becomes a bpffs directory: a DNS label (lowercase letters, digits, `-`),
/// no dots (bpffs refuses them), not a reserved name.
pub fn validate_object_name(name: &str) -> Result<(), ValidationError> {
    const FIELD: &str = "metadata.name";
    let no = |reason: &str| Err(refuse(FIELD, name, reason));
    if name.is_empty() {
        return no("must not be empty");
    }
    if name.contains('.') {
        return no(
            "must not contain '.': the name becomes a bpffs directory and bpffs refuses names with dots; use '-'",
        );
    }
    if name.len() > MAX_OBJECT_NAME_LEN {
        return no(&format!("must be at most {MAX_OBJECT_NAME_LEN} characters"));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !ok_chars || !ok_ends {
        return no(
            "must be lowercase letters, digits and '-', starting and ending with a letter or digit",
        );
    }
    if RESERVED_OBJECT_NAMES.contains(&name) {
        return no("is reserved: <root>/shared holds maps shared between objects");
    }
    Ok(())
}

/// An ELF map or program name as written in a spec: a C identifier. Internal maps (`.rodata`,
/// `.bss`, `.data`) are not addressable by name; use `globalData` for them.
pub fn validate_elf_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let no = |reason: &str| Err(refuse(field, name, reason));
    if name.is_empty() {
        return no("must not be empty");
    }
    if name.len() > MAX_ELF_NAME_LEN {
        return no(&format!("must be at most {MAX_ELF_NAME_LEN} characters"));
    }
    if name.starts_with('.') {
        return no(
            "names an ELF-internal map, which is never pinned; override its values with spec.globalData",
        );
    }
    let first_ok = name.as_bytes()[0].is_ascii_alphabetic() || name.as_bytes()[0] == b'_';
    if !first_ok || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return no("must be a C identifier (letters, digits, '_', not starting with a digit)");
    }
    Ok(())
}

/// A shared pin path, relative to `<root>/shared`: segments of letters, digits, `_` and `-`
/// separated by single `/`. This excludes `..`, `.`, absolute paths and empty segments.
pub fn validate_pin_path(field: &str, path: &str) -> Result<(), ValidationError> {
    let no = |reason: &str| Err(refuse(field, path, reason));
    if path.is_empty() {
        return no("must not be empty");
    }
    if path.starts_with('/') {
        return no("must be relative: it is placed under <root>/shared/");
    }
    if path.split('/').any(|s| s == "..") {
        return no("must not contain '..': a pin path may not leave <root>/shared/");
    }
    if path.len() > MAX_PIN_PATH_LEN {
        return no(&format!("must be at most {MAX_PIN_PATH_LEN} characters"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return no("must not have empty segments ('//' or a trailing '/')");
    }
    if segments.len() > MAX_PIN_PATH_SEGMENTS {
        return no(&format!(
            "must have at most {MAX_PIN_PATH_SEGMENTS} segments"
        ));
    }
    for segment in &segments {
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return no("segments may only hold letters, digits, '_' and '-' (bpffs refuses '.')");
        }
    }
    Ok(())
}

/// A kernel symbol or tracefs name as the CRD's CEL rules allow it (`^[A-Za-z0-9_]+$`): letters,
/// digits and `_`, so that it cannot name a path (`../../..`) under tracefs or kallsyms.
pub fn validate_symbol(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    let no = |reason: &str| Err(refuse(field, value, reason));
    if value.is_empty() {
        return no("must not be empty");
    }
    if value.chars().count() > max {
        return no(&format!("must be at most {max} characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return no("must be letters, digits and '_'");
    }
    Ok(())
}

/// A `bytecode.url`: `http://` or `https://`, as the CRD's CEL rule says.
pub fn validate_url(field: &str, url: &str) -> Result<(), ValidationError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(refuse(field, url, "must be an http:// or https:// URL"))
    }
}

/// An absolute path without `..` segments (what the agent opens, as for `cgroupSkb`).
pub fn validate_abs_path(field: String, path: &str) -> Result<(), ValidationError> {
    if !path.starts_with('/') || path.split('/').any(|s| s == "..") {
        return Err(refuse(
            &field,
            path,
            "must be an absolute path without '..'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        for ok in ["counter", "a", "edge-xdp-1", "0abc"] {
            assert_eq!(validate_object_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("my.counter", "'.'"),
            ("shared", "reserved"),
            ("Counter", "lowercase"),
            ("-x", "starting"),
            ("x-", "ending"),
            ("a_b", "lowercase"),
        ] {
            let err = validate_object_name(bad).expect_err(bad);
            assert!(err.reason.contains(why), "{bad}: {err}");
        }
        assert!(validate_object_name(&"a".repeat(64)).is_err());
        assert!(validate_object_name(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn elf_names() {
        for ok in ["counts", "_x", "count_getpid", "A1"] {
            assert_eq!(validate_elf_name("f", ok), Ok(()), "{ok}");
        }
        for bad in ["", ".rodata", "1abc", "a-b", "a/b", "a.b"] {
            assert!(validate_elf_name("f", bad).is_err(), "{bad}");
        }
        let err = validate_elf_name("spec.maps[0].name", ".bss").unwrap_err();
        assert!(err.to_string().contains("globalData"), "{err}");
    }

    #[test]
    fn symbols_and_urls() {
        for ok in ["syscalls", "sys_enter_getpid", "do_unlinkat", "A1"] {
            assert_eq!(validate_symbol("f", ok, 64), Ok(()), "{ok}");
        }
        for bad in ["", "../../..", "a/b", "a b", "do_unlinkat+4", "é"] {
            assert!(validate_symbol("f", bad, 64).is_err(), "{bad}");
        }
        assert!(validate_symbol("f", &"a".repeat(65), 64).is_err());
        assert!(validate_url("f", "https://h/x.o").is_ok());
        assert!(validate_url("f", "http://h/x.o").is_ok());
        for bad in ["file:///etc/x.o", "ftp://h/x", "h/x.o", ""] {
            assert!(validate_url("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pin_paths() {
        for ok in ["counts", "team-a/counts", "a/b_c/d-1"] {
            assert_eq!(validate_pin_path("f", ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("/etc/passwd", "relative"),
            ("../x", ".."),
            ("a/../../x", ".."),
            ("a//b", "empty segments"),
            ("a/", "empty segments"),
            ("a.b", "'.'"),
            ("a/./b", "'.'"),
            ("a b", "letters"),
        ] {
            let err = validate_pin_path("spec.maps[0].pinPath", bad).expect_err(bad);
            assert!(err.reason.contains(why), "{bad}: {err}");
            assert!(err.to_string().starts_with("spec.maps[0].pinPath"));
        }
        assert!(validate_pin_path("f", "a/".repeat(8).trim_end_matches('/')).is_ok());
        assert!(validate_pin_path("f", "a/".repeat(9).trim_end_matches('/')).is_err());
        assert!(validate_pin_path("f", &"a".repeat(201)).is_err());
    }
}
