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

/// Most connections served at once; a connection over the limit is closed at once, so
/// clients that never log in cannot use up the server's file descriptors.
const MAX_CONNECTIONS: usize = 1024;

/// Time from accepting a connection to a successful login, after which it is closed.
const LOGIN_DEADLINE: Duration = Duration::from_secs(30);

/// Pause after a failed accept (for example when the process is out of file descriptors)
/// before accepting again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves SSH on `listener` until `shutdown` completes. A failed accept is logged and tried
/// again, so the gateway keeps serving after the process ran out of file descriptors.
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
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (stopping, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "the SSH gateway failed to accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "too many SSH connections: closing a new one");
            continue;
        };
        let (logged_in, login) = tokio::sync::oneshot::channel();
        let handler = gateway.new_client(Some(peer)).notify_login(logged_in);
        let config = Arc::clone(&config);
        let stopping = stopping.subscribe();
        connections.spawn(serve_connection(
            config, socket, handler, login, stopping, slot,
        ));
    }
    let _ = stopping.send(());
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Runs one connection: closes it when it has not logged in by [`LOGIN_DEADLINE`], and with a
/// message when the server stops.
async fn serve_connection<B: Backend>(
    config: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    handler: connection::Connection<B>,
    login: tokio::sync::oneshot::Receiver<()>,
    mut stopping: tokio::sync::broadcast::Receiver<()>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = socket.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + LOGIN_DEADLINE;
    // The version exchange and key exchange happen here; a client that sends nothing is
    // dropped with its socket at the deadline.
    let started =
        tokio::time::timeout_at(deadline, russh::server::run_stream(config, socket, handler));
    let session = match started.await {
        Ok(Ok(session)) => session,
        Ok(Err(error)) => {
            tracing::debug!(%error, "SSH connection setup failed");
            return;
        }
        Err(_) => return,
    };
    let handle = session.handle();
    let logged_in = async {
        if tokio::time::timeout_at(deadline, login).await.is_err() {
            // The session task runs on its own; a disconnect ends it.
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    "login took too long".to_owned(),
                    "en".to_owned(),
                )
                .await;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        result = session => {
            if let Err(error) = result {
                tracing::debug!(%error, "SSH connection ended with an error");
            }
        }
        () = logged_in => {}
        _ = stopping.recv() => {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "the server is stopping".to_owned(), "en".to_owned())
                .await;
        }
    }
}
