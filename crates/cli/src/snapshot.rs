//! `daytona snapshot`: list snapshots through the API, import and export images.
//!
//! Import and export work on the image store directly (`--image-cache`, the directory that
//! `daytona server` uses), not through the API: the store is safe for several processes at
//! once, an image of hundreds of megabytes is then copied once instead of uploaded, and it
//! works before the server runs. After an import the command registers the image as a
//! snapshot through the API (`POST /snapshots`) when `DAYTONA_API_KEY` is set, so the official
//! SDKs can create sandboxes from it at once.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use daytona_images::{Credentials, ExportFormat, ImageStore};

use crate::client;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots.
    List,
    /// Import a `docker save` tarball or an OCI image layout (directory or tar) into the image
    /// store, and register it as a snapshot when DAYTONA_API_KEY is set.
    Import {
        /// Name of the snapshot (and of the image in the store).
        #[arg(long)]
        name: String,
        /// The image to pick when the source holds several: a RepoTags entry of a
        /// docker-archive, or the org.opencontainers.image.ref.name of an OCI layout.
        #[arg(long)]
        tag: Option<String>,
        /// Image store directory of the server (the one `scripts/start` uses by default).
        #[arg(
            long,
            env = "DAYTONA_IMAGE_CACHE",
            default_value = "/var/cache/daytona/images"
        )]
        image_cache: PathBuf,
        /// Only import into the store; do not register the snapshot through the API.
        #[arg(long)]
        no_register: bool,
        /// The docker-archive tar, OCI layout directory or OCI layout tar.
        source: PathBuf,
    },
    /// Pull an image from an OCI registry by reference (HOST[:PORT]/NAME[:TAG]) into the
    /// image store, and register it as a snapshot when DAYTONA_API_KEY is set.
    Pull {
        /// The image reference; registries on loopback are reached over plain HTTP.
        reference: String,
        /// Name of the snapshot and image in the store (default: the reference).
        #[arg(long)]
        name: Option<String>,
        /// Registry credentials as USER:PASSWORD, sent as HTTP basic auth.
        #[arg(long, env = "DAYTONA_REGISTRY_AUTH", hide_env_values = true)]
        creds: Option<String>,
        /// Image store directory of the server (the one `scripts/start` uses by default).
        #[arg(
            long,
            env = "DAYTONA_IMAGE_CACHE",
            default_value = "/var/cache/daytona/images"
        )]
        image_cache: PathBuf,
        /// Only pull into the store; do not register the snapshot through the API.
        #[arg(long)]
        no_register: bool,
    },
    /// Export an image of the store.
    Export {
        /// Name of the image.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "oci")]
        format: Format,
        /// Image store directory of the server (the one `scripts/start` uses by default).
        #[arg(
            long,
            env = "DAYTONA_IMAGE_CACHE",
            default_value = "/var/cache/daytona/images"
        )]
        image_cache: PathBuf,
        /// Output: a directory for `oci`, a tar file for `docker-archive`; must not exist.
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Oci,
    DockerArchive,
}

pub fn run(command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::List => client::run_snapshot(client::SnapshotCommand::List),
        SnapshotCommand::Import {
            name,
            tag,
            image_cache,
            no_register,
            source,
        } => {
            let store = open_store(&image_cache)?;
            let progress = |line: &str| eprintln!("{line}");
            let image = store
                .import(&name, &source, tag.as_deref(), &progress)
                .with_context(|| format!("failed to import {}", source.display()))?;
            println!("{} {}", image.name, image.manifest_digest);
            if no_register || std::env::var_os("DAYTONA_API_KEY").is_none() {
                eprintln!(
                    "imported into the image store; register it with the SDK's snapshot.create(CreateSnapshotParams(name={name:?}, image={name:?}))"
                );
                return Ok(());
            }
            register(&name)
        }
        SnapshotCommand::Pull {
            reference,
            name,
            creds,
            image_cache,
            no_register,
        } => {
            let name = name.unwrap_or_else(|| reference.clone());
            let credentials = match creds.as_deref() {
                Some(text) => Some(
                    Credentials::parse(text).context("--creds must have the form USER:PASSWORD")?,
                ),
                None => None,
            };
            let store = open_store(&image_cache)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            let progress = |line: &str| eprintln!("{line}");
            let image = runtime
                .block_on(store.pull(&reference, &name, credentials.as_ref(), &progress))
                .with_context(|| format!("failed to pull {reference}"))?;
            println!("{} {}", image.name, image.manifest_digest);
            if no_register || std::env::var_os("DAYTONA_API_KEY").is_none() {
                return Ok(());
            }
            register(&name)
        }
        SnapshotCommand::Export {
            name,
            format,
            image_cache,
            out,
        } => {
            let store = open_store(&image_cache)?;
            let format = match format {
                Format::Oci => ExportFormat::Oci,
                Format::DockerArchive => ExportFormat::DockerArchive,
            };
            store
                .export(&name, format, &out)
                .with_context(|| format!("failed to export {name} to {}", out.display()))?;
            eprintln!("exported {name} to {}", out.display());
            Ok(())
        }
    }
}

fn open_store(image_cache: &std::path::Path) -> anyhow::Result<ImageStore> {
    ImageStore::open(image_cache)
        .with_context(|| format!("failed to open the image store {}", image_cache.display()))
}

/// Registers image `name` as the snapshot `name` through the API.
fn register(name: &str) -> anyhow::Result<()> {
    let api_url =
        std::env::var("DAYTONA_API_URL").unwrap_or_else(|_| "http://127.0.0.1:3000/api".to_owned());
    let api_url = api_url.trim_end_matches('/');
    let api_key = std::env::var("DAYTONA_API_KEY").context("DAYTONA_API_KEY is not set")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{api_url}/snapshots"))
            .bearer_auth(api_key)
            .json(&serde_json::json!({ "name": name, "imageName": name }))
            .send()
            .await
            .with_context(|| {
                format!("failed to reach the API at {api_url} to register the snapshot")
            })?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_slice::<daytona_wire::ErrorBody>(&body)
                .map(|error| error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            bail!(
                "the image is imported, but registering snapshot {name} failed: {status}: {message}"
            );
        }
        eprintln!("registered snapshot {name}");
        Ok(())
    })
}
