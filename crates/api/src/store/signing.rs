//! Generations of the sandboxes' signing keys.
//!
//! A sandbox's signing key is derived from the server's signing secret, the sandbox id and a
//! generation number (see `crate::signing`), so only the generation is stored here. Rotating
//! the key increments it. The row goes with the sandbox's row (`ON DELETE CASCADE`).

use super::{Store, StoreError, query_error};

impl Store {
    /// Returns the current generation of the sandbox's signing key, starting it at 1.
    pub async fn signing_key_generation(&self, sandbox_id: &str) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO sandbox_signing_keys (sandbox_id, generation, rotated_at) VALUES ($1, 1, $2)
             ON CONFLICT (sandbox_id) DO NOTHING",
        )
        .bind(sandbox_id)
        .bind(daytona_wire::now_rfc3339())
        .execute(self.pool())
        .await
        .map_err(query_error("insert signing key generation"))?;
        self.stored_generation(sandbox_id).await
    }

    /// Moves the sandbox's signing key to its next generation and returns it.
    pub async fn rotate_signing_key(&self, sandbox_id: &str) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO sandbox_signing_keys (sandbox_id, generation, rotated_at) VALUES ($1, 2, $2)
             ON CONFLICT (sandbox_id) DO UPDATE SET generation = sandbox_signing_keys.generation + 1,
                 rotated_at = $2",
        )
        .bind(sandbox_id)
        .bind(daytona_wire::now_rfc3339())
        .execute(self.pool())
        .await
        .map_err(query_error("rotate signing key"))?;
        self.stored_generation(sandbox_id).await
    }

    async fn stored_generation(&self, sandbox_id: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT generation FROM sandbox_signing_keys WHERE sandbox_id = $1")
            .bind(sandbox_id)
            .fetch_one(self.pool())
            .await
            .map_err(query_error("select signing key generation"))
    }
}
