//! The public keys images are verified with: every file of a folder (a mounted Secret or
//! ConfigMap, one PEM key per entry), read again at each check so a rotated Secret takes effect
//! without a restart. cosign's keys (`cosign generate-key-pair`) are ECDSA P-256 in PKIX PEM.

use std::path::{Path, PathBuf};

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};

use crate::pin::desired::sha256_hex;

/// The largest key file read (a PEM P-256 key is under 200 bytes).
const MAX_KEY_FILE: u64 = 64 << 10;
/// The most key files read from the folder.
const MAX_KEYS: usize = 64;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The folder cannot be listed.
    #[error("cannot read the key folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file cannot be read.
    #[error("cannot read key {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file is larger than any public key.
    #[error("key {path} is {size} bytes, over the {} KiB limit for a public key", MAX_KEY_FILE >> 10)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A key file is no PEM ECDSA P-256 public key.
    #[error("key {path} is not a PEM ECDSA P-256 public key (cosign's key format): {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: p256::pkcs8::spki::Error,
    },
    /// The folder holds more key files than are read.
    #[error("the key folder {path} holds more than {MAX_KEYS} files; the rest are ignored")]
    TooMany {
        /// The folder.
        path: PathBuf,
    },
}

/// One usable public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// Its file name in the folder (a Secret's key), for messages.
    pub name: String,
    /// `sha256:<hex>` of its DER SubjectPublicKeyInfo: what verified results are cached with.
    pub fingerprint: String,
    /// The key.
    pub key: VerifyingKey,
}

impl PublicKey {
    /// Parses a PEM public key named `name`.
    pub fn from_pem(name: &str, pem: &str) -> Result<Self, p256::pkcs8::spki::Error> {
        let key = p256::PublicKey::from_public_key_pem(pem.trim())?;
        let der = key.to_public_key_der()?;
        Ok(Self {
            name: name.to_owned(),
            fingerprint: format!("sha256:{}", sha256_hex(der.as_bytes())),
            key: VerifyingKey::from(&key),
        })
    }
}

/// The keys of a folder: the usable ones and why the others are not.
#[derive(Debug, Default)]
pub struct KeySet {
    /// Keys that parsed.
    pub usable: Vec<PublicKey>,
    /// Files that did not (or a folder that could not be read).
    pub broken: Vec<KeyError>,
}

impl KeySet {
    /// Reads every file of `dir` whose name does not start with `.` (a mounted Secret's
    /// `..data` links are skipped; its entries are symlinks into them and are followed), in name
    /// order.
    pub fn load(dir: &Path) -> Self {
        let mut set = Self::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(source) => {
                set.broken.push(KeyError::Folder {
                    path: dir.to_owned(),
                    source,
                });
                return set;
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        if names.len() > MAX_KEYS {
            names.truncate(MAX_KEYS);
            set.broken.push(KeyError::TooMany {
                path: dir.to_owned(),
            });
        }
        for name in names {
            let path = dir.join(&name);
            match std::fs::metadata(&path) {
                Ok(m) if !m.is_file() => continue, // a sub-folder holds no key
                Ok(m) if m.len() > MAX_KEY_FILE => {
                    set.broken.push(KeyError::TooLarge {
                        path,
                        size: m.len(),
                    });
                    continue;
                }
                Ok(_) => {}
                Err(source) => {
                    set.broken.push(KeyError::Read { path, source });
                    continue;
                }
            }
            let text = match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(source) => {
                    set.broken.push(KeyError::Read { path, source });
                    continue;
                }
            };
            match PublicKey::from_pem(&name, &text) {
                Ok(key) => set.usable.push(key),
                Err(source) => set.broken.push(KeyError::Malformed { path, source }),
            }
        }
        set
    }

    /// `cosign.pub, team.pub`: the usable keys' names.
    pub fn names(&self) -> String {
        self.usable
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_gives_its_usable_keys_and_says_why_the_others_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signing = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("key");
        let pem = p256::PublicKey::from(signing.verifying_key())
            .to_public_key_pem(Default::default())
            .expect("pem");
        std::fs::write(dir.path().join("good.pub"), &pem).expect("write");
        std::fs::write(
            dir.path().join("bad.pub"),
            "-----BEGIN PUBLIC KEY-----\nnope\n",
        )
        .expect("write");
        std::fs::write(dir.path().join(".hidden"), "ignored").expect("write");
        std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
        let set = KeySet::load(dir.path());
        assert_eq!(set.names(), "good.pub");
        assert!(set.usable[0].fingerprint.starts_with("sha256:"));
        let broken: Vec<String> = set.broken.iter().map(ToString::to_string).collect();
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert!(
            broken[0].contains("bad.pub is not a PEM ECDSA P-256 public key"),
            "{broken:?}"
        );
        let missing = KeySet::load(&dir.path().join("missing"));
        assert!(missing.usable.is_empty());
        assert!(
            missing.broken[0]
                .to_string()
                .contains("cannot read the key folder")
        );
    }
}
