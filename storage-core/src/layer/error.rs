//! Errors of the layer store, each one line naming the layer (or file) and
//! the cause.

use std::path::PathBuf;

use crate::archive::ArchiveError;
use crate::driver::DriverError;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {id}: not found")]
    NotFound { id: String },

    #[error("layer {id}: ambiguous prefix, matches {count} layers")]
    Ambiguous { id: String, count: usize },

    #[error("layer {id}: already exists (same chain-id)")]
    Duplicate { id: String },

    #[error("layer {id}: has {children} child layer(s); remove them first")]
    HasChildren { id: String, children: usize },

    #[error("layer {id}: used by container {container}")]
    InUse { id: String, container: String },

    #[error("container {id}: not found")]
    MountNotFound { id: String },

    #[error("container {id}: already exists")]
    MountExists { id: String },

    #[error("{}: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },

    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Driver(#[from] DriverError),

    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl LayerError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| LayerError::Io { op, path, source }
    }
}
