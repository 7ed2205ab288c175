//! `<root>/volumes/metadata.json`: layerscope's stand-in for Docker's BoltDB
//! `metadata.db` (bucket `volumes`, one `volumeMetadata` per name: `Name`,
//! `Driver`, `Labels`, `Options`), plus what dockerd keeps in memory and
//! rebuilds at start: which containers reference each volume
//! (`References`) and which containers hold it mounted (`Active`, the local
//! driver's `activeMount` count). Written atomically under the store lock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil;

use super::{VolumeError, io_err};

/// moby's `volumeMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMetadata {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Labels", default)]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "Options", default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(rename = "Volumes", default)]
    pub volumes: BTreeMap<String, VolumeMetadata>,
    /// Volume name -> ids of the containers whose mount points name it.
    #[serde(rename = "References", default)]
    pub references: BTreeMap<String, BTreeSet<String>>,
    /// Volume name -> ids of the containers that have it mounted.
    #[serde(rename = "Active", default)]
    pub active: BTreeMap<String, BTreeSet<String>>,
}

impl Metadata {
    pub fn load(path: &Path) -> Result<Self, VolumeError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| VolumeError::Corrupt {
                path: path.to_path_buf(),
                what: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_err("read", path)(e)),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), VolumeError> {
        let json = serde_json::to_vec_pretty(self).expect("volume metadata serializes");
        fsutil::write_atomic(path, &json, 0o600).map_err(io_err("write", path))
    }

    pub fn refs(&self, name: &str) -> Vec<String> {
        self.references
            .get(name)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn add_ref(&mut self, name: &str, container: &str) {
        self.references
            .entry(name.to_string())
            .or_default()
            .insert(container.to_string());
    }

    pub fn remove_ref(&mut self, name: &str, container: &str) {
        if let Some(set) = self.references.get_mut(name) {
            set.remove(container);
            if set.is_empty() {
                self.references.remove(name);
            }
        }
    }

    /// Forgets a volume entirely.
    pub fn forget(&mut self, name: &str) {
        self.volumes.remove(name);
        self.references.remove(name);
        self.active.remove(name);
    }
}
