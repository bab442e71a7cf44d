//! Compiles the XDP dispatcher (`bpf/xdp_dispatcher.bpf.c`) with clang and leaves the object in
//! `OUT_DIR`, where `xdp_dispatcher` embeds it: the agent ships its own dispatcher, built from
//! source, with no object file committed. Also writes the BpfObject CRD's schema as JSON for
//! local mode's manifest checks (`crd_schema`) and chooses how the `bpfpin-agent` binary is
//! linked (`link_args`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    link_args();
    crd_schema();
    let src = "bpf/xdp_dispatcher.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("xdp_dispatcher.bpf.o");
    // The source includes no header, so no -I for the host's kernel headers is needed.
    let output = Command::new(&clang)
        .args([
            "-target", "bpf", "-g", "-O2", "-Wall", "-Werror", "-c", src, "-o",
        ])
        .arg(&out)
        .output();
    match output {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "building the XDP dispatcher: `{clang} -target bpf -g -O2 -c {src}` failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "building the XDP dispatcher needs clang with the BPF target (`{clang}`: {e}); install \
             it (Debian: apt-get install clang, or hack/deps) or point CLANG at one"
        ),
    }
}

/// How the agent binary is linked (the binary only: not the library, its tests or the bench that
/// links it). As a plain position-independent executable a `local --once` run, about a
/// millisecond of work, spent much of its start-up in the dynamic loader applying ~30,000 relative
/// relocations from a 700 KB table (docs/performance.md, finding 7).
///
/// The default keeps a PIE, so the agent's own code and data stay address-randomised: the agent
/// is privileged and parses untrusted ELF objects and images, and that is worth more than a
/// fraction of a millisecond. It is linked with packed relative relocations (`-z
/// pack-relative-relocs`, DT_RELR: a 9 KB table instead of 700 KB; glibc >= 2.36 at run time,
/// Debian 12 or newer, as the images are).
///
/// `BPFPIN_AGENT_NO_PIE=1` at build time links a fixed-address executable instead (`-no-pie`),
/// for one-shot use where start-up dominates: an idle `--once` takes ~20 % less CPU (330 page
/// faults -> 180), and the agent's own code is not randomised (docs/security.md).
fn link_args() {
    println!("cargo:rerun-if-env-changed=BPFPIN_AGENT_NO_PIE");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // glibc targets only, linked through the C compiler driver as rustc does by default.
    if os != "linux" || env != "gnu" {
        return;
    }
    if std::env::var_os("BPFPIN_AGENT_NO_PIE").is_some_and(|v| v == "1") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    } else {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// `OUT_DIR/bpfobject_schema.json`: the `openAPIV3Schema` of the committed BpfObject CRD
/// (crds/bpfpin.io_bpfobjects.yaml, generated from the Rust types by crdgen and checked against
/// them by crds/tests/crd_yaml.rs), which local mode validates manifests against.
fn crd_schema() {
    let src = "../crds/bpfpin.io_bpfobjects.yaml";
    println!("cargo:rerun-if-changed={src}");
    let yaml = std::fs::read_to_string(src)
        .unwrap_or_else(|e| panic!("reading {src} (the BpfObject CRD): {e}"));
    let crd: serde_json::Value =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{src} is not YAML: {e}"));
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(
        schema["properties"]["spec"].is_object(),
        "{src} has no spec.versions[0].schema.openAPIV3Schema.properties.spec"
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("bpfobject_schema.json");
    std::fs::write(&out, schema.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
