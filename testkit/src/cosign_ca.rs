//! Certificate authorities shaped like Fulcio's (an ECDSA P-384 root and intermediate, leaves
//! with an ECDSA P-256 key, the code-signing EKU, the OIDC issuer in the extensions
//! `1.3.6.1.4.1.57264.1.1` and `.1.8`, and the subject as an email or URI SAN), and sigstore
//! `trusted_root.json` files listing them, for keyless signatures made by the real `cosign`:
//! `cosign sign --key <leaf key> --certificate <leaf> --certificate-chain <chain>`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::cosign::run_cosign;

/// A root and an intermediate CA; `chain.pem` holds the intermediate then the root, as
/// `cosign sign --certificate-chain` wants it.
pub struct FulcioCa {
    /// Where its files are.
    pub dir: PathBuf,
    /// The CA's name (file prefix).
    pub name: String,
    root: rcgen::Certificate,
    intermediate: rcgen::Certificate,
    intermediate_key: KeyPair,
}

/// The subject of a leaf: Fulcio puts an email for OIDC users, a URI for workloads (CI).
#[derive(Debug, Clone)]
pub enum Subject {
    /// An `rfc822Name` SAN.
    Email(String),
    /// A `uniformResourceIdentifier` SAN.
    Uri(String),
}

/// A leaf certificate and its key, in memory.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Its private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
}

/// A leaf certificate and its key imported into cosign's format.
#[derive(Debug)]
pub struct Leaf {
    /// Where its files are.
    pub dir: PathBuf,
    /// `<prefix>.crt` (PEM), `<prefix>.key` (cosign's encrypted key), `<prefix>.pub`.
    pub prefix: String,
    /// The CA's `chain.pem`.
    pub chain: PathBuf,
}

impl std::fmt::Debug for FulcioCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FulcioCa")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "bpfpin-test");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    params
}

/// The DER of a UTF8String (Fulcio's `.1.8` extension value).
fn utf8_string(s: &str) -> Vec<u8> {
    let mut der = vec![0x0c];
    let len = s.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        der.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    der.extend(s.as_bytes());
    der
}

impl FulcioCa {
    /// Makes a CA named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let alg = &rcgen::PKCS_ECDSA_P384_SHA384;
        let root_key = KeyPair::generate_for(alg).expect("root key");
        let root = ca_params(&format!("{name} root"))
            .self_signed(&root_key)
            .expect("root");
        let intermediate_key = KeyPair::generate_for(alg).expect("intermediate key");
        let mut params = ca_params(&format!("{name} intermediate"));
        // Fulcio's intermediate is limited to code signing too.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let intermediate = params
            .signed_by(&intermediate_key, &root, &root_key)
            .expect("intermediate");
        std::fs::write(
            dir.join(format!("{name}-chain.pem")),
            format!("{}{}", intermediate.pem(), root.pem()),
        )
        .expect("write chain");
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            root,
            intermediate,
            intermediate_key,
        }
    }

    /// `<name>-chain.pem`.
    pub fn chain(&self) -> PathBuf {
        self.dir.join(format!("{}-chain.pem", self.name))
    }

    /// The `certificateAuthorities` entry of this CA in a trusted root.
    pub fn trusted_root_entry(&self) -> serde_json::Value {
        let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
        serde_json::json!({
            "subject": {"organization": "bpfpin-test", "commonName": self.name},
            "uri": format!("https://{}.fulcio.test", self.name),
            "certChain": {"certificates": [
                {"rawBytes": b64(self.intermediate.der())},
                {"rawBytes": b64(self.root.der())},
            ]},
            "validFor": {"start": "2020-01-01T00:00:00Z"},
        })
    }

    /// A leaf certificate for `subject` from OIDC issuer `issuer`, valid from `not_before` to
    /// `not_after` seconds from now (negative: in the past), in memory.
    pub fn issue(&self, issuer: &str, subject: Subject, not_before: i64, not_after: i64) -> Issued {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let mut params = CertificateParams::default();
        // Fulcio's leaves have an empty subject: the identity is in the SAN.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![match subject {
            Subject::Email(e) => SanType::Rfc822Name(e.try_into().expect("email")),
            Subject::Uri(u) => SanType::URI(u.try_into().expect("uri")),
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.custom_extensions = vec![
            CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
                issuer.as_bytes().to_vec(),
            ),
            CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
                utf8_string(issuer),
            ),
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::seconds(not_before);
        params.not_after = now + time::Duration::seconds(not_after);
        let cert = params
            .signed_by(&key, &self.intermediate, &self.intermediate_key)
            .expect("leaf");
        Issued {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_pkcs8: key.serialize_der(),
        }
    }

    /// `<name>-chain.pem`'s text.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.intermediate.pem(), self.root.pem())
    }

    /// [`Self::issue`], written as `<prefix>.crt` with its key imported into cosign as
    /// `<prefix>.key`.
    pub fn leaf(
        &self,
        prefix: &str,
        issuer: &str,
        subject: Subject,
        not_before: i64,
        not_after: i64,
    ) -> Leaf {
        let issued = self.issue(issuer, subject, not_before, not_after);
        std::fs::write(self.dir.join(format!("{prefix}.crt")), &issued.pem).expect("write leaf");
        let pem = self.dir.join(format!("{prefix}.pkcs8.pem"));
        std::fs::write(&pem, &issued.key_pem).expect("write leaf key");
        run_cosign(
            &self.dir,
            &[
                "import-key-pair",
                "--key",
                &format!("{prefix}.pkcs8.pem"),
                "--output-key-prefix",
                prefix,
                "--yes",
            ],
        );
        Leaf {
            dir: self.dir.clone(),
            prefix: prefix.to_owned(),
            chain: self.chain(),
        }
    }
}

impl Leaf {
    /// `<prefix>.crt`.
    pub fn certificate(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.prefix))
    }

    /// `cosign sign` of `image` with this certificate and its chain, offline (no transparency
    /// log upload); `extra` adds cosign flags (e.g. `--registry-referrers-mode=oci-1-1`).
    pub fn sign(&self, image: &str, extra: &[&str]) {
        let key = format!("{}.key", self.prefix);
        let cert = self.certificate();
        let chain = self.chain.clone();
        let (cert, chain) = (cert.to_string_lossy(), chain.to_string_lossy());
        let mut args = vec![
            "sign",
            "--key",
            &key,
            "--certificate",
            &cert,
            "--certificate-chain",
            &chain,
            "--tlog-upload=false",
            "--allow-http-registry",
            "--yes",
        ];
        args.extend(extra);
        args.push(image);
        run_cosign(&self.dir, &args);
    }
}

/// Writes `trusted_root.json` in `dir` listing `cas` (and no transparency log) and returns it.
pub fn trusted_root(dir: &Path, cas: &[&FulcioCa]) -> PathBuf {
    let root = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [],
        "certificateAuthorities": cas.iter().map(|ca| ca.trusted_root_entry()).collect::<Vec<_>>(),
        "ctlogs": [],
        "timestampAuthorities": [],
    });
    let path = dir.join("trusted_root.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&root).expect("json")).expect("write");
    path
}
