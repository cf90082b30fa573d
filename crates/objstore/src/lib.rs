//! Object storage of the Daytona server.
//!
//! By default the server embeds an S3-compatible service ([`ObjectStorage::open_embedded`]):
//! objects live as files under `<data-dir>/objects/`, the S3 protocol and SigV4 come from the
//! `s3s` crate, and the listener speaks HTTPS with a certificate from a local CA ([`tls`]).
//! SDKs upload build contexts to it with temporary per-organization credentials
//! ([`ObjectStorage::push_access`]); the server's own code reads and writes through
//! [`ObjectStorage`]. An external S3 endpoint can replace the embedded service
//! ([`ObjectStorage::open_external`]).

#![forbid(unsafe_code)]

mod credentials;
mod embedded;
mod error;
mod external;
mod server;
mod storage;
pub mod tls;

pub use credentials::{PushAccess, TEMPORARY_CREDENTIALS_LIFETIME};
pub use error::Error;
pub use external::ExternalConfig;
pub use storage::{EmbeddedConfig, ObjectStorage};

/// Bucket of build contexts that SDKs upload (`Image.add_local_file`, `add_local_dir`); the
/// SDK's default bucket name.
pub const BUILDS_BUCKET: &str = "daytona-volume-builds";

/// Bucket of archived sandboxes.
pub const ARCHIVES_BUCKET: &str = "daytona-archives";

/// Region that the embedded service reports and accepts in signatures.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Default address of the embedded service's HTTPS listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3009";
