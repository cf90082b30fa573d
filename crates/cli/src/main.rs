//! `daytona`: runs the server, and manages sandboxes and snapshots through its API.

mod client;
mod image;
mod network;
mod server;
mod snapshot;
mod tls;

use clap::{Parser, Subcommand};

/// Self-hosted sandboxes for AI-generated code, compatible with the Daytona SDKs.
#[derive(Debug, Parser)]
#[command(name = "daytona", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server, a local runner and the toolbox proxy in one process.
    Server(Box<server::ServerArgs>),
    /// Manage sandboxes through the API at DAYTONA_API_URL.
    #[command(subcommand)]
    Sandbox(client::SandboxCommand),
    /// Manage snapshots: list them through the API at DAYTONA_API_URL, import and export
    /// images in the image store.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Work on an image store directly, without a server.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Manage the local CA that signs the object storage's HTTPS certificate.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(*args),
        Command::Sandbox(command) => client::run_sandbox(command),
        Command::Snapshot(command) => snapshot::run(command),
        Command::Image(command) => image::run(command),
        Command::Tls(command) => tls::run(command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain on one line; a backtrace helps nobody who runs the command.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
