//! A real OCI registry on loopback for the tests of `bytecode.image`: CNCF distribution's
//! `registry`, built from its Go module by e2e/scripts/build-registry (cached across runs), started on a
//! free port with a temporary storage dir and optional htpasswd auth, and bytecode images pushed
//! to it over the distribution API. [`TokenRegistry`]: the same registry with `auth: token`, its
//! tokens from distribution's contrib/token-server (built by e2e/scripts/build-token-server), anonymous
//! tokens from a small realm server here.
//!
//! The agent's tests reach it as `common::registry`, the e2e suite as `bpfpin_testkit::registry`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest as _;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The OCI digest (`sha256:<hex>`) of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// This machine's architecture as OCI names it (Go's GOARCH), for the image configs pushed here.
/// Written apart from the agent's own mapping on purpose: the harness does not use the code the
/// tests check.
pub fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The config of a linux image for this architecture with `labels`.
pub fn image_config(labels: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .expect("config")
}

/// An OCI image manifest of `config` and one layer of media type `layer_type`.
pub fn image_manifest(config: &[u8], layer: &[u8], layer_type: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": digest(layer), "size": layer.len()}],
    }))
    .expect("manifest")
}

/// The registry binary, built once (e2e/scripts/build-registry caches it across runs).
pub fn registry_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("build-registry")).clone()
}

/// The token server binary (distribution's contrib/token-server), built once
/// (e2e/scripts/build-token-server caches it across runs).
pub fn token_server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("build-token-server")).clone()
}

/// Runs e2e/<script>, which builds a Go binary if it is not cached and prints its path last.
fn built(script: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../e2e/scripts")
        .join(script);
    let out = Command::new(&path)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run e2e/scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "e2e/scripts/{script} failed (it needs go and the Go module proxy)"
    );
    let bin = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("e2e/scripts/{script} prints the binary's path"));
    assert!(bin.is_file(), "{} is missing", bin.display());
    bin
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
        let dir = tempfile::tempdir().expect("tempdir");
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
        let data = dir.path().join("data");
        let mut registry = Self::spawn(dir, &data, &auth);
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

    /// A registry on a free port serving the storage in `data`, its config and log in `dir`,
    /// once it answers.
    fn spawn(dir: tempfile::TempDir, data: &Path, auth: &str) -> Self {
        let bin = registry_binary();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info, formatter: json}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: '127.0.0.1:{port}'}}\n{auth}",
                data.display()
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
        let registry = Self {
            child: Some(child),
            dir,
            port,
            credentials: None,
            http: http_agent(),
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
        let digest = digest(data);
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
        digest(body)
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
        let config = image_config(labels);
        self.push_blob(repo, &config);
        self.push_blob(repo, layer);
        let layer_type = if layer.starts_with(&[0x1f, 0x8b]) {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        let manifest = image_manifest(&config, layer, layer_type);
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
        docker_config(&self.host(), user, password)
    }

    /// [`Registry::docker_config`] written to a file in `dir`.
    pub fn auth_file(&self, dir: &Path, user: &str, password: &str) -> PathBuf {
        auth_file(dir, &self.host(), user, password)
    }
}

/// A docker `config.json` with `user:password` for the registry `host`.
pub fn docker_config(host: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({"auths": {host: {"auth": auth}}}).to_string()
}

/// [`docker_config`] written to a file in `dir`.
pub fn auth_file(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    let path = dir.join(format!("auth-{user}-{}.json", password.len()));
    std::fs::write(&path, docker_config(host, user, password)).expect("write");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The issuer and service names of [`TokenRegistry`]'s tokens.
pub const TOKEN_ISSUER: &str = "bpfpin-token-server";
pub const TOKEN_SERVICE: &str = "bpfpin-registry";

/// A registry with `auth: token` (the bearer-token flow of Docker Hub, GHCR, Quay), on loopback:
///
/// - `front`: the registry the agent pulls from. Its challenge sends clients to the realm; it
///   trusts tokens signed by the harness's key (a JWKS with the key id the token server gives
///   it, and a certificate generated with openssl as `rootcertbundle`).
/// - the token server: distribution's contrib/token-server (built by e2e/scripts/build-token-server),
///   signing with that key. Its users are those of an htpasswd file (one here: `docker`), its
///   rule that a user gets the repositories under `<user>/` and nothing else: with credentials,
///   only `docker` and only `docker/*`.
/// - the realm, a small server in this file: requests with credentials are forwarded as they are
///   to the token server; anonymous ones, which that token server cannot answer, get a token
///   here as docker_auth and Docker Hub give them: `pull` on the repositories of `public`,
///   nothing elsewhere (the registry then refuses them), signed with the same key (with the
///   certificate in `x5c`).
/// - `store`: a registry with htpasswd auth on the same storage, which the harness pushes
///   through, and whose provisioned htpasswd file (user `docker`) the token server reads.
#[derive(Debug)]
pub struct TokenRegistry {
    pub front: Registry,
    pub store: Registry,
    #[expect(
        dead_code,
        reason = "held so that dropping the registry kills the token server"
    )]
    token_server: Process,
    realm: Realm,
    dir: tempfile::TempDir,
}

impl TokenRegistry {
    /// Starts the four; anonymous users may pull the repositories of `public`.
    pub fn start(public: &[&str]) -> Self {
        let store = Registry::start(true);
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        // P-256 in SEC1 PEM (`EC PRIVATE KEY`): what the token server (libtrust) loads.
        openssl(
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ],
            &key,
        );
        let cert_pem = openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-subj",
                "/CN=bpfpin test token issuer",
                "-days",
                "2",
                "-key",
            ],
            &key,
        );
        std::fs::write(&cert, &cert_pem).expect("cert");
        let cert_der = openssl(&["x509", "-outform", "DER", "-in"], &cert);
        let public_der = openssl(&["ec", "-pubout", "-outform", "DER", "-in"], &key);

        // The token server, with the htpasswd file the store provisioned.
        let token_port = free_port();
        let log = std::fs::File::create(dir.path().join("token-server.log")).expect("log");
        let token_server = Command::new(token_server_binary())
            .arg("-addr")
            .arg(format!("127.0.0.1:{token_port}"))
            .arg("-debug")
            .arg("-key")
            .arg(&key)
            .arg("-passwd")
            .arg(store.dir.path().join("htpasswd"))
            .arg("-realm")
            .arg("bpfpin-token-server")
            .arg("-issuer")
            .arg(TOKEN_ISSUER)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .map(Process)
            .expect("start the token server");
        let token_log = dir.path().join("token-server.log");
        let token_server_log = || std::fs::read_to_string(&token_log).unwrap_or_default();
        let http = http_agent();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .get(&format!("http://127.0.0.1:{token_port}/token/"))
            .call()
            .is_ok_and(|r| r.status().as_u16() == 401)
        {
            assert!(
                Instant::now() < deadline,
                "the token server did not start: {}",
                token_server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The registry trusts the token server's key by the id the token server puts in its
        // tokens' `jwk` (libtrust's, which it logs), so it gets a JWKS with that id.
        let log = token_server_log();
        let kid = log
            .split("Loaded private key with id ")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no key id in the token server's log: {log}"))
            .to_owned();
        // An uncompressed P-256 point ends the SubjectPublicKeyInfo: 04 || x || y.
        let point = &public_der[public_der.len() - 64..];
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
                "x": b64(&point[..32]), "y": b64(&point[32..])}]})
            .to_string(),
        )
        .expect("jwks");

        let realm = Realm::start(RealmConfig {
            token_server: format!("http://127.0.0.1:{token_port}"),
            key: key.clone(),
            x5c: base64::engine::general_purpose::STANDARD.encode(&cert_der),
            public: public.iter().map(|r| (*r).to_owned()).collect(),
        });
        let auth = format!(
            "auth: {{token: {{realm: 'http://127.0.0.1:{}/token/', service: {TOKEN_SERVICE}, issuer: {TOKEN_ISSUER}, rootcertbundle: '{}', jwks: '{}'}}}}\n",
            realm.port,
            cert.display(),
            jwks.display()
        );
        let front = Registry::spawn(
            tempfile::tempdir().expect("tempdir"),
            &store.dir.path().join("data"),
            &auth,
        );
        Self {
            front,
            store,
            token_server,
            realm,
            dir,
        }
    }

    /// `127.0.0.1:<port>` of the registry the agent pulls from.
    pub fn host(&self) -> String {
        self.front.host()
    }

    /// `docker` and its password: the token server's one user.
    pub fn credentials(&self) -> (String, String) {
        self.store.credentials.clone().expect("credentials")
    }

    /// Pushes an image through the store; see [`Registry::push_image`].
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layer: &[u8],
        labels: serde_json::Value,
    ) -> (String, usize) {
        self.store.push_image(repo, tag, layer, labels)
    }

    /// A docker `config.json` for the front registry, written to a file in `dir`.
    pub fn auth_file(&self, dir: &Path, user: &str, password: &str) -> PathBuf {
        auth_file(dir, &self.host(), user, password)
    }

    /// The realm's URL, as the registry's challenge names it.
    pub fn realm_url(&self) -> String {
        format!("http://127.0.0.1:{}/token/", self.realm.port)
    }

    /// The token server's log (logrus text: `msg="authorized client" acctSubject=docker
    /// grantedAccess="[{{repository  docker/x} pull}]"`, and its refusals).
    pub fn token_server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("token-server.log")).unwrap_or_default()
    }

    /// What the realm did, a line a request: `forwarded <target> with credentials: HTTP <n>` or
    /// `anonymous token for <scope>: granted [<access>]`.
    pub fn realm_log(&self) -> String {
        self.realm.log.lock().expect("realm log").clone()
    }
}

/// A child process, killed on drop.
#[derive(Debug)]
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl <args> <path>`; its stdout.
fn openssl(args: &[&str], path: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .arg(path)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct RealmConfig {
    /// `http://127.0.0.1:<port>` of the token server.
    token_server: String,
    /// The signing key (PEM) and its certificate (base64 DER) for anonymous tokens.
    key: PathBuf,
    x5c: String,
    public: Vec<String>,
}

/// The realm server of [`TokenRegistry`]: one thread, one request a connection.
#[derive(Debug)]
struct Realm {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Realm {
    fn start(config: RealmConfig) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the realm");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("realm address").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let thread = {
            let stop = stop.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let http = http_agent();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let line = realm_request(stream, &config, &http);
                            log.lock()
                                .expect("realm log")
                                .push_str(&format!("{line}\n"));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Self {
            port,
            stop,
            thread: Some(thread),
            log,
        }
    }
}

impl Drop for Realm {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request to the realm; returns its log line.
fn realm_request(
    mut stream: std::net::TcpStream,
    config: &RealmConfig,
    http: &ureq::Agent,
) -> String {
    // A connection that ends early is answered all the same.
    let (request, _) = crate::http::read_request(&mut stream);
    let target = request.target.as_str();
    let authorization = request.header("authorization").map(str::to_owned);
    let respond = |stream: &mut std::net::TcpStream,
                   status: u16,
                   challenge: Option<&str>,
                   body: &[u8]| {
        let challenge =
            challenge.map_or_else(String::new, |c| format!("WWW-Authenticate: {c}\r\n"));
        let _ = write!(
            stream,
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
            if status == 200 { "OK" } else { "Error" },
            body.len()
        );
        let _ = stream.write_all(body);
    };

    if let Some(authorization) = authorization {
        // Credentials: the token server decides.
        let response = http
            .get(&format!("{}{target}", config.token_server))
            .header("Authorization", &authorization)
            .call();
        return match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.into_body().read_to_vec().unwrap_or_default();
                respond(&mut stream, status, challenge.as_deref(), &body);
                format!("forwarded {target} with credentials: HTTP {status}")
            }
            Err(e) => {
                respond(&mut stream, 502, None, b"{}");
                format!("forwarded {target} with credentials: {e}")
            }
        };
    }

    // Anonymous: `pull` on public repositories, nothing elsewhere.
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let scopes: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map_or("", |(_, v)| v.as_str());
    let mut access = Vec::new();
    for scope in &scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if config.public.iter().any(|p| p == name) && actions.split(',').any(|a| a == "pull") {
            access
                .push(serde_json::json!({"type": "repository", "name": name, "actions": ["pull"]}));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [config.x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "", "aud": service, "iat": now, "nbf": now,
        "exp": now + 300, "jti": format!("anonymous-{now}-{}", std::process::id()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let token = format!(
        "{signing_input}.{}",
        b64(&es256(&config.key, signing_input.as_bytes()))
    );
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    respond(&mut stream, 200, None, body.as_bytes());
    format!(
        "anonymous token for {}: granted {}",
        scopes.join(" "),
        serde_json::Value::from(access)
    )
}

/// An ES256 JWS signature (r || s, 32 bytes each) of `input` by the P-256 key in `key`.
fn es256(key: &Path, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl dgst");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl dgst");
    assert!(out.status.success(), "openssl dgst -sign failed");
    // DER: SEQUENCE { INTEGER r, INTEGER s }, short lengths for P-256.
    let der = out.stdout;
    let mut raw = Vec::with_capacity(64);
    let mut at = 2;
    for _ in 0..2 {
        assert_eq!(der[at], 0x02, "an INTEGER in the signature");
        let len = usize::from(der[at + 1]);
        let int = &der[at + 2..at + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        raw.extend(std::iter::repeat_n(0, 32 - int.len()));
        raw.extend_from_slice(int);
        at += 2 + len;
    }
    raw
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
