//! Opening the data root the global options name: the driver, its layer
//! store and the containers on it.

use std::path::Path;

use anyhow::Context;
use storage_core::driver::{self, DriverOptions};
use storage_core::layer::LayerStore;

/// The layer store of `driver` under `root`, repaired if a previous
/// command was interrupted.
pub fn open_layers(
    root: &Path,
    driver_name: &str,
    storage_opts: &[String],
) -> anyhow::Result<LayerStore> {
    let mut options = DriverOptions::default();
    for opt in storage_opts {
        let (key, value) = opt
            .split_once('=')
            .with_context(|| format!("storage option {opt:?}: want key=value"))?;
        options
            .storage_opt
            .insert(key.to_string(), value.to_string());
    }
    let driver = driver::open(driver_name, root, &options)?;
    Ok(LayerStore::open(root, driver)?)
}
