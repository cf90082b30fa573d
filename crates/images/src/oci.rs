//! The parts of the OCI image-spec JSON documents that the store reads and writes.
//!
//! Unknown fields are kept in `extra` maps where the store rewrites a document (`index.json`),
//! so that annotations or fields written by other tools survive a rewrite.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub(crate) const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Annotation that names an image in `index.json` (OCI image layout).
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation with the creation time of a manifest.
pub(crate) const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// Annotation with the digest of the recipe an image was built from.
pub(crate) const ANNOTATION_RECIPE: &str = "io.daytona.image.recipe.digest";

/// Content of the `oci-layout` file.
pub(crate) const LAYOUT_FILE_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Returns `sha256:<hex>` for `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Returns the hex part of a `sha256:<64 hex digits>` digest, or `None` when it has another form.
///
/// Digests become file names, so anything but lowercase hex is rejected.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then_some(hex)
}

/// A content descriptor: media type, digest and size of a blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Descriptor {
    pub(crate) fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).and_then(Value::as_str)
    }
}

/// `index.json` of an image layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ImageIndex {
    pub(crate) fn empty() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.to_owned()),
            manifests: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Returns the manifest descriptor named `name`; the last one wins if a tool wrote duplicates.
    pub(crate) fn find(&self, name: &str) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .rev()
            .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(name))
    }

    /// Points `name` at `descriptor`, dropping every other entry with that name.
    pub(crate) fn set(&mut self, name: &str, descriptor: Descriptor) {
        self.manifests
            .retain(|d| d.annotation(ANNOTATION_REF_NAME) != Some(name));
        self.manifests.push(descriptor);
    }
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
}

/// An image configuration: the runtime defaults and the layer digests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default)]
    pub config: RuntimeConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// The `config` object of an image configuration (field names as Docker wrote them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RuntimeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map<String, Value>>,
}

/// `rootfs` of an image configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// One `history` entry of an image configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_accepts_only_lowercase_hex() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(sha256_hex(&good), Some("a".repeat(64).as_str()));
        assert_eq!(sha256_hex(&format!("sha256:{}", "A".repeat(64))), None);
        assert_eq!(sha256_hex(&format!("sha512:{}", "a".repeat(64))), None);
        assert_eq!(sha256_hex("sha256:../../etc"), None);
    }

    #[test]
    fn index_set_replaces_entry_with_same_name() {
        let mut index = ImageIndex::empty();
        let named = |name: &str, digest: &str| {
            let mut annotations = Map::new();
            annotations.insert(ANNOTATION_REF_NAME.into(), name.into());
            Descriptor {
                media_type: MEDIA_TYPE_MANIFEST.into(),
                digest: digest.into(),
                size: 1,
                annotations,
                extra: Map::new(),
            }
        };
        index.set("a", named("a", "sha256:1"));
        index.set("b", named("b", "sha256:2"));
        index.set("a", named("a", "sha256:3"));
        assert_eq!(index.manifests.len(), 2);
        assert_eq!(index.find("a").map(|d| d.digest.as_str()), Some("sha256:3"));
    }
}
