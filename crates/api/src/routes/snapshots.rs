//! `/snapshots` routes.

use axum::Json;
use axum::extract::{Path, Query, State};
use daytona_wire::ErrorBody;
use daytona_wire::api::{PaginatedSnapshots, Snapshot};
use serde::Deserialize;

use crate::auth::Caller;
use crate::dto;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    page: Option<i64>,
    limit: Option<i64>,
}

/// `GET /snapshots?page&limit`: the snapshots the organization can use, by name.
#[utoipa::path(get, path = "/snapshots", tag = "snapshots",
    params(("page" = Option<i64>, Query, description = "Page number, from 1"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200")),
    responses((status = 200, body = PaginatedSnapshots), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<Json<PaginatedSnapshots>, ApiError> {
    let page = query.page.unwrap_or(1);
    let limit = query.limit.unwrap_or(100);
    if page < 1 || !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid page or limit: page starts at 1, limit is 1 to 200",
        ));
    }
    let all = state.store.list_snapshots(&caller.organization_id).await?;
    let total = all.len() as i64;
    let total_pages = (total + limit - 1) / limit;
    let items = all
        .iter()
        .skip(((page - 1) * limit) as usize)
        .take(limit as usize)
        .map(dto::snapshot)
        .collect();
    Ok(Json(PaginatedSnapshots {
        items,
        total,
        page,
        total_pages,
    }))
}

/// `GET /snapshots/{idOrName}`.
#[utoipa::path(get, path = "/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id or name")),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    let record = state
        .store
        .snapshot_by_id_or_name(&caller.organization_id, &id_or_name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("snapshot {id_or_name:?} not found")))?;
    Ok(Json(dto::snapshot(&record)))
}
