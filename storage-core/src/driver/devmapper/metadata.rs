//! The driver's bookkeeping in Docker's own files under `<home>/metadata/`:
//! one JSON file per thin device (`base` for the base device, else the
//! layer id), `transaction-metadata` for the one open pool transaction and
//! `deviceset-metadata` for the next device id and the base filesystem.
//! Every file is written to a temporary name and renamed into place.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::driver::DriverError;
use crate::fsutil;

pub const TRANSACTION_FILE: &str = "transaction-metadata";
pub const DEVICE_SET_FILE: &str = "deviceset-metadata";
/// The metadata file (and device name suffix) of the base device.
pub const BASE: &str = "base";

/// `metadata/<hash>`: moby's `devInfo`, fields in Docker's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevInfo {
    pub device_id: u32,
    pub size: u64,
    pub transaction_id: u64,
    pub initialized: bool,
    pub deleted: bool,
}

/// `metadata/transaction-metadata`: the pool transaction in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub open_transaction_id: u64,
    pub device_hash: String,
    pub device_id: u32,
}

/// `metadata/deviceset-metadata` (moby marshals the DeviceSet itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSetMeta {
    pub next_device_id: u32,
    #[serde(rename = "BaseDeviceUUID", default)]
    pub base_device_uuid: String,
    #[serde(rename = "BaseDeviceFilesystem", default)]
    pub base_device_filesystem: String,
}

/// The `metadata/` directory.
#[derive(Debug, Clone)]
pub struct MetadataDir {
    dir: PathBuf,
}

impl MetadataDir {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The file of device `hash` (`""` is the base device).
    pub fn device_file(&self, hash: &str) -> PathBuf {
        self.dir.join(if hash.is_empty() { BASE } else { hash })
    }

    pub fn load_device(&self, hash: &str) -> Result<Option<DevInfo>, DriverError> {
        read_json(&self.device_file(hash))
    }

    pub fn save_device(&self, hash: &str, info: &DevInfo) -> Result<(), DriverError> {
        write_json(&self.device_file(hash), info)
    }

    pub fn remove_device(&self, hash: &str) -> Result<(), DriverError> {
        let path = self.device_file(hash);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(DriverError::io("remove", path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Every device file: `(hash, info)`, the base device as `""`.
    pub fn devices(&self) -> Result<Vec<(String, DevInfo)>, DriverError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(DriverError::io("read", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(DriverError::io("read", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                || name.ends_with(".migrated")
                || name == TRANSACTION_FILE
                || name == DEVICE_SET_FILE
            {
                continue;
            }
            let hash = if name == BASE { String::new() } else { name };
            if let Some(info) = self.load_device(&hash)? {
                out.push((hash, info));
            }
        }
        Ok(out)
    }

    pub fn load_transaction(&self) -> Result<Option<Transaction>, DriverError> {
        read_json(&self.dir.join(TRANSACTION_FILE))
    }

    pub fn save_transaction(&self, transaction: &Transaction) -> Result<(), DriverError> {
        write_json(&self.dir.join(TRANSACTION_FILE), transaction)
    }

    pub fn remove_transaction(&self) -> Result<(), DriverError> {
        let path = self.dir.join(TRANSACTION_FILE);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(DriverError::io("remove", path)(e))
            }
            _ => Ok(()),
        }
    }

    pub fn load_device_set(&self) -> Result<DeviceSetMeta, DriverError> {
        Ok(read_json(&self.dir.join(DEVICE_SET_FILE))?.unwrap_or_default())
    }

    pub fn save_device_set(&self, meta: &DeviceSetMeta) -> Result<(), DriverError> {
        write_json(&self.dir.join(DEVICE_SET_FILE), meta)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, DriverError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            DriverError::io("parse", path)(io::Error::new(io::ErrorKind::InvalidData, e))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DriverError::io("read", path)(e)),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DriverError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| DriverError::io("encode", path)(io::Error::other(e)))?;
    fsutil::write_atomic(path, &bytes, 0o600).map_err(DriverError::io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_dockers_json_shape() {
        let info = DevInfo {
            device_id: 3,
            size: 10 << 30,
            transaction_id: 4,
            initialized: false,
            deleted: false,
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"device_id":3,"size":10737418240,"transaction_id":4,"initialized":false,"deleted":false}"#
        );
        let meta = DeviceSetMeta {
            next_device_id: 5,
            base_device_uuid: "u".into(),
            base_device_filesystem: "xfs".into(),
        };
        assert_eq!(
            serde_json::to_string(&meta).unwrap(),
            r#"{"next_device_id":5,"BaseDeviceUUID":"u","BaseDeviceFilesystem":"xfs"}"#
        );
        let transaction = Transaction {
            open_transaction_id: 2,
            device_hash: "abc".into(),
            device_id: 1,
        };
        assert_eq!(
            serde_json::to_string(&transaction).unwrap(),
            r#"{"open_transaction_id":2,"device_hash":"abc","device_id":1}"#
        );
    }

    #[test]
    fn devices_skip_the_bookkeeping_files() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetadataDir::new(dir.path().to_path_buf());
        let info = DevInfo {
            device_id: 1,
            size: 1,
            transaction_id: 1,
            initialized: true,
            deleted: false,
        };
        meta.save_device("", &info).unwrap();
        meta.save_device("layer1", &info).unwrap();
        meta.save_transaction(&Transaction::default()).unwrap();
        meta.save_device_set(&DeviceSetMeta::default()).unwrap();
        let mut devices = meta.devices().unwrap();
        devices.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<_> = devices.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(names, ["", "layer1"]);
        assert!(dir.path().join("base").is_file());
    }
}
