//! Who owns an overlay event: [`Attribution`] maps an overlay's upper dir to
//! its layer (the cache-id, i.e. the `<root>/<driver>/<cache-id>/diff` dir
//! name) and the layer to its container through the layerdb
//! (`<root>/image/<driver>/layerdb/mounts/<container>/mount-id`, the same
//! layout in layerscope's store and in a real Docker root), and a cgroup id
//! to a container (a container id in the cgroup path). Anything else is
//! [`HOST`]. The sidecar reuses it.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// The container label of everything not in a known container.
pub const HOST: &str = "host";

/// The owner of an overlay mount or a cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    /// Container id, or [`HOST`].
    pub container: String,
    /// Storage driver dir name (`overlay2`...), or `overlay` when unknown.
    pub driver: String,
    /// Layer cache-id (the upper dir's parent's name), when known.
    pub layer: Option<String>,
}

impl Owner {
    /// The host owner.
    pub fn host() -> Self {
        Self {
            container: HOST.into(),
            driver: "overlay".into(),
            layer: None,
        }
    }
}

/// Resolves owners from one or more data roots (layerscope's store root, a
/// Docker data root).
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    roots: Vec<PathBuf>,
    cgroup_roots: Vec<PathBuf>,
}

impl Attribution {
    /// Looks up containers in `roots` (each holding `image/<driver>/layerdb`).
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            cgroup_roots: vec![
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/sys/fs/cgroup"),
            ],
        }
    }

    /// The data roots searched.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Owner of the overlay whose upper dir is `upperdir`.
    pub fn for_upper(&self, upperdir: Option<&Path>) -> Owner {
        let Some(upper) = upperdir else {
            return Owner::host();
        };
        // <root>/<driver>/<cache-id>/diff; any other upper is the host's.
        if upper.file_name().is_none_or(|n| n != "diff") {
            return Owner::host();
        }
        let Some(layer_dir) = upper.parent() else {
            return Owner::host();
        };
        let cache_id = layer_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let driver_dir = layer_dir.parent();
        let driver = driver_dir.and_then(|d| d.file_name()).map_or_else(
            || "overlay".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let container = cache_id.as_deref().and_then(|id| {
            let root = driver_dir?.parent()?;
            self.container_of_mount(root, &driver, id)
        });
        match container {
            Some(container) => Owner {
                container,
                driver,
                layer: cache_id,
            },
            None => Owner {
                layer: cache_id,
                ..Owner::host()
            },
        }
    }

    /// The container whose `mount-id` is `cache_id` (also its `-init`
    /// layer), in `root` if it is one of ours, else in any of our roots.
    fn container_of_mount(&self, root: &Path, driver: &str, cache_id: &str) -> Option<String> {
        let base = cache_id.strip_suffix("-init").unwrap_or(cache_id);
        let candidates = std::iter::once(root.to_path_buf()).chain(self.roots.iter().cloned());
        for root in candidates {
            let mounts = root.join("image").join(driver).join("layerdb/mounts");
            let Ok(entries) = fs::read_dir(&mounts) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(id) = fs::read_to_string(entry.path().join("mount-id")) else {
                    continue;
                };
                if id.trim() == base {
                    return Some(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        None
    }

    /// Every container id known in the roots (layerdb `mounts/` names).
    pub fn container_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for root in &self.roots {
            let Ok(drivers) = fs::read_dir(root.join("image")) else {
                continue;
            };
            for driver in drivers.flatten() {
                let Ok(entries) = fs::read_dir(driver.path().join("layerdb/mounts")) else {
                    continue;
                };
                ids.extend(
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// cgroup v2 id (the cgroup dir's inode number) -> cgroup path, for
    /// every cgroup under the cgroup2 mount.
    pub fn cgroup_paths(&self) -> HashMap<u64, PathBuf> {
        let mut out = HashMap::new();
        for root in &self.cgroup_roots {
            if !root.join("cgroup.controllers").exists() && !root.join("cgroup.procs").exists() {
                continue;
            }
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                if let Ok(meta) = fs::metadata(&dir) {
                    out.insert(meta.ino(), dir.clone());
                }
                if let Ok(entries) = fs::read_dir(&dir) {
                    stack.extend(
                        entries
                            .flatten()
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| e.path()),
                    );
                }
            }
            break;
        }
        out
    }

    /// The container a cgroup path belongs to: a known container id
    /// appearing in it, else [`HOST`].
    pub fn container_of_cgroup(&self, path: &Path, known: &[String]) -> String {
        let text = path.to_string_lossy();
        known
            .iter()
            .find(|id| text.contains(id.as_str()))
            .cloned()
            .unwrap_or_else(|| HOST.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_to_container() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mounts = root.join("image/overlay2/layerdb/mounts/c0ffee");
        fs::create_dir_all(&mounts).expect("mkdir");
        fs::write(mounts.join("mount-id"), "abc123").expect("write");
        let attribution = Attribution::new(vec![root.to_owned()]);
        let owner = attribution.for_upper(Some(&root.join("overlay2/abc123/diff")));
        assert_eq!(owner.container, "c0ffee");
        assert_eq!(owner.driver, "overlay2");
        assert_eq!(owner.layer.as_deref(), Some("abc123"));
        let init = attribution.for_upper(Some(&root.join("overlay2/abc123-init/diff")));
        assert_eq!(init.container, "c0ffee");
        let other = attribution.for_upper(Some(Path::new("/srv/upper")));
        assert_eq!(other.container, HOST);
        assert_eq!(attribution.container_ids(), vec!["c0ffee".to_owned()]);
        assert_eq!(
            attribution.container_of_cgroup(
                Path::new("/sys/fs/cgroup/x/docker-c0ffee.scope"),
                &attribution.container_ids()
            ),
            "c0ffee"
        );
    }
}
