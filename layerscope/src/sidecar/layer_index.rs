//! Which image layer holds a lower file, by (kernel dev, inode): the
//! sidecar names the page cache shared by containers per layer with it.
//!
//! [`LayerIndex::refresh`] reads the overlay mounts once and walks each
//! lower dir it has not seen yet exactly once, recording the inode of every
//! regular file in it; lower dirs no longer mounted are dropped with their
//! inodes (so a reused inode number is not misnamed). A lookup is then one
//! hash probe, whatever the number of files the host caches: the cost is
//! one walk per layer over the sidecar's life, not one per unknown inode.
//! A layer is named by its chain-id when a store under one of the roots
//! knows its cache-id, else by the cache-id.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Lower files of the mounted overlays, by inode, and their layers' names.
pub struct LayerIndex {
    roots: Vec<PathBuf>,
    /// Walked lower dirs (canonical) -> their layer's name.
    layers: HashMap<PathBuf, Option<String>>,
    /// (kernel dev, inode) -> the walked lower dir that holds it.
    by_inode: HashMap<(u32, u64), PathBuf>,
}

impl LayerIndex {
    /// An empty index naming layers from the layerdbs under `roots`.
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            layers: HashMap::new(),
            by_inode: HashMap::new(),
        }
    }

    /// Walks the lower dirs mounted now that were not walked yet, and
    /// forgets those no longer mounted.
    pub fn refresh(&mut self) {
        let Ok(mounts) = ebpf_probes::mounts::overlay_mounts() else {
            return;
        };
        let mounted: HashSet<PathBuf> = mounts
            .iter()
            .flat_map(|m| m.lowerdirs.iter())
            .filter_map(|dir| dir.canonicalize().ok())
            .collect();
        let gone: Vec<PathBuf> = self
            .layers
            .keys()
            .filter(|dir| !mounted.contains(*dir))
            .cloned()
            .collect();
        if !gone.is_empty() {
            let gone: HashSet<PathBuf> = gone.into_iter().collect();
            self.by_inode.retain(|_, dir| !gone.contains(dir));
            self.layers.retain(|dir, _| !gone.contains(dir));
        }
        for dir in mounted {
            if self.layers.contains_key(&dir) {
                continue;
            }
            self.walk(&dir);
            let name = self.name_of(&dir);
            self.layers.insert(dir, name);
        }
    }

    /// The layer holding the lower file (dev, ino), as of the last refresh.
    pub fn layer_of(&self, dev: u32, ino: u64) -> Option<String> {
        let dir = self.by_inode.get(&(dev, ino))?;
        self.layers.get(dir).cloned().flatten()
    }

    fn walk(&mut self, dir: &Path) {
        for entry in walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_file())
        {
            if let Ok(meta) = entry.metadata() {
                let dev = ebpf_probes::events::kernel_dev(meta.dev());
                self.by_inode
                    .entry((dev, meta.ino()))
                    .or_insert_with(|| dir.to_path_buf());
            }
        }
    }

    /// `<home>/<cache-id>/diff` -> the chain-id whose layerdb entry names
    /// that cache-id, else the cache-id.
    fn name_of(&self, diff: &Path) -> Option<String> {
        let cache_id = diff.parent()?.file_name()?.to_str()?.to_string();
        for root in &self.roots {
            let Ok(drivers) = std::fs::read_dir(root.join("image")) else {
                continue;
            };
            for driver in drivers.flatten() {
                let Ok(entries) = std::fs::read_dir(driver.path().join("layerdb/sha256")) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let names_it = std::fs::read_to_string(entry.path().join("cache-id"))
                        .is_ok_and(|id| id.trim() == cache_id);
                    if names_it {
                        return Some(format!("sha256:{}", entry.file_name().to_string_lossy()));
                    }
                }
            }
        }
        Some(cache_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_layer_by_the_chain_id_that_holds_its_cache_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let entry = root.join("image/overlay2/layerdb/sha256/abcd");
        std::fs::create_dir_all(&entry).expect("mkdir");
        std::fs::write(entry.join("cache-id"), "cache1").expect("write");
        let index = LayerIndex::new(vec![root.to_path_buf()]);
        assert_eq!(
            index.name_of(&root.join("overlay2/cache1/diff")).as_deref(),
            Some("sha256:abcd")
        );
        assert_eq!(
            index.name_of(&root.join("overlay2/other/diff")).as_deref(),
            Some("other")
        );
    }
}
