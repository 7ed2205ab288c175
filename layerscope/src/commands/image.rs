//! `layerscope image ...`: `load` and `save` in `docker load` / `docker
//! save` format, `ls` and `rm`, on the image store of the chosen driver.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use storage_core::image::{self, Image, ImageStore};
use storage_core::layer::LayerStore;

use super::layer::{short, write_via_temp};
use super::store::open_layers;

fn open(root: &Path, driver: &str) -> anyhow::Result<(ImageStore, LayerStore)> {
    let layers = open_layers(root, driver, &[])?;
    let images = ImageStore::open(root, driver)?;
    Ok((images, layers))
}

/// `image load <archive>`: loads every image of a `docker save` archive and
/// prints each one's references (its id when it has none); the last line
/// is the last image's reference.
pub fn load(root: &Path, driver: &str, archive: &Path) -> anyhow::Result<()> {
    let (images, layers) = open(root, driver)?;
    let loaded = image::load(&images, &layers, archive)?;
    let mut stdout = std::io::stdout().lock();
    for image in &loaded {
        for (tag, old) in &image.replaced {
            eprintln!(
                "The image {tag} already exists, renaming the old one with ID {old} to empty string"
            );
        }
        if image.repo_tags.is_empty() {
            writeln!(stdout, "{}", image.id)?;
        }
        for tag in &image.repo_tags {
            writeln!(stdout, "{tag}")?;
        }
    }
    Ok(())
}

/// `image save IMAGE... -o out`: writes the images as a `docker save`
/// archive through a temporary name renamed to `out` on success.
pub fn save(root: &Path, driver: &str, images: &[String], out: &Path) -> anyhow::Result<()> {
    let (store, layers) = open(root, driver)?;
    write_via_temp(out, |w| {
        image::save(&store, &layers, images, w)?;
        Ok(())
    })
    .with_context(|| format!("save to {}", out.display()))
}

/// `image ls [--json]`: one row per reference (untagged images once), or
/// the images as JSON.
pub fn list(root: &Path, driver: &str, json: bool) -> anyhow::Result<()> {
    let (store, layers) = open(root, driver)?;
    let mut images = store.list()?;
    // Newest first, as `docker images`.
    images.sort_by(|a, b| {
        b.config
            .created
            .cmp(&a.config.created)
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, &images)?;
        writeln!(stdout)?;
        return Ok(());
    }
    writeln!(
        stdout,
        "{:<40} {:<20} {:<19} {:<30} {:>12}",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"
    )?;
    for image in &images {
        let size = image_size(&layers, image);
        let created = image.config.created.as_deref().unwrap_or("-");
        let id = short(&image.id).trim_start_matches("sha256:");
        let rows: Vec<(&str, &str)> = if image.repo_tags.is_empty() {
            vec![("<none>", "<none>")]
        } else {
            image
                .repo_tags
                .iter()
                .map(|t| t.rsplit_once(':').unwrap_or((t.as_str(), "<none>")))
                .collect()
        };
        for (repo, tag) in rows {
            writeln!(
                stdout,
                "{repo:<40} {tag:<20} {id:<19} {created:<30} {size:>12}"
            )?;
        }
    }
    Ok(())
}

/// The bytes of an image's layers (Docker's image size), 0 for layers the
/// store lacks.
fn image_size(layers: &LayerStore, image: &Image) -> u64 {
    image
        .chain_ids()
        .iter()
        .filter_map(|c| layers.get(c).ok())
        .map(|l| l.size)
        .sum()
}

/// `image rm [-f] IMAGE...`: untags or deletes each image as `docker rmi`
/// does, printing `Untagged:` and `Deleted:` lines.
pub fn remove(root: &Path, driver: &str, images: &[String], force: bool) -> anyhow::Result<()> {
    let (store, layers) = open(root, driver)?;
    let mut stdout = std::io::stdout().lock();
    for name in images {
        let done = image::delete(&store, &layers, name, force)?;
        for line in done.lines() {
            writeln!(stdout, "{line}")?;
        }
    }
    Ok(())
}
