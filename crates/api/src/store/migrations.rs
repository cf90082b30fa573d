//! Schema migrations, applied in order at start and recorded in `schema_migrations`.

use sqlx::AnyPool;

use super::StoreError;

/// Each entry is one migration: its version and the statements it runs.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE organizations (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        )",
            "CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            organization_id TEXT NOT NULL REFERENCES organizations(id),
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            key_prefix TEXT NOT NULL,
            is_admin INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        )",
            "CREATE TABLE snapshots (
            id TEXT PRIMARY KEY,
            organization_id TEXT,
            name TEXT NOT NULL,
            image_name TEXT,
            image_digest TEXT,
            state TEXT NOT NULL,
            general INTEGER NOT NULL,
            size_bytes INTEGER,
            cpu INTEGER NOT NULL,
            gpu INTEGER NOT NULL,
            memory INTEGER NOT NULL,
            disk INTEGER NOT NULL,
            entrypoint TEXT,
            error_reason TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_used_at TEXT
        )",
            "CREATE UNIQUE INDEX snapshots_name ON snapshots(name)",
            "CREATE TABLE sandboxes (
            id TEXT PRIMARY KEY,
            organization_id TEXT NOT NULL REFERENCES organizations(id),
            name TEXT NOT NULL,
            snapshot TEXT,
            os_user TEXT NOT NULL,
            env TEXT NOT NULL,
            labels TEXT NOT NULL,
            public INTEGER NOT NULL,
            network_block_all INTEGER NOT NULL,
            network_allow_list TEXT,
            domain_allow_list TEXT,
            target TEXT NOT NULL,
            cpu INTEGER NOT NULL,
            gpu INTEGER NOT NULL,
            memory INTEGER NOT NULL,
            disk INTEGER NOT NULL,
            state TEXT NOT NULL,
            desired_state TEXT,
            error_reason TEXT,
            auto_stop_interval INTEGER NOT NULL,
            auto_archive_interval INTEGER NOT NULL,
            auto_delete_interval INTEGER NOT NULL,
            auto_pause_interval INTEGER NOT NULL,
            volumes TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_activity_at TEXT
        )",
            "CREATE UNIQUE INDEX sandboxes_org_name ON sandboxes(organization_id, name)",
            "CREATE INDEX sandboxes_org_created ON sandboxes(organization_id, created_at, id)",
        ],
    ),
    (
        2,
        &[
            // When the sandbox is deleted whatever its state (its TTL), and when its state
            // last changed, which auto-delete and the transition deadlines count from.
            "ALTER TABLE sandboxes ADD COLUMN auto_destroy_at TEXT",
            "ALTER TABLE sandboxes ADD COLUMN state_changed_at TEXT",
            "UPDATE sandboxes SET state_changed_at = updated_at",
        ],
    ),
    (
        3,
        &[
            // API key permissions (a JSON list; NULL for keys older than this migration, which
            // have every permission) and expiry.
            "ALTER TABLE api_keys ADD COLUMN permissions TEXT",
            "ALTER TABLE api_keys ADD COLUMN expires_at TEXT",
            // Admin keys are left out because the server seeds a new admin key before it
            // revokes the old one.
            "CREATE UNIQUE INDEX api_keys_org_name ON api_keys(organization_id, name)
             WHERE revoked_at IS NULL AND is_admin = 0",
            "ALTER TABLE organizations ADD COLUMN updated_at TEXT",
            "UPDATE organizations SET updated_at = created_at",
            // Per-organization overrides of the server's default limits. A NULL column uses
            // the default; 0 is no limit.
            "CREATE TABLE organization_limits (
            organization_id TEXT PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
            max_sandboxes INTEGER,
            total_cpu INTEGER,
            total_memory INTEGER,
            updated_at TEXT NOT NULL
        )",
            // The generation of each sandbox's signing key for signed file URLs. The key
            // itself is derived from the server's signing secret and is not stored.
            "CREATE TABLE sandbox_signing_keys (
            sandbox_id TEXT PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
            generation INTEGER NOT NULL,
            rotated_at TEXT NOT NULL
        )",
        ],
    ),
    (
        4,
        &[
            // Volumes: directories under `<data-dir>/volumes/<id>` that sandboxes mount.
            // Names are unique within an organization.
            "CREATE TABLE volumes (
            id TEXT PRIMARY KEY,
            organization_id TEXT NOT NULL REFERENCES organizations(id),
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            error_reason TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_used_at TEXT
        )",
            "CREATE UNIQUE INDEX volumes_org_name ON volumes(organization_id, name)",
        ],
    ),
    (
        5,
        &[
            // Signed preview URLs: the token stands in for the sandbox id in the URL and
            // authorizes one port until `expires_at` (Unix seconds), which expiring the URL
            // through the API moves to the present.
            "CREATE TABLE signed_preview_tokens (
            token TEXT PRIMARY KEY,
            sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
            port INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            created_at TEXT NOT NULL
        )",
            "CREATE INDEX signed_preview_tokens_expiry ON signed_preview_tokens(expires_at)",
        ],
    ),
    (
        6,
        &[
            // SSH access tokens. Only a token's SHA-256 is stored; the token is the SSH user
            // name. Rows go with their sandbox.
            "CREATE TABLE ssh_access (
            id TEXT PRIMARY KEY,
            sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
            organization_id TEXT NOT NULL REFERENCES organizations(id),
            token_hash TEXT NOT NULL UNIQUE,
            expires_at TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            revoked_at TEXT
        )",
            "CREATE INDEX ssh_access_sandbox ON ssh_access(sandbox_id)",
        ],
    ),
];

/// Applies every migration newer than the recorded version, each in its own transaction.
pub(super) async fn apply(pool: &AnyPool) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(|source| StoreError::Migrate { version: 0, source })?;

    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(pool)
        .await
        .map_err(|source| StoreError::Migrate { version: 0, source })?;
    let current = current.unwrap_or(0);

    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let migrate_error = |source| StoreError::Migrate {
            version: *version,
            source,
        };
        let mut tx = pool.begin().await.map_err(migrate_error)?;
        for statement in *statements {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(migrate_error)?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(daytona_wire::now_rfc3339())
            .execute(&mut *tx)
            .await
            .map_err(migrate_error)?;
        tx.commit().await.map_err(migrate_error)?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}
