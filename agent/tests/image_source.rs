//! `bytecode.image` against a real OCI registry on loopback: CNCF distribution's `registry`, built
//! from its Go module by e2e/build-registry and started here, with images pushed here over the
//! distribution API. By tag and by digest, an index, gzipped and plain layers, digest checks,
//! missing tags, bad images, basic-auth credentials from `--registry-auth`, and a digest-pinned
//! image pinned again from the cache with the registry stopped.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bpfpin_agent::desired::sha256_hex;
use common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_bpfpin-agent");
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The registry binary, built once (e2e/build-registry caches it across runs).
fn registry_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/build-registry");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run e2e/build-registry");
        assert!(
            out.status.success(),
            "e2e/build-registry failed (it needs go and the Go module proxy)"
        );
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(PathBuf::from)
            .expect("e2e/build-registry prints the binary's path");
        assert!(path.is_file(), "{} is missing", path.display());
        path
    })
    .clone()
}

/// The registry on 127.0.0.1 (a free port) with a temporary storage dir, killed on drop.
struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// `docker` and its password, when the registry has htpasswd auth.
    credentials: Option<(String, String)>,
    http: ureq::Agent,
}

impl Registry {
    fn start(with_auth: bool) -> Self {
        let bin = registry_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let auth = if with_auth {
            // The registry provisions a missing htpasswd file with a user `docker` and a random
            // password (bcrypt), which it logs: no htpasswd tool needed.
            format!(
                "auth: {{htpasswd: {{realm: bpfpin-test, path: {}}}}}\n",
                dir.path().join("htpasswd").display()
            )
        } else {
            String::new()
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info, formatter: json}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: '127.0.0.1:{port}'}}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the registry");
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut registry = Self {
            child: Some(child),
            dir,
            port,
            credentials: None,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = registry
                .http
                .get(&registry.url("/v2/"))
                .call()
                .is_ok_and(|r| matches!(r.status().as_u16(), 200 | 401));
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if with_auth {
            let password = registry
                .log()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| {
                    v.get("password")
                        .and_then(|p| p.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| {
                    panic!("no provisioned password in the log: {}", registry.log())
                });
            registry.credentials = Some(("docker".into(), password));
        }
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The blob downloads of `repo` so far, from the access log.
    fn blob_gets(&self, repo: &str) -> usize {
        let needle = format!("GET /v2/{repo}/blobs/");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn authorize<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.credentials {
            Some((user, password)) => req.header(
                "Authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                ),
            ),
            None => req,
        }
    }

    /// Uploads a blob (POST, then PUT with its digest); returns the digest.
    fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = format!("sha256:{}", sha256_hex(data));
        let started = self
            .authorize(
                self.http
                    .post(&self.url(&format!("/v2/{repo}/blobs/uploads/"))),
            )
            .send_empty()
            .expect("start upload");
        assert_eq!(started.status().as_u16(), 202, "start upload");
        let location = started
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("upload location")
            .to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = self
            .authorize(self.http.put(&format!("{location}{sep}digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .send(data)
            .expect("upload");
        assert_eq!(done.status().as_u16(), 201, "upload {digest}");
        digest
    }

    /// Puts a manifest (or index) under `reference`; returns its digest.
    fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let mut response = self
            .authorize(
                self.http
                    .put(&self.url(&format!("/v2/{repo}/manifests/{reference}"))),
            )
            .header("Content-Type", media_type)
            .send(body)
            .expect("put manifest");
        assert_eq!(
            response.status().as_u16(),
            201,
            "put manifest {repo}:{reference}: {}",
            response.body_mut().read_to_string().unwrap_or_default()
        );
        format!("sha256:{}", sha256_hex(body))
    }

    /// Pushes a bytecode image (config with `labels`, one layer) under `tag`; returns the
    /// manifest's digest and size.
    fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layer: &[u8],
        labels: serde_json::Value,
    ) -> (String, usize) {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": bpfpin_agent::oci::node_architecture(),
            "os": "linux",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .expect("config");
        let config_digest = self.push_blob(repo, &config);
        let layer_digest = self.push_blob(repo, layer);
        let layer_type = if layer.starts_with(&[0x1f, 0x8b]) {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("manifest");
        (
            self.push_manifest(repo, tag, OCI_MANIFEST, &manifest),
            manifest.len(),
        )
    }

    /// A docker config.json with `user:password` for this registry.
    fn auth_file(&self, dir: &Path, user: &str, password: &str) -> PathBuf {
        let path = dir.join(format!("auth-{user}-{}.json", password.len()));
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            &path,
            serde_json::to_vec(&serde_json::json!({"auths": {self.host(): {"auth": auth}}}))
                .expect("json"),
        )
        .expect("write");
        path
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The labels bpfman's bytecode images carry.
fn labels() -> serde_json::Value {
    serde_json::json!({
        "io.ebpf.programs": r#"{"count_getpid":"tracepoint","tail_target":"tracepoint"}"#,
        "io.ebpf.maps": r#"{"counts":"array","packets":"array"}"#,
    })
}

fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, *data).expect("tar");
    }
    builder.into_inner().expect("tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

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
    let (digest, _) = registry.push_image("bpfman/counter", "v1", &layer, labels());

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
        labels(),
    );
    // Another platform: not an ELF object at all, so following it would fail.
    let (other, other_size) = registry.push_image(
        "multi",
        "other",
        &gzip(&tar(&[("bpf.o", b"not elf")])),
        labels(),
    );
    let other_arch = if bpfpin_agent::oci::node_architecture() == "s390x" {
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
             "platform": {"architecture": bpfpin_agent::oci::node_architecture(), "os": "linux"}},
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
    registry.push_image("good", "v1", &good, labels());
    registry.push_image(
        "two",
        "v1",
        &gzip(&tar(&[("a.o", &object), ("b.o", &object)])),
        labels(),
    );
    registry.push_image(
        "none",
        "v1",
        &gzip(&tar(&[("README", b"no object here")])),
        labels(),
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
    registry.push_image("private/counter", "v1", &layer, labels());

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

#[test]
fn content_that_does_not_match_its_digest_is_refused() {
    require_root();
    let object = bytes("counter");
    let layer = gzip(&tar(&[("bpf.o", &object)]));
    let config =
        serde_json::to_vec(&serde_json::json!({"config": {"Labels": labels()}})).expect("config");
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
