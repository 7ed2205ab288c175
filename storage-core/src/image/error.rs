//! [`ImageError`]: every failure of the image store, `docker load` and
//! `docker save`, one line naming the object (image reference, archive
//! entry, layer) and the cause.

use std::io;
use std::path::PathBuf;

use crate::layer::LayerError;

/// A failure of the image store or of loading or saving an archive.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image answers to this reference, id or id prefix.
    #[error("image {reference}: no such image")]
    NotFound { reference: String },

    /// An id prefix that matches several images.
    #[error("image {prefix}: ambiguous id prefix, matches {count} images")]
    Ambiguous { prefix: String, count: usize },

    /// A reference that Docker's grammar refuses.
    #[error("reference {reference:?}: {why}")]
    InvalidReference { reference: String, why: String },

    /// The image cannot be changed as asked (children, containers, tags).
    #[error("image {image}: {why}")]
    Conflict { image: String, why: String },

    /// An image config that is not one Docker accepts.
    #[error("image config {name}: {why}")]
    Config { name: String, why: String },

    /// A `docker save` archive that cannot be loaded, or an entry of it.
    #[error("archive {}: {what}: {why}", archive.display())]
    Archive {
        archive: PathBuf,
        what: String,
        why: String,
    },

    /// Writing a `docker save` archive failed.
    #[error("save {what}: {why}")]
    Save { what: String, why: String },

    /// A file of the image store that is not what Docker writes.
    #[error("{}: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },

    /// A filesystem operation on a path.
    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A layer store failure (it names the layer itself).
    #[error(transparent)]
    Layer(#[from] LayerError),
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }

    pub(crate) fn not_found(reference: impl Into<String>) -> Self {
        ImageError::NotFound {
            reference: reference.into(),
        }
    }
}
