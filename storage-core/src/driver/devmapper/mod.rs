//! The devicemapper driver (Docker's `devicemapper`, loop-lvm or direct):
//! a dm thin-pool, a base thin device formatted once (xfs or ext4), every
//! layer a thin snapshot (`create_snap`) of its parent and every container
//! a snapshot of its image layer. Layout, as Docker's:
//!
//! ```text
//! <home>/devicemapper/{data,metadata}  sparse loop files (loop-lvm only)
//! <home>/metadata/<id>                  {"device_id":..,"size":..,"transaction_id":..,...}
//! <home>/metadata/base                  the base device
//! <home>/metadata/{transaction-metadata,deviceset-metadata}
//! <home>/mnt/<id>/{rootfs/,id}          the mounted device; rootfs is the layer
//! /dev/mapper/docker-<maj>:<min>-<ino>-{pool,base,<id>}
//! ```
//!
//! Pool transactions follow moby: the open transaction is written first,
//! the pool's transaction id is bumped last, and an open transaction found
//! at start-up is rolled back. At start-up the pool must match the store
//! (transaction ids, the base device's filesystem UUID; an empty store
//! takes only an empty pool): a metadata device from another pool is
//! refused before anything changes. With `dm.use_deferred_removal` a busy
//! device is removed by the kernel on its last close; with
//! `dm.use_deferred_deletion` a thin device that cannot be deleted yet is
//! marked `deleted` in its file (its id stays taken) and deleted by a later
//! operation (open, create, remove, cleanup). Diffs are the naive walk
//! (moby's NaiveDiffDriver). Without dm-thin in the kernel, `open` refuses
//! in one line and creates nothing; a failed `open` removes the pool and
//! the home it made.

mod deferred;
pub mod fs;
pub mod metadata;
pub mod options;
mod ownership;
pub mod pool;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use self::metadata::{DevInfo, DeviceSetMeta, MetadataDir, Transaction};
use self::options::{BaseFs, DmOptions, human_size};
use self::pool::{Pool, PoolStatus};
use super::layer_id;
use super::mountref::MountCounter;
use super::{CreateOpts, Driver, DriverError, DriverOptions, naive};
use crate::archive::{AppliedLayer, Change};
use crate::fsutil;
use crate::sys::devmapper::{self as dm, DmControl};
use crate::sys::loopdev::{LoopDevice, LoopOptions};
use crate::sys::mount;

const NAME: &str = "devicemapper";
/// Device ids are 24 bits in the pool.
const MAX_DEVICE_ID: u32 = 0x00ff_ffff;

/// Space of the pool in bytes, as `docker info` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub data_used: u64,
    pub data_total: u64,
    pub metadata_used: u64,
    pub metadata_total: u64,
    pub block_size: u64,
    pub transaction_id: u64,
    pub out_of_space: bool,
}

impl From<PoolStatus> for PoolUsage {
    fn from(s: PoolStatus) -> Self {
        let block = s.block_bytes();
        Self {
            data_used: s.data_used * block,
            data_total: s.data_total * block,
            metadata_used: s.metadata_used * 4096,
            metadata_total: s.metadata_total * 4096,
            block_size: block,
            transaction_id: s.transaction_id,
            out_of_space: s.out_of_space,
        }
    }
}

/// The open pool transaction and device ids (moby's DeviceSet fields).
#[derive(Debug)]
struct State {
    transaction_id: u64,
    used_ids: BTreeSet<u32>,
    device_set: DeviceSetMeta,
}

pub struct DevMapper {
    home: PathBuf,
    options: DmOptions,
    control: DmControl,
    meta: MetadataDir,
    prefix: String,
    pool: Pool,
    data_device: String,
    metadata_device: String,
    data_loop_file: Option<PathBuf>,
    metadata_loop_file: Option<PathBuf>,
    state: Mutex<State>,
    mounts: MountCounter,
}

fn unavailable(why: impl Into<String>) -> DriverError {
    DriverError::Unavailable {
        driver: NAME.into(),
        why: why.into(),
    }
}

/// Opens the device-mapper control node and checks the kernel has the
/// thin-pool target (loading dm-thin-pool on demand). Creates nothing that
/// outlives the call.
pub fn check_kernel() -> Result<DmControl, DriverError> {
    const WHY: &str = "kernel has no dm-thin-pool target (needs CONFIG_DM_THIN_PROVISIONING)";
    let control = match DmControl::open(Path::new(dm::CONTROL_PATH)) {
        Ok(control) => control,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No udev: reach the misc device 10:236 through a private node.
            let dir =
                tempfile::tempdir().map_err(DriverError::io("create", std::env::temp_dir()))?;
            let node = dir.path().join("control");
            let dev = nix::sys::stat::makedev(dm::MISC_MAJOR, dm::MAPPER_CTRL_MINOR);
            nix::sys::stat::mknod(
                &node,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                dev,
            )
            .map_err(|e| DriverError::io("mknod", &node)(e.into()))?;
            DmControl::open(&node).map_err(|e| {
                unavailable(format!(
                    "{WHY}: no device-mapper ({} missing, open(char 10:236): {})",
                    dm::CONTROL_PATH,
                    crate::features::errno_name(&e)
                ))
            })?
        }
        Err(e) => {
            return Err(unavailable(format!(
                "{WHY}: open {}: {}",
                dm::CONTROL_PATH,
                crate::features::errno_name(&e)
            )));
        }
    };
    control.version().map_err(|e| {
        unavailable(format!(
            "{WHY}: DM_VERSION: {}",
            crate::features::errno_name(&e)
        ))
    })?;
    let found = match control.target_version("thin-pool") {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => control
            .list_versions()
            .map(|v| v.iter().any(|t| t.name == "thin-pool"))
            .unwrap_or(false),
        Err(e) => {
            return Err(unavailable(format!(
                "{WHY}: DM_GET_TARGET_VERSION: {}",
                crate::features::errno_name(&e)
            )));
        }
    };
    if !found {
        return Err(unavailable(WHY));
    }
    Ok(control)
}

/// The smallest metadata device a thin-pool is given (lvm's minimum).
const MIN_METADATA_BYTES: u64 = 2 << 20;

impl DevMapper {
    /// Opens (creating when needed) the driver home `<root>/devicemapper`:
    /// the pool, the base device, the bookkeeping. On failure the pool and
    /// the home it created are removed again.
    pub fn open(home: &Path, options: &DriverOptions) -> Result<Self, DriverError> {
        let options = DmOptions::parse(options)?;
        let control = check_kernel()?;
        if options.deferred_removal {
            let version = control.version().map_err(DriverError::io(
                "DM_VERSION",
                PathBuf::from(dm::CONTROL_PATH),
            ))?;
            if version < dm::DEFERRED_REMOVE_SINCE {
                return Err(unavailable(format!(
                    "dm.use_deferred_removal=true: kernel device-mapper interface {}.{}.{} has no deferred removal (needs 4.27)",
                    version[0], version[1], version[2]
                )));
            }
        }
        let home_existed = home.exists();
        let opened =
            Self::open_pool(home, options, control).and_then(|(driver, created_pool)| match driver
                .init()
            {
                Ok(()) => Ok(driver),
                Err(e) => {
                    if created_pool {
                        let _ = pool::deactivate(&driver.control, &driver.pool.name);
                    }
                    Err(e)
                }
            });
        if opened.is_err() && !home_existed {
            let _ = std::fs::remove_dir_all(home);
        }
        opened
    }

    /// The pool (found, or created with its loop files: then `true`) and
    /// the driver on it, before any check or change of the pool.
    fn open_pool(
        home: &Path,
        options: DmOptions,
        control: DmControl,
    ) -> Result<(Self, bool), DriverError> {
        if let Some(parent) = home.parent() {
            std::fs::create_dir_all(parent).map_err(DriverError::io("create", parent))?;
        }
        fsutil::ensure_dir(home, 0o700).map_err(DriverError::io("create", home))?;
        let meta = MetadataDir::new(home.join("metadata"));
        fsutil::ensure_dir(meta.path(), 0o700).map_err(DriverError::io("create", meta.path()))?;
        let mnt = home.join("mnt");
        fsutil::ensure_dir(&mnt, 0o755).map_err(DriverError::io("create", &mnt))?;

        let st = std::fs::metadata(home).map_err(DriverError::io("stat", home))?;
        let prefix = format!(
            "docker-{}:{}-{}",
            nix::sys::stat::major(st.dev()),
            nix::sys::stat::minor(st.dev()),
            st.ino()
        );
        let pool_name = options
            .thin_pool
            .clone()
            .unwrap_or_else(|| format!("{prefix}-pool"));

        let loop_dir = home.join("devicemapper");
        let mut data_loop_file = None;
        let mut metadata_loop_file = None;
        let mut created_pool = false;
        let (pool, data_device, metadata_device) = match Pool::existing(&control, &pool_name)? {
            Some(pool) => {
                if options.thin_pool.is_none() {
                    let data = loop_dir.join("data");
                    let metadata = loop_dir.join("metadata");
                    data_loop_file = data.exists().then_some(data);
                    metadata_loop_file = metadata.exists().then_some(metadata);
                }
                let data = options
                    .data_device
                    .as_ref()
                    .map(|p| p.display().to_string());
                let metadata = options
                    .metadata_device
                    .as_ref()
                    .map(|p| p.display().to_string());
                (pool, data.unwrap_or_default(), metadata.unwrap_or_default())
            }
            None if options.thin_pool.is_some() => {
                return Err(DriverError::io(
                    "open thin pool",
                    pool::node_path(&pool_name),
                )(io::Error::from_raw_os_error(libc::ENXIO)));
            }
            None => {
                let mut loops = Vec::new();
                let mut device = |given: &Option<PathBuf>, file: &str, size: u64| {
                    if let Some(path) = given {
                        return Ok((path.clone(), None));
                    }
                    let path = loop_dir.join(file);
                    fsutil::ensure_dir(&loop_dir, 0o700)
                        .map_err(DriverError::io("create", &loop_dir))?;
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                        .map_err(DriverError::io("create", &path))?;
                    let len = f.metadata().map_err(DriverError::io("stat", &path))?.len();
                    if len < size {
                        f.set_len(size).map_err(DriverError::io("grow", &path))?;
                    }
                    let device = LoopDevice::attach(
                        &path,
                        LoopOptions {
                            read_only: false,
                            direct_io: true,
                            autoclear: true,
                        },
                    )
                    .map_err(|e| DriverError::io("attach loop device", &path)(e.source))?;
                    let dev_path = device.path().to_path_buf();
                    loops.push(device);
                    Ok::<_, DriverError>((dev_path, Some(path)))
                };
                let (data_dev, data_file) =
                    device(&options.data_device, "data", options.loop_data_size)?;
                let (meta_dev, meta_file) = device(
                    &options.metadata_device,
                    "metadata",
                    options.loop_metadata_size,
                )?;
                let meta_bytes = pool::device_size(&meta_dev)?;
                if meta_bytes < MIN_METADATA_BYTES {
                    return Err(DriverError::io("use as thin-pool metadata", &meta_dev)(
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "too small: {} bytes, a thin-pool's metadata needs at least {}",
                                meta_bytes,
                                human_size(MIN_METADATA_BYTES)
                            ),
                        ),
                    ));
                }
                let pool = Pool::create(
                    &control,
                    &pool_name,
                    &data_dev,
                    &meta_dev,
                    options.block_sectors,
                )?;
                created_pool = true;
                // The pool holds the loop devices now; dropping ours leaves
                // them attached with autoclear, so they go with the pool.
                drop(loops);
                data_loop_file = data_file;
                metadata_loop_file = meta_file;
                (
                    pool,
                    data_dev.display().to_string(),
                    meta_dev.display().to_string(),
                )
            }
        };

        let driver = Self {
            home: home.to_path_buf(),
            options,
            control,
            meta,
            prefix,
            pool,
            data_device,
            metadata_device,
            data_loop_file,
            metadata_loop_file,
            state: Mutex::new(State {
                transaction_id: 0,
                used_ids: BTreeSet::new(),
                device_set: DeviceSetMeta::default(),
            }),
            mounts: MountCounter::default(),
        };
        Ok((driver, created_pool))
    }

    /// Loads the bookkeeping, checks the pool is this store's, finishes or
    /// rolls back what a crash left, makes the base device and deletes the
    /// devices whose deletion was deferred.
    fn init(&self) -> Result<(), DriverError> {
        let status = self.pool.status(&self.control)?;
        {
            let mut state = self.lock();
            state.transaction_id = status.transaction_id;
            for (_, info) in self.meta.devices()? {
                state.used_ids.insert(info.device_id);
            }
            state.device_set = self.meta.load_device_set()?;
        }
        self.verify_pool(&status)?;
        self.process_pending_transaction()?;
        self.setup_base()?;
        if self.options.deferred_deletion {
            let _ = self.cleanup_deleted_devices();
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The dm name of device `hash` (`""` is the base).
    pub fn device_name(&self, hash: &str) -> String {
        let hash = if hash.is_empty() {
            metadata::BASE
        } else {
            hash
        };
        format!("{}-{hash}", self.prefix)
    }

    /// The pool's device-mapper name.
    pub fn pool_name(&self) -> &str {
        &self.pool.name
    }

    /// Used and total data and metadata space of the pool.
    pub fn pool_usage(&self) -> Result<PoolUsage, DriverError> {
        Ok(self.pool.status(&self.control)?.into())
    }

    /// The filesystem on the base device (and so on every layer).
    pub fn filesystem(&self) -> BaseFs {
        BaseFs::parse(&self.lock().device_set.base_device_filesystem).unwrap_or(self.options.fs)
    }

    fn check_id(id: &str) -> Result<(), DriverError> {
        const RESERVED: &[&str] = &[
            metadata::BASE,
            metadata::TRANSACTION_FILE,
            metadata::DEVICE_SET_FILE,
        ];
        layer_id::check(id, RESERVED)?;
        // The device name `<pool prefix>-<id>` must fit DM_NAME_LEN (128).
        if id.len() > 90 {
            return Err(DriverError::InvalidId { id: id.to_string() });
        }
        Ok(())
    }

    fn lookup(&self, id: &str) -> Result<DevInfo, DriverError> {
        if !id.is_empty() {
            Self::check_id(id)?;
        }
        match self.meta.load_device(id)? {
            Some(info) if !info.deleted => Ok(info),
            _ => Err(DriverError::NotFound {
                id: if id.is_empty() { metadata::BASE } else { id }.to_string(),
            }),
        }
    }

    fn pool_error(&self, op: &'static str) -> impl FnOnce(io::Error) -> DriverError {
        DriverError::io(op, pool::node_path(&self.pool.name))
    }

    // ------------------------------------------------------ transactions

    fn open_transaction(
        &self,
        state: &State,
        hash: &str,
        device_id: u32,
    ) -> Result<Transaction, DriverError> {
        let transaction = Transaction {
            open_transaction_id: state.transaction_id + 1,
            device_hash: hash.to_string(),
            device_id,
        };
        self.meta.save_transaction(&transaction)?;
        Ok(transaction)
    }

    fn close_transaction(
        &self,
        state: &mut State,
        transaction: &Transaction,
    ) -> Result<(), DriverError> {
        self.pool
            .message(
                &self.control,
                &format!(
                    "set_transaction_id {} {}",
                    state.transaction_id, transaction.open_transaction_id
                ),
            )
            .map_err(self.pool_error("DM_TARGET_MSG set_transaction_id"))?;
        state.transaction_id = transaction.open_transaction_id;
        Ok(())
    }

    /// moby's processPendingTransaction: a transaction opened but never
    /// closed (crash) is rolled back: its device deleted, its file removed.
    fn process_pending_transaction(&self) -> Result<(), DriverError> {
        let state = self.lock();
        let Some(transaction) = self.meta.load_transaction()? else {
            return Ok(());
        };
        if transaction.open_transaction_id <= state.transaction_id {
            return Ok(());
        }
        let _ = self
            .pool
            .message(&self.control, &format!("delete {}", transaction.device_id));
        self.meta.remove_device(&transaction.device_hash)?;
        self.meta.remove_transaction()
    }

    fn next_free_id(&self, state: &mut State) -> Result<u32, DriverError> {
        for _ in 0..=MAX_DEVICE_ID {
            state.device_set.next_device_id = (state.device_set.next_device_id + 1) & MAX_DEVICE_ID;
            let id = state.device_set.next_device_id;
            if id != 0 && !state.used_ids.contains(&id) {
                state.used_ids.insert(id);
                return Ok(id);
            }
        }
        Err(self.pool_error("allocate device id")(io::Error::other(
            "no free thin device id",
        )))
    }

    /// Creates thin device `hash` (a snapshot of `origin` when given) in one
    /// pool transaction and registers it.
    fn create_device(
        &self,
        state: &mut State,
        hash: &str,
        origin: Option<&DevInfo>,
        size: u64,
    ) -> Result<DevInfo, DriverError> {
        let mut device_id = self.next_free_id(state)?;
        let transaction = loop {
            let transaction = self.open_transaction(state, hash, device_id)?;
            let message = match origin {
                Some(origin) => format!("create_snap {device_id} {}", origin.device_id),
                None => format!("create_thin {device_id}"),
            };
            match self.pool.message(&self.control, &message) {
                Ok(()) => break transaction,
                // The id is taken in the pool but not in our files: skip it.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    device_id = self.next_free_id(state)?;
                }
                Err(e) => {
                    state.used_ids.remove(&device_id);
                    let _ = self.meta.remove_transaction();
                    return Err(self.pool_error("DM_TARGET_MSG create")(e));
                }
            }
        };
        let info = DevInfo {
            device_id,
            size,
            transaction_id: transaction.open_transaction_id,
            initialized: origin.is_some(),
            deleted: false,
        };
        let registered = self
            .meta
            .save_device(hash, &info)
            .and_then(|()| self.close_transaction(state, &transaction))
            .and_then(|()| self.meta.save_device_set(&state.device_set));
        if let Err(e) = registered {
            let _ = self.meta.remove_device(hash);
            let _ = self
                .pool
                .message(&self.control, &format!("delete {device_id}"));
            state.used_ids.remove(&device_id);
            return Err(e);
        }
        Ok(info)
    }

    /// moby's deleteDevice: deactivates and deletes thin device `hash`.
    /// `Ok(true)`: gone. `Ok(false)`: still busy, marked `deleted` for a
    /// later attempt (deferred deletion, unless `sync`). Without deferred
    /// deletion a busy device is an error and nothing changes.
    fn delete_device(
        &self,
        state: &mut State,
        hash: &str,
        info: &DevInfo,
        sync: bool,
    ) -> Result<bool, DriverError> {
        if self.options.blk_discard {
            self.discard(hash, info);
        }
        // Deferred removal only goes with deferred deletion here (moby):
        // otherwise a device busy for a moment is waited for.
        let deferred = self.options.deferred_deletion && !sync;
        self.deactivate(hash, deferred)?;
        let transaction = self.open_transaction(state, hash, info.device_id)?;
        match self
            .pool
            .message(&self.control, &format!("delete {}", info.device_id))
        {
            Ok(()) => {}
            Err(e) => {
                // The pool did not change: the transaction never happened.
                self.meta.remove_transaction()?;
                if e.raw_os_error() == Some(libc::EBUSY) && deferred {
                    if !info.deleted {
                        let marked = DevInfo {
                            deleted: true,
                            ..info.clone()
                        };
                        self.meta.save_device(hash, &marked)?;
                    }
                    return Ok(false);
                }
                return Err(self.pool_error("DM_TARGET_MSG delete")(e));
            }
        }
        self.meta.remove_device(hash)?;
        state.used_ids.remove(&info.device_id);
        self.close_transaction(state, &transaction)?;
        self.meta.remove_transaction()?;
        pool::remove_node(&self.device_name(hash));
        Ok(true)
    }

    /// Docker's discard hack: give the device's blocks back to the backing
    /// files before deleting it (best effort; not while it is open).
    fn discard(&self, hash: &str, info: &DevInfo) {
        let name = self.device_name(hash);
        if let Ok(Some(dev)) = self.control.info(&name) {
            if dev.open_count != 0 {
                return;
            }
        }
        let Ok(path) = self.activate(hash, info) else {
            return;
        };
        if let Ok(Some(dev)) = self.control.info(&name) {
            if dev.open_count == 0 {
                if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
                    let _ = dm::discard(&file, info.size);
                }
            }
        }
    }

    /// Activates thin device `hash` unless it is active (cancelling a
    /// pending deferred removal); returns its node.
    fn activate(&self, hash: &str, info: &DevInfo) -> Result<PathBuf, DriverError> {
        let name = self.device_name(hash);
        if let Some(dev) = self
            .control
            .info(&name)
            .map_err(DriverError::io("DM_DEV_STATUS", pool::node_path(&name)))?
        {
            if !dev.deferred_remove || self.cancel_deferred_removal(&name)? {
                return pool::ensure_node(&name, dev.dev);
            }
        }
        pool::activate(
            &self.control,
            &name,
            self.pool.thin_table(info.device_id, info.size),
        )?;
        Ok(pool::node_path(&name))
    }

    /// moby's setupBaseImage: a base device formatted once and never mounted
    /// again; recreated when an earlier attempt did not finish.
    fn setup_base(&self) -> Result<(), DriverError> {
        let mut state = self.lock();
        if let Some(old) = self.meta.load_device("")? {
            if old.initialized && !old.deleted {
                let uuid = state.device_set.base_device_uuid.clone();
                if !uuid.is_empty() {
                    self.verify_base_uuid(&old, &uuid)?;
                }
                let saved = &state.device_set.base_device_filesystem;
                if self.options.fs_given && !saved.is_empty() && saved != self.options.fs.name() {
                    return Err(DriverError::io(
                        "use base device",
                        pool::node_path(&self.device_name("")),
                    )(io::Error::other(format!(
                        "it holds {saved}, but dm.fs={} was given",
                        self.options.fs.name()
                    ))));
                }
                return Ok(());
            }
            self.delete_device(&mut state, "", &old, true)?;
        }
        let mut info = self.create_device(&mut state, "", None, self.options.base_size)?;
        let path = self.activate("", &info)?;
        let formatted = fs::mkfs(self.options.fs, &path, &self.options.mkfs_args)
            .and_then(|()| fs::probe(&path).map_err(DriverError::io("read superblock", &path)));
        let deactivated = pool::deactivate(&self.control, &self.device_name(""));
        let probed = match formatted {
            Ok(probed) => probed,
            Err(e) => {
                let full = self
                    .pool
                    .status(&self.control)
                    .ok()
                    .filter(|s| s.out_of_space);
                // Give the blocks back; the next open makes the base again.
                if deactivated.is_ok() {
                    let _ = self.delete_device(&mut state, "", &info, true);
                }
                let Some(full) = full else {
                    return Err(e);
                };
                let data = match (&self.data_loop_file, self.data_device.as_str()) {
                    (Some(file), _) => format!("data file {}", file.display()),
                    (None, "") => "data device".to_string(),
                    (None, device) => format!("data device {device}"),
                };
                return Err(self.pool_error("format the base device")(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "thin pool too small: its {data} ({}) filled up making the {} {} base device",
                        human_size(full.block_bytes() * full.data_total),
                        human_size(self.options.base_size),
                        self.options.fs.name()
                    ),
                )));
            }
        };
        deactivated?;
        info.initialized = true;
        self.meta.save_device("", &info)?;
        state.device_set.base_device_filesystem = self.options.fs.name().to_string();
        state.device_set.base_device_uuid = probed.map(|(_, uuid)| uuid).unwrap_or_default();
        self.meta.save_device_set(&state.device_set)
    }

    /// moby's poolHasFreeSpace (`dm.min_free_space`).
    fn check_free_space(&self) -> Result<(), DriverError> {
        let percent = u64::from(self.options.min_free_space_percent);
        if percent == 0 {
            return Ok(());
        }
        let s = self.pool.status(&self.control)?;
        let min_data = (s.data_total * percent / 100).max(1);
        let min_meta = (s.metadata_total * percent / 100).max(1);
        let free_data = s.data_total - s.data_used.min(s.data_total);
        let free_meta = s.metadata_total - s.metadata_used.min(s.metadata_total);
        if free_data < min_data || free_meta < min_meta {
            let (what, free, min) = if free_data < min_data {
                ("data", free_data, min_data)
            } else {
                ("metadata", free_meta, min_meta)
            };
            return Err(self.pool_error("create thin snapshot")(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "thin pool has {free} free {what} blocks, less than the minimum {min} (dm.min_free_space={percent}%)"
                ),
            )));
        }
        Ok(())
    }

    fn add_device(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
    ) -> Result<(), DriverError> {
        Self::check_id(id)?;
        if let Some(key) = opts.storage_opt.keys().next() {
            return Err(DriverError::UnknownOption {
                id: id.to_string(),
                key: key.clone(),
            });
        }
        if self.options.deferred_deletion {
            let _ = self.cleanup_deleted_devices();
        }
        let origin_hash = parent.unwrap_or("");
        let origin = self.lookup(origin_hash)?;
        let mut state = self.lock();
        if self.meta.load_device(id)?.is_some() {
            return Err(DriverError::AlreadyExists { id: id.to_string() });
        }
        self.check_free_space()?;
        // Snapshotting an active origin: suspend it so its filesystem is
        // consistent in the snapshot (moby's takeSnapshot).
        let origin_name = self.device_name(origin_hash);
        let active = self
            .control
            .info(&origin_name)
            .map_err(DriverError::io(
                "DM_DEV_STATUS",
                pool::node_path(&origin_name),
            ))?
            .is_some();
        if active {
            self.control.suspend(&origin_name).map_err(DriverError::io(
                "DM_DEV_SUSPEND",
                pool::node_path(&origin_name),
            ))?;
        }
        let created = self.create_device(&mut state, id, Some(&origin), origin.size);
        if active {
            let resumed = self.control.resume(&origin_name).map_err(DriverError::io(
                "DM_DEV_SUSPEND (resume)",
                pool::node_path(&origin_name),
            ));
            created?;
            return resumed;
        }
        created.map(|_| ())
    }

    fn mount_dir(&self, id: &str) -> PathBuf {
        self.home.join("mnt").join(id)
    }

    fn mount_device(&self, id: &str, info: &DevInfo, target: &Path) -> Result<(), DriverError> {
        let path = self.activate(id, info)?;
        let fs = self.filesystem();
        let mut options: Vec<String> = Vec::new();
        if fs == BaseFs::Xfs {
            options.push("nouuid".into());
        }
        options.extend(self.options.mount_options.iter().cloned());
        let data = options.join(",");
        let mounted = mount::mount(
            &path.display().to_string(),
            target,
            fs.name(),
            mount::MountFlags::empty(),
            (!data.is_empty()).then_some(data.as_str()),
        );
        if let Err(e) = mounted {
            let _ = pool::deactivate(&self.control, &self.device_name(id));
            return Err(e.into());
        }
        if let (BaseFs::Xfs, Some(retries)) = (fs, self.options.xfs_nospace_max_retries) {
            let dev = std::fs::metadata(&path).map(|m| m.rdev()).unwrap_or(0);
            let knob = format!(
                "/sys/fs/xfs/dm-{}/error/metadata/ENOSPC/max_retries",
                nix::sys::stat::minor(dev)
            );
            if let Err(e) = std::fs::write(&knob, retries.to_string()) {
                let _ = mount::unmount_detach(target);
                let _ = pool::deactivate(&self.control, &self.device_name(id));
                return Err(DriverError::io("write dm.xfs_nospace_max_retries to", knob)(e));
            }
        }
        Ok(())
    }
}

impl Driver for DevMapper {
    fn name(&self) -> &'static str {
        NAME
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<(), DriverError> {
        self.add_device(id, parent, opts)
    }

    fn create_rw(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
    ) -> Result<(), DriverError> {
        self.add_device(id, parent, opts)
    }

    /// Deletes the layer's thin device. A device still open (a process in
    /// its filesystem, another mount) is an error that keeps the layer,
    /// unless deferred deletion is on: then it is marked and deleted by a
    /// later operation once released.
    fn remove(&self, id: &str) -> Result<(), DriverError> {
        if self.options.deferred_deletion {
            let _ = self.cleanup_deleted_devices();
        }
        let info = self.lookup(id)?;
        let mp = self.mount_dir(id);
        let busy = |what: &str| {
            DriverError::io("remove thin device", pool::node_path(&self.device_name(id)))(
                io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "{what} is busy (a process or another mount holds it); layer {id} is kept: retry once it is released, or use dm.use_deferred_removal=true with dm.use_deferred_deletion=true"
                    ),
                ),
            )
        };
        if mount::is_mount_point(&mp) {
            match mount::unmount(&mp) {
                Ok(()) => {}
                // In use and nothing may be deferred: leave it all as it is.
                Err(e)
                    if e.source == nix::errno::Errno::EBUSY && !self.options.deferred_deletion =>
                {
                    return Err(busy("its filesystem"));
                }
                Err(_) => mount::unmount_detach(&mp)?,
            }
            // The mount is gone, whatever references `get` handed out.
            while self.mounts.decrement(&mp) > 0 {}
        }
        let mut state = self.lock();
        match self.delete_device(&mut state, id, &info, false) {
            Ok(_) => {}
            Err(DriverError::Io { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
                return Err(busy("the device"));
            }
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_dir(&mp);
        Ok(())
    }

    fn get(&self, id: &str) -> Result<PathBuf, DriverError> {
        let info = self.lookup(id)?;
        let mp = self.mount_dir(id);
        let rootfs = mp.join("rootfs");
        if self.mounts.increment(&mp) > 1 {
            return Ok(rootfs);
        }
        let mounted = (|| {
            fsutil::ensure_dir(&mp, 0o755).map_err(DriverError::io("create", &mp))?;
            self.mount_device(id, &info, &mp)?;
            let prepared = fsutil::ensure_dir(&rootfs, 0o755)
                .map_err(DriverError::io("create", &rootfs))
                .and_then(|_| {
                    let id_file = mp.join("id");
                    if id_file.exists() {
                        return Ok(());
                    }
                    fsutil::write_atomic(&id_file, id.as_bytes(), 0o600)
                        .map_err(DriverError::io("write", id_file))
                });
            if let Err(e) = prepared {
                let _ = mount::unmount_detach(&mp);
                let _ = pool::deactivate(&self.control, &self.device_name(id));
                return Err(e);
            }
            Ok(rootfs.clone())
        })();
        if mounted.is_err() {
            self.mounts.decrement(&mp);
        }
        mounted
    }

    fn put(&self, id: &str) -> Result<(), DriverError> {
        self.lookup(id)?;
        let mp = self.mount_dir(id);
        if self.mounts.decrement(&mp) > 0 {
            return Ok(());
        }
        if mount::is_mount_point(&mp) {
            mount::unmount(&mp).or_else(|_| mount::unmount_detach(&mp))?;
        }
        let _ = std::fs::remove_dir(&mp);
        self.deactivate(id, self.options.deferred_removal)
    }

    fn exists(&self, id: &str) -> bool {
        Self::check_id(id).is_ok() && self.lookup(id).is_ok()
    }

    fn status(&self) -> Vec<(String, String)> {
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut add = |k: &str, v: String| lines.push((k.to_string(), v));
        let usage = self.pool_usage().ok();
        add("Pool Name", self.pool.name.clone());
        add(
            "Pool Blocksize",
            human_size(u64::from(self.options.block_sectors) * 512),
        );
        let base_size = self
            .meta
            .load_device("")
            .ok()
            .flatten()
            .map_or(0, |i| i.size);
        add("Base Device Size", human_size(base_size));
        add("Backing Filesystem", self.filesystem().name().to_string());
        add("Udev Sync Supported", "false".into());
        if !self.data_device.is_empty() {
            add("Data file", self.data_device.clone());
        }
        if !self.metadata_device.is_empty() {
            add("Metadata file", self.metadata_device.clone());
        }
        if let Some(file) = &self.data_loop_file {
            add("Data loop file", file.display().to_string());
        }
        if let Some(file) = &self.metadata_loop_file {
            add("Metadata loop file", file.display().to_string());
        }
        if let Some(u) = usage {
            add("Data Space Used", human_size(u.data_used));
            add("Data Space Total", human_size(u.data_total));
            add(
                "Data Space Available",
                human_size(u.data_total - u.data_used.min(u.data_total)),
            );
            add("Metadata Space Used", human_size(u.metadata_used));
            add("Metadata Space Total", human_size(u.metadata_total));
            add(
                "Metadata Space Available",
                human_size(u.metadata_total - u.metadata_used.min(u.metadata_total)),
            );
            add(
                "Thin Pool Minimum Free Space",
                human_size(u.data_total * u64::from(self.options.min_free_space_percent) / 100),
            );
        }
        add(
            "Deferred Removal Enabled",
            self.options.deferred_removal.to_string(),
        );
        add(
            "Deferred Deletion Enabled",
            self.options.deferred_deletion.to_string(),
        );
        add(
            "Deferred Deleted Device Count",
            self.deleted_count().to_string(),
        );
        lines
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>, DriverError> {
        let info = self.lookup(id)?;
        Ok(BTreeMap::from([
            ("DeviceId".to_string(), info.device_id.to_string()),
            ("DeviceSize".to_string(), info.size.to_string()),
            ("DeviceName".to_string(), self.device_name(id)),
        ]))
    }

    /// Unmounts everything under the home, removes every thin device of
    /// this driver and, for a pool it created, the pool (its loop devices
    /// detach with it).
    fn cleanup(&self) -> Result<(), DriverError> {
        if self.options.deferred_deletion {
            let _ = self.cleanup_deleted_devices();
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(DriverError::io("read", "/proc/self/mountinfo"))?;
        let home = self
            .home
            .canonicalize()
            .unwrap_or_else(|_| self.home.clone());
        let mut under_home: Vec<PathBuf> = info
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|p| PathBuf::from(mount::unescape_mountinfo(p)))
            .filter(|p| p.starts_with(&home) && p != &home)
            .collect();
        under_home.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for path in under_home {
            mount::unmount_detach(&path)?;
        }
        let devices = self
            .control
            .list_devices()
            .map_err(DriverError::io("DM_LIST_DEVICES", pool::MAPPER_DIR))?;
        let ours = format!("{}-", self.prefix);
        for (name, _) in devices {
            if name.starts_with(&ours) && name != self.pool.name {
                if self.options.deferred_removal {
                    pool::deactivate_deferred(&self.control, &name)?;
                } else {
                    pool::deactivate(&self.control, &name)?;
                }
            }
        }
        if self.options.thin_pool.is_none() {
            pool::deactivate(&self.control, &self.pool.name)?;
        }
        Ok(())
    }

    fn diff(&self, id: &str, parent: Option<&str>, out: &mut dyn Write) -> Result<(), DriverError> {
        naive::diff(self, id, parent, out)
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>, DriverError> {
        naive::changes(self, id, parent)
    }

    /// Extracts into the layer's tree; the size is counted as moby's
    /// NaiveDiffDriver does (symlinks included), like every naive driver.
    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
        tar_split: Option<&mut (dyn Write + Send)>,
    ) -> Result<AppliedLayer, DriverError> {
        naive::apply_diff(self, id, parent, diff, tar_split, false)
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64, DriverError> {
        naive::diff_size(self, id, parent)
    }

    fn diff_files(&self, _id: &str) -> Option<PathBuf> {
        None
    }
}

/// Opens the driver for `driver::open` (`<root>/devicemapper`).
pub fn open(home: &Path, options: &DriverOptions) -> Result<DevMapper, DriverError> {
    DevMapper::open(home, options)
}
