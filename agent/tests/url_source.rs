//! `bytecode.url` against a real HTTP server on loopback (Python's http.server, started here):
//! digest check, cache by digest, 404, size limit, retries.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");

fn manifest(name: &str, url: &str, sha256: &str) -> String {
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {{name: {name}}}\nspec:\n  bytecode: {{url: '{url}'}}\n  sha256: '{sha256}'\n  programs: [{{name: count_getpid}}]\n"
    )
}

fn once(manifests: &Path, fs: &Bpffs, cache: &Path) -> Output {
    Command::new(AGENT)
        .args(["local", "--once", "--manifests"])
        .arg(manifests)
        .arg("--bpffs")
        .arg(fs.path())
        .arg("--cache-dir")
        .arg(cache)
        .env("RUST_LOG", "warn")
        .output()
        .expect("agent")
}

#[test]
fn a_url_is_downloaded_checked_and_cached_by_digest() {
    let served = tempfile::tempdir().expect("tempdir");
    std::fs::copy(bpf_object("counter"), served.path().join("counter.bpf.o")).expect("copy");
    let digest = bpfpin_agent::pin::desired::sha256_hex(&bytes("counter"));
    let server = HttpServer::serve(served.path());
    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        manifests.path().join("a.yaml"),
        manifest("fromurl", &server.url("counter.bpf.o"), &digest),
    )
    .expect("write");

    let fs = Bpffs::new();
    let out = once(manifests.path(), &fs, cache.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs.root().join("fromurl/progs/count_getpid").exists());
    assert!(
        cache.path().join(format!("{digest}.bpf.o")).exists(),
        "cached by digest"
    );

    // The server is gone: a fresh node (new bpffs) still gets the object from the cache.
    drop(server);
    let fs2 = Bpffs::new();
    let out = once(manifests.path(), &fs2, cache.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs2.root().join("fromurl/progs/count_getpid").exists());
}

#[test]
fn a_wrong_digest_a_missing_file_and_an_oversized_file_fail_clearly() {
    let served = tempfile::tempdir().expect("tempdir");
    std::fs::copy(bpf_object("counter"), served.path().join("counter.bpf.o")).expect("copy");
    let big = std::fs::File::create(served.path().join("big.bpf.o")).expect("create");
    big.set_len(bpfpin_agent::bytecode::MAX_BYTES + 1)
        .expect("size");
    let server = HttpServer::serve(served.path());
    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let zero = "0".repeat(64);
    std::fs::write(
        manifests.path().join("a.yaml"),
        manifest("wrongdigest", &server.url("counter.bpf.o"), &zero),
    )
    .expect("write");
    std::fs::write(
        manifests.path().join("b.yaml"),
        manifest("missing", &server.url("nope.bpf.o"), &zero),
    )
    .expect("write");
    std::fs::write(
        manifests.path().join("c.yaml"),
        manifest("toobig", &server.url("big.bpf.o"), &zero),
    )
    .expect("write");
    // Nothing listens on port 1: a transport error, retried, then reported.
    std::fs::write(
        manifests.path().join("d.yaml"),
        manifest("refused", "http://127.0.0.1:1/x.bpf.o", &zero),
    )
    .expect("write");

    let fs = Bpffs::new();
    let out = once(manifests.path(), &fs, cache.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wrongdigest: FAILED DigestMismatch"),
        "{stderr}"
    );
    assert!(
        stderr.contains("missing: FAILED BytecodeUnavailable: downloading http://127.0.0.1"),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    assert!(
        stderr.contains("toobig: FAILED BytecodeUnavailable") && stderr.contains("MiB limit"),
        "{stderr}"
    );
    assert!(
        stderr.contains("refused: FAILED BytecodeUnavailable") && stderr.contains("failed 3 times"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(cache.path()).expect("cache").count(),
        0,
        "nothing wrong is cached"
    );
}
