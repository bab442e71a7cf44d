//! Human-readable pieces shared by condition messages and events: lists of node names that stay
//! short on large clusters, and bounded agent-provided text.

/// At most this many node names are spelled out in one message.
pub const MAX_NAMES: usize = 10;

/// Agent-provided messages (which may carry a verifier log tail) are cut to this many bytes in
/// `status.failures` and conditions.
pub const MAX_AGENT_MESSAGE: usize = 1024;

/// `n1, n2, n3`, or `n1, ..., n10 and 5 more` beyond [`MAX_NAMES`].
pub fn names<S: AsRef<str>>(names: &[S]) -> String {
    let shown: Vec<&str> = names.iter().take(MAX_NAMES).map(AsRef::as_ref).collect();
    let mut out = shown.join(", ");
    if names.len() > MAX_NAMES {
        out.push_str(&format!(" and {} more", names.len() - MAX_NAMES));
    }
    out
}

/// `s` cut to at most `max` bytes on a character boundary, with `...` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A condition reason must match `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`; an agent reason that
/// does not (it should be CamelCase) is replaced by `fallback` rather than failing the write.
pub fn condition_reason(reason: &str, fallback: &str) -> String {
    let bytes = reason.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 1024
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b',' | b':'))
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if valid {
        reason.to_owned()
    } else {
        fallback.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lists_are_bounded() {
        assert_eq!(names(&["n1"]), "n1");
        assert_eq!(names(&["n1", "n2", "n3"]), "n1, n2, n3");
        let many: Vec<String> = (0..15).map(|i| format!("n{i:02}")).collect();
        let text = names(&many);
        assert!(text.starts_with("n00, n01"), "{text}");
        assert!(text.ends_with("n09 and 5 more"), "{text}");
        assert!(!text.contains("n10"));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghij", 8), "abcde...");
        let t = truncate("ééééé", 6);
        assert!(t.len() <= 6 && t.ends_with("..."), "{t}");
    }

    #[test]
    fn reasons() {
        assert_eq!(
            condition_reason("VerifierRejected", "Failed"),
            "VerifierRejected"
        );
        assert_eq!(condition_reason("bad reason!", "Failed"), "Failed");
        assert_eq!(condition_reason("", "Failed"), "Failed");
        assert_eq!(condition_reason("1x", "Failed"), "Failed");
    }
}

/// `90s`, `2m`, `1m30s`, `1h5m`: durations in messages and flags' help.
pub fn duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod duration_tests {
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(super::duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(super::duration(Duration::from_secs(45)), "45s");
        assert_eq!(super::duration(Duration::from_secs(120)), "2m");
        assert_eq!(super::duration(Duration::from_secs(3900)), "1h5m");
        assert_eq!(super::duration(Duration::ZERO), "0s");
    }
}
