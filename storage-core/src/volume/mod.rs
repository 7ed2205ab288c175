//! Docker's volumes, as the `local` volume driver and the daemon's volume
//! service keep them: `<root>/volumes/<name>/_data` holds the data,
//! `<root>/volumes/<name>/opts.json` the driver options (Docker's
//! `optsConfig` shape), and `<root>/volumes/metadata.json` what Docker keeps
//! in its BoltDB `metadata.db` (labels, options) plus the reference and
//! active-mount counts that dockerd holds in memory, so they survive the
//! CLI exiting. Every change happens under one `flock` on
//! `<root>/volumes/.lock`.
//!
//! - [`name`]: the volume name rule.
//! - [`options`]: `-o type=... -o device=... -o o=...` as `docker volume create`.
//! - [`loopfs`]: size-limited volumes on a loop-backed xfs or ext4 image.
//! - [`metadata`]: the JSON metadata file.
//! - [`store`]: create, list, inspect, remove, prune, mount on first use.
//! - [`spec`]: `-v`, `--mount` and `--volumes-from` parsed as moby's Linux parser.
//! - [`mountpoint`]: the `MountPoints` of `config.v2.json` and inspect's `Mounts`.
//! - [`resolve`]: a destination resolved inside a container root, never outside.
//! - [`copy`]: image content copied into an empty volume (owner, mode, xattrs).

pub mod copy;
pub mod loopfs;
pub mod metadata;
pub mod mountpoint;
pub mod name;
pub mod options;
pub mod resolve;
pub mod spec;
pub mod store;

use std::path::PathBuf;

pub use mountpoint::{ApiMountPoint, MountPoint, MountSpec, MountType};
pub use store::{PruneReport, Volume, VolumeFilter, VolumeStore};

/// The label Docker (23+) puts on anonymous volumes; `prune` without
/// `--all` removes only volumes carrying it.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// The only volume driver there is here.
pub const DRIVER: &str = "local";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Docker's messages for bad names and options, prefixed with the
    /// operation and volume (`create x: ...`).
    #[error("{op} {name}: {what}")]
    Invalid {
        op: &'static str,
        name: String,
        what: String,
    },

    #[error("get {name}: no such volume")]
    NotFound { name: String },

    #[error("remove {name}: volume is in use - [{}]", refs.join(", "))]
    InUse { name: String, refs: Vec<String> },

    /// A `-v`/`--mount`/`--volumes-from` spec moby's parser refuses.
    #[error("{0}")]
    Spec(String),

    /// A destination that cannot be used inside the container root.
    #[error("mount destination {destination}: {what}")]
    Destination { destination: String, what: String },

    #[error("{}: {op}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },

    #[error("volume {name}: {source}")]
    Mount {
        name: String,
        #[source]
        source: crate::sys::mount::MountError,
    },

    #[error("volume {name}: {source}")]
    Loop {
        name: String,
        #[source]
        source: crate::sys::loopdev::LoopError,
    },

    #[error("volume {name}: {tool} failed: {stderr}")]
    Mkfs {
        name: String,
        tool: &'static str,
        stderr: String,
    },
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> VolumeError {
    let path = path.into();
    move |source| VolumeError::Io { op, path, source }
}
