//! Signed file URLs: the per-sandbox signing keys and the signatures the SDKs'
//! `download_url` and `upload_url` put in the URL.
//!
//! A URL `{toolboxProxyUrl}/{sandboxId}/files/download?path&expires&signature` (or
//! `/files/upload-v2` with POST) works without an API key when `signature` is
//! `v1_` + base64url-without-padding(HMAC-SHA256(key, "v1:files:{METHOD}:{path}:{expires}"))
//! under the sandbox's current key and `expires` (Unix seconds, 0 for never) has not passed.
//!
//! The SDKs sign with the key's text, so the server must be able to recover every key. Keys
//! are not stored: each is derived as HMAC-SHA256(server secret, sandbox id and generation),
//! and the store keeps only the generation, which rotation increments. The server secret is
//! 32 random bytes in `<data-dir>/signing.secret` (mode 0600), created at first use. Anyone
//! who can read that file and the store can sign URLs for every sandbox of this server.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Prefix of the only signature version the SDKs produce.
pub const SIGNATURE_PREFIX: &str = "v1_";

/// Name of the server secret's file in the data directory.
const SECRET_FILE: &str = "signing.secret";

const SECRET_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Errors of loading the server secret that signing keys derive from.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("failed to read the signing secret {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create the signing secret {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the signing secret {path} is not {SECRET_LEN} bytes; remove it to create a new one, which invalidates every signed URL"
    )]
    Invalid { path: PathBuf },
}

/// Reasons to reject a signed URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature is not a v1 signature (it must start with {SIGNATURE_PREFIX:?})")]
    UnknownVersion,
    #[error("the signature is not valid base64url")]
    Malformed,
    #[error(
        "the signature does not match; the URL was changed, or the sandbox's signing key was rotated since it was made"
    )]
    Mismatch,
    #[error("the URL expired")]
    Expired,
}

/// The server secret, loaded once.
#[derive(Default)]
pub struct Signing {
    secret: OnceLock<[u8; SECRET_LEN]>,
}

impl Signing {
    /// Returns the signing key of a sandbox at a generation, as the text the SDKs sign with.
    pub fn sandbox_key(
        &self,
        data_dir: &Path,
        sandbox_id: &str,
        generation: i64,
    ) -> Result<String, SecretError> {
        let secret = self.secret(data_dir)?;
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(format!("sandbox-signing-key:{sandbox_id}:{generation}").as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Returns the preview token of a sandbox: the value that opens its private preview URLs
    /// on every port. It is derived like the signing keys, so it needs no storage and lasts
    /// as long as the sandbox.
    pub fn preview_token(&self, data_dir: &Path, sandbox_id: &str) -> Result<String, SecretError> {
        let mac = self.preview_mac(data_dir, sandbox_id)?;
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Checks a presented preview token in constant time.
    pub fn is_preview_token(
        &self,
        data_dir: &Path,
        sandbox_id: &str,
        presented: &str,
    ) -> Result<bool, SecretError> {
        let Ok(digest) = URL_SAFE_NO_PAD.decode(presented) else {
            return Ok(false);
        };
        let mac = self.preview_mac(data_dir, sandbox_id)?;
        Ok(mac.verify_slice(&digest).is_ok())
    }

    fn preview_mac(&self, data_dir: &Path, sandbox_id: &str) -> Result<HmacSha256, SecretError> {
        let secret = self.secret(data_dir)?;
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(format!("sandbox-preview-token:{sandbox_id}").as_bytes());
        Ok(mac)
    }

    fn secret(&self, data_dir: &Path) -> Result<&[u8; SECRET_LEN], SecretError> {
        if let Some(secret) = self.secret.get() {
            return Ok(secret);
        }
        let secret = load_or_create_secret(&data_dir.join(SECRET_FILE))?;
        Ok(self.secret.get_or_init(|| secret))
    }
}

fn load_or_create_secret(path: &Path) -> Result<[u8; SECRET_LEN], SecretError> {
    let mut secret = [0u8; SECRET_LEN];
    rand::rng().fill_bytes(&mut secret);
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            let create_error = |source| SecretError::Create {
                path: path.to_owned(),
                source,
            };
            file.write_all(&secret).map_err(create_error)?;
            file.sync_all().map_err(create_error)?;
            tracing::info!(path = %path.display(), "created the secret that signing keys derive from");
            return Ok(secret);
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(SecretError::Create {
                path: path.to_owned(),
                source,
            });
        }
    }

    let read_error = |source| SecretError::Read {
        path: path.to_owned(),
        source,
    };
    let mut content = Vec::with_capacity(SECRET_LEN + 1);
    std::fs::File::open(path)
        .and_then(|file| file.take(SECRET_LEN as u64 + 1).read_to_end(&mut content))
        .map_err(read_error)?;
    content.try_into().map_err(|_| SecretError::Invalid {
        path: path.to_owned(),
    })
}

/// Returns the text a URL's signature covers.
fn canonical(method: &str, path: &str, expires: i64) -> String {
    format!("v1:files:{method}:{path}:{expires}")
}

/// Signs a file URL as the SDKs do.
#[cfg(test)]
pub fn sign(key: &str, method: &str, path: &str, expires: i64) -> String {
    let mut mac =
        HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(canonical(method, path, expires).as_bytes());
    format!(
        "{SIGNATURE_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// Checks a file URL's signature, in constant time, and its expiry against `now` (Unix
/// seconds). `expires` 0 never expires.
pub fn verify(
    key: &str,
    method: &str,
    path: &str,
    expires: i64,
    signature: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let encoded = signature
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(SignatureError::UnknownVersion)?;
    let digest = URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|_| SignatureError::Malformed)?;
    let mut mac =
        HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(canonical(method, path, expires).as_bytes());
    mac.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)?;
    // The signature is checked first, so a caller learns nothing about expiry from a URL
    // that it could not have made.
    if expires != 0 && now > expires {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_sdk_algorithm() {
        // Computed with the published Python SDK's compute_file_url_signature("k3y", "GET",
        // "/tmp/a b.txt", 1700000000).
        let expected = "v1_Q5Lo4yl--v7KV5j3BPXGGUbDI7Zzq2qFKbo6qqalyiw";
        assert_eq!(sign("k3y", "GET", "/tmp/a b.txt", 1_700_000_000), expected);
    }

    #[test]
    fn verify_accepts_and_rejects() {
        let signature = sign("key", "GET", "/f", 100);
        assert_eq!(verify("key", "GET", "/f", 100, &signature, 50), Ok(()));
        assert_eq!(
            verify("key", "GET", "/f", 100, &signature, 101),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify("other", "GET", "/f", 100, &signature, 50),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("key", "POST", "/f", 100, &signature, 50),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("key", "GET", "/g", 100, &signature, 50),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("key", "GET", "/f", 101, &signature, 50),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("key", "GET", "/f", 100, "v2_abc", 50),
            Err(SignatureError::UnknownVersion)
        );
        assert_eq!(
            verify("key", "GET", "/f", 100, "v1_!!", 50),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn zero_expiry_never_expires() {
        let signature = sign("key", "POST", "/f", 0);
        assert_eq!(verify("key", "POST", "/f", 0, &signature, i64::MAX), Ok(()));
    }

    #[test]
    fn keys_differ_by_sandbox_and_generation_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let signing = Signing::default();
        let first = signing.sandbox_key(dir.path(), "a", 1).unwrap();
        assert_ne!(first, signing.sandbox_key(dir.path(), "a", 2).unwrap());
        assert_ne!(first, signing.sandbox_key(dir.path(), "b", 1).unwrap());

        // Another server process on the same data directory derives the same keys.
        let reloaded = Signing::default();
        assert_eq!(first, reloaded.sandbox_key(dir.path(), "a", 1).unwrap());
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
