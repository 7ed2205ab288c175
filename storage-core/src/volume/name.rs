//! The local driver's volume name rule (moby's `names.RestrictedNamePattern`,
//! `[a-zA-Z0-9][a-zA-Z0-9_.-]+`): the name is a directory under
//! `<root>/volumes`, so it must not be able to climb out of it.

use super::VolumeError;

/// Docker's wording of the allowed characters.
pub const RESTRICTED_NAME_CHARS: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]";

/// Checks `name` as moby's `local.Root.validateName` does, with its messages.
pub fn validate(name: &str) -> Result<(), VolumeError> {
    let invalid = |what: String| VolumeError::Invalid {
        op: "create",
        name: name.to_string(),
        what,
    };
    if name.len() == 1 {
        return Err(invalid(
            "volume name is too short, names should be at least two alphanumeric characters".into(),
        ));
    }
    let mut bytes = name.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() >= 2
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        return Err(invalid(format!(
            "{name:?} includes invalid characters for a local volume name, only \
             {RESTRICTED_NAME_CHARS:?} are allowed. If you intended to pass a host directory, use absolute path"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_dockers_rule() {
        for good in ["db", "my-vol_1.x", "0a"] {
            assert!(validate(good).is_ok(), "{good}");
        }
        for bad in ["", "a", "-x", ".x", "a/b", "./data", "..", "a b", "x:y"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
        let err = validate("./data").unwrap_err().to_string();
        assert!(
            err.starts_with("create ./data: \"./data\" includes invalid characters"),
            "{err}"
        );
        assert!(err.contains("use absolute path"), "{err}");
    }
}
