use std::path::PathBuf;

/// Errors of the object storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object {bucket}/{key} not found")]
    NotFound { bucket: String, key: String },
    #[error("invalid bucket name {bucket:?}: use one of the server's buckets")]
    InvalidBucket { bucket: String },
    #[error(
        "invalid object key {key:?}: keys are relative paths without empty, `.` or `..` segments"
    )]
    InvalidKey { key: String },
    #[error("failed to {operation} {}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create the TLS material in {}", dir.display())]
    Certificate {
        dir: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid TLS material in {}", path.display())]
    Tls {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("invalid PEM file {}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("invalid credentials file {}", path.display())]
    CredentialsFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// `s3s-fs` errors implement neither `Error` nor `Display`, so their debug form is kept.
    #[error("the embedded object storage failed to open {}: {message}", root.display())]
    Backend { root: PathBuf, message: String },
    #[error("the S3 endpoint {endpoint} failed on {bucket}/{key}")]
    External {
        endpoint: String,
        bucket: String,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("invalid configuration of the S3 endpoint {endpoint}")]
    ExternalConfig {
        endpoint: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("the object storage uses an external S3 endpoint, which this server does not serve")]
    NotEmbedded,
}

impl Error {
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            operation,
            path,
            source,
        }
    }
}
