//! One SSH connection: authentication by token, the session channels it opens, and the
//! periodic check that ends it once its token is no longer valid.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, Disconnect};
use tokio::sync::oneshot;

use crate::channel;
use crate::{Backend, REVALIDATE_INTERVAL};

/// The SFTP subsystem's name in a `subsystem` request.
pub const SFTP_SUBSYSTEM: &str = "sftp";

/// Creates a [`Connection`] for every client.
pub struct Gateway<B> {
    backend: Arc<B>,
}

impl<B> Gateway<B> {
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend }
    }
}

impl<B: Backend> russh::server::Server for Gateway<B> {
    type Handler = Connection<B>;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection<B> {
        Connection {
            backend: Arc::clone(&self.backend),
            peer,
            granted: None,
            _alive: None,
            logged_in: None,
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        tracing::debug!(%error, "SSH connection ended with an error");
    }
}

/// The state of one connection.
pub struct Connection<B> {
    backend: Arc<B>,
    peer: Option<SocketAddr>,
    /// The token and its sandbox, once authenticated.
    granted: Option<(String, String)>,
    /// Dropped with the connection, which ends its token check.
    _alive: Option<oneshot::Sender<()>>,
    /// Told when the login succeeds, which ends the connection's login deadline.
    logged_in: Option<oneshot::Sender<()>>,
}

impl<B: Backend> Connection<B> {
    /// Makes the connection tell `logged_in` when its login succeeds.
    pub fn notify_login(mut self, logged_in: oneshot::Sender<()>) -> Self {
        self.logged_in = Some(logged_in);
        self
    }

    /// Accepts the connection when the user name is a valid token.
    async fn authenticate(&mut self, user: &str) -> Auth {
        match self.backend.authorize(user).await {
            Some(sandbox_id) => {
                self.granted = Some((user.to_owned(), sandbox_id));
                Auth::Accept
            }
            None => {
                log_rejection(self.peer);
                Auth::reject()
            }
        }
    }

    /// Closes the connection once its token stops being valid or the connection ends.
    fn watch_token(&mut self, session: &Session) {
        let Some((token, sandbox_id)) = self.granted.clone() else {
            return;
        };
        let (alive, mut ended) = oneshot::channel();
        self._alive = Some(alive);
        let handle = session.handle();
        let backend = Arc::clone(&self.backend);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut ended => return,
                    () = tokio::time::sleep(REVALIDATE_INTERVAL) => {}
                }
                if backend.authorize(&token).await.as_deref() == Some(sandbox_id.as_str()) {
                    continue;
                }
                tracing::info!(sandbox_id = %sandbox_id, "SSH access token expired or was revoked: closing the connection");
                let _ = handle
                    .disconnect(
                        Disconnect::ByApplication,
                        "the SSH access token expired or was revoked".to_owned(),
                        "en".to_owned(),
                    )
                    .await;
                return;
            }
        });
    }
}

impl<B: Backend> russh::server::Handler for Connection<B> {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        Ok(self.authenticate(user).await)
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(self.authenticate(user).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.authenticate(user).await)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.authenticate(user).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.authenticate(user).await)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(logged_in) = self.logged_in.take() {
            let _ = logged_in.send(());
        }
        self.watch_token(session);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some((_, sandbox_id)) = self.granted.clone() else {
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(channel::serve(
            channel,
            Arc::clone(&self.backend),
            sandbox_id,
        ));
        Ok(())
    }

    // The channel's task receives every request below too and acts on it. These handlers only
    // reply to the client.

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == SFTP_SUBSYSTEM {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

/// Minimum time between two log lines about rejected tokens; clients can cause them at will.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs a rejected token at most once per [`REJECTION_LOG_INTERVAL`], with the number of
/// rejections since the last line.
fn log_rejection(peer: Option<SocketAddr>) {
    static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let last = LAST_LOGGED.load(Ordering::Relaxed);
    if now < last + REJECTION_LOG_INTERVAL.as_secs()
        || LAST_LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    tracing::info!(peer = ?peer, suppressed, "SSH authentication rejected: unknown, expired or revoked token");
}
