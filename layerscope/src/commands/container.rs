//! `layerscope container ...`: containers' storage: create (init + rw
//! layers, with volumes, binds and tmpfs mounts), mount, unmount, diff,
//! commit, size, inspect, rm.

use std::io::Write;

use clap::Subcommand;
use storage_core::archive::ChangeKind;
use storage_core::container::{ContainerStore, CreateOptions};
use storage_core::image::ImageStore;

#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Create a container from an image (or a layer chain-id).
    Create {
        /// Image reference or id, a layer chain-id, or "scratch" for an empty root.
        image: String,
        #[arg(long)]
        name: String,
        /// Volume or bind mount: NAME:/path[:ro|:rw|:nocopy], /host/path:/path[:ro], or /path (anonymous).
        #[arg(short = 'v', long = "volume")]
        volumes: Vec<String>,
        /// Long form: type=volume|bind|tmpfs,source=...,target=...[,readonly][,volume-nocopy].
        #[arg(long = "mount")]
        mounts: Vec<String>,
        /// Mount every volume of another container: C[:ro|:rw].
        #[arg(long = "volumes-from")]
        volumes_from: Vec<String>,
    },
    /// Mount the container's root and its volumes; prints the merged path on the last line.
    Mount { name: String },
    /// Unmount the container's root.
    Unmount { name: String },
    /// What the container changed: `A`, `C`, `D` lines like `docker diff`.
    Diff {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Turn the container's changes into a new layer; prints its chain-id.
    Commit { name: String },
    /// `docker ps -s` sizes: rw layer and virtual (rw + image).
    Size {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The container's record as JSON.
    Inspect { name: String },
    /// List containers.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove the container and its layers.
    Rm {
        name: String,
        /// Also remove its anonymous volumes (named volumes are kept).
        #[arg(short = 'v', long = "volumes")]
        volumes: bool,
    },
}

pub fn run(
    containers: &ContainerStore<'_>,
    images: &ImageStore,
    command: ContainerCommand,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match command {
        ContainerCommand::Create {
            image,
            name,
            volumes,
            mounts,
            volumes_from,
        } => {
            let mut options = CreateOptions {
                volumes,
                mounts,
                volumes_from,
                image_volumes: Vec::new(),
            };
            // An image reference or id first, as docker; else a layer.
            let top = if image == "scratch" {
                None
            } else if let Ok(found) = images.get(&image) {
                options.image_volumes = image_volumes(&found.raw_config);
                found.top_chain_id()
            } else {
                Some(containers.layers().get(&image)?.chain_id)
            };
            let container = containers.create_with(&name, &image, top.as_deref(), &options)?;
            writeln!(stdout, "{}", container.id)?;
        }
        ContainerCommand::Mount { name } => {
            let container = containers.find(&name)?;
            let path = containers.mount(&container)?;
            writeln!(stdout, "{}", path.display())?;
        }
        ContainerCommand::Unmount { name } => {
            let container = containers.find(&name)?;
            containers.unmount(&container)?;
        }
        ContainerCommand::Diff { name, json } => {
            let container = containers.find(&name)?;
            let changes = containers.changes(&container)?;
            if json {
                // The Docker API's shape: Kind 0 modified, 1 added, 2 deleted.
                let api: Vec<serde_json::Value> = changes
                    .iter()
                    .map(|c| {
                        let kind = match c.kind {
                            ChangeKind::Modified => 0,
                            ChangeKind::Added => 1,
                            ChangeKind::Deleted => 2,
                        };
                        serde_json::json!({"Path": c.path, "Kind": kind})
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut stdout, &api)?;
                writeln!(stdout)?;
            } else {
                for change in changes {
                    let letter = match change.kind {
                        ChangeKind::Added => 'A',
                        ChangeKind::Modified => 'C',
                        ChangeKind::Deleted => 'D',
                    };
                    writeln!(stdout, "{letter} {}", change.path.display())?;
                }
            }
        }
        ContainerCommand::Commit { name } => {
            let container = containers.find(&name)?;
            let layer = containers.commit(&container)?;
            writeln!(stdout, "{}", layer.chain_id)?;
        }
        ContainerCommand::Size { name, json } => {
            let container = containers.find(&name)?;
            let size = containers.size(&container)?;
            if json {
                serde_json::to_writer_pretty(&mut stdout, &size)?;
                writeln!(stdout)?;
            } else {
                writeln!(stdout, "{} ({} virtual)", size.size_rw, size.size_root_fs)?;
            }
        }
        ContainerCommand::Inspect { name } => {
            let container = containers.find(&name)?;
            let mut value = serde_json::to_value(&container)?;
            value["Mounts"] = serde_json::to_value(containers.mounts(&container))?;
            serde_json::to_writer_pretty(&mut stdout, &value)?;
            writeln!(stdout)?;
        }
        ContainerCommand::Ls { json } => {
            let all = containers.list()?;
            if json {
                serde_json::to_writer_pretty(&mut stdout, &all)?;
                writeln!(stdout)?;
            } else {
                writeln!(stdout, "{:<14} {:<24} IMAGE", "CONTAINER ID", "NAME")?;
                for c in all {
                    writeln!(
                        stdout,
                        "{:<14} {:<24} {}",
                        &c.id[..12],
                        c.short_name(),
                        c.image
                    )?;
                }
            }
        }
        ContainerCommand::Rm { name, volumes } => {
            let container = containers.find(&name)?;
            containers.remove_with_volumes(&container, volumes)?;
            writeln!(stdout, "{}", container.short_name())?;
        }
    }
    Ok(())
}

/// The image config's `config.Volumes` (Dockerfile `VOLUME`): anonymous
/// volumes every container of the image gets.
fn image_volumes(raw_config: &[u8]) -> Vec<String> {
    serde_json::from_slice::<serde_json::Value>(raw_config)
        .ok()
        .and_then(|v| {
            v.get("config")?
                .get("Volumes")?
                .as_object()
                .map(|m| m.keys().cloned().collect())
        })
        .unwrap_or_default()
}
