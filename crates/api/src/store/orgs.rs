//! Organizations, their limits, and API keys.

use daytona_wire::api::SandboxState;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, flag, query_error};

/// One organization.
#[derive(Debug, Clone)]
pub struct OrganizationRecord {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
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
    /// Organization resource permissions; `None` grants every permission (the admin key, and
    /// keys stored before permissions existed).
    pub permissions: Option<Vec<String>>,
    /// RFC 3339 time after which the key no longer authenticates.
    pub expires_at: Option<String>,
}

/// An organization's own limits. `None` uses the server's default; `Some(0)` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub max_sandboxes: Option<i64>,
    pub total_cpu: Option<i64>,
    /// GiB.
    pub total_memory: Option<i64>,
}

/// Resources in use by an organization's sandboxes: their number, vCPUs and GiB of memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub sandboxes: i64,
    pub cpu: i64,
    pub memory: i64,
}

/// States in which a sandbox's processes run and use CPU and memory. `creating` and
/// `starting` are left out because a create or start in progress has a quota reservation
/// instead.
pub const STATES_HOLDING_RESOURCES: [SandboxState; 2] =
    [SandboxState::Started, SandboxState::Stopping];

const ORGANIZATION_COLUMNS: &str = "id, name, created_at, updated_at";

const API_KEY_COLUMNS: &str = "id, organization_id, name, key_prefix, is_admin, created_at, \
    last_used_at, revoked_at, permissions, expires_at";

fn organization_from_row(row: &AnyRow) -> Result<OrganizationRecord, sqlx::Error> {
    let created_at: String = row.try_get("created_at")?;
    let updated_at: Option<String> = row.try_get("updated_at")?;
    Ok(OrganizationRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        updated_at: updated_at.unwrap_or_else(|| created_at.clone()),
        created_at,
    })
}

fn api_key_from_row(row: &AnyRow) -> Result<ApiKeyRecord, StoreError> {
    let get = query_error("decode api key");
    let permissions: Option<String> = row.try_get("permissions").map_err(get)?;
    let permissions = permissions
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|source| StoreError::Decode {
            what: "api key permissions",
            source,
        })?;
    Ok(ApiKeyRecord {
        id: row.try_get("id").map_err(get)?,
        organization_id: row.try_get("organization_id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        key_prefix: row.try_get("key_prefix").map_err(get)?,
        is_admin: flag(row.try_get("is_admin").map_err(get)?),
        created_at: row.try_get("created_at").map_err(get)?,
        last_used_at: row.try_get("last_used_at").map_err(get)?,
        revoked_at: row.try_get("revoked_at").map_err(get)?,
        permissions,
        expires_at: row.try_get("expires_at").map_err(get)?,
    })
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Store {
    /// Returns the organization named `name`, creating it if it does not exist.
    pub async fn ensure_organization(&self, name: &str) -> Result<OrganizationRecord, StoreError> {
        if let Some(org) = self.organization_by_name(name).await? {
            return Ok(org);
        }
        match self.create_organization(name).await? {
            Some(org) => Ok(org),
            // Another caller created it in the meantime.
            None => self
                .organization_by_name(name)
                .await?
                .ok_or_else(|| StoreError::Query {
                    operation: "select organization after a conflicting insert",
                    source: sqlx::Error::RowNotFound,
                }),
        }
    }

    /// Creates an organization; `None` when the name is taken.
    pub async fn create_organization(
        &self,
        name: &str,
    ) -> Result<Option<OrganizationRecord>, StoreError> {
        let now = daytona_wire::now_rfc3339();
        let org = OrganizationRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            created_at: now.clone(),
            updated_at: now,
        };
        let inserted = sqlx::query(
            "INSERT INTO organizations (id, name, created_at, updated_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&org.id)
        .bind(&org.name)
        .bind(&org.created_at)
        .bind(&org.updated_at)
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => Ok(Some(org)),
            Err(error) if is_unique_violation(&error) => Ok(None),
            Err(source) => Err(StoreError::Query {
                operation: "insert organization",
                source,
            }),
        }
    }

    pub async fn organization_by_name(
        &self,
        name: &str,
    ) -> Result<Option<OrganizationRecord>, StoreError> {
        let query = format!("SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE name = $1");
        let row = sqlx::query(&query)
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select organization"))?;
        row.as_ref()
            .map(organization_from_row)
            .transpose()
            .map_err(query_error("decode organization"))
    }

    pub async fn organization_by_id(
        &self,
        id: &str,
    ) -> Result<Option<OrganizationRecord>, StoreError> {
        let query = format!("SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select organization"))?;
        row.as_ref()
            .map(organization_from_row)
            .transpose()
            .map_err(query_error("decode organization"))
    }

    /// Returns every organization, oldest first.
    pub async fn list_organizations(&self) -> Result<Vec<OrganizationRecord>, StoreError> {
        let query =
            format!("SELECT {ORGANIZATION_COLUMNS} FROM organizations ORDER BY created_at, id");
        let rows = sqlx::query(&query)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("list organizations"))?;
        rows.iter()
            .map(organization_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_error("decode organization"))
    }

    /// Deletes an organization with its API keys and limits. Returns `false` when it has
    /// sandboxes, which must be deleted first; the organization is then left as it was.
    pub async fn delete_organization(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(query_error("begin organization delete"))?;
        let sandboxes: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sandboxes WHERE organization_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_error("count organization sandboxes"))?;
        if sandboxes > 0 {
            return Ok(false);
        }
        for statement in [
            "DELETE FROM api_keys WHERE organization_id = $1",
            "DELETE FROM organization_limits WHERE organization_id = $1",
            "DELETE FROM organizations WHERE id = $1",
        ] {
            sqlx::query(statement)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(query_error("delete organization"))?;
        }
        tx.commit()
            .await
            .map_err(query_error("commit organization delete"))?;
        Ok(true)
    }

    /// Returns the organization's own limits (all `None` when it has none).
    pub async fn organization_limits(
        &self,
        organization_id: &str,
    ) -> Result<LimitOverrides, StoreError> {
        let row = sqlx::query(
            "SELECT max_sandboxes, total_cpu, total_memory FROM organization_limits WHERE organization_id = $1",
        )
        .bind(organization_id)
        .fetch_optional(self.pool())
        .await
        .map_err(query_error("select organization limits"))?;
        let Some(row) = row else {
            return Ok(LimitOverrides::default());
        };
        let get = query_error("decode organization limits");
        Ok(LimitOverrides {
            max_sandboxes: row.try_get("max_sandboxes").map_err(get)?,
            total_cpu: row.try_get("total_cpu").map_err(get)?,
            total_memory: row.try_get("total_memory").map_err(get)?,
        })
    }

    /// Replaces the organization's own limits.
    pub async fn set_organization_limits(
        &self,
        organization_id: &str,
        limits: &LimitOverrides,
    ) -> Result<(), StoreError> {
        let now = daytona_wire::now_rfc3339();
        sqlx::query(
            "INSERT INTO organization_limits (organization_id, max_sandboxes, total_cpu, total_memory, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (organization_id) DO UPDATE SET max_sandboxes = $2, total_cpu = $3,
                 total_memory = $4, updated_at = $5",
        )
        .bind(organization_id)
        .bind(limits.max_sandboxes)
        .bind(limits.total_cpu)
        .bind(limits.total_memory)
        .bind(&now)
        .execute(self.pool())
        .await
        .map_err(query_error("upsert organization limits"))?;
        sqlx::query("UPDATE organizations SET updated_at = $1 WHERE id = $2")
            .bind(&now)
            .bind(organization_id)
            .execute(self.pool())
            .await
            .map_err(query_error("update organization"))?;
        Ok(())
    }

    /// Counts the organization's sandboxes in `states`, with their vCPUs and GiB of memory.
    pub async fn organization_usage(
        &self,
        organization_id: &str,
        states: &[SandboxState],
    ) -> Result<Usage, StoreError> {
        let placeholders = (0..states.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let query = format!(
            "SELECT COUNT(*) AS sandboxes, COALESCE(SUM(cpu), 0) AS cpu, COALESCE(SUM(memory), 0) AS memory
             FROM sandboxes WHERE organization_id = $1 AND state IN ({placeholders})"
        );
        let mut query = sqlx::query(&query).bind(organization_id);
        for state in states {
            query = query.bind(state.as_str());
        }
        let row = query
            .fetch_one(self.pool())
            .await
            .map_err(query_error("sum organization usage"))?;
        let get = query_error("decode organization usage");
        Ok(Usage {
            sandboxes: row.try_get("sandboxes").map_err(get)?,
            cpu: row.try_get("cpu").map_err(get)?,
            memory: row.try_get("memory").map_err(get)?,
        })
    }

    /// Stores a new API key by its hash. Fails on a second unrevoked non-admin key of the same
    /// name in the organization; [`Store::insert_named_api_key`] reports that as `false`.
    pub async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> Result<(), StoreError> {
        self.try_insert_api_key(key, key_hash)
            .await
            .map_err(query_error("insert api key"))
    }

    /// Stores a new API key by its hash; `false` when the organization has an unrevoked key
    /// of that name.
    pub async fn insert_named_api_key(
        &self,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> Result<bool, StoreError> {
        match self.try_insert_api_key(key, key_hash).await {
            Ok(()) => Ok(true),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(source) => Err(StoreError::Query {
                operation: "insert api key",
                source,
            }),
        }
    }

    async fn try_insert_api_key(
        &self,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> Result<(), sqlx::Error> {
        let permissions = key
            .permissions
            .as_ref()
            .map(|list| serde_json::to_string(list).expect("a list of strings always serializes"));
        sqlx::query(
            "INSERT INTO api_keys (id, organization_id, name, key_hash, key_prefix, is_admin, created_at, permissions, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&key.id)
        .bind(&key.organization_id)
        .bind(&key.name)
        .bind(key_hash)
        .bind(&key.key_prefix)
        .bind(i64::from(key.is_admin))
        .bind(&key.created_at)
        .bind(permissions)
        .bind(&key.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Returns the key with this hash if it is neither revoked nor expired.
    pub async fn api_key_by_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let query = format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys
             WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)"
        );
        let row = sqlx::query(&query)
            .bind(key_hash)
            .bind(daytona_wire::now_rfc3339())
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select api key"))?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    /// Returns the organization's unrevoked keys, oldest first.
    pub async fn list_api_keys(
        &self,
        organization_id: &str,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let query = format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys
             WHERE organization_id = $1 AND revoked_at IS NULL ORDER BY created_at, id"
        );
        let rows = sqlx::query(&query)
            .bind(organization_id)
            .fetch_all(self.pool())
            .await
            .map_err(query_error("list api keys"))?;
        rows.iter().map(api_key_from_row).collect()
    }

    /// Returns the organization's unrevoked key named `name`.
    pub async fn api_key_by_name(
        &self,
        organization_id: &str,
        name: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let query = format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys
             WHERE organization_id = $1 AND name = $2 AND revoked_at IS NULL
             ORDER BY created_at LIMIT 1"
        );
        let row = sqlx::query(&query)
            .bind(organization_id)
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select api key"))?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    /// Returns the unrevoked key with this id.
    pub async fn api_key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let query =
            format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1 AND revoked_at IS NULL");
        let row = sqlx::query(&query)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("select api key"))?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    /// Revokes the key with this id; `false` when it was revoked already.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(daytona_wire::now_rfc3339())
                .bind(id)
                .execute(self.pool())
                .await
                .map_err(query_error("revoke api key"))?;
        Ok(result.rows_affected() > 0)
    }

    /// Records that the key with this id authenticated a request at `at`.
    pub async fn touch_api_key(&self, id: &str, at: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(query_error("update api key last use"))?;
        Ok(())
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
