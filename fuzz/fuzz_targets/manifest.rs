//! A manifest file as local mode reads it: YAML bytes → the strict parser (`manifest::parse`:
//! bounds, schema, unknown fields) → `BpfObject` → the spec's
//! validation → what the reconciler derives from a valid spec before it touches bpffs (shared pin
//! paths confined to the root, the version key, the attachment names).
//!
//! No panic, and every derived path stays under the root and every attachment name is one bpffs
//! file name.
#![no_main]

use std::path::{Component, Path};

use bpfpin_agent::pin::attach::AttachPoint;
use bpfpin_agent::pin::desired::version_key;
use bpfpin_agent::pin::fsops;
use bpfpin_agent::pin::layout::Layout;
use bpfpin_crds::BpfObject;
use libfuzzer_sys::fuzz_target;

/// A bpffs that does not exist: `confine` looks for symlinks under it and must find none.
const BPFFS: &str = "/nonexistent/bpfpin-fuzz/bpffs";

/// One bpffs file name: not empty, no `/`, no `.` (bpffs refuses dots). A NUL is not checked
/// here: pinning refuses it with an error, it cannot reach another path.
fn is_one_bpffs_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '.'])
}

fn check(obj: &BpfObject) {
    let Some(name) = obj.metadata.name.as_deref() else {
        return;
    };
    if obj.spec.validate(name).is_err() {
        return;
    }
    let layout = Layout::new(Path::new(BPFFS));
    // A valid name is one directory directly under the root, and not one of the layout's own.
    let dir = layout.object(name);
    assert_eq!(
        dir.parent(),
        Some(layout.root()),
        "object {name:?} leaves the root"
    );
    assert!(is_one_bpffs_name(name), "object name {name:?}");
    assert!(
        !name.starts_with('_') && name != "shared",
        "object name {name:?} is the layout's"
    );
    for m in &obj.spec.maps {
        assert!(is_one_bpffs_name(&m.name), "map name {:?}", m.name);
        if let Some(pin) = &m.pin_path {
            let path = layout.shared_map(pin);
            assert!(
                fsops::confine(layout.root(), &path).is_ok(),
                "valid pinPath {pin:?} is refused by confine"
            );
            let rest = path.strip_prefix(layout.shared()).expect("under shared/");
            assert!(
                rest.components().all(|c| matches!(c, Component::Normal(_))),
                "pinPath {pin:?} has a non-normal component"
            );
        }
    }
    let mut links = std::collections::BTreeSet::new();
    for p in &obj.spec.programs {
        assert!(is_one_bpffs_name(&p.name), "program name {:?}", p.name);
        if let Some(attach) = &p.attach {
            for point in AttachPoint::all(attach) {
                let link = point.link_name();
                assert!(is_one_bpffs_name(&link), "link name {link:?} of {point:?}");
                links.insert((p.name.clone(), link));
            }
        }
    }
    let _ = version_key(&obj.spec, "0");
}

fuzz_target!(|data: &[u8]| {
    let results = bpfpin_agent::local::manifest::parse(data);
    // Every result is at least one byte of the file: no parser may report more.
    assert!(
        results.len() <= data.len() + 1,
        "{} results from {} bytes",
        results.len(),
        data.len()
    );
    for obj in results.iter().flatten() {
        check(obj);
    }
});
