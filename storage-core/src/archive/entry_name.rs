//! Entry names and link targets: cleaning `./a//b/` to `a/b`, and the
//! containment rules: no absolute names, no `..` above the destination, no
//! relative symlink that climbs out of it, no hardlink to outside it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::error::Problem;

/// Normal components of `raw` (split on `/`), with `.` dropped and `..`
/// applied on top of `base`; `None` when a `..` climbs above the root.
fn resolve<'a>(mut base: Vec<&'a [u8]>, raw: &'a [u8]) -> Option<Vec<&'a [u8]>> {
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                base.pop()?;
            }
            c => base.push(c),
        }
    }
    Some(base)
}

fn join(components: &[&[u8]]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&components.join(&b'/')))
}

/// The cleaned, root-relative form of an entry name; `Ok(None)` for the
/// root itself (`.`, `./`). Absolute names and names that climb above the
/// root are refused.
pub fn clean(raw: &[u8]) -> Result<Option<PathBuf>, Problem> {
    if raw.first() == Some(&b'/') {
        return Err(Problem::AbsolutePath);
    }
    let comps = resolve(Vec::new(), raw).ok_or(Problem::EscapesRoot)?;
    if comps.is_empty() {
        return Ok(None);
    }
    Ok(Some(join(&comps)))
}

/// moby's symlink rule: an absolute target is fine (it resolves inside the
/// container's root); a relative one must stay inside when joined to the
/// directory of the link.
pub fn symlink_target_inside(clean_name: &std::path::Path, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let name = clean_name.as_os_str().as_bytes();
    let mut dir: Vec<&[u8]> = name.split(|b| *b == b'/').collect();
    dir.pop();
    resolve(dir, target).is_some()
}

/// The root-relative path a hardlink points at. A leading `/` is dropped
/// (some builders write absolute link targets); `..` above the root and an
/// empty target are refused.
pub fn hardlink_target(raw: &[u8]) -> Result<PathBuf, Problem> {
    let display = String::from_utf8_lossy(raw).into_owned();
    let trimmed = raw.trim_ascii_start();
    let trimmed = &trimmed[trimmed.iter().take_while(|b| **b == b'/').count()..];
    match resolve(Vec::new(), trimmed) {
        Some(c) if !c.is_empty() => Ok(join(&c)),
        _ => Err(Problem::HardlinkEscapes(display)),
    }
}

/// A printable, single-line form of a raw name for error messages
/// (invalid UTF-8 replaced, control characters escaped).
pub fn display(raw: &[u8]) -> String {
    one_line(&String::from_utf8_lossy(raw))
}

/// `text` with control characters escaped, so a message stays one line.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn cleans_and_refuses() {
        assert_eq!(clean(b"./a//b/").unwrap().unwrap(), Path::new("a/b"));
        assert_eq!(clean(b"a/../b").unwrap().unwrap(), Path::new("b"));
        assert_eq!(clean(b"./").unwrap(), None);
        assert_eq!(clean(b"/etc/x"), Err(Problem::AbsolutePath));
        assert_eq!(clean(b"a/../../x"), Err(Problem::EscapesRoot));
    }

    #[test]
    fn symlink_rule() {
        assert!(symlink_target_inside(Path::new("a/b"), b"../c"));
        assert!(symlink_target_inside(Path::new("a"), b"/etc"));
        assert!(!symlink_target_inside(Path::new("a/b"), b"../../c"));
        assert!(!symlink_target_inside(Path::new("a"), b".."));
    }

    #[test]
    fn hardlink_rule() {
        assert_eq!(hardlink_target(b"/a/b").unwrap(), Path::new("a/b"));
        assert!(hardlink_target(b"../x").is_err());
        assert!(hardlink_target(b".").is_err());
    }
}
