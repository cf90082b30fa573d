//! Per-organization limits on concurrent sandboxes, total CPU and total memory.
//!
//! What counts toward the limits: the organization's sandboxes that run (`started` and
//! `stopping`, read from the store) plus the creates and starts in progress, each of which
//! keeps a [`Reservation`] from before it touches the runner until the sandbox is `started`
//! (then the store counts it) or the operation failed. A sandbox that is stopped, in `error`,
//! `destroying` or deleted counts no more from the moment its state changes.
//!
//! [`Quotas::reserve`] reads the store and adds the reservation under one lock, so concurrent
//! creates cannot together pass a limit. Releases need no lock: they only make room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderName, HeaderValue, StatusCode};

use crate::config::OrganizationLimits;
use crate::error::ApiError;
use crate::state::Shared;
use crate::store::{LimitOverrides, STATES_HOLDING_RESOURCES, StoreError, Usage};

/// Seconds that `Retry-After` asks a client to wait before it retries a create rejected at a limit. Room is
/// made by stopping or deleting a sandbox, so this is a polling hint, not a promise.
const RETRY_AFTER_SECONDS: u32 = 5;

type InFlight = Arc<Mutex<HashMap<String, Usage>>>;

/// The limits' bookkeeping.
#[derive(Debug, Default)]
pub struct Quotas {
    /// Held while a reservation is checked and recorded.
    check: tokio::sync::Mutex<()>,
    /// Shares of the creates and starts in progress, by organization.
    in_flight: InFlight,
}

/// A share of an organization's limits held by a create or start in progress. Dropping it,
/// or committing it once the sandbox is `started` and the store counts it, releases it.
#[derive(Debug)]
pub struct Reservation {
    in_flight: InFlight,
    organization_id: String,
    share: Usage,
}

impl Reservation {
    /// Ends the reservation of a sandbox that is now `started`, because from here on the
    /// store's record of the sandbox counts its share.
    pub fn commit(self) {}
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().expect("quota lock");
        if let Some(usage) = in_flight.get_mut(&self.organization_id) {
            usage.sandboxes -= self.share.sandboxes;
            usage.cpu -= self.share.cpu;
            usage.memory -= self.share.memory;
            if usage.sandboxes <= 0 {
                in_flight.remove(&self.organization_id);
            }
        }
    }
}

/// One limit and how much of it is in use.
struct LimitCheck {
    /// Name in the `X-RateLimit-*-{name}` headers.
    name: &'static str,
    limit: i64,
    used: i64,
    requested: i64,
    unit: &'static str,
}

impl Quotas {
    /// Reserves one sandbox with `cpu` vCPUs and `memory` GiB for `organization_id`, or
    /// returns 429 in Daytona's error shape, with `Retry-After` and
    /// `X-RateLimit-{Limit,Remaining}-{name}` headers, when the organization is at a limit.
    pub async fn reserve(
        &self,
        state: &Shared,
        organization_id: &str,
        cpu: i64,
        memory: i64,
    ) -> Result<Reservation, ApiError> {
        let limits = effective_limits(state, organization_id).await?;
        let _check = self.check.lock().await;
        let running = state
            .store
            .organization_usage(organization_id, &STATES_HOLDING_RESOURCES)
            .await?;
        let pending = self.pending(organization_id);

        let checks = [
            LimitCheck {
                name: "sandboxes",
                limit: limits.max_sandboxes,
                used: running.sandboxes + pending.sandboxes,
                requested: 1,
                unit: "sandboxes",
            },
            LimitCheck {
                name: "cpu",
                limit: limits.total_cpu,
                used: running.cpu + pending.cpu,
                requested: cpu,
                unit: "vCPUs",
            },
            LimitCheck {
                name: "memory",
                limit: limits.total_memory,
                used: running.memory + pending.memory,
                requested: memory,
                unit: "GiB of memory",
            },
        ];
        if let Some(exceeded) = checks
            .iter()
            .find(|check| check.limit > 0 && check.used + check.requested > check.limit)
        {
            tracing::info!(
                organization_id,
                limit = exceeded.name,
                used = exceeded.used,
                max = exceeded.limit,
                "refused a sandbox at an organization limit"
            );
            return Err(limit_error(organization_id, exceeded, &checks));
        }

        let share = Usage {
            sandboxes: 1,
            cpu,
            memory,
        };
        let mut in_flight = self.in_flight.lock().expect("quota lock");
        let usage = in_flight.entry(organization_id.to_owned()).or_default();
        usage.sandboxes += share.sandboxes;
        usage.cpu += share.cpu;
        usage.memory += share.memory;
        Ok(Reservation {
            in_flight: self.in_flight.clone(),
            organization_id: organization_id.to_owned(),
            share,
        })
    }

    /// Returns the shares that creates and starts in progress have reserved for an organization.
    pub fn pending(&self, organization_id: &str) -> Usage {
        self.in_flight
            .lock()
            .expect("quota lock")
            .get(organization_id)
            .copied()
            .unwrap_or_default()
    }
}

/// Returns the limits in force for an organization: its own where it has them, else the server's.
pub async fn effective_limits(
    state: &Shared,
    organization_id: &str,
) -> Result<OrganizationLimits, StoreError> {
    let own = state.store.organization_limits(organization_id).await?;
    Ok(merge_limits(&state.config.organization_limits, &own))
}

/// Combines the server's default limits with an organization's own.
pub fn merge_limits(defaults: &OrganizationLimits, own: &LimitOverrides) -> OrganizationLimits {
    OrganizationLimits {
        max_sandboxes: own.max_sandboxes.unwrap_or(defaults.max_sandboxes),
        total_cpu: own.total_cpu.unwrap_or(defaults.total_cpu),
        total_memory: own.total_memory.unwrap_or(defaults.total_memory),
    }
}

/// Builds the 429 for a request that `exceeded` one limit. Its headers report every limit.
fn limit_error(organization_id: &str, exceeded: &LimitCheck, checks: &[LimitCheck]) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        format!(
            "organization {organization_id} is at its limit of {} {}: {} in use, and this sandbox needs {}; stop or delete a sandbox, or ask the administrator to raise the limit",
            exceeded.limit, exceeded.unit, exceeded.used, exceeded.requested
        ),
    )
    .with_header(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(RETRY_AFTER_SECONDS),
    );
    for check in checks.iter().filter(|check| check.limit > 0) {
        let remaining = (check.limit - check.used).max(0);
        for (kind, value) in [("limit", check.limit), ("remaining", remaining)] {
            let name = HeaderName::try_from(format!("x-ratelimit-{kind}-{}", check.name))
                .expect("limit names are valid header names");
            error = error.with_header(name, HeaderValue::from(value));
        }
    }
    error
}
