//! Compiles the XDP dispatcher (`bpf/xdp_dispatcher.bpf.c`) with clang and leaves the object in
//! `OUT_DIR`, where `xdp_dispatcher` embeds it: the agent ships its own dispatcher, built from
//! source, with no object file committed.

use std::path::PathBuf;
use std::process::Command;

fn main() {
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
