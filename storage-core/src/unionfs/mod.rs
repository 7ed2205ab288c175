//! layerscope's own union filesystem with aufs semantics, served over FUSE
//! (fuser) for the aufs driver on kernels without aufs: a writable branch
//! over read-only branches, `.wh.` whiteouts, opaque directories, file
//! copy-up, and FUSE passthrough for regular files when the kernel has it.
//!
//! [`serve`] runs a union in the calling thread until it is unmounted (the
//! `layerscope __union-serve` helper process calls [`serve_from_env`]);
//! [`mount_background`] runs one in a thread of the calling process.

pub mod branch;
pub mod copyup;
pub mod fs;
pub mod handles;
pub mod nodes;
pub mod serve;

use std::path::PathBuf;

pub use branch::Branches;
pub use fs::{UnionFs, UnionOptions};
pub use serve::{SERVE_ENV, ServeArgs, mount_background, serve, serve_from_env};

/// Why a union could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum UnionError {
    #[error("union helper arguments: {0}")]
    Args(String),

    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl UnionError {
    fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| UnionError::Io { op, path, source }
    }
}
