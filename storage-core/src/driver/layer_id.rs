//! Layer ids as the drivers accept them: one path component of
//! `[A-Za-z0-9_.-]`, not starting with a dot (so never `.`, `..` or a
//! driver's hidden temp names), shorter than a file name's limit, and not
//! one of the driver's own entries (overlay2's `l`). Every driver checks an
//! id here before it builds a path from it.

use std::path::PathBuf;

use super::DriverError;

/// Checks `id`; `reserved` are names the driver keeps beside its layers.
pub fn check(id: &str, reserved: &[&str]) -> Result<(), DriverError> {
    let valid = !id.is_empty()
        && !id.starts_with('.')
        && id.len() < 256
        && !reserved.contains(&id)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(DriverError::InvalidId { id: id.to_string() })
    }
}

/// The dir of existing layer `id`: checks the id, then that `dir_of(id)`
/// is a directory.
pub fn existing_dir(
    id: &str,
    reserved: &[&str],
    dir_of: impl FnOnce(&str) -> PathBuf,
) -> Result<PathBuf, DriverError> {
    check(id, reserved)?;
    let dir = dir_of(id);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(DriverError::NotFound { id: id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_safe_component() {
        for good in ["abc", "a-b_c.d", "0123456789abcdef"] {
            assert!(check(good, &[]).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a b", "l"] {
            assert!(check(bad, &["l"]).is_err(), "{bad:?}");
        }
        assert!(check(&"x".repeat(256), &[]).is_err());
    }
}
