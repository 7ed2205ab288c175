//! Containers' `containers/<id>/config.v2.json`: the top-level `Driver`
//! field names the storage driver. Only that value is rewritten, byte for
//! byte in place (Go's field order and everything else stay as dockerd
//! wrote them), and the result is checked to parse to the same document
//! but for that one field.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::MigrateError;
use crate::fsutil;

/// A container whose config names a storage driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerConfig {
    pub id: String,
    /// `Name` without its leading `/`.
    pub name: String,
    pub driver: String,
    pub path: PathBuf,
}

/// The containers under `<root>/containers` whose config reads.
pub fn list(root: &Path) -> Result<Vec<ContainerConfig>, MigrateError> {
    let dir = root.join("containers");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MigrateError::io("read", &dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(MigrateError::io("read", &dir))?;
        let path = entry.path().join("config.v2.json");
        if !path.is_file() {
            continue;
        }
        let doc = parse(&path, &read(&path)?)?;
        let text = |key: &str| {
            doc.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        found.push(ContainerConfig {
            id: entry.file_name().to_string_lossy().into_owned(),
            name: text("Name").trim_start_matches('/').to_string(),
            driver: text("Driver"),
            path,
        });
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// Rewrites the top-level `Driver` of `path` from `from` to `to`; returns
/// whether the file changed (a config already naming `to` is left alone).
pub fn set_driver(path: &Path, from: &str, to: &str) -> Result<bool, MigrateError> {
    let bytes = read(path)?;
    let before = parse(path, &bytes)?;
    match before.get("Driver").and_then(Value::as_str) {
        Some(driver) if driver == to => return Ok(false),
        Some(driver) if driver == from => {}
        other => {
            return Err(MigrateError::Config {
                path: path.to_path_buf(),
                why: format!("Driver is {other:?}, expected {from:?}"),
            });
        }
    }
    let Some((start, end)) = top_level_string_span(&bytes, "Driver") else {
        return Err(MigrateError::Config {
            path: path.to_path_buf(),
            why: "no top-level \"Driver\" string found".into(),
        });
    };
    let mut out = Vec::with_capacity(bytes.len() + to.len());
    out.extend_from_slice(&bytes[..start]);
    out.extend_from_slice(serde_json::to_string(to).unwrap_or_default().as_bytes());
    out.extend_from_slice(&bytes[end..]);
    let mut expected = before;
    expected["Driver"] = Value::String(to.to_string());
    if parse(path, &out)? != expected {
        return Err(MigrateError::Config {
            path: path.to_path_buf(),
            why: "rewriting Driver would change other fields".into(),
        });
    }
    let mode = fs::metadata(path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o600);
    fsutil::write_atomic(path, &out, mode).map_err(MigrateError::io("write", path))?;
    Ok(true)
}

fn read(path: &Path) -> Result<Vec<u8>, MigrateError> {
    fs::read(path).map_err(MigrateError::io("read", path))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Value, MigrateError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| MigrateError::Config {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(MigrateError::Config {
            path: path.to_path_buf(),
            why: "not a JSON object".into(),
        });
    }
    Ok(value)
}

/// The byte range (quotes included) of the string value of `key` in the
/// top-level object of the JSON text `bytes`.
fn top_level_string_span(bytes: &[u8], key: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(bytes, i)?;
                if depth == 1 && expect_key {
                    expect_key = false;
                    let name = &bytes[i + 1..end - 1];
                    let mut j = skip_ws(bytes, end);
                    if bytes.get(j) != Some(&b':') {
                        return None;
                    }
                    j = skip_ws(bytes, j + 1);
                    if name == key.as_bytes() && bytes.get(j) == Some(&b'"') {
                        return Some((j, string_end(bytes, j)?));
                    }
                    i = j;
                    continue;
                }
                i = end;
                continue;
            }
            b'{' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index just past the closing quote of the string starting at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_top_level_driver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.v2.json");
        let text = r#"{"StreamConfig":{},"State":{"Driver":"aufs","Running":false},"ID":"abc","Name":"/web","MountPoints":{"/data":{"Driver":"aufs"}},"Driver":"aufs","OS":"linux","X":"a\"Driver\":\"aufs"}"#;
        fs::write(&path, text).unwrap();
        assert!(set_driver(&path, "aufs", "overlay2").unwrap());
        let expected = text.replace(
            r#""MountPoints":{"/data":{"Driver":"aufs"}},"Driver":"aufs""#,
            r#""MountPoints":{"/data":{"Driver":"aufs"}},"Driver":"overlay2""#,
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), expected);
        assert!(
            !set_driver(&path, "aufs", "overlay2").unwrap(),
            "idempotent"
        );
    }

    #[test]
    fn refuses_a_config_of_another_driver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.v2.json");
        fs::write(&path, r#"{"Driver":"btrfs"}"#).unwrap();
        let err = set_driver(&path, "aufs", "overlay2").unwrap_err();
        assert!(err.to_string().contains("expected \"aufs\""), "{err}");
    }
}
