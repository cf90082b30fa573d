//! Snapshot rows: named images that sandboxes start from.

use daytona_wire::api::SnapshotState;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, flag, query_error};

/// One snapshot as stored.
#[derive(Debug, Clone)]
pub struct SnapshotRecord {
    pub id: String,
    pub organization_id: Option<String>,
    pub name: String,
    pub image_name: Option<String>,
    pub image_digest: Option<String>,
    pub state: SnapshotState,
    pub general: bool,
    pub size_bytes: Option<i64>,
    pub cpu: i64,
    pub gpu: i64,
    /// GiB.
    pub memory: i64,
    /// GiB.
    pub disk: i64,
    pub entrypoint: Option<Vec<String>>,
    pub error_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
}

const COLUMNS: &str = "id, organization_id, name, image_name, image_digest, state, general, \
    size_bytes, cpu, gpu, memory, disk, entrypoint, error_reason, created_at, updated_at, last_used_at";

fn snapshot_state(name: &str) -> SnapshotState {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .unwrap_or(SnapshotState::Error)
}

fn state_name(state: SnapshotState) -> String {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::String(name)) => name,
        _ => unreachable!("snapshot states serialize as strings"),
    }
}

fn snapshot_from_row(row: &AnyRow) -> Result<SnapshotRecord, StoreError> {
    let get = query_error("decode snapshot");
    let entrypoint: Option<String> = row.try_get("entrypoint").map_err(get)?;
    let entrypoint = entrypoint
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|source| StoreError::Decode {
            what: "snapshot entrypoint",
            source,
        })?;
    let state: String = row.try_get("state").map_err(get)?;
    Ok(SnapshotRecord {
        id: row.try_get("id").map_err(get)?,
        organization_id: row.try_get("organization_id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        image_name: row.try_get("image_name").map_err(get)?,
        image_digest: row.try_get("image_digest").map_err(get)?,
        state: snapshot_state(&state),
        general: flag(row.try_get("general").map_err(get)?),
        size_bytes: row.try_get("size_bytes").map_err(get)?,
        cpu: row.try_get("cpu").map_err(get)?,
        gpu: row.try_get("gpu").map_err(get)?,
        memory: row.try_get("memory").map_err(get)?,
        disk: row.try_get("disk").map_err(get)?,
        entrypoint,
        error_reason: row.try_get("error_reason").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        last_used_at: row.try_get("last_used_at").map_err(get)?,
    })
}

impl Store {
    /// Inserts a snapshot, or updates the one with the same name.
    pub async fn upsert_snapshot(&self, snapshot: &SnapshotRecord) -> Result<(), StoreError> {
        let entrypoint = snapshot
            .entrypoint
            .as_ref()
            .map(|e| serde_json::to_string(e).expect("a list of strings always serializes"));
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(query_error("begin snapshot upsert"))?;
        sqlx::query("DELETE FROM snapshots WHERE name = $1 AND id <> $2")
            .bind(&snapshot.name)
            .bind(&snapshot.id)
            .execute(&mut *tx)
            .await
            .map_err(query_error("replace snapshot"))?;
        let updated = sqlx::query(
            "UPDATE snapshots SET image_name = $2, image_digest = $3, state = $4, size_bytes = $5, \
             entrypoint = $6, error_reason = $7, updated_at = $8 WHERE id = $1",
        )
        .bind(&snapshot.id)
        .bind(&snapshot.image_name)
        .bind(&snapshot.image_digest)
        .bind(state_name(snapshot.state))
        .bind(snapshot.size_bytes)
        .bind(&entrypoint)
        .bind(&snapshot.error_reason)
        .bind(&snapshot.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(query_error("update snapshot"))?;
        if updated.rows_affected() == 0 {
            let statement = format!(
                "INSERT INTO snapshots ({COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
            );
            sqlx::query(&statement)
                .bind(&snapshot.id)
                .bind(&snapshot.organization_id)
                .bind(&snapshot.name)
                .bind(&snapshot.image_name)
                .bind(&snapshot.image_digest)
                .bind(state_name(snapshot.state))
                .bind(i64::from(snapshot.general))
                .bind(snapshot.size_bytes)
                .bind(snapshot.cpu)
                .bind(snapshot.gpu)
                .bind(snapshot.memory)
                .bind(snapshot.disk)
                .bind(&entrypoint)
                .bind(&snapshot.error_reason)
                .bind(&snapshot.created_at)
                .bind(&snapshot.updated_at)
                .bind(&snapshot.last_used_at)
                .execute(&mut *tx)
                .await
                .map_err(query_error("insert snapshot"))?;
        }
        tx.commit()
            .await
            .map_err(query_error("commit snapshot upsert"))?;
        Ok(())
    }

    /// Finds a snapshot visible to an organization (its own or a general one) by id or name.
    pub async fn snapshot_by_id_or_name(
        &self,
        organization_id: &str,
        id_or_name: &str,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        let statement = format!(
            "SELECT {COLUMNS} FROM snapshots WHERE (id = $1 OR name = $1) \
             AND (general = 1 OR organization_id = $2) ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        );
        let row = sqlx::query(&statement)
            .bind(id_or_name)
            .bind(organization_id)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select snapshot"))?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    /// Returns the snapshots visible to an organization, by name.
    pub async fn list_snapshots(
        &self,
        organization_id: &str,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let statement = format!(
            "SELECT {COLUMNS} FROM snapshots WHERE general = 1 OR organization_id = $1 ORDER BY name"
        );
        let rows = sqlx::query(&statement)
            .bind(organization_id)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("list snapshots"))?;
        rows.iter().map(snapshot_from_row).collect()
    }
}

impl Store {
    /// Returns the snapshots of every organization whose image build had not ended: those
    /// `pending` or `building`.
    pub async fn unfinished_builds(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let statement = format!(
            "SELECT {COLUMNS} FROM snapshots WHERE state IN ('pending', 'building') ORDER BY name"
        );
        let rows = sqlx::query(&statement)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("list unfinished builds"))?;
        rows.iter().map(snapshot_from_row).collect()
    }
}

impl Store {
    /// Inserts a new snapshot. Names are unique across organizations: callers check
    /// [`Store::snapshot_name_taken`] first, and a concurrent insert of the name fails.
    pub async fn insert_snapshot(&self, snapshot: &SnapshotRecord) -> Result<(), StoreError> {
        let entrypoint = snapshot
            .entrypoint
            .as_ref()
            .map(|e| serde_json::to_string(e).expect("a list of strings always serializes"));
        let statement = format!(
            "INSERT INTO snapshots ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        );
        sqlx::query(&statement)
            .bind(&snapshot.id)
            .bind(&snapshot.organization_id)
            .bind(&snapshot.name)
            .bind(&snapshot.image_name)
            .bind(&snapshot.image_digest)
            .bind(state_name(snapshot.state))
            .bind(i64::from(snapshot.general))
            .bind(snapshot.size_bytes)
            .bind(snapshot.cpu)
            .bind(snapshot.gpu)
            .bind(snapshot.memory)
            .bind(snapshot.disk)
            .bind(&entrypoint)
            .bind(&snapshot.error_reason)
            .bind(&snapshot.created_at)
            .bind(&snapshot.updated_at)
            .bind(&snapshot.last_used_at)
            .execute(self.pool())
            .await
            .map_err(query_error("insert snapshot"))?;
        Ok(())
    }

    /// Returns whether a snapshot named `name` exists in any organization. Names are unique
    /// across organizations.
    pub async fn snapshot_name_taken(&self, name: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT id FROM snapshots WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("look up snapshot name"))?;
        Ok(row.is_some())
    }

    /// Sets the state of snapshot `id`.
    pub async fn set_snapshot_state(
        &self,
        id: &str,
        state: SnapshotState,
        updated_at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE snapshots SET state = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(state_name(state))
            .bind(updated_at)
            .execute(self.pool())
            .await
            .map_err(query_error("update snapshot state"))?;
        Ok(())
    }

    /// Deletes snapshot `id`.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(query_error("delete snapshot"))?;
        Ok(())
    }

    /// Counts the snapshots, in any organization, that use the store image `image_name`.
    pub async fn snapshots_using_image(&self, image_name: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM snapshots WHERE image_name = $1")
            .bind(image_name)
            .fetch_one(self.pool())
            .await
            .map_err(query_error("count snapshots of an image"))?;
        row.try_get("n")
            .map_err(query_error("count snapshots of an image"))
    }

    /// Returns whether a snapshot of the organization uses the store image `image_name`.
    pub async fn organization_uses_image(
        &self,
        organization_id: &str,
        image_name: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM snapshots WHERE organization_id = $1 AND image_name = $2",
        )
        .bind(organization_id)
        .bind(image_name)
        .fetch_one(self.pool())
        .await
        .map_err(query_error("count an organization's snapshots of an image"))?;
        let count: i64 = row
            .try_get("n")
            .map_err(query_error("count an organization's snapshots of an image"))?;
        Ok(count > 0)
    }

    /// Lists the ids of the sandboxes (in any state but deleted) created from snapshot `name`.
    pub async fn sandboxes_using_snapshot(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM sandboxes WHERE snapshot = $1 ORDER BY id")
            .bind(name)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("list sandboxes of a snapshot"))?;
        rows.iter()
            .map(|row| {
                row.try_get("id")
                    .map_err(query_error("list sandboxes of a snapshot"))
            })
            .collect()
    }
}
