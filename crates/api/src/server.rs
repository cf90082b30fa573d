//! `daytona server`: the API server, one local runner and the toolbox and preview proxies in
//! one process.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use daytona_images::ImageStore;
use daytona_objstore::{EmbeddedConfig, ObjectStorage};
use daytona_runner::{Limits, PoolTemplate, Runner, RunnerConfig};
use daytona_wire::api::SnapshotState;
use tokio_util::sync::CancellationToken;

use crate::auth;
use crate::config::{DEFAULT_ORGANIZATION, DEFAULT_USER, ServerConfig};
use crate::lifecycle;
use crate::listener;
use crate::routes;
use crate::state::{AppState, Shared};
use crate::store::{ApiKeyRecord, SnapshotRecord, Store};

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Runs the server until `shutdown` completes. Sandboxes keep running after it returns.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "failed to create the data directory {}",
            config.data_dir.display()
        )
    })?;
    // One server per data directory: a second one would adopt, and destroy, the first one's
    // sandboxes. The lock lasts as long as the process.
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    let sandboxes_dir = config.data_dir.join("sandboxes");
    check_socket_path_length(&sandboxes_dir)?;

    let store = Store::open_sqlite(&config.data_dir.join("daytona.db")).await?;
    seed_admin_key(&store, &config).await?;

    let images = Arc::new(ImageStore::open(&config.image_cache_dir).with_context(|| {
        format!(
            "failed to open the image store {}",
            config.image_cache_dir.display()
        )
    })?);
    let runner = Arc::new(
        Runner::open(RunnerConfig {
            sandboxes_dir,
            daemon_binary: config.daemon_binary.clone(),
            warm_pool_size: config.warm_pool_size,
            hang_start_file: config.lifecycle.hang_start_file.clone(),
            // Only root maps sandboxes to host uid ranges, and then every server on the host
            // takes its ranges from one registry.
            uid_slot_registry: nix::unistd::geteuid()
                .is_root()
                .then(|| PathBuf::from(daytona_runner::UID_SLOT_REGISTRY)),
            network: config.network.clone(),
        })
        .await?,
    );

    let object_storage = open_object_storage(&config)?;
    let listen = config.listen;
    let mut config = config;
    let preview_listener = bind_preview_listener(&mut config.preview).await?;
    let state: AppState = Arc::new(Shared::new(config, store, runner, object_storage));
    // Dropping the sender at return stops the object storage listener.
    let (_stop_object_storage, object_storage_stopped) = tokio::sync::oneshot::channel::<()>();
    start_object_storage(&state, object_storage_stopped).await?;
    lifecycle::reconcile_after_restart(&state).await?;
    crate::builds::fail_unfinished(&state).await;
    tokio::spawn(lifecycle::run_reconciler(state.clone()));
    tokio::spawn(prepare_default_snapshot(state.clone(), images));
    tokio::spawn(crate::telemetry::run_sampler(state.clone()));

    // Dropping the sender at return stops the SSH gateway.
    let (_stop_ssh_gateway, ssh_gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    crate::ssh_gateway::start(&state, async move {
        let _ = ssh_gateway_stopped.await;
    })
    .await?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to listen on {listen}"))?;
    tracing::info!(address = %listen, "API server listening");
    let stopping = CancellationToken::new();
    tokio::spawn(serve_previews(
        preview_listener,
        state.clone(),
        stopping.clone().cancelled_owned(),
    ));
    let shutdown = async move {
        shutdown.await;
        stopping.cancel();
    };
    listener::serve(listener, routes::router(state.clone()), shutdown)
        .await
        .context("the HTTP server failed")?;
    state.runner.drain_pool().await;
    state.runner.shutdown_network().await;
    tracing::info!("API server stopped; running sandboxes keep running");
    Ok(())
}

/// Binds the preview proxy's listener, and records its address in `preview`.
async fn bind_preview_listener(
    preview: &mut crate::config::PreviewConfig,
) -> anyhow::Result<tokio::net::TcpListener> {
    let listen = preview.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("failed to listen on {listen} for preview URLs; pass another --preview-listen")
        })?;
    preview.bound(
        listener
            .local_addr()
            .context("failed to read the preview listener's address")?,
    );
    Ok(listener)
}

/// Serves preview URLs until `stop` completes.
async fn serve_previews(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let address = state.config.preview.listen;
    let tls = match preview_tls(&state) {
        Ok(tls) => tls,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "the preview listener has no TLS configuration; it does not start"
            );
            return;
        }
    };
    tracing::info!(%address, base_url = %state.config.preview.base(), tls = tls.is_some(), "preview proxy listening");
    let router = crate::preview::router(state);
    if let Err(error) = listener::serve_with(listener, router, tls, stop).await {
        tracing::error!(%error, "the preview listener failed");
    }
}

/// Returns the TLS configuration of the preview listener under `--preview-tls`: the object
/// storage's certificate, offering HTTP/2 and HTTP/1.1.
fn preview_tls(state: &AppState) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    if !state.config.preview.tls {
        return Ok(None);
    }
    let storage = &state.config.object_storage;
    let config = daytona_objstore::tls::server_config(&storage.tls_dir, &storage.tls_names)
        .with_context(|| {
            format!(
                "failed to load the certificate in {}",
                storage.tls_dir.display()
            )
        })?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(
        config,
    ))))
}

/// Opens the configured external S3 endpoint, or the embedded store in the data directory.
fn open_object_storage(config: &ServerConfig) -> anyhow::Result<ObjectStorage> {
    let settings = &config.object_storage;
    if let Some(external) = &settings.external {
        tracing::info!(endpoint = %external.endpoint, "using the external object storage");
        return ObjectStorage::open_external(external.clone())
            .context("failed to configure the external object storage");
    }
    ObjectStorage::open_embedded(EmbeddedConfig {
        data_dir: config.data_dir.clone(),
        tls_dir: settings.tls_dir.clone(),
        tls_names: settings.tls_names.clone(),
    })
    .context("failed to open the object storage")
}

/// Starts the embedded object storage's HTTPS listener, which runs until `stop` completes.
async fn start_object_storage(
    state: &AppState,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    if !state.object_storage.is_embedded() {
        return Ok(());
    }
    let listen = state.config.object_storage.listen;
    let (address, task) = state
        .object_storage
        .spawn_listener(listen, async {
            let _ = stop.await;
        })
        .await
        .with_context(|| format!("failed to start the object storage on {listen}; pass another --object-storage-listen"))?;
    state.object_storage_address.set(address).ok();
    tokio::spawn(async move {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(
                error = format!("{:#}", anyhow::Error::from(error)),
                "the object storage listener failed"
            ),
            Err(error) => tracing::error!(%error, "the object storage listener panicked"),
        }
    });
    Ok(())
}

/// Takes the data directory's lock file, or fails if another server holds it.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("server.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another daytona server is running with the data directory {}; stop it first, or pass another --data-dir",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("failed to lock {}", path.display()))
        }
    }
}

/// Refuses a data directory so deep that toolbox socket paths would not fit a socket address.
fn check_socket_path_length(sandboxes_dir: &Path) -> anyhow::Result<()> {
    let example = sandboxes_dir
        .join(uuid::Uuid::nil().to_string())
        .join("run")
        .join(daytona_isolation_socket_name());
    let length = example.as_os_str().len();
    if length > MAX_SOCKET_PATH {
        bail!(
            "the data directory {} is too deep: toolbox socket paths would be {length} bytes, over the {MAX_SOCKET_PATH}-byte limit of Unix socket addresses; choose a shorter --data-dir",
            sandboxes_dir.parent().unwrap_or(sandboxes_dir).display()
        );
    }
    Ok(())
}

fn daytona_isolation_socket_name() -> &'static str {
    "toolbox.sock"
}

/// Makes sure an admin key exists: the one `DAYTONA_ADMIN_API_KEY` names, or else a new one,
/// shown once on the terminal (never in the log).
async fn seed_admin_key(store: &Store, config: &ServerConfig) -> anyhow::Result<()> {
    let org = store.ensure_organization(DEFAULT_ORGANIZATION).await?;
    let new_record = |key: &str| ApiKeyRecord {
        id: uuid::Uuid::new_v4().to_string(),
        organization_id: org.id.clone(),
        name: "admin".to_owned(),
        key_prefix: key.chars().take(8).collect(),
        is_admin: true,
        created_at: daytona_wire::now_rfc3339(),
        last_used_at: None,
        revoked_at: None,
        permissions: None,
        expires_at: None,
    };

    if let Some(key) = &config.admin_api_key {
        if key.trim().len() < 16 {
            bail!("DAYTONA_ADMIN_API_KEY is too short: use at least 16 characters");
        }
        let hash = auth::hash_key(key);
        if store.api_key_by_hash(&hash).await?.is_none() {
            store.insert_api_key(&new_record(key), &hash).await?;
        }
        let revoked = store.revoke_other_admin_keys(&hash).await?;
        if revoked > 0 {
            tracing::info!(
                revoked,
                "revoked admin keys other than DAYTONA_ADMIN_API_KEY"
            );
        }
        return Ok(());
    }
    if store.has_admin_key().await? {
        return Ok(());
    }
    let key = auth::generate_key();
    store
        .insert_api_key(&new_record(&key), &auth::hash_key(&key))
        .await?;
    tracing::info!("generated the admin API key; it is shown once on the terminal");
    println!(
        "\nAn admin API key was generated. It is shown only this once and stored hashed; keep it now:\n\n    export DAYTONA_API_URL={}/api\n    export DAYTONA_API_KEY={key}\n",
        config.public_url
    );
    Ok(())
}

/// Builds the default snapshot if the image cache lacks it, registers it, and opens the server
/// for creates.
async fn prepare_default_snapshot(state: AppState, images: Arc<ImageStore>) {
    let name = daytona_images::DEFAULT_SNAPSHOT;
    let now = daytona_wire::now_rfc3339();
    let mut record = SnapshotRecord {
        id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string(),
        organization_id: None,
        name: name.to_owned(),
        image_name: Some(name.to_owned()),
        image_digest: None,
        state: SnapshotState::Building,
        general: true,
        size_bytes: None,
        cpu: state.config.limits.default_cpu,
        gpu: 0,
        memory: state.config.limits.default_memory,
        disk: state.config.limits.default_disk,
        entrypoint: None,
        error_reason: None,
        created_at: now.clone(),
        updated_at: now,
        last_used_at: None,
    };
    if let Ok(Some(existing)) = state.store.snapshot_by_id_or_name("", name).await {
        record.created_at = existing.created_at;
    }
    if let Err(error) = state.store.upsert_snapshot(&record).await {
        tracing::error!(
            error = format!("{error:#}"),
            "failed to register the default snapshot"
        );
    }

    // The image store logs every progress line itself.
    let progress = |_: &str| {};
    let image = match images.ensure_default(&progress).await {
        Ok(image) => image,
        Err(error) => {
            let reason = format!("{:#}", anyhow::Error::from(error));
            tracing::error!(
                snapshot = name,
                error = reason,
                "failed to build the default snapshot"
            );
            record.state = SnapshotState::Error;
            record.error_reason = Some(reason);
            record.updated_at = daytona_wire::now_rfc3339();
            state.store.upsert_snapshot(&record).await.ok();
            return;
        }
    };
    record.state = SnapshotState::Active;
    record.image_digest = Some(image.manifest_digest.clone());
    record.size_bytes = i64::try_from(image.size_bytes).ok();
    record.updated_at = daytona_wire::now_rfc3339();
    if let Err(error) = state.store.upsert_snapshot(&record).await {
        tracing::error!(
            error = format!("{error:#}"),
            "failed to register the default snapshot"
        );
        return;
    }
    state
        .images
        .write()
        .expect("images lock")
        .insert(name.to_owned(), image.layers.clone());
    let limits = &state.config.limits;
    state.runner.configure_pool(PoolTemplate {
        layers: image.layers.clone(),
        user: DEFAULT_USER.to_owned(),
        limits: Limits {
            cpus: limits.default_cpu as u32,
            memory_gib: limits.default_memory as u32,
            disk_gib: limits.default_disk as u32,
            pids: limits.pids,
        },
    });
    state.set_ready();
    tracing::info!(snapshot = name, digest = %image.manifest_digest, "default snapshot ready; accepting sandbox creates");
}
