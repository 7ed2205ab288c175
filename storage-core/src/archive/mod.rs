//! The tar layer engine every driver uses: apply an OCI/Docker layer tar to
//! a directory (with overlay, aufs or naive whiteouts), record and replay
//! Docker's `tar-split` metadata, export a diff directory as a layer tar,
//! and list changes as `docker diff` does.
//!
//! One concept per module:
//! - [`compression`]: gzip / zstd / plain detection, streaming decompression;
//! - [`whiteout`]: whiteout formats and the `.wh.` naming rules;
//! - [`entry_name`]: cleaning and checking entry names and link targets;
//! - `root` (private): filesystem operations confined to the destination;
//! - [`tar_split`]: the `tar-split` JSON-lines format and its CRC-64;
//! - `tar_writer` (private): USTAR + PAX headers for exported entries;
//! - [`apply`]: [`apply_layer`], tar stream -> directory;
//! - [`assemble`]: [`assemble_layer`], tar-split + files -> the original tar;
//! - [`export`]: [`export_dir`] and [`export_changes`], directory -> tar;
//! - [`changes`]: [`changes_overlay`] and [`changes_naive`].

pub mod apply;
pub mod assemble;
pub mod changes;
pub mod compression;
pub mod entry_name;
mod error;
pub mod export;
mod recorder;
mod root;
pub mod tar_split;
mod tar_writer;
pub mod whiteout;
mod xattrs;

pub use apply::{AppliedLayer, ApplyOptions, apply_layer};
pub use assemble::assemble_layer;
pub use changes::{Change, ChangeKind, changes_naive, changes_overlay};
pub use compression::Compression;
pub use error::{ArchiveError, Problem};
pub use export::{ExportStats, export_changes, export_dir};
pub use whiteout::WhiteoutFormat;
