//! The one SHA-256 check of every source: a digest is 64 lowercase hex digits, and bytes match a
//! digest when their SHA-256 is that digest.

use crate::pin::desired::sha256_hex;

/// Whether `hex` is a SHA-256 as the API writes it: 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The OCI digest of `bytes`: `sha256:<hex>`.
pub(crate) fn of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// `Err(actual digest)` when `bytes` do not have the digest `want`.
pub(crate) fn check(bytes: &[u8], want: &str) -> Result<(), String> {
    let got = sha256_hex(bytes);
    if got == want { Ok(()) } else { Err(got) }
}
