//! The toolbox and preview proxy: forwards HTTP requests, WebSocket upgrades included, to a
//! daemon's Unix socket or to an app's TCP port inside a sandbox.
//!
//! One hop: the API server's process connects straight to the toolbox socket the runtime bound
//! for the sandbox, or to the app's port over a socket the runner created in the sandbox's
//! network namespace, with no proxy in between.

#![forbid(unsafe_code)]

use std::any::Any;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

/// Errors of forwarding one request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The socket is missing or nothing accepts on it: the sandbox is not running.
    #[error("the sandbox's toolbox is not reachable")]
    Unreachable {
        #[source]
        source: io::Error,
    },
    #[error("the HTTP exchange with the sandbox failed")]
    Exchange {
        #[source]
        source: hyper::Error,
    },
}

/// A value that the proxy keeps for as long as the connection of the request it came with
/// is open, an upgraded (WebSocket) connection included. Callers add it to the request's
/// extensions to account for open connections; it is dropped when the connection ends.
#[derive(Clone)]
pub struct HoldWhileOpen {
    _held: Arc<dyn Any + Send + Sync>,
}

impl HoldWhileOpen {
    pub fn new(value: Arc<dyn Any + Send + Sync>) -> Self {
        Self { _held: value }
    }
}

/// Headers that describe one hop and are not forwarded (RFC 9110, section 7.6.1), apart from
/// `connection` and `upgrade`, which an upgrade request keeps.
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && headers.contains_key(header::UPGRADE)
}

/// Removes hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Forwards `request` to the HTTP server on the Unix socket `socket`, as
/// `path_and_query`, and returns its response. `remove` names request headers that must not
/// reach the sandbox, such as the caller's credentials.
pub async fn forward(
    socket: &Path,
    request: Request<Body>,
    path_and_query: &str,
    remove: &[HeaderName],
) -> Result<Response<Body>, ProxyError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ProxyError::Unreachable { source })?;
    let host = HeaderValue::from_static("sandbox");
    forward_over(stream, request, path_and_query, remove, host).await
}

/// Forwards `request` as HTTP/1.1 over `stream`, an open connection to the server, with
/// `path_and_query` as its target and `host` as its `Host` header. Requests that reached the
/// proxy over HTTP/2 are forwarded as HTTP/1.1 too; a WebSocket upgrade becomes a byte pipe
/// once the server answers 101.
pub async fn forward_over<S>(
    stream: S,
    request: Request<Body>,
    path_and_query: &str,
    remove: &[HeaderName],
    host: HeaderValue,
) -> Result<Response<Body>, ProxyError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Exchange { source })?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "connection to the sandbox ended with an error");
        }
    });
    let outbound = Outbound::new(request, path_and_query.to_owned(), remove, host);
    let (request, pending) = outbound.split();
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| ProxyError::Exchange { source })?;
    Ok(pending.finish(response))
}

/// A client that keeps idle HTTP/1.1 connections to a server for reuse, one pool per
/// authority of the request URI; the connector `C` opens new connections.
pub type PooledClient<C> = hyper_util::client::legacy::Client<C, Body>;

/// Builds a [`PooledClient`] that keeps up to `max_idle` idle connections per authority for
/// `idle_timeout`, and leaves the `Host` header to the caller.
pub fn pooled_client<C>(connector: C, max_idle: usize, idle_timeout: Duration) -> PooledClient<C>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(max_idle)
        .set_host(false)
        .build(connector)
}

/// Forwards `request` as [`forward_over`] does, over an idle connection of `client`'s pool to
/// `authority` when there is one, else over a new connection from its connector.
pub async fn forward_pooled<C>(
    client: &PooledClient<C>,
    authority: &str,
    request: Request<Body>,
    path_and_query: &str,
    remove: &[HeaderName],
    host: HeaderValue,
) -> Result<Response<Body>, PooledError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let outbound = Outbound::new(
        request,
        format!("http://{authority}{path_and_query}"),
        remove,
        host,
    );
    let (request, pending) = outbound.split();
    let response = client.request(request).await.map_err(PooledError)?;
    Ok(pending.finish(response))
}

/// The failure of a pooled exchange: connecting (see its source chain for the connector's
/// error) or the HTTP exchange.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP exchange with the sandbox failed")]
pub struct PooledError(#[source] pub hyper_util::client::legacy::Error);

/// A request prepared for the server, and what its response needs from the client's request.
struct Outbound {
    request: Request<Body>,
    pending: Pending,
}

/// The client side of a request in flight: its upgrade, and the value held while it is open.
struct Pending {
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    hold: Option<HoldWhileOpen>,
}

impl Outbound {
    /// Rewrites the client's request for the server: `target` as its URI, hop-by-hop headers
    /// and `remove` removed, `host` as its `Host`.
    fn new(
        mut request: Request<Body>,
        target: String,
        remove: &[HeaderName],
        host: HeaderValue,
    ) -> Self {
        let upgrade = is_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let hold = request.extensions_mut().remove::<HoldWhileOpen>();

        let (parts, body) = request.into_parts();
        let mut outbound = Request::builder()
            .method(parts.method)
            .uri(target)
            .version(http::Version::HTTP_11)
            .body(body)
            .expect("method and a path taken from a valid request always build");
        *outbound.headers_mut() = parts.headers;
        strip_hop_by_hop(outbound.headers_mut(), upgrade);
        for name in remove {
            outbound.headers_mut().remove(name);
        }
        outbound.headers_mut().insert(header::HOST, host);
        Self {
            request: outbound,
            pending: Pending {
                client_upgrade,
                hold,
            },
        }
    }

    fn split(self) -> (Request<Body>, Pending) {
        (self.request, self.pending)
    }
}

impl Pending {
    /// Turns the server's response into the client's: after a 101, joins both upgraded
    /// connections into a byte pipe.
    fn finish(self, mut response: Response<hyper::body::Incoming>) -> Response<Body> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = self.client_upgrade
        {
            let server_upgrade = hyper::upgrade::on(&mut response);
            let hold = self.hold;
            tokio::spawn(async move {
                let _hold = hold;
                let (client, server) = match tokio::try_join!(client_upgrade, server_upgrade) {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::debug!(%error, "upgrade through the proxy failed");
                        return;
                    }
                };
                let mut client = TokioIo::new(client);
                let mut server = TokioIo::new(server);
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                }
            });
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, Body::empty());
        }

        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        Response::from_parts(parts, Body::new(incoming))
    }
}
