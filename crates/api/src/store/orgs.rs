//! Organizations and API keys.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, flag, query_error};

/// One organization.
#[derive(Debug, Clone)]
pub struct OrganizationRecord {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// One API key; only its SHA-256 hash is stored.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub key_prefix: String,
    pub is_admin: bool,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

fn api_key_from_row(row: &AnyRow) -> Result<ApiKeyRecord, sqlx::Error> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        key_prefix: row.try_get("key_prefix")?,
        is_admin: flag(row.try_get("is_admin")?),
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    /// Returns the organization named `name`, creating it if it does not exist.
    pub async fn ensure_organization(&self, name: &str) -> Result<OrganizationRecord, StoreError> {
        if let Some(org) = self.organization_by_name(name).await? {
            return Ok(org);
        }
        let org = OrganizationRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            created_at: daytona_wire::now_rfc3339(),
        };
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&org.id)
            .bind(&org.name)
            .bind(&org.created_at)
            .execute(self.pool())
            .await
            .map_err(query_error("insert organization"))?;
        Ok(org)
    }

    pub async fn organization_by_name(
        &self,
        name: &str,
    ) -> Result<Option<OrganizationRecord>, StoreError> {
        let row = sqlx::query("SELECT id, name, created_at FROM organizations WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select organization"))?;
        row.map(|row| {
            Ok(OrganizationRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .transpose()
        .map_err(query_error("decode organization"))
    }

    /// Stores a new API key by its hash.
    pub async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, organization_id, name, key_hash, key_prefix, is_admin, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.organization_id)
        .bind(&key.name)
        .bind(key_hash)
        .bind(&key.key_prefix)
        .bind(i64::from(key.is_admin))
        .bind(&key.created_at)
        .execute(self.pool())
        .await
        .map_err(query_error("insert api key"))?;
        Ok(())
    }

    /// Returns the unrevoked key with this hash.
    pub async fn api_key_by_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, organization_id, name, key_prefix, is_admin, created_at, last_used_at, revoked_at
             FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(self.pool())
        .await
        .map_err(query_error("select api key"))?;
        row.as_ref()
            .map(api_key_from_row)
            .transpose()
            .map_err(query_error("decode api key"))
    }

    /// Returns whether an unrevoked admin key exists.
    pub async fn has_admin_key(&self) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE is_admin = 1 AND revoked_at IS NULL",
        )
        .fetch_one(self.pool())
        .await
        .map_err(query_error("count admin keys"))?;
        Ok(count > 0)
    }

    /// Revokes every admin key except the one with `keep_hash`.
    pub async fn revoke_other_admin_keys(&self, keep_hash: &str) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE is_admin = 1 AND revoked_at IS NULL AND key_hash <> $2",
        )
        .bind(daytona_wire::now_rfc3339())
        .bind(keep_hash)
        .execute(self.pool())
        .await
        .map_err(query_error("revoke admin keys"))?;
        Ok(result.rows_affected())
    }
}
