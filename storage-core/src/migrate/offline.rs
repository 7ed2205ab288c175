//! The migration runs offline only: nothing of the stores may be mounted
//! (aufs branches under `<root>/aufs/mnt`, overlay2 merged dirs) and no
//! dockerd may be alive (its pid file names a live process).

use std::fs;
use std::path::{Path, PathBuf};

use crate::sys::mount::unescape_mountinfo;

/// Docker's default pid file.
pub const DEFAULT_PID_FILE: &str = "/var/run/docker.pid";

/// Why the migration cannot run now, in one line; `None` when it can.
pub fn blocker(root: &Path, pid_file: &Path) -> Option<String> {
    if let Some(mount) = mounts_under(root).into_iter().next() {
        return Some(format!(
            "{} is mounted; stop dockerd and unmount it first",
            mount.display()
        ));
    }
    let text = fs::read_to_string(pid_file).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    if pid > 0 && Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        return Some(format!(
            "dockerd is running (pid {pid} from {}); stop it first",
            pid_file.display()
        ));
    }
    None
}

/// Mount points inside the stores of `root` (`aufs/`, `overlay2/`).
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let stores = [root.join("aufs"), root.join("overlay2")];
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| stores.iter().any(|s| p.starts_with(s)))
        .collect();
    found.sort();
    found
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_pid_blocks_and_a_dead_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("docker.pid");
        assert_eq!(blocker(dir.path(), &pid_file), None);
        fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let why = blocker(dir.path(), &pid_file).unwrap();
        assert!(why.contains("dockerd is running"), "{why}");
        // pid_max is at most 2^22: this pid cannot exist.
        fs::write(&pid_file, "99999999").unwrap();
        assert_eq!(blocker(dir.path(), &pid_file), None);
    }
}
