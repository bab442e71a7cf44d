//! The committed CRD YAML must equal what the Rust types generate.

#[test]
fn committed_crds_match_the_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart = root.join("../charts/bpfpin/crds");
    for (file, crd) in bpfpin_crds::crds() {
        let want = bpfpin_crds::crd_yaml(&crd);
        let mut dirs = vec![root.to_path_buf()];
        if chart.is_dir() {
            dirs.push(chart.clone());
        }
        for dir in dirs {
            let path = dir.join(file);
            let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run `cargo run -p bpfpin-crds --example crdgen`",
                    path.display()
                )
            });
            assert!(
                have == want,
                "{} drifted from the Rust types; run `cargo run -p bpfpin-crds --example crdgen`",
                path.display()
            );
        }
    }
}

#[test]
fn bpfobject_crd_carries_cel_rules_and_docs() {
    let json = serde_json::to_string(&bpfpin_crds::crds()[0].1).expect("serializes");
    assert!(json.contains(r#""scope":"Cluster""#));
    assert!(json.contains("bpffs refuses names containing '.'"));
    assert!(json.contains("must not contain '..'"));
    assert!(json.contains(r#""x-kubernetes-list-type":"map""#));
    assert!(json.contains("Which nodes load this object"));
    // `cgroup` or `pods` on the cgroup hooks, and `cgroup` no longer required.
    assert!(json.contains("has(self.cgroup) != has(self.pods)"));
    // Host interfaces: `/regex/` entries are whole patterns, and primaryNodeInterface counts as
    // naming host interfaces.
    assert!(json.contains("primaryNodeInterface"));
    assert!(json.contains(
        "self.all(i, !i.startsWith('/') || (size(i) > 2 && size(i) <= 258 && i.endsWith('/')))"
    ));
    assert!(json.contains("(has(self.primaryNodeInterface) && self.primaryNodeInterface)"));
    // `containers` on uprobe: not with `pid`, and an absolute target inside the container.
    assert!(json.contains("!has(self.containers) || !has(self.pid)"));
    assert!(json.contains("!has(self.containers) || self.target.startsWith('/')"));
}
