//! Errors of the image store.

use std::io;
use std::path::PathBuf;

use crate::pack::PackError;
use crate::recipe::BuildError;
use crate::unpack::UnpackError;

/// Errors of [`crate::ImageStore`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to create image store directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to lock the image store with {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to parse {}", path.display())]
    ParseJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to write {}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid digest {digest:?}; expected sha256:<64 lowercase hex digits>")]
    InvalidDigest { digest: String },
    #[error("blob {expected} has content with digest {actual}; the store is corrupt")]
    BlobDigestMismatch { expected: String, actual: String },
    #[error("layer {diff_id} of image {image:?} is not unpacked at {}", path.display())]
    LayerMissing {
        image: String,
        diff_id: String,
        path: PathBuf,
    },
    #[error("failed to build image {image:?}")]
    Build {
        image: String,
        #[source]
        source: BuildError,
    },
    #[error("failed to pack the layer of image {image:?}")]
    Pack {
        image: String,
        #[source]
        source: PackError,
    },
    #[error("failed to unpack layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("layer blob {digest} has diff ID {actual}, but {expected} was expected")]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("an image store task panicked or was cancelled")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
}
