//! The state store: SQLite embedded by default, with SQL kept portable to PostgreSQL.
//!
//! Portability rules for every query here: `$N` placeholders (SQLite accepts them too),
//! booleans stored as INTEGER 0/1, timestamps as RFC 3339 TEXT (which sorts correctly), maps and
//! lists as JSON TEXT, and no vendor-specific functions.

mod migrations;
mod orgs;
mod preview;
mod sandboxes;
mod signing;
mod snapshots;
mod ssh_access;
mod volumes;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

pub use orgs::{ApiKeyRecord, LimitOverrides, OrganizationRecord, STATES_HOLDING_RESOURCES, Usage};
pub use preview::SignedPreviewToken;
pub use sandboxes::{SandboxFilter, SandboxRecord, StateChange};
pub use snapshots::SnapshotRecord;
pub use ssh_access::SshAccessRecord;
pub use volumes::VolumeRecord;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the state store at {url}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to apply schema migration {version}")]
    Migrate {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error("state store query failed: {operation}")]
    Query {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored {what} is not valid JSON")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("a live sandbox named {name:?} already exists in this organization")]
    NameTaken { name: String },
    #[error("a volume named {name:?} already exists in this organization")]
    VolumeNameTaken { name: String },
}

/// A connection pool to the state store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

fn query_error(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError + Copy {
    move |source| StoreError::Query { operation, source }
}

impl Store {
    /// Opens (creating if needed) the embedded SQLite store at `path` and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::open(&url).await
    }

    /// Opens the store at a database URL (`sqlite://...` or `postgres://...`) and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let open_error = |source| StoreError::Open {
            url: url.to_owned(),
            source,
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(open_error)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(200));
        let is_sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite has one writer; more connections only add lock waits.
            .max_connections(if is_sqlite { 4 } else { 16 })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if is_sqlite {
                        // WAL lets readers run beside the writer; NORMAL syncs at checkpoints,
                        // which keeps every committed transaction across a process crash.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let store = Self { pool };
        migrations::apply(&store.pool).await?;
        Ok(store)
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Converts a stored 0/1 integer to a bool.
fn flag(value: i64) -> bool {
    value != 0
}
