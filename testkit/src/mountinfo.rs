//! Mounts as /proc/self/mountinfo lists them: mount point, fstype, source.

use std::path::{Path, PathBuf};

use storage_core::sys::mount::unescape_mountinfo;

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Every mount of this mount namespace, in mount order.
pub fn mounts() -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_line).collect())
}

/// The mounts at or below `dir` (compared component by component, so
/// `/a/b` is not below `/a/bc`).
pub fn mounts_under(dir: &Path) -> std::io::Result<Vec<MountEntry>> {
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect())
}

/// The fstype of the topmost mount on `mount_point`, if it is one.
pub fn fstype_of(mount_point: &Path) -> Option<String> {
    let canonical = mount_point.canonicalize().ok()?;
    mounts()
        .ok()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == canonical)
        .map(|m| m.fstype)
}

/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`
fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let mount_point = fields.nth(4)?;
    let mut rest = fields.skip_while(|f| *f != "-");
    rest.next()?;
    let fstype = rest.next()?;
    let source = rest.next().unwrap_or("");
    Some(MountEntry {
        mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
        fstype: fstype.to_string(),
        source: unescape_mountinfo(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_line_with_optional_fields_and_escapes() {
        let line =
            r"36 35 98:0 / /var/tmp/a\040b rw,noatime master:1 shared:2 - xfs /dev/loop3 rw,attr2";
        let entry = parse_line(line).unwrap();
        assert_eq!(entry.mount_point, Path::new("/var/tmp/a b"));
        assert_eq!(entry.fstype, "xfs");
        assert_eq!(entry.source, "/dev/loop3");
    }

    #[test]
    fn under_compares_whole_components() {
        let entry = parse_line("1 0 0:1 / /var/tmp/abc rw - tmpfs tmpfs rw").unwrap();
        assert!(!entry.mount_point.starts_with("/var/tmp/ab"));
        assert!(entry.mount_point.starts_with("/var/tmp/abc"));
    }

    #[test]
    fn root_is_listed() {
        assert!(fstype_of(Path::new("/")).is_some());
    }
}
