//! tracefs availability: [`ensure_tracefs`] makes sure the tracepoint ids
//! that aya reads (`<tracefs>/events/<category>/<name>/id`) exist, mounting
//! tracefs at `/sys/kernel/tracing` when no mount is found.
//!
//! aya looks for a non-empty `/sys/kernel/tracing` or
//! `/sys/kernel/debug/tracing` and caches the answer for the life of the
//! process on its first tracepoint attach, so this must run before that
//! first attach (every attach function of this crate calls it).

use std::{
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use nix::{errno::Errno, mount::MsFlags};

use crate::error::{ProbeError, TRACEFS_CAPS, io_cause};

/// Where tracefs is mounted when this crate has to mount it.
pub const TRACEFS_MOUNT_POINT: &str = "/sys/kernel/tracing";

/// The mount points aya searches, in its order.
const CANDIDATES: [&str; 2] = [TRACEFS_MOUNT_POINT, "/sys/kernel/debug/tracing"];

/// Serialises the check-then-mount within this process.
static MOUNT_LOCK: Mutex<()> = Mutex::new(());

/// Returns the tracefs root in use, mounting tracefs at
/// [`TRACEFS_MOUNT_POINT`] first if none of aya's candidates has `events/`.
/// Mounting needs root (CAP_SYS_ADMIN); so does reading a tracefs mounted
/// with the default mode 0700.
pub fn ensure_tracefs() -> Result<PathBuf, ProbeError> {
    // A poisoned lock only means another thread panicked mid-check; the
    // filesystem state is what we re-check anyway.
    let _guard = MOUNT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = find_tracefs()? {
        return Ok(found);
    }
    let target = Path::new(TRACEFS_MOUNT_POINT);
    tracing::info!(
        target = TRACEFS_MOUNT_POINT,
        "tracefs not mounted; mounting it"
    );
    match nix::mount::mount(
        Some("nodev"),
        target,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        // EBUSY: another process mounted it between our check and our mount.
        Ok(()) | Err(Errno::EBUSY) => {}
        Err(errno) => return Err(tracefs_error(target, &errno.into())),
    }
    find_tracefs()?.ok_or_else(|| ProbeError::Tracefs {
        path: target.to_owned(),
        cause: "mounted, but events/ is still missing (kernel without CONFIG_FTRACE?)".into(),
        errno: None,
    })
}

/// The first of aya's candidate mount points that has an `events/` dir,
/// `None` if none has, or an error if one exists but cannot be read.
pub fn find_tracefs() -> Result<Option<PathBuf>, ProbeError> {
    for root in CANDIDATES.map(PathBuf::from) {
        match root.join("events").metadata() {
            Ok(meta) if meta.is_dir() => return Ok(Some(root)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(tracefs_error(&root, &e));
            }
            // ENOENT (not mounted) and the like: try the next candidate.
            Err(_) => {}
        }
    }
    Ok(None)
}

fn tracefs_error(path: &Path, err: &io::Error) -> ProbeError {
    ProbeError::Tracefs {
        path: path.to_owned(),
        cause: io_cause(err, TRACEFS_CAPS),
        errno: err.raw_os_error(),
    }
}
