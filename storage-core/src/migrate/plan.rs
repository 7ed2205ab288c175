//! What a migration will do, read from the disk alone: every aufs layer
//! (`aufs/layers/<id>`, parents newest first) in an order where parents
//! come first, what each one is for (an image layer of the layerdb, a
//! container's init or rw layer, or an orphan), its bytes and its aufs
//! markers, and the containers whose config names the aufs driver.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::MigrateError;
use super::config::{self, ContainerConfig};
use super::convert::{self, LayerState};
use super::journal::JournalLayer;
use super::whiteouts::{self, WhiteoutStats};
use crate::fsutil;

/// What a driver layer is used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LayerKind {
    Image {
        chain_id: String,
    },
    Init {
        container: String,
    },
    Rw {
        container: String,
    },
    /// In the aufs store but referenced by no layerdb entry.
    Orphan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerPlan {
    pub id: String,
    /// Parents newest first.
    pub parents: Vec<String>,
    #[serde(flatten)]
    pub kind: LayerKind,
    pub state: LayerState,
    /// Bytes of the layer's files (hard links once).
    pub bytes: u64,
    /// aufs markers still to convert.
    #[serde(flatten)]
    pub markers: WhiteoutStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub layers: usize,
    pub image_layers: usize,
    pub container_layers: usize,
    pub layers_to_convert: usize,
    pub containers: usize,
    pub bytes: u64,
    #[serde(flatten)]
    pub markers: WhiteoutStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub root: PathBuf,
    /// Conversion order: every layer after its parents.
    pub layers: Vec<LayerPlan>,
    /// Containers whose `config.v2.json` names `aufs`.
    pub containers: Vec<ContainerConfig>,
    pub totals: Totals,
    /// Continues an interrupted run (a journal exists).
    pub resumed: bool,
    /// Why the migration would be refused now (dockerd alive, a mount).
    pub blocker: Option<String>,
}

/// The layers of the aufs store, parents first, from `aufs/layers/`.
pub(crate) fn aufs_layers(root: &Path) -> Result<Vec<JournalLayer>, MigrateError> {
    let dir = root.join("aufs").join("layers");
    let entries = fs::read_dir(&dir).map_err(|e| MigrateError::NotAufs {
        root: root.to_path_buf(),
        why: format!("read {}: {e}", dir.display()),
    })?;
    let mut layers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(MigrateError::io("read", &dir))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if !convert::valid_id(&id) {
            return Err(MigrateError::Layer {
                id,
                why: format!("unexpected name in {}", dir.display()),
            });
        }
        let text =
            fs::read_to_string(entry.path()).map_err(MigrateError::io("read", entry.path()))?;
        let parents: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        layers.push(JournalLayer {
            id,
            parents,
            done: false,
        });
    }
    let ids: HashSet<&str> = layers.iter().map(|l| l.id.as_str()).collect();
    for layer in &layers {
        if let Some(missing) = layer.parents.iter().find(|p| !ids.contains(p.as_str())) {
            return Err(MigrateError::Layer {
                id: layer.id.clone(),
                why: format!(
                    "parent {missing} has no {} entry",
                    dir.join(missing).display()
                ),
            });
        }
    }
    // A layer lists all its ancestors, so it has more than any of them.
    layers.sort_by(|a, b| a.parents.len().cmp(&b.parents.len()).then(a.id.cmp(&b.id)));
    Ok(layers)
}

/// The image/container use of each driver id, from the layerdb of
/// `image/aufs` (or `image/overlay2` once a resumed run moved it).
fn layer_kinds(root: &Path) -> Result<BTreeMap<String, LayerKind>, MigrateError> {
    let mut kinds = BTreeMap::new();
    let image = ["aufs", "overlay2"]
        .iter()
        .map(|d| root.join("image").join(d).join("layerdb"))
        .find(|p| p.is_dir());
    let Some(layerdb) = image else {
        return Ok(kinds);
    };
    let read = |path: PathBuf| -> Result<Option<String>, MigrateError> {
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(MigrateError::io("read", &path)(e)),
        }
    };
    for (sub, is_mount) in [("sha256", false), ("mounts", true)] {
        let dir = layerdb.join(sub);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(MigrateError::io("read", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_mount {
                if let Some(id) = read(entry.path().join("mount-id"))? {
                    kinds.insert(
                        id,
                        LayerKind::Rw {
                            container: name.clone(),
                        },
                    );
                }
                if let Some(id) = read(entry.path().join("init-id"))? {
                    kinds.insert(id, LayerKind::Init { container: name });
                }
            } else if let Some(id) = read(entry.path().join("cache-id"))? {
                kinds.insert(
                    id,
                    LayerKind::Image {
                        chain_id: format!("sha256:{name}"),
                    },
                );
            }
        }
    }
    Ok(kinds)
}

/// Builds the plan for `layers` (fresh from disk or from a journal).
/// With `reverse` (overlay2 back to aufs) a layer is to convert until the
/// journal marks it done, and overlay whiteouts are not counted.
pub(crate) fn build(
    root: &Path,
    layers: &[JournalLayer],
    resumed: bool,
    blocker: Option<String>,
    reverse: bool,
) -> Result<Plan, MigrateError> {
    let kinds = layer_kinds(root)?;
    let mut planned = Vec::with_capacity(layers.len());
    let mut totals = Totals::default();
    for layer in layers {
        let state = if layer.done && !reverse {
            LayerState::Done
        } else {
            convert::state(root, &layer.id)
        };
        let to_convert = if reverse {
            !layer.done
        } else {
            state != LayerState::Done
        };
        let (bytes, markers) = match convert::data_dir(root, &layer.id) {
            Some(dir) => (
                fsutil::directory_size(&dir).map_err(MigrateError::io("size", &dir))?,
                if state == LayerState::Done || reverse {
                    WhiteoutStats::default()
                } else {
                    whiteouts::scan(&dir)?
                },
            ),
            None => (0, WhiteoutStats::default()),
        };
        let kind = kinds.get(&layer.id).cloned().unwrap_or(LayerKind::Orphan);
        totals.layers += 1;
        match kind {
            LayerKind::Image { .. } => totals.image_layers += 1,
            LayerKind::Init { .. } | LayerKind::Rw { .. } => totals.container_layers += 1,
            LayerKind::Orphan => {}
        }
        if to_convert {
            totals.layers_to_convert += 1;
            totals.bytes += bytes;
            totals.markers.add(&markers);
        }
        planned.push(LayerPlan {
            id: layer.id.clone(),
            parents: layer.parents.clone(),
            kind,
            state,
            bytes,
            markers,
        });
    }
    let containers: Vec<ContainerConfig> = config::list(root)?
        .into_iter()
        .filter(|c| c.driver == "aufs")
        .collect();
    totals.containers = containers.len();
    Ok(Plan {
        root: root.to_path_buf(),
        layers: planned,
        containers,
        totals,
        resumed,
        blocker,
    })
}
