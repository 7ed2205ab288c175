//! The image layer store, in Docker's layerdb format
//! (`<root>/image/<driver>/layerdb/`): read-only layers by chain-id with
//! their diff-id, parent, cache-id, size and tar-split, and the rw layers of
//! containers under `mounts/<container>/`.

pub mod chain;
pub mod error;
pub mod lock;
pub mod store;

pub use chain::{chain_id, chain_ids};
pub use error::LayerError;
pub use store::{LayerInfo, LayerStore, RwLayer};
