//! Attached loop devices and their backing files, from
//! `/sys/block/loop*/loop/backing_file` (present only while bound).

use std::path::{Path, PathBuf};

/// A bound loop device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttachedLoop {
    /// `/dev/loopN`.
    pub device: PathBuf,
    /// The backing file, without the kernel's ` (deleted)` suffix.
    pub backing_file: PathBuf,
}

/// Every bound loop device. Devices that detach while being read are left
/// out.
pub fn attached_loops() -> Vec<AttachedLoop> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut loops: Vec<AttachedLoop> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("loop")?.parse::<u32>().ok()?;
            let device = Path::new("/dev").join(&name);
            let backing_file = backing_file_of(&device)?;
            Some(AttachedLoop {
                device,
                backing_file,
            })
        })
        .collect();
    loops.sort();
    loops
}

/// The backing file of `device` (`/dev/loopN`), or `None` when unbound.
pub fn backing_file_of(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let text = text.trim_end_matches('\n');
    let text = text.strip_suffix(" (deleted)").unwrap_or(text);
    (!text.is_empty()).then(|| PathBuf::from(text))
}

/// Whether `device` is still bound to `backing_file`. The device number may
/// already serve another test's file, which does not count.
pub fn is_attached_to(device: &Path, backing_file: &Path) -> bool {
    backing_file_of(device).is_some_and(|b| b == backing_file)
}
