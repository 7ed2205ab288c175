//! Whiteouts: how a layer records deletions. OCI and aufs tars use marker
//! files (`.wh.<name>` deletes `<name>`, `.wh..wh..opq` makes its directory
//! opaque); overlayfs uses a char device 0/0 named `<name>` and the
//! `trusted.overlay.opaque=y` xattr on the directory. `.wh..wh.plnk` and
//! `.wh..wh.aufs` at the layer root are aufs internals, never layer content.

/// Prefix of a whiteout marker file.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of aufs metadata names (`.wh..wh.`).
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// The aufs hardlink directory.
pub const WHITEOUT_LINK_DIR: &str = ".wh..wh.plnk";
/// The marker that makes its directory opaque.
pub const WHITEOUT_OPAQUE_DIR: &str = ".wh..wh..opq";
/// The xattr overlayfs reads for opaque directories.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Xattrs overlayfs keeps for itself; never copied into or out of tars.
pub const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// How the destination directory represents whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutFormat {
    /// overlay upper/diff dirs: char device 0/0 and the opaque xattr.
    #[default]
    Overlay,
    /// aufs branches: `.wh.*` marker files kept as they are.
    Aufs,
    /// A full tree (vfs, btrfs, devicemapper): whiteouts delete for real.
    Naive,
}

/// What one base name means in a layer tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh..wh..opq`: the directory holding it is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Deleted(&'a str),
    /// `.wh.`, `.wh..` or `.wh...`: a whiteout naming nothing usable.
    Invalid,
}

/// Classifies the base name of an entry.
pub fn classify(base: &str) -> Marker<'_> {
    if base == WHITEOUT_OPAQUE_DIR {
        return Marker::Opaque;
    }
    match base.strip_prefix(WHITEOUT_PREFIX) {
        None => Marker::Plain,
        Some("" | "." | "..") => Marker::Invalid,
        Some(name) => Marker::Deleted(name),
    }
}

/// True for root-level aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`, ...)
/// and everything below it; the opaque marker is not metadata.
pub fn is_aufs_metadata(clean_name: &str) -> bool {
    let first = clean_name.split('/').next().unwrap_or("");
    first.starts_with(WHITEOUT_META_PREFIX) && first != WHITEOUT_OPAQUE_DIR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_markers() {
        assert_eq!(classify("a"), Marker::Plain);
        assert_eq!(classify(".wh.a"), Marker::Deleted("a"));
        assert_eq!(classify(".wh..wh..opq"), Marker::Opaque);
        assert_eq!(classify(".wh.."), Marker::Invalid);
        assert!(is_aufs_metadata(".wh..wh.plnk/123.4"));
        assert!(is_aufs_metadata(".wh..wh.aufs"));
        assert!(!is_aufs_metadata(".wh..wh..opq"));
        assert!(!is_aufs_metadata("d/.wh..wh.plnk"));
    }
}
