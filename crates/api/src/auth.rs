//! API keys: generation, hashing, and the extractor that authenticates a request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{ApiKeyRecord, Store, StoreError};

/// How long a validated key is trusted without asking the store again. Revocation takes
/// effect within this time.
const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Prefix of every API key this server issues.
pub const KEY_PREFIX: &str = "dtn_";

/// Generates a new API key: `dtn_` and 64 hex digits of randomness.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// Returns the stored form of a key: its SHA-256 in hex.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub organization_id: String,
}

impl From<&ApiKeyRecord> for Caller {
    fn from(key: &ApiKeyRecord) -> Self {
        Self {
            organization_id: key.organization_id.clone(),
        }
    }
}

/// Validated keys by hash, each with the time it was checked.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl KeyCache {
    /// Resolves a presented key to its caller, or `None` when it is unknown or revoked.
    pub async fn resolve(&self, store: &Store, key: &str) -> Result<Option<Caller>, StoreError> {
        let hash = hash_key(key);
        if let Some((caller, checked)) = self.entries.lock().expect("key cache lock").get(&hash)
            && checked.elapsed() < KEY_CACHE_TTL
        {
            return Ok(Some(caller.clone()));
        }
        let Some(record) = store.api_key_by_hash(&hash).await? else {
            self.entries.lock().expect("key cache lock").remove(&hash);
            return Ok(None);
        };
        let caller = Caller::from(&record);
        self.entries
            .lock()
            .expect("key cache lock")
            .insert(hash, (caller.clone(), Instant::now()));
        Ok(Some(caller))
    }
}

/// Extracts the bearer token of the `Authorization` header.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer_token(parts) else {
            return Err(ApiError::unauthorized(
                "missing API key: send it as 'Authorization: Bearer <key>'",
            ));
        };
        match state.keys.resolve(&state.store, token).await? {
            Some(caller) => Ok(caller),
            None => Err(ApiError::unauthorized("invalid or revoked API key")),
        }
    }
}
