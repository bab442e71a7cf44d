//! Writes the CRD YAML under `crds/` (and the Helm chart's `crds/` when it exists) from the Rust
//! types. `crds/tests/crd_yaml.rs` fails when the committed files drift from the types.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let targets = [root.to_path_buf(), root.join("../charts/bpfpin/crds")];
    for (file, crd) in bpfpin_crds::crds() {
        for dir in &targets {
            if dir.is_dir() {
                std::fs::write(dir.join(file), bpfpin_crds::crd_yaml(&crd))?;
                println!("wrote {}", dir.join(file).display());
            }
        }
    }
    Ok(())
}
