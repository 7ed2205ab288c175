//! The image config JSON (Docker's `image.Image`, the OCI image config):
//! only the fields the store, `load` and `save` need are parsed; the bytes
//! themselves are what the store keeps, since the image id is their sha256.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ImageError;
use crate::layer::chain::{chain_ids, is_digest};

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The parsed part of an image config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
}

/// `"sha256:" + hex(sha256(bytes))`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl ImageConfig {
    /// Parses and checks a config as Docker's `NewFromJSON` and
    /// `store.Create` do; `name` names it in errors (an archive entry, an
    /// image id).
    pub fn parse(bytes: &[u8], name: &str) -> Result<Self, ImageError> {
        let bad = |why: String| ImageError::Config {
            name: name.to_string(),
            why,
        };
        if bytes.is_empty() {
            return Err(bad("empty config".into()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        if value.get("rootfs").is_none_or(serde_json::Value::is_null) {
            return Err(bad("invalid image JSON, no rootfs key".into()));
        }
        let config: ImageConfig =
            serde_json::from_value(value).map_err(|e| bad(format!("invalid image config: {e}")))?;
        if config.rootfs.kind != "layers" {
            return Err(bad(format!(
                "rootfs type {:?} is not \"layers\"",
                config.rootfs.kind
            )));
        }
        if let Some(bad_id) = config.rootfs.diff_ids.iter().find(|d| !is_digest(d)) {
            return Err(bad(format!("diff-id {bad_id:?} is not a sha256 digest")));
        }
        if !config.os.is_empty() && config.os != "linux" {
            return Err(bad(format!("cannot use a {} image on linux", config.os)));
        }
        let non_empty = config
            .history
            .iter()
            .filter(|h| {
                !h.get("empty_layer")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false)
            })
            .count();
        if non_empty > config.rootfs.diff_ids.len() {
            return Err(bad("too many non-empty layers in history".into()));
        }
        Ok(config)
    }

    /// The chain-ids of the image's layers, base first.
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.rootfs.diff_ids)
    }

    /// The chain-id of the top layer; `None` for an image without layers.
    pub fn top_chain_id(&self) -> Option<String> {
        self.chain_ids().pop()
    }

    /// Docker's `checkValidParent`: `parent`'s history is this image's
    /// history minus its last entry.
    pub fn has_valid_parent(&self, parent: &ImageConfig) -> bool {
        if self.history.is_empty() && parent.history.is_empty() {
            return true;
        }
        if self.history.len() != parent.history.len() + 1 {
            return false;
        }
        parent
            .history
            .iter()
            .zip(&self.history)
            .all(|(p, c)| p == c)
    }
}
