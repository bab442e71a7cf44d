//! `bytecode.image` references (`bytecode::image::ImageRef::parse`): no panic, and an accepted
//! reference builds a registry URL with no room for anything but a host and a repository path,
//! parses again to itself from its canonical form, and gets plain HTTP only for loopback.
#![no_main]

use bpfpin_agent::bytecode::image::ImageRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(image) = ImageRef::parse(text) else {
        return;
    };
    let base = image.api_base();
    let (scheme, rest) = base.split_once("://").expect("a scheme");
    assert!(
        scheme == "https" || (scheme == "http" && image.is_loopback()),
        "{text:?} → {base}"
    );
    let (host, path) = rest.split_once("/v2/").expect("/v2/");
    assert!(
        !host.contains(['/', '@', '?', '#', ' ']),
        "{text:?}: host {host:?}"
    );
    assert_eq!(path, image.repository, "{text:?}");
    assert!(
        image
            .repository
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".."),
        "{text:?}: repository {:?}",
        image.repository
    );
    assert!(
        !path.contains(['?', '#', '%', ' ', '@']),
        "{text:?}: path {path:?}"
    );
    let reference = image.manifest_reference();
    assert!(
        !reference.contains(['/', '?', '#', '%']),
        "{text:?}: {reference:?}"
    );

    // The canonical form parses to the same reference.
    let mut canonical = format!("{}/{}", image.registry, image.repository);
    if let Some(tag) = &image.tag {
        canonical.push(':');
        canonical.push_str(tag);
    }
    if let Some(digest) = &image.digest {
        canonical.push('@');
        canonical.push_str(digest);
    }
    let again = ImageRef::parse(&canonical)
        .unwrap_or_else(|e| panic!("{text:?}: its canonical form {canonical:?} is refused: {e}"));
    assert_eq!(
        (
            &again.registry,
            &again.repository,
            &again.tag,
            &again.digest
        ),
        (
            &image.registry,
            &image.repository,
            &image.tag,
            &image.digest
        ),
        "{text:?} and its canonical form {canonical:?} differ"
    );
});
