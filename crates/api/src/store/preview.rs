//! Tokens of signed preview URLs.
//!
//! Each row authorizes one port of one sandbox until `expires_at`. Rows go with the sandbox's
//! row (`ON DELETE CASCADE`); expired rows are removed when new tokens are made.

use sqlx::Row;

use super::{Store, StoreError, query_error};

/// A signed preview token and what it authorizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPreviewToken {
    pub token: String,
    pub sandbox_id: String,
    pub port: u16,
    /// Unix seconds.
    pub expires_at: i64,
}

impl Store {
    /// Stores a new signed preview token, and removes tokens that expired over a day ago.
    pub async fn insert_signed_preview_token(
        &self,
        token: &SignedPreviewToken,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM signed_preview_tokens WHERE expires_at < $1")
            .bind(now - 86_400)
            .execute(self.pool())
            .await
            .map_err(query_error("delete expired signed preview tokens"))?;
        sqlx::query(
            "INSERT INTO signed_preview_tokens (token, sandbox_id, port, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.token)
        .bind(&token.sandbox_id)
        .bind(i64::from(token.port))
        .bind(token.expires_at)
        .bind(daytona_wire::now_rfc3339())
        .execute(self.pool())
        .await
        .map_err(query_error("insert signed preview token"))?;
        Ok(())
    }

    /// Returns a signed preview token, expired or not.
    pub async fn signed_preview_token(
        &self,
        token: &str,
    ) -> Result<Option<SignedPreviewToken>, StoreError> {
        let row = sqlx::query(
            "SELECT token, sandbox_id, port, expires_at FROM signed_preview_tokens WHERE token = $1",
        )
        .bind(token)
        .fetch_optional(self.pool())
        .await
        .map_err(query_error("select signed preview token"))?;
        row.map(|row| {
            let port: i64 = row.try_get("port")?;
            Ok(SignedPreviewToken {
                token: row.try_get("token")?,
                sandbox_id: row.try_get("sandbox_id")?,
                port: u16::try_from(port).unwrap_or(0),
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
        .map_err(query_error("read signed preview token"))
    }

    /// Ends a signed preview token of a sandbox's port now, if it has not ended yet; returns
    /// whether the token exists.
    pub async fn expire_signed_preview_token(
        &self,
        sandbox_id: &str,
        port: u16,
        token: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE signed_preview_tokens
             SET expires_at = CASE WHEN expires_at > $1 THEN $1 ELSE expires_at END
             WHERE token = $2 AND sandbox_id = $3 AND port = $4",
        )
        .bind(now)
        .bind(token)
        .bind(sandbox_id)
        .bind(i64::from(port))
        .execute(self.pool())
        .await
        .map_err(query_error("expire signed preview token"))?;
        Ok(result.rows_affected() > 0)
    }
}
