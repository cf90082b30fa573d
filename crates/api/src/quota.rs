//! Per-organization limits on concurrent sandboxes, total CPU and total memory.
//!
//! A create or start reserves its share before it starts the sandbox, so that creates in
//! flight count at once; the reservation is released if the operation fails.
// TODO: enforce the limits; until then every reservation succeeds.

use crate::error::ApiError;
use crate::state::Shared;

/// The limits' bookkeeping.
#[derive(Debug, Default)]
pub struct Quotas {}

/// A share of an organization's limits held by a create or start in flight. Dropping it
/// releases the share; [`Reservation::commit`] keeps it for the sandbox.
#[derive(Debug)]
pub struct Reservation {}

impl Reservation {
    /// Keeps the share: the sandbox is running.
    pub fn commit(self) {}
}

impl Quotas {
    /// Reserves one sandbox with `cpu` vCPUs and `memory` GiB for `organization_id`, or
    /// answers 429 in Daytona's error shape when the organization is at one of its limits.
    pub async fn reserve(
        &self,
        state: &Shared,
        organization_id: &str,
        cpu: i64,
        memory: i64,
    ) -> Result<Reservation, ApiError> {
        let _ = (state, organization_id, cpu, memory);
        Ok(Reservation {})
    }
}
