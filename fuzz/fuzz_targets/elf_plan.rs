//! An ELF object down to the loader's plan, with no kernel: what `loader::build` does with the
//! bytes before its first `bpf(2)` call (`aya_obj::Object::parse`, `loader::plan_maps`, the
//! `globalData` check against the object's BTF), then the kernel-free steps of aya's
//! `EbpfLoader::load` (global data patching, BTF fix-up and sanitizing, CO-RE relocation, map and
//! call relocation with made-up map fds).
//!
//! No panic, and every shared pin the plan names that passes `fsops::confine` is strictly below
//! `<root>/shared` (the loader creates and, on failure, removes those paths).
#![no_main]

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path};

use aya_obj::btf::BtfFeatures;
use bpfpin_agent::pin::fsops;
use bpfpin_agent::pin::layout::Layout;
use bpfpin_agent::pin::loader::{check_globals_against_btf, plan_maps};
use bpfpin_crds::validation::{validate_elf_name, validate_pin_path};
use bpfpin_crds::{BpfObjectSpec, MapSpec, ProgramSpec};
use libfuzzer_sys::fuzz_target;

/// A bpffs that does not exist: `confine` looks for symlinks under it and must find none.
const BPFFS: &str = "/nonexistent/bpfpin-fuzz/bpffs";
/// The largest global variable given bytes (its size comes from the ELF).
const MAX_GLOBAL: u64 = 4096;

fn check_plan(layout: &Layout, spec: &BpfObjectSpec, elf: &aya_obj::Object) {
    let Ok(plan) = plan_maps(layout, spec, elf) else {
        return;
    };
    for (name, path) in &plan.shared {
        assert!(
            elf.maps.contains_key(name),
            "plan names map {name:?} the ELF lacks"
        );
        if fsops::confine(layout.root(), path).is_ok() {
            let rest = path.strip_prefix(layout.shared()).unwrap_or_else(|_| {
                panic!(
                    "map {name:?}: shared pin {} is not under shared/",
                    path.display()
                )
            });
            assert!(
                !rest.as_os_str().is_empty()
                    && rest.components().all(|c| matches!(c, Component::Normal(_))),
                "map {name:?}: shared pin {} is shared/ itself or leaves it",
                path.display()
            );
        }
    }
    for name in &plan.private {
        assert!(
            elf.maps.contains_key(name),
            "plan names map {name:?} the ELF lacks"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(elf) = aya_obj::Object::parse(data) else {
        return;
    };
    let layout = Layout::new(Path::new(BPFFS));

    // The spec a user would write for this ELF: every program, maps unlisted (all private)...
    let programs: Vec<ProgramSpec> = elf
        .programs
        .keys()
        .filter(|n| validate_elf_name("f", n).is_ok())
        .map(|n| ProgramSpec {
            name: n.clone(),
            ..Default::default()
        })
        .collect();
    let mut spec = BpfObjectSpec {
        programs,
        ..Default::default()
    };
    check_plan(&layout, &spec, &elf);
    // ... then every map listed, shared under a pin path of its name.
    spec.maps = elf
        .maps
        .keys()
        .filter(|n| validate_elf_name("f", n).is_ok())
        .map(|n| MapSpec {
            name: n.clone(),
            pin_path: validate_pin_path("f", n)
                .is_ok()
                .then(|| format!("fuzz/{n}")),
            max_entries: Some(1),
        })
        .collect();
    check_plan(&layout, &spec, &elf);
    // A spec naming what the ELF does not have fails, without a panic.
    spec.programs.push(ProgramSpec {
        name: "no_such_program_in_the_elf".into(),
        ..Default::default()
    });
    assert!(plan_maps(&layout, &spec, &elf).is_err());

    // globalData: each variable the object's BTF declares, with its size and with one byte more.
    let vars = elf
        .btf
        .as_ref()
        .and_then(|btf| bpfpin_agent::pin::btf_vars::global_vars(&btf.to_bytes()))
        .unwrap_or_default();
    let fitting: Vec<(&str, Vec<u8>)> = vars
        .iter()
        .filter(|(_, v)| v.size <= MAX_GLOBAL)
        .map(|(name, v)| (name.as_str(), vec![0x5a; v.size as usize]))
        .collect();
    let _ = check_globals_against_btf(&elf, &fitting);
    let longer: Vec<(&str, Vec<u8>)> = fitting
        .iter()
        .map(|(n, b)| (*n, [b.as_slice(), &[0]].concat()))
        .collect();
    if !longer.is_empty() {
        assert!(
            check_globals_against_btf(&elf, &longer).is_err(),
            "globalData one byte longer than its variable is accepted"
        );
    }

    // aya's EbpfLoader::load up to its first bpf(2) call, for the two extremes of kernel features.
    for all in [false, true] {
        let mut obj = elf.clone();
        let globals: HashMap<&str, (&[u8], bool)> = fitting
            .iter()
            .map(|(n, b)| (*n, (b.as_slice(), true)))
            .collect();
        if obj.patch_map_data(globals).is_err() {
            continue;
        }
        let features = BtfFeatures::new(all, all, all, all, all, all, all, all);
        if obj.fixup_and_sanitize_btf(&features).is_err() {
            continue;
        }
        // CO-RE against the object's own types: the relocation code runs without a kernel BTF.
        if let Some(target) = elf.btf.as_ref()
            && obj.has_btf_relocations()
            && obj.relocate_btf(target).is_err()
        {
            continue;
        }
        let text_sections: HashSet<usize> =
            obj.functions.keys().map(|(section, _)| *section).collect();
        let maps: Vec<(String, aya_obj::Map)> = obj
            .maps
            .iter()
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect();
        let relocated = obj.relocate_maps(
            maps.iter()
                .enumerate()
                .map(|(i, (n, m))| (n.as_str(), 100 + i as i32, m)),
            &text_sections,
        );
        if relocated.is_ok() {
            let _ = obj.relocate_calls(&text_sections);
        }
    }
});
