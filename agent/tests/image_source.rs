//! `bytecode.image` against a real OCI registry on loopback (common/registry.rs: CNCF
//! distribution's `registry`, built from its Go module), with images pushed over the
//! distribution API. By tag and by digest, an index, gzipped and plain layers, digest checks,
//! missing tags, bad images, basic-auth credentials from `--registry-auth`, the bearer-token flow
//! against a registry with `auth: token` and a real token server (common::registry::TokenRegistry:
//! credentials, wrong credentials, anonymous tokens for a public repository and for a private
//! one), and a digest-pinned image pinned again from the cache with the registry stopped.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use bpfpin_agent::pin::desired::sha256_hex;
use common::registry::{
    OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Registry, TOKEN_SERVICE, TokenRegistry, counter_labels,
    gzip, tar,
};
use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");

/// A BpfObject pinning the counter's `count_getpid` from `image`.
fn manifest(name: &str, image: &str, sha256: Option<&str>) -> String {
    let sha256 = sha256.map_or_else(String::new, |d| format!("  sha256: '{d}'\n"));
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {{name: {name}}}\nspec:\n  bytecode: {{image: '{image}'}}\n{sha256}  programs: [{{name: count_getpid}}]\n"
    )
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).expect("write manifest");
}

fn once(manifests: &Path, fs: &Bpffs, cache: &Path, auth: Option<&Path>) -> Output {
    let mut cmd = Command::new(AGENT);
    cmd.args(["local", "--once", "--manifests"])
        .arg(manifests)
        .arg("--bpffs")
        .arg(fs.path())
        .arg("--cache-dir")
        .arg(cache)
        .env("RUST_LOG", "warn");
    if let Some(auth) = auth {
        cmd.arg("--registry-auth").arg(auth);
    }
    cmd.output().expect("agent")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_image_is_pulled_by_tag_and_by_digest_then_pinned_again_from_the_cache() {
    require_root();
    let mut registry = Registry::start(false);
    let object = bytes("counter");
    let object_digest = sha256_hex(&object);
    let layer = gzip(&tar(&[("bpf.o", &object), ("LICENSE", b"GPL-2.0")]));
    let (digest, _) = registry.push_image("bpfman/counter", "v1", &layer, counter_labels());

    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let by_tag = format!("{}/bpfman/counter:v1", registry.host());
    let by_digest = format!("{}/bpfman/counter@{digest}", registry.host());
    write(
        manifests.path(),
        "a.yaml",
        &manifest("bytag", &by_tag, None),
    );
    write(
        manifests.path(),
        "b.yaml",
        &manifest("bydigest", &by_digest, Some(&object_digest)),
    );

    let fs = Bpffs::new();
    let out = once(manifests.path(), &fs, cache.path(), None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs.root().join("bytag/progs/count_getpid").exists());
    assert!(fs.root().join("bydigest/progs/count_getpid").exists());
    assert!(
        cache.path().join(format!("{object_digest}.bpf.o")).exists(),
        "the .o is cached by its digest"
    );
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(
        std::fs::read_to_string(cache.path().join(format!("{hex}.image"))).expect("index"),
        object_digest,
        "the manifest digest leads to the .o"
    );
    // Two objects, one image: its config and layer were downloaded once.
    assert_eq!(
        registry.blob_gets("bpfman/counter"),
        2,
        "{}",
        registry.log()
    );

    // A restart with the registry up: the tag is resolved again, no blob is downloaded.
    let fs2 = Bpffs::new();
    let out = once(manifests.path(), &fs2, cache.path(), None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        registry.blob_gets("bpfman/counter"),
        2,
        "{}",
        registry.log()
    );

    // The registry is gone: a fresh node (new bpffs) pins the digest-pinned object from the
    // cache without asking; the tag keeps the digest of its last pull, with a warning.
    registry.stop();
    let fs3 = Bpffs::new();
    let out = once(manifests.path(), &fs3, cache.path(), None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs3.root().join("bydigest/progs/count_getpid").exists());
    assert!(fs3.root().join("bytag/progs/count_getpid").exists());
    let err = stderr(&out);
    assert!(
        err.contains("registry unreachable: using the digest of the tag's last pull")
            && err.contains(&by_tag)
            && !err.contains(&by_digest),
        "only the tag needed the registry: {err}"
    );

    // Without that cache, the tag cannot be resolved and says why.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = once(manifests.path(), &fs3, empty.path(), None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "bytag: FAILED BytecodeUnavailable: image {by_tag}: registry {} unreachable",
            registry.host()
        )) && err.contains("failed 3 times"),
        "{err}"
    );
}

#[test]
fn an_index_leads_to_this_platform_and_plain_tar_layers_work() {
    require_root();
    let registry = Registry::start(false);
    let object = bytes("counter");
    // This node's platform: the counter, in a plain (not gzipped) tar, in a subfolder.
    let (native, native_size) = registry.push_image(
        "multi",
        "native",
        &tar(&[("opt/bytecode/counter.o", &object)]),
        counter_labels(),
    );
    // Another platform: not an ELF object at all, so following it would fail.
    let (other, other_size) = registry.push_image(
        "multi",
        "other",
        &gzip(&tar(&[("bpf.o", b"not elf")])),
        counter_labels(),
    );
    let other_arch = if bpfpin_agent::bytecode::image::node_architecture() == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": other, "size": other_size,
             "platform": {"architecture": other_arch, "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": native, "size": native_size,
             "platform": {"architecture": bpfpin_agent::bytecode::image::node_architecture(), "os": "linux"}},
        ],
    }))
    .expect("index");
    let index_digest = registry.push_manifest("multi", "v1", OCI_INDEX, &index);

    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    write(
        manifests.path(),
        "a.yaml",
        &manifest("fromindex", &format!("{}/multi:v1", registry.host()), None),
    );
    write(
        manifests.path(),
        "b.yaml",
        &manifest(
            "indexdigest",
            &format!("{}/multi@{index_digest}", registry.host()),
            Some(&sha256_hex(&object)),
        ),
    );
    let fs = Bpffs::new();
    let out = once(manifests.path(), &fs, cache.path(), None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs.root().join("fromindex/progs/count_getpid").exists());
    assert!(fs.root().join("indexdigest/progs/count_getpid").exists());
}

#[test]
fn bad_references_and_bad_images_fail_clearly() {
    require_root();
    let registry = Registry::start(false);
    let object = bytes("counter");
    let good = gzip(&tar(&[("bpf.o", &object)]));
    registry.push_image("good", "v1", &good, counter_labels());
    registry.push_image(
        "two",
        "v1",
        &gzip(&tar(&[("a.o", &object), ("b.o", &object)])),
        counter_labels(),
    );
    registry.push_image(
        "none",
        "v1",
        &gzip(&tar(&[("README", b"no object here")])),
        counter_labels(),
    );
    registry.push_image("nolabels", "v1", &good, serde_json::json!({}));

    let host = registry.host();
    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let zero = "0".repeat(64);
    let cases = [
        ("wrongsha", format!("{host}/good:v1"), Some(zero.as_str())),
        ("missingtag", format!("{host}/good:nope"), None),
        ("missingrepo", format!("{host}/nosuchrepo:v1"), None),
        ("missingdigest", format!("{host}/good@sha256:{zero}"), None),
        ("twoobjects", format!("{host}/two:v1"), None),
        ("noobject", format!("{host}/none:v1"), None),
        ("nolabels", format!("{host}/nolabels:v1"), None),
        ("refused", "127.0.0.1:1/x:v1".to_owned(), None),
        ("badref", format!("{host}/Bad:v1"), None),
    ];
    for (name, image, sha) in &cases {
        write(
            manifests.path(),
            &format!("{name}.yaml"),
            &manifest(name, image, *sha),
        );
    }
    let fs = Bpffs::new();
    let out = once(manifests.path(), &fs, cache.path(), None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let expect = [
        ("wrongsha", "DigestMismatch", "spec.sha256 says 0000"),
        (
            "missingtag",
            "BytecodeUnavailable",
            "manifest not found in registry",
        ),
        (
            "missingtag",
            "BytecodeUnavailable",
            "HTTP 404, MANIFEST_UNKNOWN",
        ),
        (
            "missingrepo",
            "BytecodeUnavailable",
            "manifest not found in registry",
        ),
        ("missingdigest", "BytecodeUnavailable", "HTTP 404"),
        (
            "twoobjects",
            "BytecodeUnavailable",
            "several *.o files (a.o, b.o)",
        ),
        (
            "noobject",
            "BytecodeUnavailable",
            "no *.o file (it holds README)",
        ),
        (
            "nolabels",
            "BytecodeUnavailable",
            "no io.ebpf.programs label",
        ),
        (
            "refused",
            "BytecodeUnavailable",
            "registry 127.0.0.1:1 unreachable",
        ),
        ("badref", "InvalidSpec", "invalid repository"),
    ];
    for (name, reason, text) in expect {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("{name}: FAILED")))
            .unwrap_or_else(|| panic!("no failure for {name}: {err}"));
        assert!(
            line.starts_with(&format!("{name}: FAILED {reason}: ")) && line.contains(text),
            "{name}: expected {reason} with {text:?}, got {line}"
        );
    }
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(cached.is_empty(), "nothing wrong is cached: {cached:?}");
}

#[test]
fn credentials_come_from_registry_auth() {
    require_root();
    let registry = Registry::start(true);
    let (user, password) = registry.credentials.clone().expect("credentials");
    let layer = gzip(&tar(&[("bpf.o", &bytes("counter"))]));
    registry.push_image("private/counter", "v1", &layer, counter_labels());

    let manifests = tempfile::tempdir().expect("tempdir");
    let auth = tempfile::tempdir().expect("tempdir");
    let image = format!("{}/private/counter:v1", registry.host());
    write(
        manifests.path(),
        "a.yaml",
        &manifest("private", &image, None),
    );

    let cache = tempfile::tempdir().expect("tempdir");
    let fs = Bpffs::new();
    let out = once(manifests.path(), &fs, cache.path(), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "private: FAILED BytecodeUnavailable: image {image}: registry {} requires credentials (HTTP 401)",
            registry.host()
        )),
        "{}",
        stderr(&out)
    );

    let wrong = registry.auth_file(auth.path(), &user, "wrong-password");
    let out = once(manifests.path(), &fs, cache.path(), Some(&wrong));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "private: FAILED BytecodeUnavailable: image {image}: registry {} refused the credentials of \"docker\" (HTTP 401)",
            registry.host()
        )),
        "{}",
        stderr(&out)
    );

    let right = registry.auth_file(auth.path(), &user, &password);
    let out = once(manifests.path(), &fs, cache.path(), Some(&right));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs.root().join("private/progs/count_getpid").exists());

    // An unreadable credentials file stops the agent before it touches anything.
    let broken = auth.path().join("broken.json");
    std::fs::write(&broken, "{").expect("write");
    let out = once(manifests.path(), &fs, cache.path(), Some(&broken));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--registry-auth"), "{}", stderr(&out));
}

/// A BpfObject pinning the counter's `count_getpid` from `counter.bpf.o` beside the manifests.
fn local_manifest(dir: &Path, name: &str) -> String {
    std::fs::write(dir.join("counter.bpf.o"), bytes("counter")).expect("write object");
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {{name: {name}}}\nspec:\n  bytecode: {{path: counter.bpf.o}}\n  programs: [{{name: count_getpid}}]\n"
    )
}

/// The lines of `log` holding every one of `needles`.
fn lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

#[test]
fn bearer_tokens_from_the_token_server_pull_with_the_right_credentials_only() {
    require_root();
    let registry = TokenRegistry::start(&["public/counter"]);
    let (user, password) = registry.credentials();
    let layer = gzip(&tar(&[("bpf.o", &bytes("counter"))]));
    registry.push_image("docker/counter", "v1", &layer, counter_labels());
    registry.push_image("alice/counter", "v1", &layer, counter_labels());

    let manifests = tempfile::tempdir().expect("tempdir");
    let auth = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let host = registry.host();
    let image = format!("{host}/docker/counter:v1");
    write(
        manifests.path(),
        "a.yaml",
        &manifest("private", &image, None),
    );
    write(
        manifests.path(),
        "b.yaml",
        &local_manifest(manifests.path(), "local"),
    );

    // A wrong password: the token service refuses it, the registry is never asked with a token,
    // the object is not pinned, the other one is.
    let wrong = registry.auth_file(auth.path(), &user, "wrong-password");
    let fs = Bpffs::new();
    let out = once(manifests.path(), &fs, cache.path(), Some(&wrong));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "private: FAILED BytecodeUnavailable: image {image}: token service {} refused the credentials of \"docker\" (HTTP 401)",
            registry.realm_url()
        )),
        "{err}"
    );
    assert!(!fs.root().join("private").exists(), "{err}");
    assert!(fs.root().join("local/progs/count_getpid").exists(), "{err}");
    let realm = registry.realm_log();
    assert!(
        !lines_with(
            &realm,
            &[
                "scope=repository%3Adocker%2Fcounter%3Apull",
                "with credentials: HTTP 401"
            ]
        )
        .is_empty(),
        "the realm forwarded the credentials to the token server, which refused them: {realm}"
    );
    assert!(
        lines_with(&registry.token_server_log(), &["get token complete"]).is_empty(),
        "no token was issued: {}",
        registry.token_server_log()
    );
    assert!(
        lines_with(&registry.front.log(), &["\"auth.user.name\":\"docker\""]).is_empty(),
        "the registry saw no token: {}",
        registry.front.log()
    );

    // The right password: a token for `repository:docker/counter:pull` from the token server,
    // which the registry accepts for the manifest and the blobs.
    let right = registry.auth_file(auth.path(), &user, &password);
    let out = once(manifests.path(), &fs, cache.path(), Some(&right));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs.root().join("private/progs/count_getpid").exists());
    let issued = registry.token_server_log();
    assert_eq!(
        lines_with(
            &issued,
            &[
                "msg=\"get token complete\"",
                "acctSubject=docker",
                "grantedAccess=\"[{{repository  docker/counter} pull}]\"",
                &format!("service={TOKEN_SERVICE}"),
            ]
        )
        .len(),
        1,
        "one token for one pull: {issued}"
    );
    let front = registry.front.log();
    for what in ["manifests/v1", "blobs/sha256:"] {
        assert!(
            !lines_with(
                &front,
                &[
                    "\"auth.user.name\":\"docker\"",
                    &format!("/v2/docker/counter/{what}"),
                    "\"http.response.status\":200"
                ]
            )
            .is_empty(),
            "the registry served {what} to the token's subject: {front}"
        );
    }

    // The token server grants `docker` nothing outside `docker/`: the registry refuses that
    // token for another user's repository, which is not a wrong password.
    let other = format!("{host}/alice/counter:v1");
    write(manifests.path(), "c.yaml", &manifest("other", &other, None));
    let out = once(manifests.path(), &fs, cache.path(), Some(&right));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "other: FAILED BytecodeUnavailable: image {other}: registry {host} denied \"docker\" access to repository alice/counter (HTTP 401, insufficient_scope: the token service granted no pull)"
        )),
        "{err}"
    );
    assert!(!fs.root().join("other").exists());
    assert!(
        !lines_with(
            &registry.token_server_log(),
            &[
                "msg=\"get token complete\"",
                "acctSubject=docker",
                "grantedAccess=\"[]\""
            ]
        )
        .is_empty(),
        "{}",
        registry.token_server_log()
    );
}

#[test]
fn anonymous_bearer_tokens_pull_a_public_image_and_not_a_private_one() {
    require_root();
    let registry = TokenRegistry::start(&["public/counter"]);
    let layer = gzip(&tar(&[("bpf.o", &bytes("counter"))]));
    registry.push_image("public/counter", "v1", &layer, counter_labels());
    registry.push_image("docker/counter", "v1", &layer, counter_labels());

    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let host = registry.host();
    let public = format!("{host}/public/counter:v1");
    let private = format!("{host}/docker/counter:v1");
    write(
        manifests.path(),
        "a.yaml",
        &manifest("public", &public, None),
    );
    write(
        manifests.path(),
        "b.yaml",
        &manifest("private", &private, None),
    );

    // No --registry-auth at all.
    let fs = Bpffs::new();
    let out = once(manifests.path(), &fs, cache.path(), None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        fs.root().join("public/progs/count_getpid").exists(),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "private: FAILED BytecodeUnavailable: image {private}: registry {host} requires credentials (HTTP 401) and none are configured for it"
        )),
        "{err}"
    );
    assert!(!fs.root().join("private").exists(), "{err}");

    // Both got an anonymous token (the realm's log), with `pull` on the public repository only;
    // the registry served the public blobs to it and refused the private manifest.
    let realm = registry.realm_log();
    assert_eq!(
        lines_with(
            &realm,
            &[
                "anonymous token for repository:public/counter:pull:",
                r#"granted [{"actions":["pull"],"name":"public/counter","type":"repository"}]"#
            ]
        )
        .len(),
        1,
        "{realm}"
    );
    assert_eq!(
        lines_with(
            &realm,
            &["anonymous token for repository:docker/counter:pull: granted []"]
        )
        .len(),
        1,
        "{realm}"
    );
    assert!(!realm.contains("with credentials"), "{realm}");
    let front = registry.front.log();
    assert!(
        !lines_with(
            &front,
            &["\"GET /v2/public/counter/blobs/sha256:", "HTTP/1.1\" 200"]
        )
        .is_empty(),
        "{front}"
    );
    assert!(
        !lines_with(
            &front,
            &["insufficient scope", "/v2/docker/counter/manifests/v1"]
        )
        .is_empty(),
        "the registry refused the token without pull on docker/counter: {front}"
    );
    assert!(
        lines_with(&front, &["\"GET /v2/docker/counter/", "HTTP/1.1\" 200"]).is_empty(),
        "{front}"
    );
}

#[test]
fn content_that_does_not_match_its_digest_is_refused() {
    require_root();
    let object = bytes("counter");
    let layer = gzip(&tar(&[("bpf.o", &object)]));
    let config = serde_json::to_vec(&serde_json::json!({"config": {"Labels": counter_labels()}}))
        .expect("config");
    let digest = |b: &[u8]| format!("sha256:{}", sha256_hex(b));
    let manifest_of = |layer_digest: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("manifest")
    };
    let good_manifest = manifest_of(&digest(&layer));
    let root = tempfile::tempdir().expect("tempdir");
    let put = |path: &str, data: &[u8]| {
        let file = root.path().join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, data).expect("write");
    };
    // `pinned`: asked for by a digest, served another manifest.
    let pinned = format!("sha256:{}", "1".repeat(64));
    put(&format!("v2/pinned/manifests/{pinned}"), &good_manifest);
    // `corrupt`: the layer blob is not what its descriptor's digest says.
    put("v2/corrupt/manifests/v1", &good_manifest);
    put(&format!("v2/corrupt/blobs/{}", digest(&config)), &config);
    put(
        &format!("v2/corrupt/blobs/{}", digest(&layer)),
        &gzip(&tar(&[("bpf.o", b"tampered")])),
    );
    let server = HttpServer::serve(root.path());
    let host = format!("127.0.0.1:{}", server.port);

    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    write(
        manifests.path(),
        "a.yaml",
        &manifest("pinned", &format!("{host}/pinned@{pinned}"), None),
    );
    write(
        manifests.path(),
        "b.yaml",
        &manifest("corrupt", &format!("{host}/corrupt:v1"), None),
    );
    let fs = Bpffs::new();
    let out = once(manifests.path(), &fs, cache.path(), None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "pinned: FAILED DigestMismatch: image {host}/pinned@{pinned}: the registry served a manifest with digest {}, the reference pins {pinned}",
            digest(&good_manifest)
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "corrupt: FAILED DigestMismatch: image {host}/corrupt:v1: its layer blob {} arrived with digest",
            digest(&layer)
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(cache.path()).expect("cache").count(),
        0,
        "nothing wrong is cached"
    );
}
