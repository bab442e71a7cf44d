//! The layer of a bytecode image (`bytecode::image::extract_object`): a tar, gzipped or not, that
//! the registry sends. No panic, memory bounded by the size limit (a gzip bomb stops at the bound),
//! and an accepted layer gives one `*.o` within the limit.
#![no_main]

use bpfpin_agent::bytecode::image::{check_labels, extract_object};
use libfuzzer_sys::fuzz_target;

/// Small, so the bound is what a run meets (the agent's is `--max-bytecode-bytes`).
const MAX_BYTES: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    if let Ok((path, bytes)) = extract_object(data, MAX_BYTES) {
        assert!(path.ends_with(".o"), "{path:?}");
        assert!(bytes.len() as u64 <= MAX_BYTES, "{} bytes", bytes.len());
    }
    // The image config that comes with the layer: JSON with the bytecode labels.
    let _ = check_labels(data);
});
