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
    #[error(
        "layer {diff_id} of the sandbox's image is in no image of the store; its image was removed, so the sandbox cannot be snapshotted"
    )]
    BaseLayerUnknown { diff_id: String },
    #[error("the capture of image {image:?} was committed before its layer was packed")]
    CaptureNotPacked { image: String },
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
    #[error(
        "invalid image name {name:?}: use 1 to 128 letters, digits and '.', '_', '-', ':', '/', starting with a letter or digit"
    )]
    InvalidName { name: String },
    #[error("image {name:?} already exists; delete it first or import under another name")]
    ImageExists { name: String },
    #[error("image {name:?} not found in the image store")]
    ImageNotFound { name: String },
    #[error("{} is neither an OCI image layout (a directory or tar with an oci-layout file) nor a docker-archive (a tar with manifest.json)", path.display())]
    UnknownSourceFormat { path: PathBuf },
    #[error("failed to read the archive {}", path.display())]
    ReadArchive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} has no entry {entry:?}", path.display())]
    SourceEntryMissing { path: PathBuf, entry: String },
    #[error("{} holds {} images ({}); name one with a tag", path.display(), available.len(), available.join(", "))]
    AmbiguousSource {
        path: PathBuf,
        available: Vec<String>,
    },
    #[error("{} has no image tagged {tag:?}; it has: {}", path.display(), available.join(", "))]
    TagNotFound {
        path: PathBuf,
        tag: String,
        available: Vec<String>,
    },
    #[error("{} has no image for linux/{architecture}", path.display())]
    NoPlatform { path: PathBuf, architecture: String },
    #[error("{entry:?} has digest {actual}, but {expected} was expected; the image is corrupt")]
    SourceDigestMismatch {
        entry: String,
        expected: String,
        actual: String,
    },
    #[error("{entry:?} has {actual} bytes, but its descriptor says {expected}")]
    SourceSizeMismatch {
        entry: String,
        expected: u64,
        actual: u64,
    },
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        what: &'static str,
        media_type: String,
    },
    #[error("the image lists {layers} layers, but its configuration lists {diff_ids} diff IDs")]
    LayerCountMismatch { layers: usize, diff_ids: usize },
    #[error("{} already exists; choose a new output path", path.display())]
    OutputExists { path: PathBuf },
    #[error("failed to remove {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("upload {id:?} not found; start a new upload")]
    UploadNotFound { id: String },
    #[error(
        "uploaded content has digest {actual}, but {expected} was given; the upload is discarded"
    )]
    UploadDigestMismatch { expected: String, actual: String },
    #[error(
        "the manifest names blob {digest}, which the image store does not have; push the blob first"
    )]
    ManifestBlobMissing { digest: String },
    #[error("the manifest is not a valid image manifest")]
    InvalidManifest {
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to pull {reference}")]
    Pull {
        reference: String,
        #[source]
        source: crate::pull::PullError,
    },
    #[error("fault injected at step {step}")]
    FaultInjected { step: &'static str },
}
