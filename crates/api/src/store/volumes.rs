//! Volume rows: named directories of an organization that sandboxes mount.

use daytona_wire::api::SandboxVolume;
use daytona_wire::volumes::VolumeState;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, query_error};

/// One volume as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub state: VolumeState,
    pub error_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
}

const COLUMNS: &str =
    "id, organization_id, name, state, error_reason, created_at, updated_at, last_used_at";

fn state_name(state: VolumeState) -> String {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::String(name)) => name,
        _ => unreachable!("volume states serialize as strings"),
    }
}

fn volume_from_row(row: &AnyRow) -> Result<VolumeRecord, StoreError> {
    let get = query_error("decode volume");
    let state: String = row.try_get("state").map_err(get)?;
    Ok(VolumeRecord {
        id: row.try_get("id").map_err(get)?,
        organization_id: row.try_get("organization_id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        state: serde_json::from_value(serde_json::Value::String(state))
            .unwrap_or(VolumeState::Error),
        error_reason: row.try_get("error_reason").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        last_used_at: row.try_get("last_used_at").map_err(get)?,
    })
}

impl Store {
    /// Inserts a new volume; another volume with the same name in the organization fails
    /// with [`StoreError::VolumeNameTaken`].
    pub async fn insert_volume(&self, volume: &VolumeRecord) -> Result<(), StoreError> {
        let statement =
            format!("INSERT INTO volumes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
        let inserted = sqlx::query(&statement)
            .bind(&volume.id)
            .bind(&volume.organization_id)
            .bind(&volume.name)
            .bind(state_name(volume.state))
            .bind(&volume.error_reason)
            .bind(&volume.created_at)
            .bind(&volume.updated_at)
            .bind(&volume.last_used_at)
            .execute(self.pool())
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(StoreError::VolumeNameTaken {
                    name: volume.name.clone(),
                })
            }
            Err(source) => Err(StoreError::Query {
                operation: "insert volume",
                source,
            }),
        }
    }

    /// The organization's volumes, oldest first.
    pub async fn list_volumes(
        &self,
        organization_id: &str,
    ) -> Result<Vec<VolumeRecord>, StoreError> {
        let statement = format!(
            "SELECT {COLUMNS} FROM volumes WHERE organization_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(&statement)
            .bind(organization_id)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("list volumes"))?;
        rows.iter().map(volume_from_row).collect()
    }

    /// The organization's volume with this id, or else with this name.
    pub async fn volume_by_id_or_name(
        &self,
        organization_id: &str,
        id_or_name: &str,
    ) -> Result<Option<VolumeRecord>, StoreError> {
        let statement = format!(
            "SELECT {COLUMNS} FROM volumes WHERE organization_id = $1 AND (id = $2 OR name = $2) \
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1"
        );
        let row = sqlx::query(&statement)
            .bind(organization_id)
            .bind(id_or_name)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("get volume"))?;
        row.as_ref().map(volume_from_row).transpose()
    }

    /// The organization's volume with this name.
    pub async fn volume_by_name(
        &self,
        organization_id: &str,
        name: &str,
    ) -> Result<Option<VolumeRecord>, StoreError> {
        let statement =
            format!("SELECT {COLUMNS} FROM volumes WHERE organization_id = $1 AND name = $2");
        let row = sqlx::query(&statement)
            .bind(organization_id)
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("get volume by name"))?;
        row.as_ref().map(volume_from_row).transpose()
    }

    /// Records that a sandbox was created with the volume.
    pub async fn touch_volume(&self, id: &str, at: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE volumes SET last_used_at = $2, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(self.pool())
            .await
            .map_err(query_error("update volume"))?;
        Ok(())
    }

    /// Removes a volume's row.
    pub async fn delete_volume(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM volumes WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(query_error("delete volume"))?;
        Ok(())
    }

    /// Ids of the organization's sandboxes, in any state, that mount the volume.
    pub async fn sandboxes_using_volume(
        &self,
        organization_id: &str,
        volume_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id, volumes FROM sandboxes WHERE organization_id = $1")
            .bind(organization_id)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("find sandboxes of a volume"))?;
        let get = query_error("decode sandbox volumes");
        let mut users = Vec::new();
        for row in &rows {
            let text: String = row.try_get("volumes").map_err(get)?;
            let volumes: Vec<SandboxVolume> =
                serde_json::from_str(&text).map_err(|source| StoreError::Decode {
                    what: "sandbox volumes",
                    source,
                })?;
            if volumes.iter().any(|volume| volume.volume_id == volume_id) {
                users.push(row.try_get("id").map_err(get)?);
            }
        }
        Ok(users)
    }
}
