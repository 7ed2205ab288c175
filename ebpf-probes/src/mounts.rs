//! Overlay mounts as the kernel lists them in `/proc/self/mountinfo`:
//! [`OverlayMount`] (mount point, upper, work and lower dirs, metacopy) and
//! [`overlay_mounts`], which parses the table. Every overlay counts, also
//! one layerscope did not create.

use std::{fs, io, path::PathBuf};

/// The mountinfo file read by [`overlay_mounts`].
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One overlay mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// mountinfo's mount id (first column).
    pub mnt_id: u32,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `upperdir=`; `None` for a read-only overlay.
    pub upperdir: Option<PathBuf>,
    /// `workdir=` (overlay works in its `work/` subdir).
    pub workdir: Option<PathBuf>,
    /// `lowerdir=` (top first), `lowerdir+=` and `datadir+=` entries.
    pub lowerdirs: Vec<PathBuf>,
    /// `metacopy=on`.
    pub metacopy: bool,
}

impl OverlayMount {
    /// The dir overlay allocates copy-ups and whiteouts in: `<workdir>/work`.
    pub fn work_work(&self) -> Option<PathBuf> {
        self.workdir.as_ref().map(|w| w.join("work"))
    }
}

/// Every overlay mount in `/proc/self/mountinfo`.
pub fn overlay_mounts() -> io::Result<Vec<OverlayMount>> {
    Ok(parse_mountinfo(&fs::read_to_string(MOUNTINFO)?))
}

/// Parses mountinfo text, keeping overlay mounts.
pub fn parse_mountinfo(text: &str) -> Vec<OverlayMount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<OverlayMount> {
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let mnt_id = left.next()?.parse().ok()?;
    let mount_point = unescape(left.nth(3)?);
    let mut right = right.split(' ');
    if right.next()? != "overlay" {
        return None;
    }
    let options = right.nth(1).unwrap_or("");
    let mut mount = OverlayMount {
        mnt_id,
        mount_point: PathBuf::from(mount_point),
        upperdir: None,
        workdir: None,
        lowerdirs: Vec::new(),
        metacopy: false,
    };
    for option in split_options(options) {
        let (key, value) = option.split_once('=').unwrap_or((option.as_str(), ""));
        match key {
            "upperdir" => mount.upperdir = Some(PathBuf::from(unescape(value))),
            "workdir" => mount.workdir = Some(PathBuf::from(unescape(value))),
            "lowerdir" => mount.lowerdirs.extend(
                split_unescaped(value, ':')
                    .into_iter()
                    .filter(|d| !d.is_empty())
                    .map(|d| PathBuf::from(unescape(&d))),
            ),
            "lowerdir+" | "datadir+" => mount.lowerdirs.push(PathBuf::from(unescape(value))),
            "metacopy" => mount.metacopy = value == "on",
            _ => {}
        }
    }
    resolve_relative(&mut mount);
    Some(mount)
}

/// Relative dirs come from overlay2's fallback for option strings longer
/// than a page: moby (and layerscope) mount from `<home>` with the target
/// `<id>/merged` and dirs like `l/ABC:l/DEF` and `<id>/diff`, so they
/// resolve against the mount point's grandparent, `<home>`.
fn resolve_relative(mount: &mut OverlayMount) {
    let Some(home) = mount.mount_point.parent().and_then(|p| p.parent()) else {
        return;
    };
    let home = home.to_path_buf();
    let absolute = |dir: &mut PathBuf| {
        if dir.is_relative() {
            *dir = home.join(&*dir);
        }
    };
    mount.upperdir.iter_mut().for_each(absolute);
    mount.workdir.iter_mut().for_each(absolute);
    mount.lowerdirs.iter_mut().for_each(absolute);
}

/// Splits super options on commas not escaped with a backslash.
fn split_options(options: &str) -> Vec<String> {
    split_unescaped(options, ',')
}

fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(next) if next == sep => current.push(next),
                Some(next) => {
                    current.push('\\');
                    current.push(next);
                }
                None => current.push('\\'),
            }
        } else if c == sep {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    out.push(current);
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overlay_lines() {
        let text = "\
22 1 259:1 / / rw,relatime - ext4 /dev/vda rw
812 22 0:55 / /var/tmp/x/merged\\040a rw,relatime - overlay overlay rw,lowerdir=/l/1:/l/2,upperdir=/u/diff,workdir=/u/work,metacopy=on
813 22 0:56 / /m2 rw - overlay overlay rw,lowerdir+=/a,lowerdir+=/b,datadir+=/d,upperdir=/u2,workdir=/w2
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].mnt_id, 812);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/var/tmp/x/merged a"));
        assert_eq!(
            mounts[0].lowerdirs,
            vec![PathBuf::from("/l/1"), PathBuf::from("/l/2")]
        );
        assert_eq!(mounts[0].upperdir, Some(PathBuf::from("/u/diff")));
        assert_eq!(mounts[0].work_work(), Some(PathBuf::from("/u/work/work")));
        assert!(mounts[0].metacopy);
        assert_eq!(mounts[1].lowerdirs.len(), 3);
        assert!(!mounts[1].metacopy);
    }

    #[test]
    fn relative_dirs_of_a_deep_stack_resolve_against_the_driver_home() {
        // overlay2 with more lowers than fit a page: mounted from <home>.
        let text = "900 22 0:60 / /var/lib/x/overlay2/abc/merged rw - overlay overlay rw,lowerdir=l/AAA:l/BBB,upperdir=abc/diff,workdir=abc/work,index=off
";
        let mount = &parse_mountinfo(text)[0];
        let home = PathBuf::from("/var/lib/x/overlay2");
        assert_eq!(mount.upperdir, Some(home.join("abc/diff")));
        assert_eq!(mount.work_work(), Some(home.join("abc/work/work")));
        assert_eq!(
            mount.lowerdirs,
            vec![home.join("l/AAA"), home.join("l/BBB")]
        );
    }
}
