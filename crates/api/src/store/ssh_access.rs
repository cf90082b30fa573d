//! SSH access tokens, stored by their hash.

use sqlx::Row;

use super::{Store, StoreError, query_error};

/// One SSH access token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAccessRecord {
    pub id: String,
    pub sandbox_id: String,
    pub organization_id: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// RFC 3339.
    pub expires_at: String,
    pub created_at: String,
    pub updated_at: String,
    pub revoked_at: Option<String>,
}

const COLUMNS: &str =
    "id, sandbox_id, organization_id, token_hash, expires_at, created_at, updated_at, revoked_at";

impl Store {
    pub async fn insert_ssh_access(&self, record: &SshAccessRecord) -> Result<(), StoreError> {
        let statement =
            format!("INSERT INTO ssh_access ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
        sqlx::query(&statement)
            .bind(&record.id)
            .bind(&record.sandbox_id)
            .bind(&record.organization_id)
            .bind(&record.token_hash)
            .bind(&record.expires_at)
            .bind(&record.created_at)
            .bind(&record.updated_at)
            .bind(&record.revoked_at)
            .execute(self.pool())
            .await
            .map_err(query_error("insert ssh access"))?;
        Ok(())
    }

    /// Finds a token by its hash, revoked and expired ones included.
    pub async fn ssh_access_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<SshAccessRecord>, StoreError> {
        let statement = format!("SELECT {COLUMNS} FROM ssh_access WHERE token_hash = $1");
        let row = sqlx::query(&statement)
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select ssh access"))?;
        row.map(|row| decode(&row)).transpose()
    }

    /// Revokes the sandbox's token with this hash, or every token of the sandbox when
    /// `token_hash` is `None`. Returns how many tokens were revoked.
    pub async fn revoke_ssh_access(
        &self,
        sandbox_id: &str,
        token_hash: Option<&str>,
    ) -> Result<u64, StoreError> {
        // Each placeholder appears once: SQLite numbers a repeated `$N` apart from the bound
        // argument.
        let now = daytona_wire::now_rfc3339();
        let query = match token_hash {
            Some(token_hash) => sqlx::query(
                "UPDATE ssh_access SET revoked_at = $1, updated_at = $2
                 WHERE sandbox_id = $3 AND revoked_at IS NULL AND token_hash = $4",
            )
            .bind(now.clone())
            .bind(now)
            .bind(sandbox_id.to_owned())
            .bind(token_hash.to_owned()),
            None => sqlx::query(
                "UPDATE ssh_access SET revoked_at = $1, updated_at = $2
                 WHERE sandbox_id = $3 AND revoked_at IS NULL",
            )
            .bind(now.clone())
            .bind(now)
            .bind(sandbox_id.to_owned()),
        };
        let result = query
            .execute(self.pool())
            .await
            .map_err(query_error("revoke ssh access"))?;
        Ok(result.rows_affected())
    }
}

fn decode(row: &sqlx::any::AnyRow) -> Result<SshAccessRecord, StoreError> {
    let get = |column: &'static str| {
        row.try_get::<String, _>(column)
            .map_err(query_error("decode ssh access"))
    };
    Ok(SshAccessRecord {
        id: get("id")?,
        sandbox_id: get("sandbox_id")?,
        organization_id: get("organization_id")?,
        token_hash: get("token_hash")?,
        expires_at: get("expires_at")?,
        created_at: get("created_at")?,
        updated_at: get("updated_at")?,
        revoked_at: row
            .try_get::<Option<String>, _>("revoked_at")
            .map_err(query_error("decode ssh access"))?,
    })
}
