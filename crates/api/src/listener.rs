//! The HTTP listener: connections with a bounded number and a deadline for request headers,
//! so that clients that open connections and send nothing, or send headers byte by byte,
//! cannot take every descriptor of the server.
//!
//! Connections speak HTTP/1.1, or HTTP/2 when they open with its preface ("prior
//! knowledge", as `curl --http2-prior-knowledge` does).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Time a client has to send a request's headers, including the wait on an idle keep-alive
/// connection for the next request.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long open connections may finish their requests after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The most connections served at once, whatever the descriptor limit.
const MAX_CONNECTIONS: usize = 16_384;

/// Raises the soft limit on open files to the hard limit and returns the result. Each proxied
/// toolbox request holds two descriptors.
fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(_) => soft,
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish
/// for a short grace period.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, None, shutdown).await
}

/// Serves `router` as [`serve`] does, over TLS with `tls` when given: the client picks
/// HTTP/2 or HTTP/1.1 by ALPN.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open_files = raise_open_file_limit();
    // A quarter of the descriptors for client connections leaves room for the proxied
    // toolbox connections, the store and the sandboxes' files.
    let max_connections = usize::try_from(open_files / 4)
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(64, MAX_CONNECTIONS);
    let permits = Arc::new(Semaphore::new(max_connections));
    tracing::info!(max_connections, "accepting connections");

    let mut builder = auto::Builder::new(TokioExecutor::new());
    // NOTE: the deadline covers HTTP/1.1 headers only. The protocol is told apart by the
    // first bytes, and HTTP/1.1 requests differ from the HTTP/2 preface at the first byte.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    // A connection borrows the builder, so each task holds a reference to it.
    let builder = Arc::new(builder);
    // Connections watch this to finish their current request and close when shutdown begins.
    let (stopping, stop_signal) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        // Waiting for a permit before accepting leaves excess clients in the listen backlog
        // instead of failing with EMFILE.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let mut stop_signal = stop_signal.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let result = match tls {
                None => serve_connection(&builder, stream, service, &mut stop_signal).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(&builder, stream, service, &mut stop_signal).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
        // Reap the tasks of closed connections as they finish.
        while connections.try_join_next().is_some() {}
    }

    let _ = stopping.send(true);
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::info!("requests still running after the shutdown grace period");
        connections.abort_all();
    }
    Ok(())
}

/// Serves one connection until it ends, or finishes its current request once shutdown begins.
async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    service: TowerToHyperService<Router>,
    stop_signal: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(stop_signal) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// Completes once shutdown begins.
async fn stopped(signal: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await of the caller.
    let _ = signal.wait_for(|stopping| *stopping).await.map(|_| ());
}
