//! `WWW-Authenticate` challenges from a registry (`bytecode::image::parse_challenge`): whatever the
//! server sends, no panic, and a parsed challenge has a lowercase scheme without spaces and
//! lowercase, non-empty parameter names.
#![no_main]

use bpfpin_agent::bytecode::image::parse_challenge;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A header value reaches the parser through ureq's `to_str()`: visible ASCII, or not at all.
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Some(challenge) = parse_challenge(header) else {
        return;
    };
    assert!(!challenge.scheme.is_empty(), "{header:?}");
    assert!(
        !challenge.scheme.contains(char::is_whitespace),
        "{header:?}: {:?}",
        challenge.scheme
    );
    assert_eq!(
        challenge.scheme,
        challenge.scheme.to_ascii_lowercase(),
        "{header:?}"
    );
    for name in challenge.params.keys() {
        assert!(
            !name.is_empty() && !name.contains(['=', ',']),
            "{header:?}: {name:?}"
        );
        assert_eq!(*name, name.to_ascii_lowercase(), "{header:?}");
    }
    // Parameters come from the header: never longer, in total, than it.
    let total: usize = challenge
        .params
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert!(total <= header.len(), "{header:?}");
});
