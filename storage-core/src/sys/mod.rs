//! Thin, safe wrappers over the syscalls storage-core needs. Every `unsafe`
//! block of the crate lives below this module, each with a `// SAFETY:` line.

pub mod loopdev;
pub mod mount;
