//! `GET /config` and `GET /sandbox/{id}/telemetry/metrics`: what the SDKs' `get_metrics`
//! reads. The configuration names no analytics API, so the SDKs ask this server for the
//! samples it records (see [`crate::telemetry`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use daytona_wire::ErrorBody;
use daytona_wire::telemetry::{DaytonaConfiguration, MetricsResponse, OidcConfig, metric};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::organizations::owned_sandbox;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::lifecycle::MAX_AUTO_ARCHIVE_MINUTES;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(config))
        .routes(routes!(sandbox_metrics))
}

/// `GET /config`: the server's configuration in Daytona's shape. Needs no API key.
#[utoipa::path(get, path = "/config", tag = "config", security(()),
    responses((status = 200, body = DaytonaConfiguration)))]
pub async fn config(State(state): State<AppState>) -> Json<DaytonaConfiguration> {
    Json(DaytonaConfiguration {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        oidc: OidcConfig {
            issuer: String::new(),
            client_id: String::new(),
            audience: String::new(),
            provider: "none".to_owned(),
        },
        linked_accounts_enabled: false,
        announcements: BTreeMap::new(),
        proxy_template_url: crate::preview::template_url(&state.config.preview),
        proxy_toolbox_url: state.toolbox_proxy_url(),
        default_snapshot: daytona_images::DEFAULT_SNAPSHOT.to_owned(),
        dashboard_url: state.config.public_url.clone(),
        max_auto_archive_interval: MAX_AUTO_ARCHIVE_MINUTES,
        maintanance_mode: false,
        environment: "self-hosted".to_owned(),
        analytics_api_url: None,
    })
}

/// Query of `GET /sandbox/{id}/telemetry/metrics`.
struct MetricsQuery {
    from: OffsetDateTime,
    to: OffsetDateTime,
    names: Vec<String>,
}

/// Parses the query by hand: `metricNames` may repeat (the Python client) or hold a
/// comma-separated list.
fn parse_query(query: Option<&str>) -> Result<MetricsQuery, ApiError> {
    let mut from = None;
    let mut to = None;
    let mut names = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "from" => from = Some(parse_time("from", &value)?),
            "to" => to = Some(parse_time("to", &value)?),
            "metricNames" => names.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(ApiError::bad_request(
            "missing from or to: give both as ISO 8601 times, such as from=2026-01-01T00:00:00Z",
        ));
    };
    if from > to {
        return Err(ApiError::bad_request(format!(
            "invalid time range: from ({}) is after to ({})",
            daytona_wire::rfc3339(from),
            daytona_wire::rfc3339(to)
        )));
    }
    Ok(MetricsQuery { from, to, names })
}

/// Parses an ISO 8601 time: RFC 3339, an offset without a colon (`+0000`, which Python's
/// `strftime("%z")` writes), or no offset at all, which is taken as UTC.
fn parse_time(name: &str, text: &str) -> Result<OffsetDateTime, ApiError> {
    let text = text.trim();
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let bytes = text.as_bytes();
    if bytes.len() > 5 && matches!(bytes[bytes.len() - 5], b'+' | b'-') {
        let (head, offset) = text.split_at(text.len() - 2);
        if let Ok(at) = OffsetDateTime::parse(&format!("{head}:{offset}"), &Rfc3339) {
            return Ok(at);
        }
    }
    let naive = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(text, &naive)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "invalid {name} {text:?}: use an ISO 8601 time such as 2026-01-01T00:00:00Z"
            ))
        })
}

/// `GET /sandbox/{id}/telemetry/metrics?from&to&metricNames`: the CPU and memory samples the
/// server recorded for a sandbox while it was started, one series per metric. Without
/// `metricNames`, every recorded metric; unknown names yield no series.
#[utoipa::path(get, path = "/sandbox/{id}/telemetry/metrics", tag = "sandbox",
    params(("id" = String, Path, description = "Sandbox id or name"),
        ("from" = String, Query, description = "Start of the range, ISO 8601"),
        ("to" = String, Query, description = "End of the range, ISO 8601"),
        ("metricNames" = Option<Vec<String>>, Query, description = "Metrics to return, repeated or comma-separated")),
    responses((status = 200, body = MetricsResponse),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn sandbox_metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<MetricsResponse>, ApiError> {
    let query = parse_query(query.as_deref())?;
    let sandbox = owned_sandbox(&state, &caller, &id_or_name).await?;
    let names: Vec<&str> = if query.names.is_empty() {
        metric::ALL.to_vec()
    } else {
        query.names.iter().map(String::as_str).collect()
    };
    let series = state
        .telemetry
        .series(&sandbox.id, query.from, query.to, &names);
    Ok(Json(MetricsResponse { series }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_the_forms_clients_send() {
        let expected = OffsetDateTime::parse("2026-03-01T10:20:30.5Z", &Rfc3339).unwrap();
        for text in [
            "2026-03-01T10:20:30.5Z",
            "2026-03-01T10:20:30.500+00:00",
            "2026-03-01T10:20:30.500000+0000",
            "2026-03-01T10:20:30.5",
        ] {
            assert_eq!(parse_time("from", text).unwrap(), expected, "{text}");
        }
        assert!(parse_time("from", "yesterday").is_err());
    }

    #[test]
    fn metric_names_repeat_or_split() {
        let query = parse_query(Some(
            "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&metricNames=a&metricNames=b%2Cc",
        ))
        .unwrap();
        assert_eq!(query.names, ["a", "b", "c"]);
        assert!(parse_query(Some("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z")).is_err());
        assert!(parse_query(Some("to=2026-01-01T00:00:00Z")).is_err());
    }
}
