//! Thin, safe wrappers over the syscalls storage-core needs. Every `unsafe`
//! block of the crate lives below this module, each with a `// SAFETY:` line.

pub mod btrfs;
pub mod copy;
pub mod devmapper;
pub mod fuse;
pub mod loopdev;
pub mod mount;
pub mod openat;
pub mod reflink;
pub mod trim;
pub mod xattr;
