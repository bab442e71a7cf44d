//! The fuzzer's reproducers for aya-obj (`fuzz/seeds/elf_plan/regress-*`, docs/fuzzing.md) each
//! make the vendored aya-obj (third_party/aya-obj) return an error instead of panicking.
//!
//! These call `aya_obj::Object::parse` and `Object::fixup_and_sanitize_btf` directly, with no
//! `catch_unwind`: a panic fails the test. The agent's own `catch_unwind` around the parse is a
//! second line of defence and is deliberately not relied on here.

mod common;

use std::path::PathBuf;

use aya_obj::Object;
use aya_obj::btf::BtfFeatures;

/// The bytes of one committed reproducer.
fn seed(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds/elf_plan")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `Object::parse` refuses the reproducer with an error whose text contains `expected`.
fn assert_parse_error(name: &str, expected: &str) {
    match Object::parse(&seed(name)) {
        Ok(_) => panic!("{name}: parsed without error"),
        Err(e) => {
            let msg = format!("{e}: {}", source_chain(&e));
            assert!(
                msg.contains(expected),
                "{name}: error {msg:?} lacks {expected:?}"
            );
        }
    }
}

/// The reproducer parses, and the BTF fix-up refuses it (with `expected` in the error) for every
/// kernel feature set that reaches the broken code, never panicking for any of them.
fn assert_fixup_error(name: &str, expected: &str) {
    let obj = Object::parse(&seed(name))
        .unwrap_or_else(|e| panic!("{name}: parse: {e}: {}", source_chain(&e)));
    let mut refused = 0;
    for all in [false, true] {
        let features = BtfFeatures::new(all, all, all, all, all, all, all, all);
        let mut obj = obj.clone();
        if let Err(e) = obj.fixup_and_sanitize_btf(&features) {
            let msg = format!("{e}: {}", source_chain(&e));
            assert!(
                msg.contains(expected),
                "{name}: error {msg:?} lacks {expected:?}"
            );
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "{name}: the fix-up accepted it for every feature set"
    );
}

/// The messages of `e`'s sources, outermost first.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// btf/btf.rs:1095 (`SecInfoIter::next`): a line info subsection whose record count runs past
/// the section.
#[test]
fn btf_ext_sec_info_out_of_range() {
    assert_parse_error(
        "regress-btf-ext-sec-info-out-of-range",
        "invalid BTF.ext line_info subsection at offset 0: 524295 records of 16 bytes run past its 120 bytes",
    );
}

/// btf/btf.rs:970 (`BtfExt::parse`): a func info subsection name outside the string table.
#[test]
fn btf_ext_func_info_name_not_a_string() {
    assert_parse_error(
        "regress-btf-ext-func-info-name-not-a-string",
        "invalid BTF string offset: 3959423837",
    );
}

/// btf/btf.rs:991 (`BtfExt::parse`): a line info subsection name outside the string table.
#[test]
fn btf_ext_line_info_name_not_a_string() {
    assert_parse_error(
        "regress-btf-ext-line-info-name-not-a-string",
        "invalid BTF string offset: 2415919293",
    );
}

/// btf/info.rs:160 (`LineSecInfo::parse`): a record size of 0 (`chunks(0)`).
#[test]
fn btf_ext_zero_record_size() {
    assert_parse_error(
        "regress-btf-ext-zero-record-size",
        "invalid BTF.ext line_info record size 0: a record is at least 16 bytes",
    );
}

/// obj.rs:663 (`parse_program`): a program symbol whose address is below its section's.
#[test]
fn program_symbol_before_its_section() {
    assert_parse_error(
        "regress-program-symbol-before-its-section",
        "invalid symbol, index `17` name: unlink_fexit",
    );
}

/// obj.rs:675 (`parse_program`): a program symbol whose address + size runs past its section.
#[test]
fn program_symbol_past_its_section() {
    assert_parse_error(
        "regress-program-symbol-past-its-section",
        "invalid symbol, index `27` name: tc_count",
    );
}

/// obj.rs:668 (`parse_program`): a program symbol whose address + size overflows.
#[test]
fn program_symbol_size_overflow() {
    assert_parse_error(
        "regress-program-symbol-size-overflow",
        "invalid symbol, index `54` name: prog_18",
    );
}

/// btf/btf.rs:557 (`Btf::fixup_and_sanitize`): a DATASEC entry offset whose bit offset
/// overflows `u32` when DATASEC is rewritten as a STRUCT.
#[test]
fn datasec_fixup_multiply_overflow() {
    assert_fixup_error(
        "regress-datasec-fixup-multiply-overflow",
        "DATASEC `.maps`: entry offset 1828716544 is too large",
    );
}

/// btf/btf.rs:553 (`Btf::fixup_and_sanitize`): a DATASEC entry of an unknown type.
#[test]
fn datasec_member_of_unknown_type() {
    assert_fixup_error(
        "regress-datasec-member-of-unknown-type",
        "unknown BTF type id `67`",
    );
}

/// The checks do not change what valid objects give: clang's objects (with `.BTF` and
/// `.BTF.ext`) parse with every function's func_info and line_info, and fix up for both extremes
/// of kernel features.
#[test]
fn clang_objects_still_parse_and_fix_up() {
    for name in ["counter", "tailcall", "globals", "kinds", "many"] {
        let path = common::bpf_object(name);
        let bytes = std::fs::read(&path).expect("read object");
        let obj = Object::parse(&bytes).unwrap_or_else(|e| panic!("{name}: parse: {e}"));
        assert!(obj.btf_ext.is_some(), "{name}: no .BTF.ext");
        assert!(!obj.functions.is_empty(), "{name}: no functions");
        for ((_, address), f) in &obj.functions {
            assert!(
                f.func_info.num_info > 0 && f.line_info.num_info > 0,
                "{name}: function {} at {address} lost its func_info or line_info",
                f.name
            );
        }
        for all in [false, true] {
            let features = BtfFeatures::new(all, all, all, all, all, all, all, all);
            let mut obj = obj.clone();
            obj.fixup_and_sanitize_btf(&features)
                .unwrap_or_else(|e| panic!("{name}: fix-up (features {all}): {e}"));
        }
    }
}

/// btf/btf.rs:460 (`Btf::string_at`, found while checking these fixes): a string offset past the
/// strings but before the end of the string section as the header places it in the file.
#[test]
fn btf_string_offset_past_the_strings() {
    assert_parse_error(
        "regress-btf-string-offset-past-the-strings",
        "invalid BTF string offset: 189",
    );
}

/// relocation.rs:393 (`FunctionLinker::relocate`, found by a later fuzz run): a call relocation
/// whose text symbol has no section. The steps are aya's load after the BTF fix-up: map
/// relocation (with made-up fds), then call relocation.
#[test]
fn call_to_symbol_without_section() {
    call_relocation_refused("regress-call-to-symbol-without-section");
}

/// relocation.rs:391 (`FunctionLinker::relocate`, upstream's `todo!`): a call relocation to a
/// symbol of another kind (TLS).
#[test]
fn call_to_tls_symbol() {
    call_relocation_refused("regress-call-to-tls-symbol");
}

/// Map relocation (with made-up fds) accepts the reproducer and call relocation refuses it.
fn call_relocation_refused(name: &str) {
    let mut obj = Object::parse(&seed(name)).unwrap_or_else(|e| panic!("{name}: parse: {e}"));
    let text_sections: std::collections::HashSet<usize> =
        obj.functions.keys().map(|(section, _)| *section).collect();
    let maps: Vec<(String, aya_obj::Map)> = obj
        .maps
        .iter()
        .map(|(n, m)| (n.clone(), m.clone()))
        .collect();
    obj.relocate_maps(
        maps.iter()
            .enumerate()
            .map(|(i, (n, m))| (n.as_str(), 100 + i as i32, m)),
        &text_sections,
    )
    .unwrap_or_else(|e| panic!("{name}: map relocation: {e}"));
    let e = obj
        .relocate_calls(&text_sections)
        .expect_err("call relocation accepted a call to a symbol without a section");
    let msg = format!("{e}: {}", source_chain(&e));
    assert!(msg.contains("not found while relocating"), "{name}: {msg}");
}

/// obj.rs:604 (`Object::patch_map_data`, found by a later fuzz run): a global variable whose symbol
/// address + size overflows. Each variable the object's BTF declares is patched with bytes of its
/// size, as the agent does for `globalData`.
#[test]
fn global_data_symbol_address_overflow() {
    let name = "regress-global-data-symbol-address-overflow";
    let obj = Object::parse(&seed(name)).unwrap_or_else(|e| panic!("{name}: parse: {e}"));
    let btf = obj.btf.as_ref().expect("the reproducer has BTF");
    let vars = bpfpin_agent::pin::btf_vars::global_vars(&btf.to_bytes()).unwrap_or_default();
    let mut refused = Vec::new();
    for (var, v) in vars.iter().filter(|(_, v)| v.size <= 1 << 20) {
        let data = vec![0x5a; v.size as usize];
        let mut obj = obj.clone();
        if let Err(e) = obj.patch_map_data([(var.as_str(), (data.as_slice(), true))].into()) {
            refused.push(e.to_string());
        }
    }
    assert!(
        // The sizes agree: what is refused is the range the address and size give.
        refused
            .iter()
            .any(|m| m == "symbol INCREMENT has size `8`, but provided data is of size `8`"),
        "{name}: no variable was refused: {refused:?}"
    );
}
