//! Pulls of images from an OCI distribution registry by reference (`host:port/name:tag` or
//! `host/name@sha256:...`).
//!
//! The manifest (for an image index, the one for this machine's platform), the configuration
//! and the layers are fetched with the store lock held. Each is streamed to a temporary, checked
//! against its digest and size, and renamed into `blobs/`. Then the image is recorded as a
//! pushed manifest is: layers unpacked, manifest blob, name last. A journal collects what an
//! interrupted pull wrote. Registries on loopback are reached over plain HTTP, others over
//! HTTPS; credentials go as HTTP basic auth.

use std::time::Instant;

use futures_util::StreamExt;
use oci_spec::distribution::Reference;
use oci_spec::image::{Arch, ImageIndex, ImageManifest, Os};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::gc::{Journal, Object};
use crate::registry::MANIFEST_MEDIA_TYPES;
use crate::store::remove_temporary;
use crate::{Error, Image, ImageStore, Progress};

/// Largest manifest or image index accepted, read into memory.
const MAX_MANIFEST: usize = 4 << 20;

/// Largest image configuration accepted.
const MAX_CONFIG: u64 = 16 << 20;

const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Credentials for a registry, sent as HTTP basic auth.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Parses `user:password` (the password may contain `:`).
    pub fn parse(text: &str) -> Option<Self> {
        let (username, password) = text.split_once(':')?;
        Some(Self {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

/// Failures of a pull on the registry's side.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "invalid image reference; expected HOST[:PORT]/NAME[:TAG] or HOST[:PORT]/NAME@sha256:DIGEST"
    )]
    InvalidReference {
        #[source]
        source: oci_spec::distribution::ParseError,
    },
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "{url} answered 401: the registry wants credentials; pass them with --creds USER:PASSWORD or DAYTONA_REGISTRY_AUTH"
    )]
    Unauthorized { url: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{what} has digest {actual}, but {expected} was expected")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} has {actual} bytes, but its descriptor says {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "the registry sent a manifest of media type {media_type:?}; expected an OCI or Docker image manifest or index"
    )]
    UnsupportedManifest { media_type: String },
    #[error("the manifest from the registry is not valid")]
    InvalidManifest {
        #[source]
        source: serde_json::Error,
    },
    #[error("the image index has no manifest for linux/{architecture}")]
    NoPlatform { architecture: String },
    #[error("failed to write {}", path.display())]
    WriteFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Returns whether `name` is a registry reference (`host:port/...`, `host.domain/...` or
/// `localhost/...`) rather than the name of an image in the store.
pub fn is_registry_reference(name: &str) -> bool {
    let Some((host, rest)) = name.split_once('/') else {
        return false;
    };
    !rest.is_empty() && (host.contains(':') || host.contains('.') || host == "localhost")
}

/// The parsed reference and the client that reaches its registry.
struct Remote {
    reference: Reference,
    base: String,
    client: reqwest::Client,
    credentials: Option<Credentials>,
}

impl Remote {
    fn new(reference: &str, credentials: Option<&Credentials>) -> Result<Self, PullError> {
        let reference: Reference = reference
            .parse()
            .map_err(|source| PullError::InvalidReference { source })?;
        let host = reference.resolve_registry().to_owned();
        let scheme = if is_loopback(&host) { "http" } else { "https" };
        let client = reqwest::Client::builder()
            .user_agent(concat!("daytona/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| PullError::Request {
                url: host.clone(),
                source,
            })?;
        Ok(Self {
            base: format!("{scheme}://{host}/v2/{}", reference.repository()),
            reference,
            client,
            credentials: credentials.cloned(),
        })
    }

    async fn get(&self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, PullError> {
        let mut request = self.client.get(url);
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        if let Some(credentials) = &self.credentials {
            request = request.basic_auth(&credentials.username, Some(&credentials.password));
        }
        let response = request.send().await.map_err(|source| PullError::Request {
            url: url.to_owned(),
            source,
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED && self.credentials.is_none() {
            return Err(PullError::Unauthorized {
                url: url.to_owned(),
            });
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(PullError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                body: body.chars().take(500).collect(),
            });
        }
        Ok(response)
    }

    /// Fetches manifest `reference` (a tag or digest): its bytes and media type.
    async fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String), PullError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let accept = [
            MANIFEST_MEDIA_TYPES[0],
            MANIFEST_MEDIA_TYPES[1],
            MEDIA_TYPE_OCI_INDEX,
            MEDIA_TYPE_DOCKER_LIST,
        ]
        .join(", ");
        let response = self.get(&url, Some(&accept)).await?;
        let header_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or(value).trim().to_owned());
        let bytes = read_limited(response, &url, MAX_MANIFEST as u64).await?;
        if reference.starts_with("sha256:") {
            verify(&format!("manifest {reference}"), reference, &bytes)?;
        }
        let body_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|value| value.get("mediaType")?.as_str().map(str::to_owned));
        let media_type = body_type.or(header_type).unwrap_or_default();
        Ok((bytes, media_type))
    }
}

impl ImageStore {
    /// Pulls `reference` from its registry into the store as image `name`, unless `name` is
    /// there already. Layers the store has unpacked are not unpacked again.
    pub async fn pull(
        &self,
        reference: &str,
        name: &str,
        credentials: Option<&Credentials>,
        progress: Progress<'_>,
    ) -> Result<Image, Error> {
        if !crate::is_valid_name(name) {
            return Err(Error::InvalidName {
                name: name.to_owned(),
            });
        }
        let pull_error = |source| Error::Pull {
            reference: reference.to_owned(),
            source,
        };
        let remote = Remote::new(reference, credentials).map_err(pull_error)?;
        let lock = self.lock(progress).await?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.remove_temporaries())
            .await
            .map_err(|source| Error::Task { source })?;
        if let Some(image) = self.get(name)? {
            drop(lock);
            return Ok(image);
        }
        let started = Instant::now();
        let mut journal = Journal::create(self, "pull")?;
        let fetched = self.fetch(&remote, &mut journal, progress).await;
        let result = match fetched {
            Ok((bytes, media_type)) => {
                progress(&format!("unpacking the layers of {reference}"));
                let store = self.clone();
                let name = name.to_owned();
                tokio::task::spawn_blocking(move || {
                    let progress = |line: &str| tracing::info!(line, "pull");
                    let result = store.commit_manifest(
                        &mut journal,
                        Some(&name),
                        &bytes,
                        &media_type,
                        &progress,
                    );
                    match result {
                        Ok(image) => {
                            journal.finish();
                            Ok(image.expect("commit_manifest returns the image of a name"))
                        }
                        Err(error) => {
                            drop(journal);
                            store.recover_journals();
                            Err(error)
                        }
                    }
                })
                .await
                .map_err(|source| Error::Task { source })?
            }
            Err(error) => {
                drop(journal);
                let store = self.clone();
                let _ = tokio::task::spawn_blocking(move || store.recover_journals()).await;
                Err(error)
            }
        };
        drop(lock);
        let image = result?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(reference, image = name, manifest = %image.manifest_digest, seconds, "image pulled");
        progress(&format!("pulled {reference} as {name} in {seconds:.1} s"));
        Ok(image)
    }

    /// Fetches the manifest and its blobs; returns the manifest and its media type.
    async fn fetch(
        &self,
        remote: &Remote,
        journal: &mut Journal,
        progress: Progress<'_>,
    ) -> Result<(Vec<u8>, String), Error> {
        let reference = remote.reference.whole();
        let pull_error = |source| Error::Pull {
            reference: reference.clone(),
            source,
        };
        let wanted = remote
            .reference
            .digest()
            .or(remote.reference.tag())
            .unwrap_or("latest")
            .to_owned();
        progress(&format!("fetching the manifest of {reference}"));
        let (mut bytes, mut media_type) = remote.manifest(&wanted).await.map_err(pull_error)?;
        if media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST {
            let index: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|source| pull_error(PullError::InvalidManifest { source }))?;
            let digest = platform_manifest(&index).map_err(pull_error)?;
            (bytes, media_type) = remote.manifest(&digest).await.map_err(pull_error)?;
        }
        if !MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
            return Err(pull_error(PullError::UnsupportedManifest { media_type }));
        }
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|source| pull_error(PullError::InvalidManifest { source }))?;

        let config = manifest.config();
        if config.size() > MAX_CONFIG {
            return Err(pull_error(PullError::TooLarge {
                url: format!("{}/blobs/{}", remote.base, config.digest()),
                limit: MAX_CONFIG,
            }));
        }
        self.fetch_blob(remote, journal, config.digest().as_ref(), config.size())
            .await?;
        let count = manifest.layers().len();
        for (number, layer) in manifest.layers().iter().enumerate() {
            let digest = layer.digest().to_string();
            progress(&format!(
                "fetching layer {}/{count} {digest} ({} MB)",
                number + 1,
                layer.size() / 1_000_000
            ));
            self.fetch_blob(remote, journal, &digest, layer.size())
                .await?;
        }

        Ok((bytes, media_type))
    }

    /// Streams blob `digest` into the store unless it is there, checking digest and size.
    async fn fetch_blob(
        &self,
        remote: &Remote,
        journal: &mut Journal,
        digest: &str,
        size: u64,
    ) -> Result<(), Error> {
        let target = self.blob_path(digest)?;
        if target.exists() {
            return Ok(());
        }
        let url = format!("{}/blobs/{digest}", remote.base);
        let pull_error = |source| Error::Pull {
            reference: remote.reference.whole(),
            source,
        };
        let response = remote.get(&url, None).await.map_err(pull_error)?;
        let temp = self.temp_path("pull");
        let written = write_hashed(response, &url, &temp, size).await;
        let (actual, written) = match written {
            Ok(result) => result,
            Err(error) => {
                remove_temporary(&temp);
                return Err(pull_error(error));
            }
        };
        let mismatch = if actual != digest {
            Some(PullError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.to_owned(),
                actual,
            })
        } else if written != size {
            Some(PullError::SizeMismatch {
                what: format!("blob {digest}"),
                expected: size,
                actual: written,
            })
        } else {
            None
        };
        if let Some(error) = mismatch {
            remove_temporary(&temp);
            return Err(pull_error(error));
        }
        journal.add(Object::Blob, digest)?;
        self.rename_into_place(&temp, &target)
    }
}

/// Writes the body of `response` to a new file at `temp`, synced, refusing more than `limit`
/// bytes; returns the digest and size.
async fn write_hashed(
    response: reqwest::Response,
    url: &str,
    temp: &std::path::Path,
    limit: u64,
) -> Result<(String, u64), PullError> {
    let write_error = |source| PullError::WriteFile {
        path: temp.to_owned(),
        source,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp)
        .await
        .map_err(write_error)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| PullError::Request {
            url: url.to_owned(),
            source,
        })?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(PullError::SizeMismatch {
                what: url.to_owned(),
                expected: limit,
                actual: size,
            });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(write_error)?;
    }
    file.sync_all().await.map_err(write_error)?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

async fn read_limited(
    response: reqwest::Response,
    url: &str,
    limit: u64,
) -> Result<Vec<u8>, PullError> {
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| PullError::Request {
            url: url.to_owned(),
            source,
        })?;
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(PullError::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn verify(what: &str, expected: &str, bytes: &[u8]) -> Result<(), PullError> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    if actual == expected {
        Ok(())
    } else {
        Err(PullError::DigestMismatch {
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual,
        })
    }
}

/// Returns the digest of the manifest for linux on this machine's architecture.
fn platform_manifest(index: &ImageIndex) -> Result<String, PullError> {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::Other(other.to_owned()),
    };
    index
        .manifests()
        .iter()
        .find(|manifest| {
            manifest.platform().as_ref().is_some_and(|platform| {
                *platform.os() == Os::Linux && *platform.architecture() == architecture
            })
        })
        .map(|manifest| manifest.digest().to_string())
        .ok_or_else(|| PullError::NoPlatform {
            architecture: architecture.to_string(),
        })
}

/// Checks whether `host` (with an optional port) is a loopback address, reached over plain HTTP.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_told_from_names() {
        assert!(is_registry_reference("127.0.0.1:5000/app:1"));
        assert!(is_registry_reference("registry.example/app"));
        assert!(is_registry_reference("localhost/app:1"));
        assert!(!is_registry_reference("app:1"));
        assert!(!is_registry_reference("library/app:1"));
        assert!(!is_registry_reference("daytona-default"));
    }

    #[test]
    fn loopback_hosts_use_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("10.0.0.1"));
    }

    #[test]
    fn credentials_split_at_the_first_colon() {
        let credentials = Credentials::parse("user:pa:ss").unwrap();
        assert_eq!(credentials.username, "user");
        assert_eq!(credentials.password, "pa:ss");
        assert!(Credentials::parse("nocolon").is_none());
        assert!(!format!("{credentials:?}").contains("pa:ss"));
    }
}
