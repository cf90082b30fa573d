//! `GET /sandbox`: filters, sorting and cursor pagination, with the parameters of the SDKs'
//! `list` (`ListSandboxesQuery`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use daytona_wire::ErrorBody;
use daytona_wire::api::{ListSandboxes, SandboxState};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::parse_bool;
use crate::auth::Caller;
use crate::dto;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{SandboxFilter, SandboxRecord};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Sort fields of the list.
#[derive(Debug, Default, Clone, Copy)]
enum SortField {
    #[default]
    CreatedAt,
    Name,
    Cpu,
    MemoryGib,
    DiskGib,
    UpdatedAt,
    LastActivityAt,
}

/// An inclusive numeric range filter.
#[derive(Debug, Default, Clone, Copy)]
struct Range {
    min: Option<f64>,
    max: Option<f64>,
}

impl Range {
    fn contains(&self, value: i64) -> bool {
        let value = value as f64;
        self.min.is_none_or(|min| value >= min) && self.max.is_none_or(|max| value <= max)
    }
}

/// An open time range filter: after `after` and before `before`.
#[derive(Debug, Default, Clone, Copy)]
struct TimeRange {
    after: Option<OffsetDateTime>,
    before: Option<OffsetDateTime>,
}

impl TimeRange {
    fn is_set(&self) -> bool {
        self.after.is_some() || self.before.is_some()
    }

    /// Returns whether `value` lies in the range. A missing value matches only an unset range.
    fn contains(&self, value: Option<&str>) -> bool {
        if !self.is_set() {
            return true;
        }
        let Some(at) = value.and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok()) else {
            return false;
        };
        self.after.is_none_or(|after| at > after) && self.before.is_none_or(|before| at < before)
    }
}

/// The query of `GET /sandbox`, parsed by hand because list parameters repeat
/// (`states=a&states=b`).
#[derive(Debug, Default)]
struct ListQuery {
    cursor: Option<String>,
    limit: usize,
    filter: SandboxFilter,
    /// Case-insensitive prefixes.
    id_prefix: Option<String>,
    name_prefix: Option<String>,
    labels: BTreeMap<String, String>,
    snapshots: Vec<String>,
    targets: Vec<String>,
    cpu: Range,
    memory: Range,
    disk: Range,
    gpu: Range,
    public: Option<bool>,
    recoverable: Option<bool>,
    created_at: TimeRange,
    last_activity_at: TimeRange,
    auto_destroy_at: TimeRange,
    sort: SortField,
    descending: bool,
}

impl ListQuery {
    fn matches(&self, record: &SandboxRecord) -> bool {
        let has_prefix = |value: &str, prefix: &Option<String>| {
            prefix
                .as_ref()
                .is_none_or(|prefix| value.to_lowercase().starts_with(prefix))
        };
        has_prefix(&record.id, &self.id_prefix)
            && has_prefix(&record.name, &self.name_prefix)
            && self
                .labels
                .iter()
                .all(|(key, value)| record.labels.get(key) == Some(value))
            && (self.snapshots.is_empty()
                || record
                    .snapshot
                    .as_ref()
                    .is_some_and(|snapshot| self.snapshots.contains(snapshot)))
            && (self.targets.is_empty() || self.targets.contains(&record.target))
            && self.cpu.contains(record.cpu)
            && self.memory.contains(record.memory)
            && self.disk.contains(record.disk)
            && self.gpu.contains(record.gpu)
            && self.public.is_none_or(|public| record.public == public)
            && self
                .recoverable
                .is_none_or(|recoverable| (record.state == SandboxState::Error) == recoverable)
            && self.created_at.contains(Some(&record.created_at))
            && self
                .last_activity_at
                .contains(record.last_activity_at.as_deref())
            && self
                .auto_destroy_at
                .contains(record.auto_destroy_at.as_deref())
    }
}

fn invalid(name: &str, value: &str, hint: &str) -> ApiError {
    ApiError::bad_request(format!("invalid {name} {value:?}: {hint}"))
}

fn parse_number(name: &str, value: &str) -> Result<f64, ApiError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
        .ok_or_else(|| invalid(name, value, "use a number"))
}

/// Parses a time filter: RFC 3339, or an ISO 8601 time without an offset (as Python's
/// `datetime.isoformat()` writes naive times), taken as UTC.
fn parse_time(name: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&format!("{value}Z"), &Rfc3339))
        .map_err(|_| {
            invalid(
                name,
                value,
                "use an ISO 8601 time such as 2026-01-02T03:04:05Z",
            )
        })
}

fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery {
        limit: DEFAULT_PAGE,
        descending: true,
        ..ListQuery::default()
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let value = value.as_ref();
        match key.as_ref() {
            "cursor" if !value.is_empty() => query.cursor = Some(value.to_owned()),
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| invalid("limit", value, &format!("use 1 to {MAX_PAGE}")))?;
            }
            "id" if !value.is_empty() => query.id_prefix = Some(value.to_lowercase()),
            "name" if !value.is_empty() => query.name_prefix = Some(value.to_lowercase()),
            "states" | "state" => {
                for name in value.split(',').filter(|s| !s.is_empty()) {
                    let state = SandboxState::parse(name).ok_or_else(|| {
                        invalid(
                            "state",
                            name,
                            "use a sandbox state such as started or stopped",
                        )
                    })?;
                    query.filter.states.push(state);
                }
            }
            "labels" => {
                query.labels = serde_json::from_str(value).map_err(|_| {
                    invalid(
                        "labels filter",
                        value,
                        "use a JSON object of strings, such as {\"team\":\"a\"}",
                    )
                })?;
            }
            "snapshots" => query.snapshots.extend(split_list(value)),
            "regionIds" | "targets" => query.targets.extend(split_list(value)),
            "minCpu" => query.cpu.min = Some(parse_number("minCpu", value)?),
            "maxCpu" => query.cpu.max = Some(parse_number("maxCpu", value)?),
            "minMemoryGiB" => query.memory.min = Some(parse_number("minMemoryGiB", value)?),
            "maxMemoryGiB" => query.memory.max = Some(parse_number("maxMemoryGiB", value)?),
            "minDiskGiB" => query.disk.min = Some(parse_number("minDiskGiB", value)?),
            "maxDiskGiB" => query.disk.max = Some(parse_number("maxDiskGiB", value)?),
            "minGpu" => query.gpu.min = Some(parse_number("minGpu", value)?),
            "maxGpu" => query.gpu.max = Some(parse_number("maxGpu", value)?),
            "isPublic" => query.public = Some(parse_bool("isPublic", value)?),
            "isRecoverable" => query.recoverable = Some(parse_bool("isRecoverable", value)?),
            "createdAtAfter" => query.created_at.after = Some(parse_time(&key, value)?),
            "createdAtBefore" => query.created_at.before = Some(parse_time(&key, value)?),
            "lastEventAfter" => query.last_activity_at.after = Some(parse_time(&key, value)?),
            "lastEventBefore" => query.last_activity_at.before = Some(parse_time(&key, value)?),
            "autoDestroyAtAfter" => query.auto_destroy_at.after = Some(parse_time(&key, value)?),
            "autoDestroyAtBefore" => {
                query.auto_destroy_at.before = Some(parse_time(&key, value)?);
            }
            "sort" => query.sort = parse_sort(value)?,
            "order" => {
                query.descending = match value {
                    "desc" => true,
                    "asc" => false,
                    other => return Err(invalid("order", other, "use asc or desc")),
                }
            }
            // Other parameters of the SDKs (includeErroredDeleted, includeWarm,
            // sandboxClasses) select nothing here: every sandbox is a container, and warm-pool
            // sandboxes are never listed.
            _ => {}
        }
    }
    Ok(query)
}

fn split_list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
}

fn parse_sort(value: &str) -> Result<SortField, ApiError> {
    Ok(match value {
        "createdAt" => SortField::CreatedAt,
        "name" => SortField::Name,
        "cpu" => SortField::Cpu,
        "memoryGib" => SortField::MemoryGib,
        "diskGib" => SortField::DiskGib,
        "updatedAt" => SortField::UpdatedAt,
        "lastActivityAt" => SortField::LastActivityAt,
        other => {
            return Err(invalid(
                "sort",
                other,
                "use createdAt, name, cpu, memoryGib, diskGib, updatedAt or lastActivityAt",
            ));
        }
    })
}

/// Returns the sort key of a record: text that sorts in the field's order, with numbers
/// zero-padded.
fn sort_key(record: &SandboxRecord, field: SortField) -> String {
    let number = |value: i64| format!("{:020}", value.max(0));
    match field {
        SortField::CreatedAt => record.created_at.clone(),
        SortField::Name => record.name.clone(),
        SortField::Cpu => number(record.cpu),
        SortField::MemoryGib => number(record.memory),
        SortField::DiskGib => number(record.disk),
        SortField::UpdatedAt => record.updated_at.clone(),
        SortField::LastActivityAt => record.last_activity_at.clone().unwrap_or_default(),
    }
}

fn encode_cursor(key: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(key, id)).expect("two strings always serialize"))
}

fn decode_cursor(cursor: &str) -> Result<(String, String), ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid cursor: pass back the nextCursor of a previous page")
        })
}

/// `GET /sandbox`: a page of the organization's sandboxes with a cursor to the next.
#[utoipa::path(get, path = "/sandbox", tag = "sandbox",
    params(
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
        ("id" = Option<String>, Query, description = "Id prefix, case-insensitive"),
        ("name" = Option<String>, Query, description = "Name prefix, case-insensitive"),
        ("labels" = Option<String>, Query, description = "JSON object of labels that must all match"),
        ("states" = Option<Vec<String>>, Query, description = "States to include (repeatable)"),
        ("snapshots" = Option<Vec<String>>, Query, description = "Snapshot names to include (repeatable)"),
        ("regionIds" = Option<Vec<String>>, Query, description = "Targets to include (repeatable)"),
        ("minCpu" = Option<f64>, Query), ("maxCpu" = Option<f64>, Query),
        ("minMemoryGiB" = Option<f64>, Query), ("maxMemoryGiB" = Option<f64>, Query),
        ("minDiskGiB" = Option<f64>, Query), ("maxDiskGiB" = Option<f64>, Query),
        ("minGpu" = Option<f64>, Query), ("maxGpu" = Option<f64>, Query),
        ("isPublic" = Option<bool>, Query),
        ("isRecoverable" = Option<bool>, Query, description = "Whether the sandbox is in error, which recover can start again"),
        ("createdAtAfter" = Option<String>, Query), ("createdAtBefore" = Option<String>, Query),
        ("lastEventAfter" = Option<String>, Query, description = "lastActivityAt after this time"),
        ("lastEventBefore" = Option<String>, Query, description = "lastActivityAt before this time"),
        ("autoDestroyAtAfter" = Option<String>, Query), ("autoDestroyAtBefore" = Option<String>, Query),
        ("sort" = Option<String>, Query, description = "createdAt, name, cpu, memoryGib, diskGib, updatedAt or lastActivityAt"),
        ("order" = Option<String>, Query, description = "asc or desc (default desc)")),
    responses((status = 200, body = ListSandboxes), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<ListSandboxes>, ApiError> {
    let query = parse_list_query(raw.as_deref())?;
    let mut records = state
        .store
        .list_sandboxes(&caller.organization_id, &query.filter)
        .await?;
    for record in &mut records {
        state.lifecycle.activity.overlay(record);
    }
    records.retain(|record| query.matches(record));

    let mut keyed: Vec<((String, String), SandboxRecord)> = records
        .into_iter()
        .map(|record| ((sort_key(&record, query.sort), record.id.clone()), record))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if query.descending {
        keyed.reverse();
    }
    if let Some(cursor) = &query.cursor {
        let after = decode_cursor(cursor)?;
        let wanted = if query.descending {
            Ordering::Less
        } else {
            Ordering::Greater
        };
        keyed.retain(|(key, _)| key.cmp(&after) == wanted);
    }
    let has_more = keyed.len() > query.limit;
    keyed.truncate(query.limit);
    let next_cursor = if has_more {
        keyed.last().map(|((key, id), _)| encode_cursor(key, id))
    } else {
        None
    };
    let items = keyed
        .iter()
        .map(|(_, record)| dto::sandbox(&state, record))
        .collect();
    Ok(Json(ListSandboxes { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters_accept_sdk_formats() {
        for text in [
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.123Z",
            "2026-01-02T03:04:05+00:00",
            "2026-01-02T03:04:05.123456+00:00",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05.123456",
        ] {
            let at = parse_time("createdAtAfter", text).unwrap();
            assert_eq!((at.year(), at.hour(), at.second()), (2026, 3, 5), "{text}");
        }
        assert!(parse_time("createdAtAfter", "yesterday").is_err());
    }

    #[test]
    fn query_parses_every_sdk_parameter() {
        let query = parse_list_query(Some(
            "limit=5&id=AB&name=Web&states=started&states=stopped&snapshots=s1&regionIds=local\
             &minCpu=1&maxCpu=2.5&minMemoryGiB=1&maxMemoryGiB=4&minDiskGiB=1&maxDiskGiB=10\
             &isPublic=false&isRecoverable=true&createdAtAfter=2026-01-01T00:00:00Z\
             &lastEventBefore=2026-02-01T00:00:00.000Z&sort=memoryGib&order=asc&includeWarm=true",
        ))
        .unwrap();
        assert_eq!(query.limit, 5);
        assert_eq!(query.id_prefix.as_deref(), Some("ab"));
        assert_eq!(query.name_prefix.as_deref(), Some("web"));
        assert_eq!(
            query.filter.states,
            [SandboxState::Started, SandboxState::Stopped]
        );
        assert_eq!(query.cpu.max, Some(2.5));
        assert_eq!(query.recoverable, Some(true));
        assert!(query.created_at.after.is_some());
        assert!(matches!(query.sort, SortField::MemoryGib));
        assert!(!query.descending);
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        for raw in [
            "limit=0",
            "states=bogus",
            "minCpu=lots",
            "isPublic=maybe",
            "createdAtAfter=never",
            "sort=color",
            "order=up",
            "labels=notjson",
        ] {
            assert!(parse_list_query(Some(raw)).is_err(), "{raw}");
        }
    }

    #[test]
    fn numeric_sort_keys_order_numerically() {
        assert!(format!("{:020}", 9) < format!("{:020}", 10));
    }
}
