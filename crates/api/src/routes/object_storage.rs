//! `GET /object-storage/push-access`: S3 credentials with which an SDK uploads the local
//! files of a declarative image (`Image.add_local_file`, `add_local_dir`) as build contexts.
//!
//! With the embedded object storage the credentials are temporary (an hour) and reach only
//! `<organizationId>/` in the builds bucket. The storage URL is the configured public URL, or
//! `https://` plus the host the request reached and the listener's port.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use daytona_wire::ErrorBody;
use daytona_wire::object_storage::StorageAccess;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(push_access))
}

/// `GET /object-storage/push-access`.
#[utoipa::path(get, path = "/object-storage/push-access", tag = "object-storage",
    responses((status = 200, body = StorageAccess), (status = 403, body = ErrorBody),
        (status = 503, description = "The object storage is not listening", body = ErrorBody)))]
pub async fn push_access(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<StorageAccess>, ApiError> {
    let access = state.object_storage.push_access(&caller.organization_id);
    let storage_url = match access.storage_url {
        Some(url) => url,
        None => embedded_url(&state, &headers)?,
    };
    tracing::info!(organization_id = %caller.organization_id, key_id = %caller.key_id, "issued object storage push access");
    Ok(Json(StorageAccess {
        access_key: access.access_key,
        secret: access.secret,
        session_token: access.session_token,
        storage_url,
        organization_id: access.organization_id,
        bucket: access.bucket,
        region: access.region,
    }))
}

/// Returns the embedded service's URL for a client that reached the API with `headers`.
fn embedded_url(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(url) = &state.config.object_storage.public_url {
        return Ok(url.clone());
    }
    let Some(address) = state.object_storage_address.get() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "the object storage is not listening yet; retry in a moment",
        ));
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .and_then(host_name)
        .unwrap_or("localhost");
    Ok(format!("https://{host}:{}", address.port()))
}

/// Extracts the host part of a `Host` header (`name`, `name:port`, `[v6]` or `[v6]:port`), if it
/// contains only characters of host names and addresses.
fn host_name(value: &str) -> Option<&str> {
    let host = if value.starts_with('[') {
        &value[..=value.find(']')?]
    } else {
        value.rsplit_once(':').map_or(value, |(host, _port)| host)
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_name_forms() {
        assert_eq!(host_name("localhost:3000"), Some("localhost"));
        assert_eq!(host_name("127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(host_name("[::1]:3000"), Some("[::1]"));
        assert_eq!(host_name("evil/x:3000"), None);
        assert_eq!(host_name(""), None);
    }
}
