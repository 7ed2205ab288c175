//! storage-core: Docker's storage drivers implemented for real on the running
//! kernel, in Docker's own on-disk format, plus the image layer store, tar
//! archives, containers and volumes.
//!
//! The crate is layered: [`sys`] owns every syscall (thin safe wrappers, the
//! only place with `unsafe`), [`features`] probes what the kernel can do, and
//! the higher modules build on those.

pub mod archive;
pub mod container;
pub mod docker_root;
pub mod driver;
pub mod features;
pub mod fsutil;
pub mod image;
pub mod layer;
pub mod migrate;
pub mod sys;
pub mod unionfs;
pub mod volume;
