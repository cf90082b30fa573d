//! State shared by every request handler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use daytona_objstore::ObjectStorage;
use daytona_runner::Runner;

use crate::auth::KeyCache;
use crate::builds::Builds;
use crate::config::ServerConfig;
use crate::events::Events;
use crate::lifecycle::Lifecycle;
use crate::quota::Quotas;
use crate::signing::Signing;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Shared state; cheap to clone.
pub type AppState = Arc<Shared>;

/// Where the toolbox proxy sends a started sandbox's traffic.
#[derive(Debug, Clone)]
pub struct ToolboxRoute {
    pub organization_id: String,
    pub socket: PathBuf,
}

pub struct Shared {
    pub config: ServerConfig,
    pub store: Store,
    pub runner: Arc<Runner>,
    pub keys: KeyCache,
    pub events: Events,
    pub quotas: Quotas,
    pub lifecycle: Lifecycle,
    pub signing: Signing,
    /// CPU and memory samples of the sandboxes.
    pub telemetry: Telemetry,
    /// Image builds of snapshots: their logs and running tasks.
    pub builds: Builds,
    /// Unpacked layers of each usable snapshot image, by snapshot name.
    pub images: RwLock<HashMap<String, Vec<PathBuf>>>,
    /// Toolbox routes of started sandboxes, by sandbox id: the proxy's fast path.
    pub routes: RwLock<HashMap<String, ToolboxRoute>>,
    /// Idle connections and recent authorizations of the preview proxy.
    pub previews: crate::preview::Previews,
    /// Build contexts and sandbox archives.
    pub object_storage: ObjectStorage,
    /// Address the embedded object storage listens on, once it does.
    pub object_storage_address: OnceLock<SocketAddr>,
    /// Set once the default snapshot is ready, which is when creates can succeed.
    ready: AtomicBool,
}

impl Shared {
    pub fn new(
        config: ServerConfig,
        store: Store,
        runner: Arc<Runner>,
        object_storage: ObjectStorage,
    ) -> Self {
        Self {
            lifecycle: Lifecycle::new(config.lifecycle.clone()),
            config,
            store,
            previews: crate::preview::Previews::new(runner.clone()),
            runner,
            keys: KeyCache::default(),
            events: Events::default(),
            quotas: Quotas::default(),
            signing: Signing::default(),
            telemetry: Telemetry::default(),
            builds: Builds::new(object_storage.clone()),
            images: RwLock::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            object_storage,
            object_storage_address: OnceLock::new(),
            ready: AtomicBool::new(false),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The URL SDKs send toolbox requests to, followed by `/{sandboxId}/...`.
    pub fn toolbox_proxy_url(&self) -> String {
        format!("{}/toolbox", self.config.public_url)
    }

    pub fn add_route(&self, sandbox_id: &str, route: ToolboxRoute) {
        self.routes
            .write()
            .expect("routes lock")
            .insert(sandbox_id.to_owned(), route);
    }

    pub fn remove_route(&self, sandbox_id: &str) {
        self.routes.write().expect("routes lock").remove(sandbox_id);
        self.previews.forget(sandbox_id);
    }

    pub fn route(&self, sandbox_id: &str) -> Option<ToolboxRoute> {
        self.routes
            .read()
            .expect("routes lock")
            .get(sandbox_id)
            .cloned()
    }
}
