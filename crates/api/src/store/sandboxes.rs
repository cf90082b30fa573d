//! Sandbox rows.

use std::collections::BTreeMap;

use daytona_wire::api::{SandboxState, SandboxVolume};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, flag, query_error};

/// One sandbox as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub snapshot: Option<String>,
    pub os_user: String,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub public: bool,
    pub network_block_all: bool,
    pub network_allow_list: Option<String>,
    pub domain_allow_list: Option<String>,
    pub target: String,
    pub cpu: i64,
    pub gpu: i64,
    /// GiB.
    pub memory: i64,
    /// GiB.
    pub disk: i64,
    pub state: SandboxState,
    pub desired_state: Option<String>,
    pub error_reason: Option<String>,
    pub auto_stop_interval: i64,
    pub auto_archive_interval: i64,
    pub auto_delete_interval: i64,
    pub auto_pause_interval: i64,
    pub volumes: Vec<SandboxVolume>,
    pub created_at: String,
    pub updated_at: String,
    pub last_activity_at: Option<String>,
    /// When the sandbox is deleted, whatever its state (its TTL).
    pub auto_destroy_at: Option<String>,
    /// When the state last changed.
    pub state_changed_at: Option<String>,
}

/// A change of a sandbox's state, written by [`Store::transition_sandbox`].
#[derive(Debug, Clone, Copy)]
pub struct StateChange<'a> {
    pub state: SandboxState,
    pub desired_state: Option<&'a str>,
    pub error_reason: Option<&'a str>,
    /// RFC 3339 time of the change.
    pub at: &'a str,
}

/// The filter of a sandbox list. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    pub states: Vec<SandboxState>,
}

const COLUMNS: &str = "id, organization_id, name, snapshot, os_user, env, labels, public, \
    network_block_all, network_allow_list, domain_allow_list, target, cpu, gpu, memory, disk, \
    state, desired_state, error_reason, auto_stop_interval, auto_archive_interval, \
    auto_delete_interval, auto_pause_interval, volumes, created_at, updated_at, last_activity_at, \
    auto_destroy_at, state_changed_at";

fn decode_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Decode { what, source })
}

fn encode_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and lists of strings always serialize")
}

fn sandbox_from_row(row: &AnyRow) -> Result<SandboxRecord, StoreError> {
    let get = query_error("decode sandbox");
    let text = |name: &str| row.try_get::<String, _>(name);
    let state_name = text("state").map_err(get)?;
    Ok(SandboxRecord {
        id: text("id").map_err(get)?,
        organization_id: text("organization_id").map_err(get)?,
        name: text("name").map_err(get)?,
        snapshot: row.try_get("snapshot").map_err(get)?,
        os_user: text("os_user").map_err(get)?,
        env: decode_json(&text("env").map_err(get)?, "sandbox env")?,
        labels: decode_json(&text("labels").map_err(get)?, "sandbox labels")?,
        public: flag(row.try_get("public").map_err(get)?),
        network_block_all: flag(row.try_get("network_block_all").map_err(get)?),
        network_allow_list: row.try_get("network_allow_list").map_err(get)?,
        domain_allow_list: row.try_get("domain_allow_list").map_err(get)?,
        target: text("target").map_err(get)?,
        cpu: row.try_get("cpu").map_err(get)?,
        gpu: row.try_get("gpu").map_err(get)?,
        memory: row.try_get("memory").map_err(get)?,
        disk: row.try_get("disk").map_err(get)?,
        state: SandboxState::parse(&state_name).unwrap_or(SandboxState::Unknown),
        desired_state: row.try_get("desired_state").map_err(get)?,
        error_reason: row.try_get("error_reason").map_err(get)?,
        auto_stop_interval: row.try_get("auto_stop_interval").map_err(get)?,
        auto_archive_interval: row.try_get("auto_archive_interval").map_err(get)?,
        auto_delete_interval: row.try_get("auto_delete_interval").map_err(get)?,
        auto_pause_interval: row.try_get("auto_pause_interval").map_err(get)?,
        volumes: decode_json(&text("volumes").map_err(get)?, "sandbox volumes")?,
        created_at: text("created_at").map_err(get)?,
        updated_at: text("updated_at").map_err(get)?,
        last_activity_at: row.try_get("last_activity_at").map_err(get)?,
        auto_destroy_at: row.try_get("auto_destroy_at").map_err(get)?,
        state_changed_at: row.try_get("state_changed_at").map_err(get)?,
    })
}

/// Returns whether a database error is a unique-constraint violation.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

impl Store {
    /// Inserts a new sandbox; a live sandbox with the same name in the organization fails with
    /// [`StoreError::NameTaken`].
    pub async fn insert_sandbox(&self, sandbox: &SandboxRecord) -> Result<(), StoreError> {
        let statement = format!(
            "INSERT INTO sandboxes ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
              $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)"
        );
        let result = sqlx::query(&statement)
            .bind(&sandbox.id)
            .bind(&sandbox.organization_id)
            .bind(&sandbox.name)
            .bind(&sandbox.snapshot)
            .bind(&sandbox.os_user)
            .bind(encode_json(&sandbox.env))
            .bind(encode_json(&sandbox.labels))
            .bind(i64::from(sandbox.public))
            .bind(i64::from(sandbox.network_block_all))
            .bind(&sandbox.network_allow_list)
            .bind(&sandbox.domain_allow_list)
            .bind(&sandbox.target)
            .bind(sandbox.cpu)
            .bind(sandbox.gpu)
            .bind(sandbox.memory)
            .bind(sandbox.disk)
            .bind(sandbox.state.as_str())
            .bind(&sandbox.desired_state)
            .bind(&sandbox.error_reason)
            .bind(sandbox.auto_stop_interval)
            .bind(sandbox.auto_archive_interval)
            .bind(sandbox.auto_delete_interval)
            .bind(sandbox.auto_pause_interval)
            .bind(encode_json(&sandbox.volumes))
            .bind(&sandbox.created_at)
            .bind(&sandbox.updated_at)
            .bind(&sandbox.last_activity_at)
            .bind(&sandbox.auto_destroy_at)
            .bind(&sandbox.state_changed_at)
            .execute(self.pool())
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(StoreError::NameTaken {
                name: sandbox.name.clone(),
            }),
            Err(source) => Err(StoreError::Query {
                operation: "insert sandbox",
                source,
            }),
        }
    }

    /// Writes back the settings of a sandbox: every mutable field except its state, error
    /// reason and desired state, which only [`Store::transition_sandbox`] changes.
    pub async fn update_sandbox(&self, sandbox: &SandboxRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sandboxes SET name = $2, env = $3, labels = $4, public = $5, \
             network_block_all = $6, network_allow_list = $7, domain_allow_list = $8, cpu = $9, \
             memory = $10, disk = $11, auto_stop_interval = $12, auto_archive_interval = $13, \
             auto_delete_interval = $14, auto_pause_interval = $15, updated_at = $16, \
             last_activity_at = $17, auto_destroy_at = $18 WHERE id = $1",
        )
        .bind(&sandbox.id)
        .bind(&sandbox.name)
        .bind(encode_json(&sandbox.env))
        .bind(encode_json(&sandbox.labels))
        .bind(i64::from(sandbox.public))
        .bind(i64::from(sandbox.network_block_all))
        .bind(&sandbox.network_allow_list)
        .bind(&sandbox.domain_allow_list)
        .bind(sandbox.cpu)
        .bind(sandbox.memory)
        .bind(sandbox.disk)
        .bind(sandbox.auto_stop_interval)
        .bind(sandbox.auto_archive_interval)
        .bind(sandbox.auto_delete_interval)
        .bind(sandbox.auto_pause_interval)
        .bind(&sandbox.updated_at)
        .bind(&sandbox.last_activity_at)
        .bind(&sandbox.auto_destroy_at)
        .execute(self.pool())
        .await
        .map_err(query_error("update sandbox"))?;
        Ok(())
    }

    /// Moves a sandbox from state `from` to `change.state`, if it is still in `from`: a
    /// compare-and-set, so that two writers cannot both move the same sandbox. Returns
    /// whether the row changed.
    pub async fn transition_sandbox(
        &self,
        id: &str,
        from: SandboxState,
        change: &StateChange<'_>,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE sandboxes SET state = $3, desired_state = $4, error_reason = $5, \
             updated_at = $6, state_changed_at = $6 WHERE id = $1 AND state = $2",
        )
        .bind(id)
        .bind(from.as_str())
        .bind(change.state.as_str())
        .bind(change.desired_state)
        .bind(change.error_reason)
        .bind(change.at)
        .execute(self.pool())
        .await
        .map_err(query_error("update sandbox state"))?;
        Ok(result.rows_affected() == 1)
    }

    /// Removes a sandbox row if the sandbox is still in state `from`, which frees its name.
    /// Returns whether the row was removed.
    pub async fn delete_sandbox_in_state(
        &self,
        id: &str,
        from: SandboxState,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM sandboxes WHERE id = $1 AND state = $2")
            .bind(id)
            .bind(from.as_str())
            .execute(self.pool())
            .await
            .map_err(query_error("delete sandbox"))?;
        Ok(result.rows_affected() == 1)
    }

    /// Records the last activity of a sandbox, unless a later one is recorded already.
    pub async fn set_last_activity(&self, id: &str, at: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sandboxes SET last_activity_at = $2 WHERE id = $1 \
             AND (last_activity_at IS NULL OR last_activity_at < $2)",
        )
        .bind(id)
        .bind(at)
        .execute(self.pool())
        .await
        .map_err(query_error("update sandbox activity"))?;
        Ok(())
    }

    /// Removes a sandbox row, which also frees its name.
    pub async fn delete_sandbox(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sandboxes WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(query_error("delete sandbox"))?;
        Ok(())
    }

    /// Finds a sandbox of an organization by id, or else by name.
    pub async fn sandbox_by_id_or_name(
        &self,
        organization_id: &str,
        id_or_name: &str,
    ) -> Result<Option<SandboxRecord>, StoreError> {
        let statement = format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE organization_id = $1 AND (id = $2 OR name = $2) \
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1"
        );
        let row = sqlx::query(&statement)
            .bind(organization_id)
            .bind(id_or_name)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select sandbox"))?;
        row.as_ref().map(sandbox_from_row).transpose()
    }

    /// Returns a sandbox by id, whatever its organization (for the runner and reconciler).
    pub async fn sandbox_by_id(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let statement = format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1");
        let row = sqlx::query(&statement)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select sandbox"))?;
        row.as_ref().map(sandbox_from_row).transpose()
    }

    /// Returns an organization's sandboxes that match the filter, oldest first.
    pub async fn list_sandboxes(
        &self,
        organization_id: &str,
        filter: &SandboxFilter,
    ) -> Result<Vec<SandboxRecord>, StoreError> {
        let statement = format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE organization_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(&statement)
            .bind(organization_id)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("list sandboxes"))?;
        let mut sandboxes = Vec::with_capacity(rows.len());
        for row in &rows {
            let sandbox = sandbox_from_row(row)?;
            if filter.states.is_empty() || filter.states.contains(&sandbox.state) {
                sandboxes.push(sandbox);
            }
        }
        Ok(sandboxes)
    }

    /// Returns every sandbox on this server, for recovery at start.
    pub async fn all_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let statement = format!("SELECT {COLUMNS} FROM sandboxes ORDER BY created_at, id");
        let rows = sqlx::query(&statement)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("list all sandboxes"))?;
        rows.iter().map(sandbox_from_row).collect()
    }
}
