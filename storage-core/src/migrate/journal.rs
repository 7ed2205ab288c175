//! The migration journal, `<root>/.layerscope-migrate.json`: the plan fixed
//! at the start (every layer in conversion order with its parents), which
//! layers are done, and the phase. Written atomically after every step, so
//! a rerun after a crash continues where the last run stopped.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MigrateError;
use crate::fsutil;

/// The journal's file name under the data root.
pub const JOURNAL_FILE: &str = ".layerscope-migrate.json";
const VERSION: u32 = 1;

/// Where a migration stands; phases run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Converting layers one by one.
    Layers,
    /// Renaming `image/aufs` to `image/overlay2`.
    Layerdb,
    /// Rewriting containers' `config.v2.json`.
    Containers,
    /// Removing the emptied aufs directories.
    Cleanup,
    /// Finished.
    Complete,
}

/// One layer of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalLayer {
    pub id: String,
    /// Parents newest first, as `aufs/layers/<id>` lists them.
    pub parents: Vec<String>,
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    /// `aufs-to-overlay2`.
    pub direction: String,
    pub phase: Phase,
    pub layers: Vec<JournalLayer>,
}

impl Journal {
    pub fn new(direction: &str, layers: Vec<JournalLayer>) -> Self {
        Self {
            version: VERSION,
            direction: direction.to_string(),
            phase: Phase::Layers,
            layers,
        }
    }

    pub fn path(root: &Path) -> PathBuf {
        root.join(JOURNAL_FILE)
    }

    /// The journal of `root`, `None` when no migration was started there.
    pub fn load(root: &Path) -> Result<Option<Self>, MigrateError> {
        let path = Self::path(root);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(MigrateError::io("read", &path)(e)),
        };
        let journal: Journal =
            serde_json::from_slice(&bytes).map_err(|e| MigrateError::Journal {
                path: path.clone(),
                why: e.to_string(),
            })?;
        if journal.version != VERSION {
            return Err(MigrateError::Journal {
                path,
                why: format!("version {} (this build reads {VERSION})", journal.version),
            });
        }
        Ok(Some(journal))
    }

    /// Writes the journal atomically (temp name, fsync, rename).
    pub fn save(&self, root: &Path) -> Result<(), MigrateError> {
        let path = Self::path(root);
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| MigrateError::Journal {
            path: path.clone(),
            why: e.to_string(),
        })?;
        text.push(b'\n');
        fsutil::write_atomic(&path, &text, 0o600).map_err(MigrateError::io("write", &path))?;
        super::convert::sync_dir(root)
    }

    pub fn done_count(&self) -> usize {
        self.layers.iter().filter(|l| l.done).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Journal::load(dir.path()).unwrap(), None);
        let mut journal = Journal::new(
            "aufs-to-overlay2",
            vec![JournalLayer {
                id: "a".into(),
                parents: vec![],
                done: false,
            }],
        );
        journal.phase = Phase::Containers;
        journal.save(dir.path()).unwrap();
        assert_eq!(Journal::load(dir.path()).unwrap(), Some(journal));
        fs::write(
            Journal::path(dir.path()),
            r#"{"version":9,"direction":"x","phase":"layers","layers":[]}"#,
        )
        .unwrap();
        assert!(
            Journal::load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
    }
}
