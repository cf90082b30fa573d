//! Daytona wire types.
//!
//! The shapes here are the contract the official SDKs (Python `daytona` 0.226.1,
//! TypeScript `@daytonaio/sdk` 0.218.0) read. The Python client validates every response
//! strictly: required fields must be present and non-null, integers must be JSON integers
//! and some nullable fields must still be present. Request types accept unknown fields,
//! because newer SDK releases add them.

#![forbid(unsafe_code)]

pub mod api;
pub mod daemon;
pub mod error;
pub mod files;
pub mod git;
pub mod interpreter;
pub mod lsp;
pub mod object_storage;
pub mod orgs;
pub mod sessions;
pub mod ssh;
pub mod stream;
pub mod system;
pub mod telemetry;
pub mod toolbox;
pub mod volumes;

pub use error::{ErrorBody, ErrorSource};

/// Formats a timestamp as RFC 3339 with millisecond precision in UTC, as the Daytona API does.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).expect("a UTC timestamp always formats")
}

/// Returns the current time as RFC 3339 text.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}
