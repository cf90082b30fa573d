//! Credentials of the embedded service: the server's root credentials, and temporary
//! credentials per organization that may only touch `<organizationId>/` in the builds bucket.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rand::distr::Alphanumeric;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{ListObjectsInput, ListObjectsV2Input};
use s3s::{S3Request, S3Result, s3_error};
use serde::{Deserialize, Serialize};

use crate::tls::write_atomic;
use crate::{BUILDS_BUCKET, Error};

/// How long temporary credentials from [`crate::ObjectStorage::push_access`] stay valid.
pub const TEMPORARY_CREDENTIALS_LIFETIME: Duration = Duration::from_secs(3600);

/// Operations temporary credentials may run on an object under their organization's prefix.
const OBJECT_OPERATIONS: [&str; 9] = [
    "HeadObject",
    "GetObject",
    "PutObject",
    "DeleteObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
];

/// Operations temporary credentials may run on the builds bucket itself; listings are
/// further limited to the organization's prefix.
const BUCKET_OPERATIONS: [&str; 3] = ["HeadBucket", "ListObjects", "ListObjectsV2"];

/// Credentials for uploading build contexts, as `GET /object-storage/push-access` returns
/// them.
#[derive(Debug, Clone)]
pub struct PushAccess {
    pub access_key: String,
    pub secret: String,
    pub session_token: String,
    /// The configured endpoint for an external S3 service; `None` for the embedded one, whose
    /// URL depends on the host the client reached the API at.
    pub storage_url: Option<String>,
    pub organization_id: String,
    pub bucket: String,
    pub region: String,
}

/// Root credentials as stored on disk.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RootCredentials {
    access_key: String,
    secret_key: String,
}

struct Temporary {
    secret: String,
    session_token: String,
    organization_id: String,
    expires_at: SystemTime,
}

/// Every credential the embedded service accepts; cheap to clone.
#[derive(Clone)]
pub(crate) struct Keyring {
    root_access_key: Arc<str>,
    root_secret: Arc<str>,
    temporary: Arc<Mutex<HashMap<String, Temporary>>>,
}

fn random_string(length: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

impl Keyring {
    /// Reads the root credentials from `path`, or generates them and stores them there with
    /// mode 0600.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let root = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<RootCredentials>(&bytes).map_err(|source| {
                Error::CredentialsFile {
                    path: path.to_owned(),
                    source,
                }
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let root = RootCredentials {
                    access_key: format!("DTNROOT{}", random_string(13).to_uppercase()),
                    secret_key: random_string(40),
                };
                let json = serde_json::to_vec_pretty(&root).expect("credentials serialize");
                write_atomic(path, &json, 0o600)?;
                root
            }
            Err(error) => return Err(Error::io("read", path)(error)),
        };
        Ok(Self {
            root_access_key: root.access_key.into(),
            root_secret: root.secret_key.into(),
            temporary: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub(crate) fn root(&self) -> (&str, &str) {
        (&self.root_access_key, &self.root_secret)
    }

    /// Issues credentials for `organization_id` that expire after `lifetime`.
    pub(crate) fn issue(
        &self,
        organization_id: &str,
        lifetime: Duration,
    ) -> (String, String, String) {
        let access_key = format!("DTN{}", random_string(17).to_uppercase());
        let secret = random_string(40);
        let session_token = random_string(64);
        let now = SystemTime::now();
        let mut temporary = self.temporary.lock().expect("keyring lock");
        // Expired entries stay an hour, so that requests with them fail with "expired".
        temporary.retain(|_, entry| entry.expires_at + Duration::from_secs(3600) > now);
        temporary.insert(
            access_key.clone(),
            Temporary {
                secret: secret.clone(),
                session_token: session_token.clone(),
                organization_id: organization_id.to_owned(),
                expires_at: now + lifetime,
            },
        );
        (access_key, secret, session_token)
    }

    /// Returns the organization of temporary credentials that are valid now and match
    /// `session_token`.
    fn organization_of(&self, access_key: &str, session_token: Option<&str>) -> S3Result<String> {
        let temporary = self.temporary.lock().expect("keyring lock");
        let Some(entry) = temporary.get(access_key) else {
            return Err(s3_error!(InvalidAccessKeyId, "the access key is not known"));
        };
        if entry.expires_at <= SystemTime::now() {
            return Err(s3_error!(
                AccessDenied,
                "the temporary credentials expired; request new ones"
            ));
        }
        if session_token != Some(entry.session_token.as_str()) {
            return Err(s3_error!(
                AccessDenied,
                "the session token is missing or does not match the access key"
            ));
        }
        Ok(entry.organization_id.clone())
    }
}

#[async_trait::async_trait]
impl S3Auth for Keyring {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == &*self.root_access_key {
            return Ok(SecretKey::from(&*self.root_secret));
        }
        let temporary = self.temporary.lock().expect("keyring lock");
        match temporary.get(access_key) {
            Some(entry) => Ok(SecretKey::from(entry.secret.as_str())),
            None => Err(s3_error!(InvalidAccessKeyId, "the access key is not known")),
        }
    }
}

/// Session token of a request: the `x-amz-security-token` header, or the query parameter of
/// the same name in a presigned URL.
fn session_token<'a>(cx: &'a S3AccessContext<'_>) -> Option<&'a str> {
    if let Some(value) = cx.headers().get("x-amz-security-token") {
        return value.to_str().ok();
    }
    cx.uri().query()?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.eq_ignore_ascii_case("X-Amz-Security-Token")
            .then_some(value)
    })
}

/// Organization of a request made with temporary credentials, which [`S3Access::check`]
/// leaves in the request's extensions for the per-operation checks.
#[derive(Clone)]
struct CallerOrganization(String);

/// Lets a listing by temporary credentials through only below their organization's prefix.
fn check_prefix(extensions: &http::Extensions, prefix: Option<&str>) -> S3Result<()> {
    let Some(CallerOrganization(organization_id)) = extensions.get::<CallerOrganization>() else {
        return Ok(());
    };
    match prefix {
        Some(prefix) if prefix.starts_with(&format!("{organization_id}/")) => Ok(()),
        _ => Err(s3_error!(
            AccessDenied,
            "list with a prefix of your organization's id and a slash"
        )),
    }
}

impl Keyring {
    /// Returns the organization of a request's temporary credentials, or `None` for the
    /// root credentials.
    fn caller_organization(
        &self,
        access_key: &str,
        session_token: Option<&str>,
    ) -> S3Result<Option<String>> {
        if access_key == &*self.root_access_key {
            return Ok(None);
        }
        self.organization_of(access_key, session_token).map(Some)
    }
}

#[async_trait::async_trait]
impl S3Access for Keyring {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "requests must be signed"));
        };
        let Some(organization_id) =
            self.caller_organization(&credentials.access_key, session_token(cx))?
        else {
            return Ok(());
        };
        let operation = cx.s3_op().name();
        let allowed = match cx.s3_path() {
            s3s::path::S3Path::Object { bucket, key } => {
                bucket.as_ref() == BUILDS_BUCKET
                    && key.starts_with(&format!("{organization_id}/"))
                    && OBJECT_OPERATIONS.contains(&operation)
            }
            s3s::path::S3Path::Bucket { bucket } => {
                bucket.as_ref() == BUILDS_BUCKET && BUCKET_OPERATIONS.contains(&operation)
            }
            s3s::path::S3Path::Root => false,
        };
        if !allowed {
            tracing::debug!(organization_id, operation, "object storage request denied");
            return Err(s3_error!(
                AccessDenied,
                "temporary credentials reach only your organization's prefix in the builds bucket"
            ));
        }
        cx.extensions_mut()
            .insert(CallerOrganization(organization_id));
        Ok(())
    }

    async fn list_objects(&self, req: &mut S3Request<ListObjectsInput>) -> S3Result<()> {
        check_prefix(&req.extensions, req.input.prefix.as_deref())
    }

    async fn list_objects_v2(&self, req: &mut S3Request<ListObjectsV2Input>) -> S3Result<()> {
        check_prefix(&req.extensions, req.input.prefix.as_deref())
    }
}
