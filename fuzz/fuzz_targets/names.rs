//! The validation of the names that become bpffs paths (`bpfpin_crds::validation`) and the
//! encoding of attachment names (`layout::encode_name`), checked against what they promise: an
//! accepted object name is one directory directly under the root and not one of the layout's own,
//! an accepted pin path stays under `<root>/shared`, an accepted ELF name is a C identifier, and
//! the encoding of attachment details is one file name and loses nothing.
#![no_main]

use std::path::{Component, Path};

use bpfpin_agent::pin::fsops;
use bpfpin_agent::pin::layout::{Layout, encode_name};
use bpfpin_crds::validation::{
    MAX_ELF_NAME_LEN, MAX_OBJECT_NAME_LEN, MAX_PIN_PATH_LEN, MAX_PIN_PATH_SEGMENTS,
    validate_elf_name, validate_object_name, validate_pin_path,
};
use libfuzzer_sys::fuzz_target;

/// A bpffs that does not exist: `confine` looks for symlinks under it and must find none.
const BPFFS: &str = "/nonexistent/bpfpin-fuzz/bpffs";

/// The inverse of `encode_name`, to show that it is injective.
fn decode_name(encoded: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = encoded;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2E" => '.',
            "2F" => '/',
            "25" => '%',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let layout = Layout::new(Path::new(BPFFS));

    if validate_object_name(&text).is_ok() {
        assert!(
            !text.is_empty() && text.len() <= MAX_OBJECT_NAME_LEN,
            "{text:?}"
        );
        assert!(!text.contains(['/', '.', '\0']), "{text:?}");
        assert!(
            !text.starts_with('_') && text != "shared",
            "{text:?} is the layout's"
        );
        assert_eq!(
            layout.object(&text).parent(),
            Some(layout.root()),
            "{text:?}"
        );
    }

    if validate_elf_name("f", &text).is_ok() {
        assert!(
            !text.is_empty() && text.len() <= MAX_ELF_NAME_LEN,
            "{text:?}"
        );
        assert!(
            text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !text.as_bytes()[0].is_ascii_digit(),
            "{text:?} is not a C identifier"
        );
    }

    match validate_pin_path("spec.maps[0].pinPath", &text) {
        Ok(()) => {
            assert!(text.len() <= MAX_PIN_PATH_LEN, "{text:?}");
            let path = layout.shared_map(&text);
            let rest = path.strip_prefix(layout.shared()).expect("under shared/");
            let parts: Vec<Component<'_>> = rest.components().collect();
            assert!(
                !parts.is_empty() && parts.len() <= MAX_PIN_PATH_SEGMENTS,
                "{text:?}: {} segments",
                parts.len()
            );
            assert!(
                parts.iter().all(
                    |c| matches!(c, Component::Normal(s) if !s.to_string_lossy().contains('.'))
                ),
                "{text:?} has a component bpffs refuses or that leaves shared/"
            );
            assert!(
                fsops::confine(layout.root(), &path).is_ok(),
                "{text:?} is refused by confine"
            );
        }
        Err(e) => {
            // The message names the field and the value.
            assert!(e.to_string().starts_with("spec.maps[0].pinPath"), "{e}");
        }
    }

    let encoded = encode_name(&text);
    assert!(
        !encoded.contains(['/', '.']),
        "{text:?} encodes to {encoded:?}"
    );
    assert_eq!(
        decode_name(&encoded).as_deref(),
        Some(&*text),
        "encode_name is not injective"
    );
});
