//! `daytona tls`: the local CA of the object storage.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Create the local CA if it is missing and print the path of its certificate, to
    /// install into the system trust store (see the README).
    CaPath {
        /// Data directory of the server [default: as `daytona server`]
        #[arg(long, env = "DAYTONA_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Directory of the CA, as `daytona server --tls-dir` [default: <data-dir>/tls]
        #[arg(long, env = "DAYTONA_TLS_DIR")]
        tls_dir: Option<PathBuf>,
    },
}

pub fn run(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::CaPath { data_dir, tls_dir } => {
            let tls_dir = match (tls_dir, data_dir) {
                (Some(dir), _) => dir,
                (None, Some(data_dir)) => data_dir.join("tls"),
                (None, None) => crate::server::default_data_dir()?.join("tls"),
            };
            let path = daytona_objstore::tls::ensure_ca(&tls_dir)
                .with_context(|| format!("failed to create the CA in {}", tls_dir.display()))?;
            println!("{}", path.display());
            Ok(())
        }
    }
}
