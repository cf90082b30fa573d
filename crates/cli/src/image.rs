//! `daytona image`: work on an image store directly, without a server.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use daytona_images::ImageStore;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the default snapshot into an image store if it is missing, and print the paths of
    /// its unpacked layers, lowest first.
    PrepareDefault {
        /// Image store directory.
        #[arg(long, env = "DAYTONA_IMAGE_CACHE")]
        image_cache: PathBuf,
    },
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::PrepareDefault { image_cache } => {
            let store = ImageStore::open(&image_cache).with_context(|| {
                format!("failed to open the image store {}", image_cache.display())
            })?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            let progress = |line: &str| eprintln!("{line}");
            let image = runtime
                .block_on(store.ensure_default(&progress))
                .context("failed to prepare the default snapshot")?;
            for layer in &image.layers {
                println!("{}", layer.display());
            }
            Ok(())
        }
    }
}
