//! The real `cosign` CLI for the signature tests (built from its Go module by
//! e2e/scripts/build-cosign, cached across runs): key pairs, and signatures stored in the registry
//! as cosign does. Used by the agent's tests (agent/tests/image_signatures.rs) and the e2e suite
//! (e2e/tests/signatures.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The password of every key pair made here (`COSIGN_PASSWORD`).
pub const PASSWORD: &str = "bpfpin-test";

/// The cosign binary, built once (e2e/scripts/build-cosign caches it across runs).
pub fn cosign() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/scripts/build-cosign");
        let out = Command::new(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run e2e/scripts/build-cosign");
        assert!(
            out.status.success(),
            "e2e/scripts/build-cosign failed (it needs go and the Go module proxy)"
        );
        let bin = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(PathBuf::from)
            .expect("e2e/scripts/build-cosign prints the binary's path");
        assert!(bin.is_file(), "{} is missing", bin.display());
        bin
    })
    .clone()
}

/// Runs cosign in `dir` (also its HOME: no docker config or sigstore state of the machine).
pub fn run_cosign(dir: &Path, args: &[&str]) -> Output {
    run_cosign_env(dir, args, &[])
}

/// [`run_cosign`] with more environment (`COSIGN_EXPERIMENTAL=1` for the OCI 1.1 referrers mode).
pub fn run_cosign_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(cosign())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .env("HOME", dir)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env_remove("DOCKER_CONFIG")
        .output()
        .expect("cosign");
    assert!(
        out.status.success(),
        "cosign {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A cosign key pair, `<prefix>.key` (encrypted with [`PASSWORD`]) and `<prefix>.pub`.
#[derive(Debug)]
pub struct KeyPair {
    /// Where the files are.
    pub dir: PathBuf,
    /// `<prefix>.key`, `<prefix>.pub`.
    pub prefix: String,
}

impl KeyPair {
    pub fn generate(dir: &Path, prefix: &str) -> Self {
        run_cosign(dir, &["generate-key-pair", "--output-key-prefix", prefix]);
        Self {
            dir: dir.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    pub fn public(&self) -> PathBuf {
        self.dir.join(format!("{}.pub", self.prefix))
    }

    /// `cosign sign` of `image` (a digest reference), offline: no transparency log upload.
    pub fn sign(&self, image: &str) {
        let key = format!("{}.key", self.prefix);
        run_cosign(
            &self.dir,
            &[
                "sign",
                "--key",
                &key,
                "--tlog-upload=false",
                "--allow-http-registry",
                "--yes",
                image,
            ],
        );
    }
}

impl KeyPair {
    /// [`Self::sign`] with `--registry-referrers-mode=oci-1-1` (experimental in cosign v2): the
    /// signature is an OCI 1.1 referrer of the image; on a registry without the referrers API,
    /// cosign writes the fallback index tagged `sha256-<hex>`.
    pub fn sign_as_referrer(&self, image: &str) {
        let key = format!("{}.key", self.prefix);
        run_cosign_env(
            &self.dir,
            &[
                "sign",
                "--key",
                &key,
                "--tlog-upload=false",
                "--allow-http-registry",
                "--registry-referrers-mode=oci-1-1",
                "--yes",
                image,
            ],
            &[("COSIGN_EXPERIMENTAL", "1")],
        );
    }
}

/// A folder holding `keys` as a mounted Secret would (one file per key).
pub fn key_dir(keys: &[&KeyPair]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in keys {
        std::fs::copy(key.public(), dir.path().join(format!("{}.pub", key.prefix)))
            .expect("copy key");
    }
    dir
}
