//! SSH access tokens: creation, expiry and the check the SSH gateway makes at login and while a
//! session runs.
//!
//! A token is the SSH user name, so it is made of letters and digits only. It is random (43
//! alphanumeric characters, about 256 bits), the store keeps only its SHA-256, and it is valid
//! for one sandbox until it expires or is revoked, or the sandbox is deleted.

use rand::Rng;
use rand::distr::Alphanumeric;
use time::OffsetDateTime;

use crate::auth::hash_key;
use crate::store::{SshAccessRecord, Store, StoreError};

/// Length of a token, in characters.
pub const TOKEN_LENGTH: usize = 43;

/// Lifetime of a token when the request sets none, as in Daytona.
pub const DEFAULT_EXPIRES_IN_MINUTES: i64 = 60;

/// Maximum lifetime of a token: 30 days.
// NOTE: this bound is this server's choice, which keeps forgotten tokens from living forever.
pub const MAX_EXPIRES_IN_MINUTES: i64 = 30 * 24 * 60;

/// Generates a new token.
pub fn generate_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(TOKEN_LENGTH)
        .map(char::from)
        .collect()
}

/// Parses the `expiresInMinutes` query parameter: the default when absent, else a whole
/// number of minutes from 1 to [`MAX_EXPIRES_IN_MINUTES`].
pub fn parse_expires_in_minutes(value: Option<&str>) -> Result<i64, String> {
    let Some(value) = value.map(str::trim).filter(|value| !value.is_empty()) else {
        return Ok(DEFAULT_EXPIRES_IN_MINUTES);
    };
    let invalid = || {
        format!(
            "invalid expiresInMinutes {value:?}: use a whole number of minutes from 1 to {MAX_EXPIRES_IN_MINUTES}"
        )
    };
    let minutes: i64 = value.parse().map_err(|_| invalid())?;
    if !(1..=MAX_EXPIRES_IN_MINUTES).contains(&minutes) {
        return Err(invalid());
    }
    Ok(minutes)
}

/// Builds the record of a new token for a sandbox, created at `now`.
pub fn new_record(
    sandbox_id: &str,
    organization_id: &str,
    token: &str,
    expires_in_minutes: i64,
    now: OffsetDateTime,
) -> SshAccessRecord {
    let created_at = daytona_wire::rfc3339(now);
    SshAccessRecord {
        id: uuid::Uuid::new_v4().to_string(),
        sandbox_id: sandbox_id.to_owned(),
        organization_id: organization_id.to_owned(),
        token_hash: hash_key(token),
        expires_at: daytona_wire::rfc3339(now + time::Duration::minutes(expires_in_minutes)),
        updated_at: created_at.clone(),
        created_at,
        revoked_at: None,
    }
}

/// Returns whether a stored token is usable at `now`: not revoked and not expired.
pub fn is_usable(record: &SshAccessRecord, now: OffsetDateTime) -> bool {
    if record.revoked_at.is_some() {
        return false;
    }
    // Stored timestamps are RFC 3339 in UTC with a fixed width, so they compare as text.
    record.expires_at > daytona_wire::rfc3339(now)
}

/// Returns whether `value` has the length and characters of a token.
pub fn is_token_shaped(value: &str) -> bool {
    value.len() == TOKEN_LENGTH && value.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// Finds the usable token `token`; `None` when it is unknown, revoked or expired.
pub async fn find_usable(
    store: &Store,
    token: &str,
) -> Result<Option<SshAccessRecord>, StoreError> {
    if !is_token_shaped(token) {
        return Ok(None);
    }
    let record = store.ssh_access_by_hash(&hash_key(token)).await?;
    Ok(record.filter(|record| is_usable(record, OffsetDateTime::now_utc())))
}

/// Formats the `sshCommand` of a token: `ssh -p <port> <token>@<host>`.
pub fn ssh_command(host: &str, port: u16, token: &str) -> String {
    format!("ssh -p {port} {token}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_alphanumeric_and_distinct() {
        let first = generate_token();
        let second = generate_token();
        assert_eq!(first.len(), TOKEN_LENGTH);
        assert!(first.bytes().all(|byte| byte.is_ascii_alphanumeric()));
        assert_ne!(first, second);
        assert!(is_token_shaped(&first));
        assert!(!is_token_shaped("short"));
        assert!(!is_token_shaped(&format!("{}-", &first[1..])));
    }

    #[test]
    fn expires_in_minutes_defaults_to_an_hour() {
        assert_eq!(parse_expires_in_minutes(None), Ok(60));
        assert_eq!(parse_expires_in_minutes(Some("")), Ok(60));
    }

    #[test]
    fn expires_in_minutes_bounds() {
        assert_eq!(parse_expires_in_minutes(Some("1")), Ok(1));
        assert_eq!(parse_expires_in_minutes(Some("43200")), Ok(43200));
        for invalid in ["0", "-5", "43201", "1.5", "ten", "99999999999999999999"] {
            let error = parse_expires_in_minutes(Some(invalid)).unwrap_err();
            assert!(error.contains("expiresInMinutes"), "{invalid}: {error}");
        }
    }

    #[test]
    fn record_stores_the_hash_and_expiry() {
        let now = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        let record = new_record("sandbox", "org", "secret", 90, now);
        assert_eq!(record.token_hash, hash_key("secret"));
        assert_ne!(record.token_hash, "secret");
        assert_eq!(record.created_at, "2026-01-02T03:04:05.000Z");
        assert_eq!(record.expires_at, "2026-01-02T04:34:05.000Z");
    }

    #[test]
    fn usable_until_expiry_or_revocation() {
        let now = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        let mut record = new_record("sandbox", "org", "secret", 1, now);
        assert!(is_usable(&record, now));
        assert!(is_usable(&record, now + time::Duration::seconds(59)));
        assert!(!is_usable(&record, now + time::Duration::seconds(60)));
        record.revoked_at = Some(daytona_wire::rfc3339(now));
        assert!(!is_usable(&record, now));
    }

    #[test]
    fn ssh_command_names_port_token_and_host() {
        assert_eq!(
            ssh_command("example.test", 2222, "abc"),
            "ssh -p 2222 abc@example.test"
        );
    }
}
