//! The SSH gateway: `ssh -p <port> <token>@<host>` opens a shell, runs a command, or starts
//! the SFTP subsystem in the sandbox that the token was created for.
//!
//! The user name is the token. Any authentication method (none, password, public key,
//! keyboard-interactive) succeeds when the token is valid and fails otherwise. Every channel
//! request that starts something becomes one process stream of the sandbox's toolbox, so the
//! command runs like every other workload: confined and as the sandbox's user. While a
//! connection is open its token is checked again every [`REVALIDATE_INTERVAL`]; once it has
//! expired or was revoked, the connection is closed, which kills what it started.

#![forbid(unsafe_code)]

mod channel;
mod connection;
mod host_key;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use daytona_runner::{StreamReader, StreamWriter};
use daytona_wire::stream::StreamRequest;
use tokio::net::TcpListener;

pub use host_key::{HostKeyError, load_or_generate_host_key};

/// How often the token of an open connection is checked again.
pub const REVALIDATE_INTERVAL: Duration = Duration::from_secs(2);

/// Token checks and command starts, which the rest of the server provides to the gateway.
pub trait Backend: Send + Sync + 'static {
    /// Returns the id of the sandbox that `token` gives access to, or `None` when the token
    /// is unknown, expired or revoked, or its sandbox is gone.
    fn authorize(&self, token: &str) -> impl Future<Output = Option<String>> + Send;

    /// Starts a command in the sandbox and returns its streams. The SSH client shows the error
    /// text, so the text tells the user what to do.
    fn open(
        &self,
        sandbox_id: &str,
        request: StreamRequest,
    ) -> impl Future<Output = Result<Streams, String>> + Send;
}

/// The streams of a command started for a channel.
pub struct Streams {
    pub output: StreamReader,
    pub input: StreamWriter,
    /// Dropped when the channel ends; the server uses it to keep the sandbox counted active.
    pub hold: Box<dyn Send + Sync>,
}

/// Serves SSH on `listener` until `shutdown` completes.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    host_key: russh::keys::PrivateKey,
    backend: Arc<B>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use russh::server::Server as _;

    let config = Arc::new(russh::server::Config {
        keys: vec![host_key],
        // OpenSSH clients start with "none", which is the method a valid token passes with.
        auth_rejection_time: Duration::from_secs(1),
        auth_rejection_time_initial: Some(Duration::ZERO),
        // An idle shell stays open as long as the client replies to keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    });
    let mut gateway = connection::Gateway::new(backend);
    let server = gateway.run_on_socket(config, &listener);
    let handle = server.handle();
    tokio::select! {
        result = server => result,
        () = shutdown => {
            handle.shutdown("the server is stopping".to_owned());
            Ok(())
        }
    }
}
