//! The snapshot manager's image store.
//!
//! Snapshots are OCI images kept in an [`ImageStore`], which is an OCI image layout on disk
//! (`oci-layout`, `index.json`, `blobs/sha256/...`). Each layer is also unpacked once into a
//! plain directory tree, and the isolation runtime stacks these trees as overlay lower
//! directories, lowest first as in [`Image::layers`]. Names map to manifests through the
//! `org.opencontainers.image.ref.name` annotation in `index.json`.
//!
//! The default snapshot, [`DEFAULT_SNAPSHOT`], is built locally from Debian packages by
//! mmdebstrap ([`DebianRecipe::default_snapshot`]) the first time [`ImageStore::ensure_default`]
//! finds it missing, and is cached under the digest of its recipe.
//!
//! ```no_run
//! # async fn example() -> Result<(), daytona_images::Error> {
//! let store = daytona_images::ImageStore::open(std::path::Path::new("/var/lib/daytona/images"))?;
//! let image = store.ensure_default(&|line| eprintln!("{line}")).await?;
//! println!("{} has {} layer(s)", image.name, image.layers.len());
//! # Ok(()) }
//! ```
//!
//! The store must run as root: layers keep the numeric owners of the image (files owned by uid
//! 0 and 1000 in the default snapshot), whiteouts are character devices, and opaque directories
//! carry a `trusted.*` extended attribute. The overlay mount that uses the layers therefore must
//! not use the `userxattr` option.

pub mod build;
mod capture;
mod error;
mod export;
pub mod fault;
mod gc;
mod import;
#[cfg(test)]
mod import_tests;
mod oci;
pub mod pack;
mod pull;
pub mod recipe;
mod registry;
mod source;
mod store;
pub mod unpack;
mod xattr;

use std::path::PathBuf;

pub use capture::Capture;
pub use error::Error;
pub use export::ExportFormat;
pub use gc::Removal;
pub use import::is_valid_name;
pub use pack::OwnerShift;
pub use pull::{Credentials, PullError, is_registry_reference};
pub use recipe::{BuildError, DebianRecipe, Recipe};
pub use registry::{MANIFEST_MEDIA_TYPES, StoredManifest};
pub use store::ImageStore;

/// Returns `sha256:<hex>` of `data`, the form of every digest in the store.
pub fn sha256_digest(data: &[u8]) -> String {
    oci::sha256_digest(data)
}

/// Name of the default snapshot, listed by `GET /api/snapshots`.
pub const DEFAULT_SNAPSHOT: &str = "daytona-default";

/// A callback that receives progress lines of a build, one line per call, without the newline.
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// A named image of the store, ready to be stacked as overlay lower directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Name from `index.json`, such as `daytona-default`.
    pub name: String,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// Unpacked layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    /// Sum of the layer blob sizes as stored (compressed when a layer is compressed).
    pub size_bytes: u64,
    /// Runtime defaults from the image configuration.
    pub config: ImageConfig,
    /// Creation time from the image configuration (the Unix epoch when it has none).
    pub created_at: time::OffsetDateTime,
}

/// The runtime defaults of an image (the `config` object of an OCI image configuration).
///
/// Empty lists and `None` mean the image does not set the value. The daemon decides which user
/// sandbox processes run as; `user` only reports what the image requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}
