//! Signature verification of `bytecode.image` against the real registry (common/registry.rs)
//! with signatures made by the real `cosign` CLI (built from its Go module by e2e/scripts/build-cosign):
//! `cosign generate-key-pair`, then `cosign sign --key ... --tlog-upload=false` on the image's
//! digest, which stores the signature as the registry tag `sha256-<hex>.sig`. The agent runs as
//! `local --once` with `--image-verification-policy` and `--image-verification-keys`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use bpfpin_testkit::cosign_ca::{FulcioCa, Subject, trusted_root};
use common::cosign::{KeyPair, key_dir};
use common::registry::{OCI_MANIFEST, Registry, counter_labels, gzip, tar};
use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");
fn manifest(name: &str, image: &str) -> String {
    format!(
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {{name: {name}}}\nspec:\n  bytecode: {{image: '{image}'}}\n  programs: [{{name: count_getpid}}]\n"
    )
}

fn write(dir: &Path, name: &str, image: &str) {
    std::fs::write(dir.join(format!("{name}.yaml")), manifest(name, image)).expect("write");
}

fn once(manifests: &Path, fs: &Bpffs, cache: &Path, policy: &str, keys: Option<&Path>) -> Output {
    once_with(manifests, fs, cache, policy, keys, &[])
}

/// [`once`] with more agent flags (the keyless ones).
fn once_with(
    manifests: &Path,
    fs: &Bpffs,
    cache: &Path,
    policy: &str,
    keys: Option<&Path>,
    extra: &[&std::ffi::OsStr],
) -> Output {
    let mut cmd = Command::new(AGENT);
    cmd.args(["local", "--once", "--manifests"])
        .arg(manifests)
        .arg("--bpffs")
        .arg(fs.path())
        .arg("--cache-dir")
        .arg(cache)
        .args(["--image-verification-policy", policy])
        .env("RUST_LOG", "warn");
    if let Some(keys) = keys {
        cmd.arg("--image-verification-keys").arg(keys);
    }
    cmd.args(extra);
    cmd.output().expect("agent")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Pushes the counter as `repo:tag` (`marker` makes the layer, so the digest, unique); returns
/// the digest reference.
fn push(registry: &Registry, repo: &str, tag: &str, marker: &str) -> (String, String) {
    let layer = gzip(&tar(&[
        ("bpf.o", &bytes("counter")),
        ("NOTE", marker.as_bytes()),
    ]));
    let (digest, _) = registry.push_image(repo, tag, &layer, counter_labels());
    (format!("{}/{repo}@{digest}", registry.host()), digest)
}

/// The manifest `repo:reference` as the registry stores it.
fn get_manifest(registry: &Registry, repo: &str, reference: &str) -> Vec<u8> {
    let mut response = ureq::get(&registry.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Accept", OCI_MANIFEST)
        .call()
        .expect("get manifest");
    response
        .body_mut()
        .with_config()
        .limit(8 << 20)
        .read_to_vec()
        .expect("read manifest")
}

fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// Signature manifests the registry served for `repo`, from its access log.
fn signature_gets(registry: &Registry, repo: &str) -> usize {
    let needle = format!("GET /v2/{repo}/manifests/sha256-");
    registry
        .log()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

#[test]
fn a_signed_image_is_pinned_then_pinned_again_from_the_cache_with_the_registry_stopped() {
    require_root();
    let mut registry = Registry::start(false);
    let work = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate(work.path(), "release");
    let (by_digest, digest) = push(&registry, "signed", "v1", "signed");
    key.sign(&by_digest);
    let keys = key_dir(&[&key]);

    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    write(manifests.path(), "bydigest", &by_digest);
    write(
        manifests.path(),
        "bytag",
        &format!("{}/signed:v1", registry.host()),
    );
    let fs = Bpffs::new();
    let out = once(
        manifests.path(),
        &fs,
        cache.path(),
        "enforce",
        Some(keys.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs.root().join("bydigest/progs/count_getpid").exists());
    assert!(fs.root().join("bytag/progs/count_getpid").exists());
    let record = cache
        .path()
        .join(format!("{}.verified", digest.trim_start_matches("sha256:")));
    let text = std::fs::read_to_string(&record).expect("a verified result is cached");
    assert!(
        text.contains(&digest) && text.contains("release.pub"),
        "{text}"
    );
    let fetched = signature_gets(&registry, "signed");
    assert!(
        fetched >= 1,
        "the signature was fetched: {}",
        registry.log()
    );

    // A restart: the verified result stands, no signature is fetched again.
    let fs2 = Bpffs::new();
    let out = once(
        manifests.path(),
        &fs2,
        cache.path(),
        "enforce",
        Some(keys.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        signature_gets(&registry, "signed"),
        fetched,
        "{}",
        registry.log()
    );

    // The registry is gone: both objects pin from the node (bytecode and verified result).
    registry.stop();
    let fs3 = Bpffs::new();
    let out = once(
        manifests.path(),
        &fs3,
        cache.path(),
        "enforce",
        Some(keys.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs3.root().join("bydigest/progs/count_getpid").exists());
    assert!(fs3.root().join("bytag/progs/count_getpid").exists());

    // With another key configured the cached result does not count: the signature must be
    // fetched again, and the registry is down.
    let other = KeyPair::generate(work.path(), "other");
    let other_keys = key_dir(&[&other]);
    let fs4 = Bpffs::new();
    let out = once(
        manifests.path(),
        &fs4,
        cache.path(),
        "enforce",
        Some(other_keys.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!fs4.root().join("bydigest").exists());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "bydigest: FAILED BytecodeUnavailable: image {by_digest}: registry"
        )) && err.contains("the signature manifest"),
        "{err}"
    );
}

#[test]
fn unsigned_wrong_key_copied_and_malformed_signatures_fail_only_their_object() {
    require_root();
    let registry = Registry::start(false);
    let work = tempfile::tempdir().expect("tempdir");
    let trusted = KeyPair::generate(work.path(), "trusted");
    let stranger = KeyPair::generate(work.path(), "stranger");
    let keys = key_dir(&[&trusted]);

    let (good, _) = push(&registry, "good", "v1", "good");
    trusted.sign(&good);
    let (unsigned, _) = push(&registry, "unsigned", "v1", "unsigned");
    let (wrongkey, _) = push(&registry, "wrongkey", "v1", "wrongkey");
    stranger.sign(&wrongkey);
    // Another image's valid signature copied to this image's signature tag.
    let (copied, copied_digest) = push(&registry, "copied", "v1", "copied");
    let (sibling, sibling_digest) = push(&registry, "copied", "v2", "sibling");
    trusted.sign(&sibling);
    let sibling_sig = get_manifest(&registry, "copied", &sig_tag(&sibling_digest));
    registry.push_manifest(
        "copied",
        &sig_tag(&copied_digest),
        OCI_MANIFEST,
        &sibling_sig,
    );
    // A signature annotation that is no signature.
    let (badsig, badsig_digest) = push(&registry, "badsig", "v1", "badsig");
    trusted.sign(&badsig);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&get_manifest(&registry, "badsig", &sig_tag(&badsig_digest)))
            .expect("json");
    manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] =
        "bm90IGEgc2lnbmF0dXJl".into();
    registry.push_manifest(
        "badsig",
        &sig_tag(&badsig_digest),
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).expect("json"),
    );
    // A signature manifest over the agent's limit (1 MiB): refused before it is parsed.
    let (huge, huge_digest) = push(&registry, "huge", "v1", "huge");
    let padding = "A".repeat(3 << 19);
    let empty = registry.push_blob("huge", b"{}");
    let big = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": empty, "size": 2},
        "layers": [], "annotations": {"padding": padding}});
    registry.push_manifest(
        "huge",
        &sig_tag(&huge_digest),
        OCI_MANIFEST,
        &serde_json::to_vec(&big).expect("json"),
    );

    // A payload of 2 MiB behind a well-formed signature: refused by its size, never downloaded.
    let (hugepayload, hugepayload_digest) = push(&registry, "hugepayload", "v1", "hugepayload");
    trusted.sign(&hugepayload);
    let big_payload = vec![b' '; 2 << 20];
    let big_digest = registry.push_blob("hugepayload", &big_payload);
    let tag = sig_tag(&hugepayload_digest);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&get_manifest(&registry, "hugepayload", &tag)).expect("json");
    manifest["layers"][0]["digest"] = big_digest.into();
    manifest["layers"][0]["size"] = big_payload.len().into();
    registry.push_manifest(
        "hugepayload",
        &tag,
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).expect("json"),
    );
    let blobs_before = registry.blob_gets("hugepayload");

    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    for (name, image) in [
        ("hugepayload", &hugepayload),
        ("good", &good),
        ("unsigned", &unsigned),
        ("wrongkey", &wrongkey),
        ("copied", &copied),
        ("badsig", &badsig),
        ("huge", &huge),
    ] {
        write(manifests.path(), name, image);
    }
    let fs = Bpffs::new();
    let out = once(
        manifests.path(),
        &fs,
        cache.path(),
        "enforce",
        Some(keys.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(fs.root().join("good/progs/count_getpid").exists(), "{err}");
    for name in [
        "unsigned",
        "wrongkey",
        "copied",
        "badsig",
        "huge",
        "hugepayload",
    ] {
        assert!(
            !fs.root().join(name).exists(),
            "{name} is not pinned: {err}"
        );
    }
    let expect = [
        (
            "unsigned",
            "SignatureInvalid",
            format!("image {unsigned}: not signed: the registry has no cosign signature for"),
        ),
        (
            "wrongkey",
            "SignatureInvalid",
            format!(
                "image {wrongkey}: no signature of {} verifies with the configured keys (trusted.pub): signature 1: it does not verify with any configured key",
                wrongkey.split('@').nth(1).unwrap_or_default()
            ),
        ),
        (
            "copied",
            "SignatureInvalid",
            format!(
                "signature 1: verifies with key trusted.pub but signs another image ({sibling_digest})"
            ),
        ),
        (
            "badsig",
            "SignatureInvalid",
            "signature 1: its signature is not a DER ECDSA P-256 signature".to_owned(),
        ),
        (
            "huge",
            "BytecodeUnavailable",
            format!("image {huge}: its signature manifest is over the 1 MiB limit"),
        ),
        (
            "hugepayload",
            "SignatureInvalid",
            "signature 1: its payload is 2097152 bytes, over the 1 MiB limit".to_owned(),
        ),
    ];
    for (name, reason, text) in &expect {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("{name}: FAILED")))
            .unwrap_or_else(|| panic!("no failure for {name}: {err}"));
        assert!(
            line.contains(&format!("{name}: FAILED {reason}: ")) && line.contains(text.as_str()),
            "{name}: expected {reason} with {text:?}, got: {line}"
        );
    }
    assert_eq!(
        registry.blob_gets("hugepayload"),
        blobs_before,
        "neither the huge payload nor the image's blobs were downloaded"
    );
    // Nothing failed was cached as verified.
    let verified = std::fs::read_dir(cache.path())
        .expect("cache")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".verified"))
        .count();
    assert_eq!(verified, 1, "only the good image is verified");
}

#[test]
fn warn_mode_pins_an_unsigned_image_with_a_warning_and_off_checks_nothing() {
    require_root();
    let registry = Registry::start(false);
    let work = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate(work.path(), "release");
    let keys = key_dir(&[&key]);
    let (unsigned, _) = push(&registry, "unsigned", "v1", "unsigned");
    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    write(manifests.path(), "unsigned", &unsigned);

    let fs = Bpffs::new();
    let out = once(
        manifests.path(),
        &fs,
        cache.path(),
        "warn",
        Some(keys.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs.root().join("unsigned/progs/count_getpid").exists());
    let err = stderr(&out);
    assert!(
        err.contains("signature not verified; pinned anyway (--image-verification-policy warn)")
            && err.contains("not signed"),
        "{err}"
    );

    let before = signature_gets(&registry, "unsigned");
    let fs2 = Bpffs::new();
    let out = once(manifests.path(), &fs2, cache.path(), "off", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        signature_gets(&registry, "unsigned"),
        before,
        "off asks for no signature"
    );
}

#[test]
fn malformed_or_missing_keys_are_a_clear_error_at_start() {
    require_root();
    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let fs = Bpffs::new();
    let keys = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        keys.path().join("broken.pub"),
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    let out = once(
        manifests.path(),
        &fs,
        cache.path(),
        "enforce",
        Some(keys.path()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "--image-verification-keys {}: no usable public key (key {} is not a PEM ECDSA P-256 public key",
            keys.path().display(),
            keys.path().join("broken.pub").display()
        )),
        "{err}"
    );
    let out = once(manifests.path(), &fs, cache.path(), "enforce", None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("--image-verification-policy enforce needs --image-verification-keys DIR"),
        "{}",
        stderr(&out)
    );
}

/// The failure line of `name` in the agent's output.
fn failure<'a>(err: &'a str, name: &str) -> &'a str {
    err.lines()
        .find(|l| l.contains(&format!("{name}: FAILED")))
        .unwrap_or_else(|| panic!("no failure for {name}: {err}"))
}

const ISSUER: &str = "https://issuer.bpfpin.test";
const EMAIL: &str = "ci@bpfpin.test";
const WORKFLOW: &str =
    "https://github.com/bpfpin/bpfpin/.github/workflows/release.yml@refs/heads/main";

/// The identities file the keyless tests allow: the CI email exactly, and any workflow of the
/// bpfpin organisation by regex.
fn identities(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("identities.yaml");
    std::fs::write(
        &path,
        format!(
            "- issuer: {ISSUER}\n  subject: {EMAIL}\n- issuer: {ISSUER}\n  subjectRegExp: 'https://github\\.com/bpfpin/[^/]+/\\.github/workflows/.*'\n"
        ),
    )
    .expect("write identities");
    path
}

fn keyless_flags<'a>(root: &'a Path, ids: &'a Path, tlog: &'a str) -> Vec<&'a std::ffi::OsStr> {
    vec![
        "--image-verification-trusted-root".as_ref(),
        root.as_os_str(),
        "--image-verification-identities".as_ref(),
        ids.as_os_str(),
        "--image-verification-transparency-log".as_ref(),
        tlog.as_ref(),
    ]
}

#[test]
fn keyless_signatures_pin_only_allowed_identities_of_the_trusted_root() {
    require_root();
    let registry = Registry::start(false);
    let work = tempfile::tempdir().expect("tempdir");
    let ca = FulcioCa::new(work.path(), "fulcio");
    let stranger_ca = FulcioCa::new(work.path(), "stranger");
    let root = trusted_root(work.path(), &[&ca]);
    let ids = identities(work.path());

    // Signed with certificates by the real cosign: --certificate, --certificate-chain.
    let sign = |repo: &str, leaf: &bpfpin_testkit::cosign_ca::Leaf| {
        let (image, digest) = push(&registry, repo, "v1", repo);
        leaf.sign(&image, &[]);
        (image, digest)
    };
    let email = ca.leaf("good", ISSUER, Subject::Email(EMAIL.into()), -60, 3600);
    let (good, good_digest) = sign("good", &email);
    let workflow = ca.leaf("workflow", ISSUER, Subject::Uri(WORKFLOW.into()), -60, 3600);
    let (ci, _) = sign("ci", &workflow);
    let intruder = ca.leaf(
        "intruder",
        ISSUER,
        Subject::Email("intruder@bpfpin.test".into()),
        -60,
        3600,
    );
    let (wrongsubject, _) = sign("wrongsubject", &intruder);
    let evil = ca.leaf(
        "evil",
        "https://evil.test",
        Subject::Email(EMAIL.into()),
        -60,
        3600,
    );
    let (wrongissuer, _) = sign("wrongissuer", &evil);
    let foreign = stranger_ca.leaf("foreign", ISSUER, Subject::Email(EMAIL.into()), -60, 3600);
    let (otherroot, _) = sign("otherroot", &foreign);
    let old = ca.leaf("old", ISSUER, Subject::Email(EMAIL.into()), -7200, -3600);
    let (expired, _) = sign("expired", &old);
    // A tampered manifest: the good image's manifest with one annotation more, under its own
    // tag, with the good image's signature copied to its signature tag.
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&get_manifest(&registry, "good", &good_digest)).expect("json");
    manifest["annotations"] = serde_json::json!({"tampered": "yes"});
    let body = serde_json::to_vec(&manifest).expect("json");
    let tampered_digest = registry.push_manifest("good", "tampered", OCI_MANIFEST, &body);
    let signature = get_manifest(&registry, "good", &sig_tag(&good_digest));
    registry.push_manifest("good", &sig_tag(&tampered_digest), OCI_MANIFEST, &signature);
    let tampered = format!("{}/good@{tampered_digest}", registry.host());

    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    for (name, image) in [
        ("good", &good),
        ("ci", &ci),
        ("wrongsubject", &wrongsubject),
        ("wrongissuer", &wrongissuer),
        ("otherroot", &otherroot),
        ("expired", &expired),
        ("tampered", &tampered),
    ] {
        write(manifests.path(), name, image);
    }
    let fs = Bpffs::new();
    let flags = keyless_flags(&root, &ids, "optional");
    let out = once_with(manifests.path(), &fs, cache.path(), "enforce", None, &flags);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for name in ["good", "ci"] {
        assert!(
            fs.root()
                .join(format!("{name}/progs/count_getpid"))
                .exists(),
            "{name}: {err}"
        );
    }
    let expect = [
        ("wrongsubject", "its certificate's identity (issuer \"https://issuer.bpfpin.test\" subject \"intruder@bpfpin.test\") is not one of the allowed identities".to_owned()),
        ("wrongissuer", "its certificate's identity (issuer \"https://evil.test\" subject \"ci@bpfpin.test\") is not one of the allowed identities".to_owned()),
        ("otherroot", "its certificate is not trusted: certificate authority https://fulcio.fulcio.test: the certificate does not chain to its root".to_owned()),
        ("expired", "its certificate is not trusted: certificate authority https://fulcio.fulcio.test: the certificate chain expired at".to_owned()),
        ("tampered", format!("signature 1: verifies with the certificate of \"{EMAIL}\" (issuer \"{ISSUER}\") but signs another image ({good_digest})")),
    ];
    for (name, text) in &expect {
        assert!(
            !fs.root().join(name).exists(),
            "{name} is not pinned: {err}"
        );
        let line = failure(&err, name);
        assert!(
            line.contains(&format!("{name}: FAILED SignatureInvalid: image "))
                && line.contains(text.as_str()),
            "{name}: expected {text:?}, got: {line}"
        );
    }
    // What verified is kept, with the signer's identity (what the status reports).
    let record = cache.path().join(format!(
        "{}.verified",
        good_digest.trim_start_matches("sha256:")
    ));
    let text = std::fs::read_to_string(&record).expect("a verified result is cached");
    assert!(
        text.contains(EMAIL) && text.contains(ISSUER) && text.contains("certificate"),
        "{text}"
    );

    // Without a Rekor bundle, a policy that requires the transparency log refuses the
    // signature (a fresh cache: the result above would stand otherwise).
    let cache2 = tempfile::tempdir().expect("tempdir");
    let only_good = tempfile::tempdir().expect("tempdir");
    write(only_good.path(), "good", &good);
    let fs2 = Bpffs::new();
    let flags = keyless_flags(&root, &ids, "require");
    let out = once_with(
        only_good.path(),
        &fs2,
        cache2.path(),
        "enforce",
        None,
        &flags,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!fs2.root().join("good").exists(), "{err}");
    assert!(
        failure(&err, "good").contains("it has no Rekor bundle (dev.sigstore.cosign/bundle), and the transparency log is required"),
        "{err}"
    );

    // Another trusted root (the stranger's): the cached result does not count, and the good
    // image's certificate does not chain to it.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other_root = trusted_root(other_dir.path(), &[&stranger_ca]);
    let fs3 = Bpffs::new();
    let flags = keyless_flags(&other_root, &ids, "optional");
    let out = once_with(
        only_good.path(),
        &fs3,
        cache.path(),
        "enforce",
        None,
        &flags,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        failure(&stderr(&out), "good").contains("the certificate does not chain to its root"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_broken_trusted_root_or_identities_file_is_a_clear_error_at_start() {
    require_root();
    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let fs = Bpffs::new();
    let ca = FulcioCa::new(work.path(), "fulcio");
    let root = trusted_root(work.path(), &[&ca]);
    let ids = identities(work.path());
    let broken_root = work.path().join("broken_root.json");
    std::fs::write(&broken_root, "{\"certificateAuthorities\": []}").expect("write");
    let out = once_with(
        manifests.path(),
        &fs,
        cache.path(),
        "enforce",
        None,
        &keyless_flags(&broken_root, &ids, "require"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "--image-verification-trusted-root/identities: the trusted root {} is malformed: it has no certificateAuthorities",
            broken_root.display()
        )),
        "{}",
        stderr(&out)
    );
    let broken_ids = work.path().join("broken.yaml");
    std::fs::write(&broken_ids, "- {issuer: x, subjectRegExp: '('}\n").expect("write");
    let out = once_with(
        manifests.path(),
        &fs,
        cache.path(),
        "enforce",
        None,
        &keyless_flags(&root, &broken_ids, "require"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("identity 1: subjectRegExp is not a regular expression"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_object_opts_out_of_verification_only_where_the_node_allows_it() {
    require_root();
    let registry = Registry::start(false);
    let work = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate(work.path(), "release");
    let keys = key_dir(&[&key]);
    let (good, _) = push(&registry, "good", "v1", "good");
    key.sign(&good);
    let (unsigned, _) = push(&registry, "unsigned", "v1", "unsigned");
    let manifests = tempfile::tempdir().expect("tempdir");
    write(manifests.path(), "good", &good);
    std::fs::write(
        manifests.path().join("optout.yaml"),
        format!(
            "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {{name: optout}}\nspec:\n  bytecode: {{image: '{unsigned}', skipSignatureVerification: true}}\n  programs: [{{name: count_getpid}}]\n"
        ),
    )
    .expect("write");

    // Not allowed: the object fails alone, nothing of it pinned.
    let cache = tempfile::tempdir().expect("tempdir");
    let fs = Bpffs::new();
    let out = once(
        manifests.path(),
        &fs,
        cache.path(),
        "enforce",
        Some(keys.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(fs.root().join("good/progs/count_getpid").exists(), "{err}");
    assert!(!fs.root().join("optout").exists(), "{err}");
    assert!(
        failure(&err, "optout").contains(&format!(
            "optout: FAILED SignatureInvalid: image {unsigned}: spec.bytecode.skipSignatureVerification is set, but this node verifies signatures (--image-verification-policy enforce) and does not let objects opt out (--image-verification-allow-opt-out)"
        )),
        "{err}"
    );

    // Allowed: the unsigned image is pinned without a signature fetch; the good one is still
    // verified.
    let before = signature_gets(&registry, "unsigned");
    let fs2 = Bpffs::new();
    let allow: &[&std::ffi::OsStr] = &["--image-verification-allow-opt-out".as_ref()];
    let out = once_with(
        manifests.path(),
        &fs2,
        cache.path(),
        "enforce",
        Some(keys.path()),
        allow,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs2.root().join("optout/progs/count_getpid").exists());
    assert!(fs2.root().join("good/progs/count_getpid").exists());
    assert_eq!(
        signature_gets(&registry, "unsigned"),
        before,
        "{}",
        registry.log()
    );

    // A spec that sets it without an image is refused as invalid.
    let bad = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        bad.path().join("path.yaml"),
        "apiVersion: bpfpin.io/v1alpha1\nkind: BpfObject\nmetadata: {name: path}\nspec:\n  bytecode: {path: /nonexistent.o, skipSignatureVerification: true}\n  programs: [{name: count_getpid}]\n",
    )
    .expect("write");
    let fs3 = Bpffs::new();
    let out = once_with(
        bad.path(),
        &fs3,
        cache.path(),
        "enforce",
        Some(keys.path()),
        allow,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("spec.bytecode.skipSignatureVerification")
            && stderr(&out).contains("is only used with image"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_signature_stored_as_an_oci_referrer_is_found_through_the_tag_fallback() {
    require_root();
    let registry = Registry::start(false);
    let work = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate(work.path(), "release");
    let stranger = KeyPair::generate(work.path(), "stranger");
    let keys = key_dir(&[&key]);
    let (good, good_digest) = push(&registry, "referred", "v1", "referred");
    key.sign_as_referrer(&good);
    let (wrongkey, _) = push(&registry, "referredwrong", "v1", "referredwrong");
    stranger.sign_as_referrer(&wrongkey);
    // This registry (CNCF distribution) has no referrers API: cosign wrote the fallback index
    // under the tag sha256-<hex>, and no .sig tag.
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let api = http
        .get(&registry.url(&format!("/v2/referred/referrers/{good_digest}")))
        .call()
        .expect("referrers");
    assert_eq!(
        api.status().as_u16(),
        404,
        "the registry has a referrers API now: test it too"
    );
    let index: serde_json::Value = serde_json::from_slice(&get_manifest(
        &registry,
        "referred",
        &good_digest.replacen(':', "-", 1),
    ))
    .expect("json");
    assert_eq!(
        index["manifests"][0]["artifactType"], "application/vnd.dev.cosign.artifact.sig.v1+json",
        "{index}"
    );

    let manifests = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    write(manifests.path(), "referred", &good);
    write(manifests.path(), "referredwrong", &wrongkey);
    let fs = Bpffs::new();
    let out = once(
        manifests.path(),
        &fs,
        cache.path(),
        "enforce",
        Some(keys.path()),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        fs.root().join("referred/progs/count_getpid").exists(),
        "{err}"
    );
    assert!(!fs.root().join("referredwrong").exists(), "{err}");
    assert!(
        failure(&err, "referredwrong")
            .contains("signature 1: it does not verify with any configured key"),
        "{err}"
    );
}
