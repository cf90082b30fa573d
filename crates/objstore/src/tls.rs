//! The local certificate authority and the embedded service's server certificate.
//!
//! Files in the TLS directory (`<data-dir>/tls/` unless configured otherwise):
//! `ca.crt` and `ca.key` (mode 0600), the CA that clients trust; `server.crt` and `server.key`
//! (mode 0600), the listener's certificate for `localhost`, `127.0.0.1`, `::1` and any names
//! configured; `server.json`, the names and expiry of that certificate. Everything is created
//! once and reused. The server certificate is issued again when the configured names change or
//! it is within 30 days of expiry; the CA stays, so clients keep trusting it. Several servers
//! may share one directory: a lock file serializes their changes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::Error;

pub const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_CERT_FILE: &str = "server.crt";
const SERVER_KEY_FILE: &str = "server.key";
const SERVER_INFO_FILE: &str = "server.json";
const LOCK_FILE: &str = "tls.lock";

/// Names every server certificate covers.
const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const CA_LIFETIME: Duration = Duration::days(3650);
const SERVER_LIFETIME: Duration = Duration::days(397);
/// A server certificate this close to expiry is issued again at start.
const RENEW_BEFORE: Duration = Duration::days(30);

/// Names and expiry of the current server certificate.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServerInfo {
    names: Vec<String>,
    /// Unix seconds.
    not_after: i64,
}

/// Creates the CA in `dir` unless it exists; returns the path of its certificate.
pub fn ensure_ca(dir: &Path) -> Result<PathBuf, Error> {
    let _lock = lock(dir)?;
    load_or_create_ca(dir)?;
    Ok(dir.join(CA_CERT_FILE))
}

/// Creates what is missing of the CA and the server certificate for `extra_names` (besides
/// `localhost`, `127.0.0.1` and `::1`), and returns the listener's TLS configuration.
pub fn server_config(
    dir: &Path,
    extra_names: &[String],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let lock = lock(dir)?;
    let ca_key = load_or_create_ca(dir)?;
    ensure_server_cert(dir, &ca_key, extra_names)?;
    let chain = load_certs(&dir.join(SERVER_CERT_FILE))?;
    let key = load_key(&dir.join(SERVER_KEY_FILE))?;
    drop(lock);

    let provider = Arc::new(crypto_provider());
    let tls_error = |source| Error::Tls {
        path: dir.join(SERVER_CERT_FILE),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads the CA's certificate chain from `dir`, for clients that trust it explicitly.
pub fn ca_certificates(dir: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    load_certs(&dir.join(CA_CERT_FILE))
}

/// The rustls provider of the listener and of outgoing S3 requests: ring, which builds
/// without a C toolchain of its own.
// NOTE: rustls 0.23.48 deprecates ring's provider because it lacks post-quantum key exchange;
// connections still negotiate X25519 or the NIST curves.
#[allow(deprecated)]
pub(crate) fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn lock(dir: &Path) -> Result<File, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io("create the TLS directory", dir))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(Error::io("open", &path))?;
    file.lock().map_err(Error::io("lock", &path))?;
    Ok(file)
}

/// The CA's subject and key usages; the same every time, so that a CA key read back from disk
/// issues certificates whose issuer matches `ca.crt`.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Daytona");
    name.push(DnType::CommonName, "Daytona local CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn load_or_create_ca(dir: &Path) -> Result<KeyPair, Error> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let pem = std::fs::read_to_string(&key_path).map_err(Error::io("read", &key_path))?;
        return KeyPair::from_pem(&pem).map_err(|source| Error::Certificate {
            dir: dir.to_owned(),
            source,
        });
    }

    let certificate_error = |source| Error::Certificate {
        dir: dir.to_owned(),
        source,
    };
    let key = KeyPair::generate().map_err(certificate_error)?;
    let mut params = ca_params();
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + CA_LIFETIME;
    let cert = params.self_signed(&key).map_err(certificate_error)?;
    // The key first: a certificate without its key would be taken for a complete CA.
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    // Issued by the old CA, the server certificate would no longer verify.
    let _ = std::fs::remove_file(dir.join(SERVER_INFO_FILE));
    tracing::info!(path = %cert_path.display(), "created the local CA of the object storage");
    Ok(key)
}

fn ensure_server_cert(dir: &Path, ca_key: &KeyPair, extra_names: &[String]) -> Result<(), Error> {
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|n| (*n).to_owned()).collect();
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let now = OffsetDateTime::now_utc();
    let info_path = dir.join(SERVER_INFO_FILE);
    let current: Option<ServerInfo> = std::fs::read(&info_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let files_exist = dir.join(SERVER_CERT_FILE).exists() && dir.join(SERVER_KEY_FILE).exists();
    if let Some(info) = &current
        && files_exist
        && info.names == names
        && info.not_after > (now + RENEW_BEFORE).unix_timestamp()
    {
        return Ok(());
    }

    let certificate_error = |source| Error::Certificate {
        dir: dir.to_owned(),
        source,
    };
    let key = KeyPair::generate().map_err(certificate_error)?;
    let mut params = CertificateParams::new(names.clone()).map_err(certificate_error)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Daytona object storage");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::days(1);
    params.not_after = now + SERVER_LIFETIME;
    let issuer = Issuer::new(ca_params(), ca_key);
    let cert = params.signed_by(&key, &issuer).map_err(certificate_error)?;

    write_atomic(
        &dir.join(SERVER_KEY_FILE),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(&dir.join(SERVER_CERT_FILE), cert.pem().as_bytes(), 0o644)?;
    let info = ServerInfo {
        names,
        not_after: params.not_after.unix_timestamp(),
    };
    let json = serde_json::to_vec_pretty(&info).expect("ServerInfo serializes");
    write_atomic(&info_path, &json, 0o644)?;
    tracing::info!(names = ?info.names, "issued the object storage's server certificate");
    Ok(())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| Error::Pem {
            path: path.to_owned(),
            source,
        })
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| Error::Pem {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to a temporary file with `mode` and renames it over `path`, so that a
/// reader sees the old file or the new one, never a part.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let temp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(Error::io("write", path))
}
