//! What the preview proxy keeps between requests: idle connections to the apps, and recent
//! authorizations.
//!
//! Each sandbox has its own connection pool, whose connector opens connections inside that
//! sandbox only, so a connection never serves another sandbox. Idle connections are kept per
//! port for [`IDLE_TIMEOUT`]; a sandbox's pool is dropped when its toolbox route is removed
//! (the sandbox stops or is deleted), and its connections close with the app anyway.
//!
//! An authorization that let a request through is reused for [`ACCESS_TTL`] by requests
//! with the same target and credentials. Making the sandbox private, expiring a signed URL
//! through the API and stopping or deleting the sandbox drop the sandbox's cached
//! authorizations at once; a signed URL's expiry by time, and changes made by another
//! server process on the same state store, take effect within [`ACCESS_TTL`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::Uri;
use daytona_proxy::PooledClient;
use daytona_runner::{PortError, Runner};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::proxy::Access;
use crate::store::SandboxRecord;

/// How long an idle connection to an app stays open for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per sandbox port.
const MAX_IDLE_PER_PORT: usize = 32;

/// How long an authorization is reused; see the module documentation.
pub const ACCESS_TTL: Duration = Duration::from_secs(1);

/// Entries of the authorization cache above which expired ones are removed.
const MAX_ACCESS_ENTRIES: usize = 4096;

/// The preview proxy's connection pools and authorization cache.
pub struct Previews {
    runner: Arc<Runner>,
    pools: Mutex<HashMap<String, PooledClient<PortConnector>>>,
    access: Mutex<HashMap<String, CachedAccess>>,
}

struct CachedAccess {
    record: SandboxRecord,
    access: Access,
    until: Instant,
}

impl Previews {
    pub fn new(runner: Arc<Runner>) -> Self {
        Self {
            runner,
            pools: Mutex::new(HashMap::new()),
            access: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the connection pool of a sandbox, made on first use.
    pub fn pool(&self, sandbox_id: &str) -> PooledClient<PortConnector> {
        let mut pools = self.pools.lock().expect("preview pools lock");
        pools
            .entry(sandbox_id.to_owned())
            .or_insert_with(|| {
                daytona_proxy::pooled_client(
                    PortConnector {
                        runner: self.runner.clone(),
                        sandbox_id: Arc::from(sandbox_id),
                    },
                    MAX_IDLE_PER_PORT,
                    IDLE_TIMEOUT,
                )
            })
            .clone()
    }

    /// Drops a sandbox's idle connections and its cached authorizations.
    pub fn forget(&self, sandbox_id: &str) {
        self.pools
            .lock()
            .expect("preview pools lock")
            .remove(sandbox_id);
        self.forget_access(sandbox_id);
    }

    /// Drops the cached authorizations of a sandbox, whose access changed.
    pub fn forget_access(&self, sandbox_id: &str) {
        self.access
            .lock()
            .expect("preview access lock")
            .retain(|_, cached| cached.record.id != sandbox_id);
    }

    /// Returns the authorization cached under `key` unless it is older than [`ACCESS_TTL`].
    pub(super) fn cached_access(&self, key: &str) -> Option<(SandboxRecord, Access)> {
        let access = self.access.lock().expect("preview access lock");
        let cached = access.get(key)?;
        (cached.until > Instant::now()).then(|| (cached.record.clone(), cached.access.clone()))
    }

    /// Caches an authorization that let a request through.
    pub(super) fn cache_access(&self, key: String, record: &SandboxRecord, access: &Access) {
        let now = Instant::now();
        let mut cache = self.access.lock().expect("preview access lock");
        if cache.len() >= MAX_ACCESS_ENTRIES {
            cache.retain(|_, cached| cached.until > now);
            if cache.len() >= MAX_ACCESS_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            key,
            CachedAccess {
                record: record.clone(),
                access: access.clone(),
                until: now + ACCESS_TTL,
            },
        );
    }
}

/// Opens connections to ports of one sandbox: the port comes from the request URI's
/// authority, whose host part is ignored.
#[derive(Clone)]
pub struct PortConnector {
    runner: Arc<Runner>,
    sandbox_id: Arc<str>,
}

impl tower::Service<Uri> for PortConnector {
    type Response = TokioIo<TcpStream>;
    type Error = PortError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, PortError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), PortError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let runner = self.runner.clone();
        let sandbox_id = self.sandbox_id.clone();
        Box::pin(async move {
            // The proxy always writes the port; 0 is refused like a closed port.
            let port = uri.port_u16().unwrap_or(0);
            let stream = runner.connect_to_port(&sandbox_id, port).await?;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(stream))
        })
    }
}
