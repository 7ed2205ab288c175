//! `docker rmi`: [`delete`] untags or deletes an image and releases the
//! layers no other image uses, with Docker's conflicts (other tags, child
//! images, containers on the image).

use std::collections::BTreeSet;

use super::reference::Reference;
use super::{ImageError, ImageStore};
use crate::layer::{LayerError, LayerStore};

/// What [`delete`] did, in Docker's words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// References removed (`busybox:latest`).
    pub untagged: Vec<String>,
    /// The image id, when the image itself went.
    pub image: Option<String>,
    /// Chain-ids of the layers removed with it, top first.
    pub layers: Vec<String>,
}

impl Deleted {
    /// `Untagged: ...` and `Deleted: ...` lines as `docker rmi` prints them.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .untagged
            .iter()
            .map(|r| format!("Untagged: {r}"))
            .collect();
        lines.extend(
            self.image
                .iter()
                .chain(&self.layers)
                .map(|id| format!("Deleted: {id}")),
        );
        lines
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// Removes `name` as `docker rmi [-f] name` does: a reference is untagged,
/// and the image goes with its last reference (unless child images keep
/// it); an id deletes the image and all its references (several
/// repositories need `force`). Layers no other image uses go with it.
pub fn delete(
    store: &ImageStore,
    layers: &LayerStore,
    name: &str,
    force: bool,
) -> Result<Deleted, ImageError> {
    let locked = store.lock()?;
    let repos = store.repositories()?;
    let id = store.resolve(name)?;
    let image = store.get(&id)?;
    let refs = repos.references_to(&id);
    let by_ref = Reference::parse_tagged(name)
        .ok()
        .filter(|r| repos.get(r) == Some(id.as_str()));
    let top = image.top_chain_id();
    let others: Vec<_> = store.list()?.into_iter().filter(|i| i.id != id).collect();
    let shared_top = others.iter().any(|i| i.top_chain_id() == top);
    let container = match &top {
        Some(top) if !shared_top => layers
            .list_rw()?
            .into_iter()
            .find(|rw| rw.parent.as_deref() == Some(top.as_str()))
            .map(|rw| rw.name),
        _ => None,
    };
    let children = store.children(&id)?;
    let mut done = Deleted::default();

    if let Some(reference) = by_ref {
        if refs.len() > 1 {
            locked.delete_ref(&reference)?;
            done.untagged.push(reference.to_string());
            return Ok(done);
        }
        if let Some(container) = &container
            && !force
        {
            return Err(ImageError::Conflict {
                image: reference.to_string(),
                why: format!(
                    "unable to remove repository reference (must force): container {container} is using its referenced image {}",
                    short(&id)
                ),
            });
        }
        locked.delete_ref(&reference)?;
        done.untagged.push(reference.to_string());
        if !children.is_empty() {
            return Ok(done);
        }
    } else {
        let repo_names: BTreeSet<&str> = refs
            .iter()
            .map(|r| {
                r.split_once('@').map_or_else(
                    || r.rsplit_once(':').map_or(r.as_str(), |(n, _)| n),
                    |(n, _)| n,
                )
            })
            .collect();
        if repo_names.len() > 1 && !force {
            return Err(ImageError::Conflict {
                image: short(&id).to_string(),
                why: "unable to delete (must be forced): image is referenced in multiple repositories".into(),
            });
        }
        if !children.is_empty() {
            return Err(ImageError::Conflict {
                image: short(&id).to_string(),
                why: format!(
                    "unable to delete: image has {} dependent child image(s)",
                    children.len()
                ),
            });
        }
        if let Some(container) = &container
            && !force
        {
            return Err(ImageError::Conflict {
                image: short(&id).to_string(),
                why: format!(
                    "unable to delete (must be forced): image is being used by container {container}"
                ),
            });
        }
        for r in &refs {
            locked.delete_ref(&Reference::parse(r)?)?;
            done.untagged.push(r.clone());
        }
    }

    locked.remove_image(&id)?;
    done.image = Some(id.clone());
    let in_use: BTreeSet<String> = others.iter().flat_map(|i| i.chain_ids()).collect();
    for chain in image.chain_ids().iter().rev() {
        if in_use.contains(chain) {
            break;
        }
        match layers.remove(chain) {
            Ok(()) => done.layers.push(chain.clone()),
            Err(LayerError::HasChildren { .. } | LayerError::InUse { .. }) => break,
            Err(LayerError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}
