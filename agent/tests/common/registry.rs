//! A real OCI registry on loopback for the tests of `bytecode.image`: CNCF distribution's
//! `registry`, built from its Go module by e2e/build-registry (cached across runs), started on a
//! free port with a temporary storage dir and optional htpasswd auth, and bytecode images pushed
//! to it over the distribution API.
//!
//! One copy for every test that needs it: the agent's tests (`common::registry`) and the e2e
//! suite (`#[path = "../../agent/tests/common/registry.rs"] mod registry;`), so it uses nothing of
//! `common` and only crates both have.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bpfpin_agent::desired::sha256_hex;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The registry binary, built once (e2e/build-registry caches it across runs).
pub fn registry_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Both crates that use this file (agent/, e2e/) sit next to e2e/.
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
#[derive(Debug)]
pub struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// `docker` and its password, when the registry has htpasswd auth.
    pub credentials: Option<(String, String)>,
    http: ureq::Agent,
}

impl Registry {
    /// Starts a registry; `with_auth` adds htpasswd auth with one user, `docker` (its password
    /// is in [`Registry::credentials`]).
    pub fn start(with_auth: bool) -> Self {
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

    /// `127.0.0.1:<port>`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host())
    }

    /// Its log (JSON lines, with the access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The blob downloads of `repo` so far, from the access log.
    pub fn blob_gets(&self, repo: &str) -> usize {
        let needle = format!("GET /v2/{repo}/blobs/");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    pub fn stop(&mut self) {
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
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
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
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
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

    /// Pushes an image (config with `labels`, one layer) under `tag`; returns the manifest's
    /// digest and size.
    pub fn push_image(
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

    /// What `docker build -f <containerfile> <context>` and `docker push` do for a bytecode
    /// image's Containerfile (as examples/image/Containerfile): `FROM scratch`, `COPY <files> /`
    /// (one layer holding them), `LABEL key='value'` (the config's labels). Any other instruction
    /// fails the test. Returns `<host>/<repo>:<tag>`.
    pub fn push_containerfile(
        &self,
        containerfile: &Path,
        context: &Path,
        repo: &str,
        tag: &str,
    ) -> String {
        let text = std::fs::read_to_string(containerfile)
            .unwrap_or_else(|e| panic!("{}: {e}", containerfile.display()));
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut labels = serde_json::Map::new();
        let mut from_scratch = false;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (instruction, args) = line.split_once(' ').unwrap_or((line, ""));
            match (instruction.to_ascii_uppercase().as_str(), args.trim()) {
                ("FROM", "scratch") => from_scratch = true,
                ("COPY", args) => {
                    let words: Vec<&str> = args.split_whitespace().collect();
                    let [sources @ .., "/"] = words.as_slice() else {
                        panic!("{line}: a bytecode image copies its files to /");
                    };
                    for source in sources {
                        let data = std::fs::read(context.join(source)).unwrap_or_else(|e| {
                            panic!("{line}: {source} in {}: {e}", context.display())
                        });
                        files.push(((*source).to_owned(), data));
                    }
                }
                ("LABEL", args) => {
                    let (key, value) = args
                        .split_once('=')
                        .unwrap_or_else(|| panic!("{line}: LABEL key=value"));
                    let value = value
                        .strip_prefix('\'')
                        .and_then(|v| v.strip_suffix('\''))
                        .unwrap_or(value);
                    labels.insert(key.to_owned(), value.into());
                }
                _ => panic!("{}: {line}: not a bytecode image", containerfile.display()),
            }
        }
        assert!(from_scratch, "{}: FROM scratch", containerfile.display());
        let entries: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(name, data)| (name.as_str(), data.as_slice()))
            .collect();
        self.push_image(repo, tag, &gzip(&tar(&entries)), labels.into());
        format!("{}/{repo}:{tag}", self.host())
    }

    /// A docker `config.json` (the `.dockerconfigjson` of a pull Secret) with `user:password`
    /// for this registry.
    pub fn docker_config(&self, user: &str, password: &str) -> String {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        serde_json::json!({"auths": {self.host(): {"auth": auth}}}).to_string()
    }

    /// [`Registry::docker_config`] written to a file in `dir`.
    pub fn auth_file(&self, dir: &Path, user: &str, password: &str) -> PathBuf {
        let path = dir.join(format!("auth-{user}-{}.json", password.len()));
        std::fs::write(&path, self.docker_config(user, password)).expect("write");
        path
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The labels bpfman's bytecode images carry, for the counter example's object.
pub fn counter_labels() -> serde_json::Value {
    serde_json::json!({
        "io.ebpf.programs": r#"{"count_getpid":"tracepoint","tail_target":"tracepoint"}"#,
        "io.ebpf.maps": r#"{"counts":"array","packets":"array"}"#,
    })
}

/// A tar archive of `files` (path, contents).
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
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

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}
