//! Docker's images on top of the layer store: the image store
//! (`<root>/image/<driver>/imagedb/` and `repositories.json`), `docker
//! load` and `docker save` archives, and `docker rmi`.
//!
//! One concept per module:
//! - [`reference`]: image references, normalized as Docker does;
//! - [`config`]: the image config JSON (what the store needs of it);
//! - [`store`]: [`ImageStore`], configs, metadata and tags on disk;
//! - [`load`]: [`load()`], a `docker save` archive into the stores;
//! - [`save`]: [`save()`], images out as an archive `docker load` accepts;
//! - [`delete`]: [`delete()`], untag or delete and release layers;
//! - [`rfc3339`]: the time format of configs and metadata.

pub mod config;
pub mod delete;
mod error;
pub mod load;
pub mod reference;
pub mod rfc3339;
pub mod save;
pub mod store;

pub use config::ImageConfig;
pub use delete::{Deleted, delete};
pub use error::ImageError;
pub use load::{LoadedImage, load};
pub use reference::Reference;
pub use save::{SaveSummary, layer_tar_size, save};
pub use store::{Image, ImageStore, LockedStore, Repositories};
