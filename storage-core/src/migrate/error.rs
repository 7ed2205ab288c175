//! Errors of the aufs-to-overlay2 migration, each one line naming the
//! object (data root, layer, file) and the cause.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The migration must not run now (dockerd alive, a layer mounted, a
    /// store already in the way); nothing was changed.
    #[error("docker root {}: {why}", root.display())]
    Refused { root: PathBuf, why: String },

    /// The data root has no aufs store to convert.
    #[error("docker root {}: no aufs store to migrate: {why}", root.display())]
    NotAufs { root: PathBuf, why: String },

    /// One layer cannot be converted.
    #[error("layer {id}: {why}")]
    Layer { id: String, why: String },

    /// The journal of an earlier run is unreadable or disagrees with the disk.
    #[error("migration journal {}: {why}", path.display())]
    Journal { path: PathBuf, why: String },

    /// A container's `config.v2.json` is not what Docker writes.
    #[error("container config {}: {why}", path.display())]
    Config { path: PathBuf, why: String },

    /// The test hook stopped the run as a crash would.
    #[error("migration interrupted (test hook) at {at}")]
    Interrupted { at: String },

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MigrateError {
    pub(crate) fn io(
        op: &'static str,
        path: impl AsRef<Path>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        move |source| MigrateError::Io { op, path, source }
    }

    pub(crate) fn nix(op: &'static str, path: impl AsRef<Path>) -> impl FnOnce(nix::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        move |errno| MigrateError::Io {
            op,
            path,
            source: errno.into(),
        }
    }
}
