//! The one error type of every driver: each variant names the layer or path
//! and the cause, so a CLI error is a single clear line.

use std::path::PathBuf;

use crate::archive::ArchiveError;
use crate::sys::mount::MountError;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("unknown storage driver {name:?} (known: overlay2, aufs, vfs, btrfs, devicemapper)")]
    UnknownDriver { name: String },

    #[error("driver {driver} unavailable: {why}")]
    Unavailable { driver: String, why: String },

    #[error("layer {id}: not found")]
    NotFound { id: String },

    #[error("layer {id}: {parent} is not its parent")]
    NotParent { id: String, parent: String },

    #[error("layer {id}: already exists")]
    AlreadyExists { id: String },

    #[error("layer {id}: invalid id (want a non-empty name of [A-Za-z0-9_.-])")]
    InvalidId { id: String },

    #[error(
        "layer {id}: {depth} lower layers exceed overlay2's limit of {limit} (Docker's maxDepth)"
    )]
    MaxDepth {
        id: String,
        depth: usize,
        limit: usize,
    },

    #[error("layer {id}: unknown storage option {key:?}")]
    UnknownOption { id: String, key: String },

    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Mount(#[from] MountError),

    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl DriverError {
    /// An I/O error on `path` during `op`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DriverError::Io { op, path, source }
    }

    /// A diff applied to layer `id` on top of `parent` (none: a base
    /// layer) when `id` was made on another parent.
    pub fn not_parent(id: &str, parent: Option<&str>) -> Self {
        DriverError::NotParent {
            id: id.to_string(),
            parent: parent.unwrap_or("<none>").to_string(),
        }
    }
}
