//! `docker load`: [`load`] reads an archive written by `docker save`, in
//! the legacy layout (`manifest.json`, `<id>.json`, `<v1 id>/layer.tar`, as
//! Docker 20.10 writes it) or the OCI layout of Docker 25 and later
//! (`manifest.json` naming `blobs/sha256/<digest>`, beside `index.json` and
//! `oci-layout`; layer blobs may be gzip or zstd).
//!
//! The archive is a file, so it is indexed once (each entry's data offset
//! and size; symlinks and hardlinks followed inside the archive, as
//! Docker's `safePath` does) and every layer is then applied straight from
//! its byte range: no temporary copies. Everything is checked before the
//! first write (configs, layer counts, tags, that every named file exists
//! and is complete); a layer whose diff-id is not the config's fails the
//! load, and a failed load leaves the stores as they were: new layers,
//! configs, parent links and tags are undone, except layers another image
//! uses by then.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::config::{ImageConfig, digest_of};
use super::reference::Reference;
use super::store::{LockedStore, Repositories};
use super::{ImageError, ImageStore};
use crate::layer::{LayerError, LayerStore, chain_id};

/// Largest JSON file (manifest, config) read into memory.
const MAX_JSON_BYTES: u64 = 64 << 20;
/// Most links followed while resolving one archive path (Linux's limit).
const MAX_LINK_HOPS: usize = 40;

/// One image that [`load`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// `sha256:` image id.
    pub id: String,
    /// The tags the archive gave it (familiar form), in archive order.
    pub repo_tags: Vec<String>,
    /// Tags that pointed at another image before, with that image's id.
    pub replaced: Vec<(String, String)>,
    /// Chain-ids of its layers, base first.
    pub chain_ids: Vec<String>,
    /// How many of those this load applied (the others existed).
    pub applied_layers: usize,
}

/// An entry of the outer archive.
#[derive(Debug, Clone)]
enum Node {
    File { offset: u64, size: u64 },
    Dir,
    Symlink(String),
    Hardlink(String),
    Other,
}

/// The outer tar, indexed by cleaned entry name.
struct ArchiveIndex {
    path: PathBuf,
    file: File,
    entries: HashMap<String, Node>,
}

/// Go's `path.Clean` relative to the archive root: no empty, `.` or `..`
/// components, never above the root.
fn clean(name: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

impl ArchiveIndex {
    fn bad(&self, what: impl Into<String>, why: impl Into<String>) -> ImageError {
        ImageError::Archive {
            archive: self.path.clone(),
            what: what.into(),
            why: why.into(),
        }
    }

    fn build(path: &Path) -> Result<Self, ImageError> {
        let file = File::open(path).map_err(ImageError::io("open", path))?;
        let len = file.metadata().map_err(ImageError::io("stat", path))?.len();
        let mut index = ArchiveIndex {
            path: path.to_path_buf(),
            file,
            entries: HashMap::new(),
        };
        let reader = index
            .file
            .try_clone()
            .map_err(ImageError::io("open", path))?;
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries_with_seek()
            .map_err(|e| index.bad("outer tar", format!("not a tar archive: {e}")))?;
        let mut found = HashMap::new();
        for (n, entry) in entries.enumerate() {
            let entry = entry.map_err(|e| {
                let mut why = e.to_string();
                if let Some((cut, _)) = why.char_indices().nth(120) {
                    why.truncate(cut);
                    why.push_str("...");
                }
                if n == 0 {
                    index.bad("outer tar", format!("not a tar archive: {why}"))
                } else {
                    index.bad(format!("outer tar entry #{}", n + 1), why)
                }
            })?;
            let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = clean(&raw_name).join("/");
            let header = entry.header();
            let node = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let offset = entry.raw_file_position();
                    let size = entry.size();
                    let end = offset.saturating_add(size);
                    if end > len {
                        return Err(index.bad(
                            format!("entry {raw_name}"),
                            format!(
                                "truncated: its {size} bytes at offset {offset} end past the archive's {len} bytes"
                            ),
                        ));
                    }
                    Node::File { offset, size }
                }
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    if header.entry_type() == tar::EntryType::Symlink {
                        Node::Symlink(target)
                    } else {
                        Node::Hardlink(target)
                    }
                }
                _ => Node::Other,
            };
            if !name.is_empty() {
                found.insert(name, node);
            }
        }
        index.entries = found;
        Ok(index)
    }

    /// Resolves `name` (from manifest.json) to a regular file's byte range,
    /// following symlinks and hardlinks inside the archive.
    fn locate(&self, name: &str) -> Result<(u64, u64), ImageError> {
        let mut hops = 0;
        let mut pending: Vec<String> = clean(name).into_iter().rev().map(str::to_string).collect();
        let mut resolved: Vec<String> = Vec::new();
        while let Some(comp) = pending.pop() {
            if comp == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(comp);
            let here = resolved.join("/");
            let link = match self.entries.get(&here) {
                Some(Node::Symlink(target)) => Some((target.clone(), true)),
                Some(Node::Hardlink(target)) if pending.is_empty() => Some((target.clone(), false)),
                Some(_) => None,
                None if pending.is_empty() => {
                    return Err(self.bad(
                        "manifest.json",
                        format!("names {name}, which is not in the archive"),
                    ));
                }
                // A directory only implied by deeper entries.
                None => None,
            };
            if let Some((target, relative_to_dir)) = link {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(self.bad(format!("entry {name}"), "too many levels of links"));
                }
                resolved.pop();
                if target.starts_with('/') || !relative_to_dir {
                    resolved.clear();
                }
                let mut comps: Vec<String> = target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect();
                comps.reverse();
                pending.extend(comps);
            }
        }
        match self.entries.get(&resolved.join("/")) {
            Some(Node::File { offset, size }) => Ok((*offset, *size)),
            Some(_) => Err(self.bad(format!("entry {name}"), "is not a regular file")),
            None => Err(self.bad(
                "manifest.json",
                format!("names {name}, which is not in the archive"),
            )),
        }
    }

    fn section(&self, name: &str) -> Result<Section<'_>, ImageError> {
        let (offset, size) = self.locate(name)?;
        Ok(Section {
            file: &self.file,
            pos: offset,
            end: offset + size,
        })
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let (offset, size) = self.locate(name)?;
        if size > MAX_JSON_BYTES {
            return Err(self.bad(
                format!("entry {name}"),
                format!("{size} bytes is too large for a JSON file"),
            ));
        }
        let mut bytes = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut bytes, offset)
            .map_err(|e| self.bad(format!("entry {name}"), format!("read: {e}")))?;
        Ok(bytes)
    }
}

/// A byte range of the archive file, read with `pread` (no shared offset).
struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An item of `manifest.json` (moby's `manifestItem`; Go matches the keys
/// case-insensitively).
#[derive(Debug, Deserialize)]
struct ManifestItem {
    #[serde(rename = "Config", alias = "config")]
    config: String,
    #[serde(rename = "RepoTags", alias = "repoTags", alias = "repotags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", alias = "layers", default)]
    layers: Option<Vec<String>>,
    #[serde(rename = "Parent", alias = "parent", default)]
    parent: Option<String>,
}

/// One image checked and ready to load.
struct Plan {
    config_name: String,
    config_bytes: Vec<u8>,
    config: ImageConfig,
    id: String,
    layer_names: Vec<String>,
    tags: Vec<Reference>,
    parent: Option<String>,
}

/// What a failed load must undo.
struct Undo {
    repositories: Repositories,
    new_layers: Vec<String>,
    new_configs: Vec<String>,
    parents: Vec<(String, Option<String>)>,
}

/// Loads every image of the `docker save` archive at `archive_path` into
/// `store` and `layers`. On error nothing of it stays behind.
pub fn load(
    store: &ImageStore,
    layers: &LayerStore,
    archive_path: &Path,
) -> Result<Vec<LoadedImage>, ImageError> {
    let index = ArchiveIndex::build(archive_path)?;
    let plans = plan(&index)?;

    let locked = store.lock()?;
    let mut undo = Undo {
        repositories: store.repositories()?,
        new_layers: Vec::new(),
        new_configs: Vec::new(),
        parents: Vec::new(),
    };
    match commit(&index, &locked, layers, &plans, &mut undo) {
        Ok(loaded) => Ok(loaded),
        Err(e) => {
            if let Err(undo_error) = roll_back(&locked, layers, &undo) {
                tracing::warn!(
                    "undoing the failed load of {}: {undo_error}",
                    archive_path.display()
                );
            }
            Err(e)
        }
    }
}

/// Reads and checks manifest.json and every config and tag, and that every
/// named file is in the archive; writes nothing.
fn plan(index: &ArchiveIndex) -> Result<Vec<Plan>, ImageError> {
    if !index.entries.contains_key("manifest.json") {
        let why = if index.entries.contains_key("repositories") {
            "missing (a pre-Docker-1.10 archive, which is not supported)"
        } else {
            "missing (not a docker save archive)"
        };
        return Err(index.bad("manifest.json", why));
    }
    let bytes = index.read_small("manifest.json")?;
    let first = serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Option<Vec<ManifestItem>>>()
        .next();
    let manifest = match first {
        Some(Ok(Some(items))) => items,
        Some(Ok(None)) => {
            return Err(index.bad("manifest.json", "is null (an empty archive says [])"));
        }
        Some(Err(e)) => return Err(index.bad("manifest.json", format!("invalid: {e}"))),
        None => return Err(index.bad("manifest.json", "is empty")),
    };

    let mut plans = Vec::with_capacity(manifest.len());
    for item in manifest {
        let config_bytes = index.read_small(&item.config)?;
        let config = ImageConfig::parse(&config_bytes, &item.config).map_err(|e| match e {
            ImageError::Config { why, .. } => index.bad(format!("config {}", item.config), why),
            other => other,
        })?;
        let layer_names = item.layers.unwrap_or_default();
        if layer_names.len() != config.rootfs.diff_ids.len() {
            return Err(index.bad(
                format!("config {}", item.config),
                format!(
                    "manifest.json lists {} layers, the config has {} diff-ids",
                    layer_names.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        for name in &layer_names {
            index.locate(name)?;
        }
        let mut tags = Vec::new();
        for tag in item.repo_tags.unwrap_or_default() {
            let reference =
                Reference::parse(&tag).map_err(|e| index.bad("manifest.json", e.to_string()))?;
            if reference.tag().is_none() || reference.digest().is_some() {
                return Err(index.bad(
                    "manifest.json",
                    format!("RepoTags entry {tag:?} is not a name:tag"),
                ));
            }
            tags.push(reference);
        }
        plans.push(Plan {
            id: digest_of(&config_bytes),
            config_name: item.config,
            config_bytes,
            config,
            layer_names,
            tags,
            parent: item.parent.filter(|p| !p.is_empty()),
        });
    }

    // moby's validatedParentLinks and checkValidParent: a parent counts
    // only when it is another image of this archive, and must match.
    let ids: Vec<String> = plans.iter().map(|p| p.id.clone()).collect();
    for i in 0..plans.len() {
        let Some(parent) = plans[i].parent.clone() else {
            continue;
        };
        match ids
            .iter()
            .position(|id| *id == parent && *id != plans[i].id)
        {
            None => plans[i].parent = None,
            Some(p) => {
                if !plans[i].config.has_valid_parent(&plans[p].config) {
                    return Err(index.bad(
                        format!("config {}", plans[i].config_name),
                        format!("image {parent} is not a valid parent for {}", plans[i].id),
                    ));
                }
            }
        }
    }
    Ok(plans)
}

fn commit(
    index: &ArchiveIndex,
    locked: &LockedStore<'_>,
    layers: &LayerStore,
    plans: &[Plan],
    undo: &mut Undo,
) -> Result<Vec<LoadedImage>, ImageError> {
    let mut loaded = Vec::with_capacity(plans.len());
    for plan in plans {
        let mut chains = Vec::with_capacity(plan.layer_names.len());
        let mut applied = 0;
        for (name, diff_id) in plan.layer_names.iter().zip(&plan.config.rootfs.diff_ids) {
            let parent = chains.last().map(String::as_str);
            let chain = chain_id(parent, diff_id);
            match layers.get(&chain) {
                Ok(_) => {}
                Err(LayerError::NotFound { .. }) => {
                    apply_layer(index, layers, name, diff_id, parent, &chain, undo)?;
                    applied += 1;
                }
                Err(e) => return Err(index.bad(format!("layer {name}"), e.to_string())),
            }
            chains.push(chain);
        }

        let existed = locked.contains(&plan.id);
        let id = locked.put_config(&plan.config_bytes)?;
        if !existed {
            undo.new_configs.push(id.clone());
        }
        let mut replaced = Vec::new();
        for tag in &plan.tags {
            if let Some(old) = locked.add_tag(tag, &id)? {
                replaced.push((tag.to_string(), old));
            }
        }
        loaded.push(LoadedImage {
            id,
            repo_tags: plan.tags.iter().map(Reference::to_string).collect(),
            replaced,
            chain_ids: chains,
            applied_layers: applied,
        });
    }
    for plan in plans {
        if let Some(parent) = &plan.parent {
            let before = locked.get(&plan.id)?.parent;
            if before.as_deref() != Some(parent.as_str()) {
                undo.parents.push((plan.id.clone(), before));
                locked.set_parent(&plan.id, parent)?;
            }
        }
    }
    Ok(loaded)
}

/// Applies one layer from its byte range and checks its diff-id.
fn apply_layer(
    index: &ArchiveIndex,
    layers: &LayerStore,
    name: &str,
    diff_id: &str,
    parent: Option<&str>,
    expected_chain: &str,
    undo: &mut Undo,
) -> Result<(), ImageError> {
    // pread in large chunks: the tar reader asks for 512 bytes at a time.
    let section = BufReader::with_capacity(1 << 20, index.section(name)?);
    let info = match layers.apply(section, parent) {
        Ok(info) => info,
        // Another process applied the same layer meanwhile: reuse it.
        Err(LayerError::Duplicate { id }) if id == expected_chain => return Ok(()),
        Err(LayerError::Duplicate { id }) => {
            // The content is another layer that already exists.
            let actual = if parent.is_none() {
                format!("has diff-id {id}")
            } else {
                format!("is the existing layer {id}")
            };
            return Err(index.bad(
                format!("layer {name}"),
                format!("content {actual}, but the config expects diff-id {diff_id}"),
            ));
        }
        Err(e) => return Err(index.bad(format!("layer {name}"), e.to_string())),
    };
    if info.diff_id != diff_id || info.chain_id != expected_chain {
        let removed = layers.remove(&info.chain_id);
        let mut why = format!(
            "content has diff-id {}, but the config expects {diff_id}",
            info.diff_id
        );
        if let Err(e) = removed {
            why.push_str(&format!(" (and removing the applied layer failed: {e})"));
        }
        return Err(index.bad(format!("layer {name}"), why));
    }
    undo.new_layers.push(info.chain_id);
    Ok(())
}

/// Undoes a failed load: tags, parent links and configs first, then the
/// layers it applied (newest first) that no image uses.
fn roll_back(locked: &LockedStore<'_>, layers: &LayerStore, undo: &Undo) -> Result<(), ImageError> {
    let mut first_error = None;
    if locked.repositories()? != undo.repositories
        && let Err(e) = locked.write_repositories(&undo.repositories)
    {
        first_error.get_or_insert(e);
    }
    for (id, before) in undo.parents.iter().rev() {
        let result = match before {
            Some(parent) => locked.set_parent(id, parent),
            None => locked.clear_parent(id),
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    for id in &undo.new_configs {
        if let Err(e) = locked.discard_config(id) {
            first_error.get_or_insert(e);
        }
    }
    let in_use: Vec<String> = match locked.list() {
        Ok(images) => images.iter().flat_map(|i| i.chain_ids()).collect(),
        Err(e) => {
            // Without knowing which layers images use, keep them all.
            return Err(first_error.unwrap_or(e));
        }
    };
    for chain in undo.new_layers.iter().rev() {
        if in_use.contains(chain) {
            continue;
        }
        match layers.remove(chain) {
            Ok(())
            | Err(
                LayerError::HasChildren { .. }
                | LayerError::InUse { .. }
                | LayerError::NotFound { .. },
            ) => {}
            Err(e) => {
                first_error.get_or_insert(e.into());
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
