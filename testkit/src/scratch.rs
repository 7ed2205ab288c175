//! [`ScratchFs`]: a fresh filesystem for one test, loop-backed (ext4, xfs,
//! btrfs) or tmpfs, in its own temp dir; unmounted, detached and removed on
//! drop, also when the test panicked.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use storage_core::sys::loopdev::{LoopDevice, LoopOptions};
use storage_core::sys::mount::{self, MountFlags};

use crate::error::one_line;
use crate::unmount::unmount_robust;
use crate::{FsKind, TestkitError, loops, mountinfo};

/// Where scratch dirs go by default (a disk, not a tmpfs, so the sparse
/// backing file stays sparse and survives memory pressure).
pub const SCRATCH_PARENT: &str = "/var/tmp";
/// The name prefix of every scratch dir.
pub const SCRATCH_PREFIX: &str = "layerscope-test-";

const BACKING_FILE: &str = "disk.img";
const MOUNT_DIR: &str = "mnt";
/// How long to wait for the kernel to let go of a detached loop device
/// (another opener, such as udev probing, defers the detach to its close).
const DETACH_WAIT: Duration = Duration::from_secs(2);

/// A mounted scratch filesystem: `<dir>/disk.img` (sparse) on a loop
/// device, mounted on `<dir>/mnt`.
#[derive(Debug)]
pub struct ScratchFs {
    kind: FsKind,
    dir: PathBuf,
    mount_point: PathBuf,
    backing_file: Option<PathBuf>,
    device: Option<PathBuf>,
    loop_device: Option<LoopDevice>,
    mounted: bool,
    torn_down: bool,
}

impl ScratchFs {
    /// Makes and mounts a `size_bytes` filesystem of `kind` in a new
    /// `/var/tmp/layerscope-test-*` dir. See [`FsKind::small_size`].
    pub fn new(kind: FsKind, size_bytes: u64) -> Result<Self, TestkitError> {
        Self::new_in(Path::new(SCRATCH_PARENT), kind, size_bytes)
    }

    /// As [`ScratchFs::new`], with the temp dir created in `parent`.
    pub fn new_in(parent: &Path, kind: FsKind, size_bytes: u64) -> Result<Self, TestkitError> {
        Self::make(parent, kind, size_bytes, false)
    }

    /// As [`ScratchFs::new_in`], with the loop device in direct-I/O mode:
    /// the filesystem's pages are cached once, not a second time for the
    /// backing file, and its writes reach the host's disk as they would
    /// from a real block device. The benchmark uses it: page-cache figures
    /// are then exact, and ratios repeat better (double caching was one of
    /// the larger sources of run-to-run noise).
    pub fn new_direct_in(
        parent: &Path,
        kind: FsKind,
        size_bytes: u64,
    ) -> Result<Self, TestkitError> {
        Self::make(parent, kind, size_bytes, true)
    }

    fn make(
        parent: &Path,
        kind: FsKind,
        size_bytes: u64,
        direct_io: bool,
    ) -> Result<Self, TestkitError> {
        let parent = parent
            .canonicalize()
            .map_err(|e| TestkitError::io("resolve scratch parent", parent, e))?;
        let dir = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(&parent)
            .map_err(|e| TestkitError::io("create scratch dir in", &parent, e))?
            // Removal is ours: it must never recurse into a live mount.
            .keep();
        let mut scratch = ScratchFs {
            kind,
            mount_point: dir.join(MOUNT_DIR),
            dir,
            backing_file: None,
            device: None,
            loop_device: None,
            mounted: false,
            torn_down: false,
        };
        // On error, dropping `scratch` undoes whatever was done.
        scratch.set_up(size_bytes, direct_io)?;
        Ok(scratch)
    }

    fn set_up(&mut self, size_bytes: u64, direct_io: bool) -> Result<(), TestkitError> {
        std::fs::create_dir(&self.mount_point)
            .map_err(|e| TestkitError::io("create mount point", &self.mount_point, e))?;
        if !self.kind.needs_device() {
            let options = format!("size={size_bytes}");
            mount::mount(
                "tmpfs",
                &self.mount_point,
                "tmpfs",
                MountFlags::empty(),
                Some(&options),
            )?;
            self.mounted = true;
            return Ok(());
        }

        let backing = self.dir.join(BACKING_FILE);
        let file = File::create(&backing)
            .map_err(|e| TestkitError::io("create backing file", &backing, e))?;
        self.backing_file = Some(backing.clone());
        // set_len only moves the end of file: the file stays sparse.
        file.set_len(size_bytes)
            .map_err(|e| TestkitError::io("size backing file", &backing, e))?;
        drop(file);

        let loop_device = LoopDevice::attach(
            &backing,
            LoopOptions {
                read_only: false,
                direct_io,
                // Safety net if the process dies: the kernel frees the
                // device once our descriptor and the mount are gone.
                autoclear: true,
            },
        )?;
        let device = loop_device.path().to_path_buf();
        self.loop_device = Some(loop_device);
        self.device = Some(device.clone());

        run_mkfs(self.kind, &device)?;
        let source = device.to_string_lossy();
        mount::mount(
            &source,
            &self.mount_point,
            self.kind.fstype(),
            MountFlags::empty(),
            None,
        )?;
        self.mounted = true;
        Ok(())
    }

    /// The mount point, `<dir>/mnt`.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// The loop device (`/dev/loopN`); `None` for tmpfs.
    pub fn device(&self) -> Option<&Path> {
        self.device.as_deref()
    }

    /// The sparse backing file; `None` for tmpfs.
    pub fn backing_file(&self) -> Option<&Path> {
        self.backing_file.as_deref()
    }

    /// The temp dir holding the backing file and the mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn fs_kind(&self) -> FsKind {
        self.kind
    }

    /// Tears down now and reports every step that failed (drop does the
    /// same and logs them to stderr).
    pub fn cleanup(mut self) -> Result<(), TestkitError> {
        let errors = self.tear_down();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TestkitError::Cleanup {
                path: self.dir.clone(),
                errors,
            })
        }
    }

    /// Unmount, detach, remove; each step runs even if an earlier one
    /// failed, except that a dir with a live mount is never removed.
    fn tear_down(&mut self) -> Vec<TestkitError> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Vec::new();
        }
        let mut errors = Vec::new();
        if self.mounted {
            match unmount_robust(&self.mount_point) {
                Ok(_) => self.mounted = false,
                Err(e) => errors.push(e),
            }
        }
        if let Some(loop_device) = self.loop_device.take() {
            let device = loop_device.path().to_path_buf();
            match loop_device.detach() {
                Ok(()) => {
                    if let Some(backing) = &self.backing_file {
                        if let Err(e) = wait_detached(&device, backing) {
                            errors.push(e);
                        }
                    }
                }
                Err(e) => errors.push(e.into()),
            }
        }
        if let Err(e) = remove_dir_safely(&self.dir) {
            errors.push(e);
        }
        errors
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        for e in self.tear_down() {
            eprintln!(
                "testkit: scratch {} at {}: {e}",
                self.kind,
                self.dir.display()
            );
        }
    }
}

/// Runs the quiet mkfs of `kind` on `device`; a failure is one line naming
/// the tool, the device and its stderr.
fn run_mkfs(kind: FsKind, device: &Path) -> Result<(), TestkitError> {
    let Some((tool, mut command)) = kind.mkfs_command(device) else {
        return Ok(());
    };
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| TestkitError::Spawn {
            tool,
            device: device.to_path_buf(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    Err(TestkitError::Mkfs {
        tool,
        device: device.to_path_buf(),
        status: output.status,
        stderr: one_line(&text),
    })
}

/// Waits until `device` no longer serves `backing`.
fn wait_detached(device: &Path, backing: &Path) -> Result<(), TestkitError> {
    let start = Instant::now();
    while loops::is_attached_to(device, backing) {
        if start.elapsed() > DETACH_WAIT {
            return Err(TestkitError::StillAttached {
                device: device.to_path_buf(),
                backing: backing.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Removes `dir` recursively, but refuses while anything is mounted below
/// it (removing would delete the mounted filesystem's files).
pub(crate) fn remove_dir_safely(dir: &Path) -> Result<(), TestkitError> {
    let mounts =
        mountinfo::mounts_under(dir).map_err(|e| TestkitError::io("read mountinfo for", dir, e))?;
    if !mounts.is_empty() {
        return Err(TestkitError::StillMounted {
            path: dir.to_path_buf(),
            mounts: mounts.into_iter().map(|m| m.mount_point).collect(),
        });
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TestkitError::io("remove scratch dir", dir, e)),
    }
}
