//! Container names, reserved on disk: `<root>/container-names/<name>` holds
//! the id of the container that owns the name. Looking a name up or
//! checking it is free is one file read instead of parsing every
//! container's config, and a reservation is atomic across processes (a
//! hard link of a complete temp file, which fails if the name exists), so
//! two concurrent `create --name web` cannot both win. A reservation whose
//! container has neither a config nor a rw layer (a create that crashed)
//! is stale and is taken over. A store made before this index existed
//! gets it built once from the configs, on open.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// The name index of one data root.
pub struct NameIndex {
    dir: PathBuf,
}

/// The outcome of a reservation.
pub enum Reserve {
    /// Reserved for the caller.
    Done,
    /// Owned by this live container.
    Taken(String),
}

impl NameIndex {
    /// The index under `root`; when it does not exist yet, it is built from
    /// `existing` (name, id) pairs in a temp dir renamed into place.
    pub fn open(
        root: &Path,
        existing: impl FnOnce() -> io::Result<Vec<(String, String)>>,
    ) -> io::Result<Self> {
        let dir = root.join("container-names");
        if !dir.is_dir() {
            let temp = root.join(format!(".container-names-{}", fsutil::random_base32(8)));
            fs::create_dir_all(&temp)?;
            let built = existing().and_then(|pairs| {
                for (name, id) in pairs {
                    fs::write(temp.join(&name), &id)?;
                }
                Ok(())
            });
            let renamed = built.and_then(|()| fs::rename(&temp, &dir));
            if let Err(e) = renamed {
                let _ = fs::remove_dir_all(&temp);
                // Another process built it first: theirs is as good.
                if !dir.is_dir() {
                    return Err(e);
                }
            }
        }
        Ok(Self { dir })
    }

    /// The id that owns `name`, if any (possibly stale: see [`Self::reserve`]).
    pub fn owner(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.dir.join(name))
            .ok()
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
    }

    /// Reserves `name` for `id`. `alive(owner)` tells whether a container
    /// that holds the name still exists; a dead owner's reservation is
    /// taken over.
    pub fn reserve(
        &self,
        name: &str,
        id: &str,
        alive: impl Fn(&str) -> bool,
    ) -> io::Result<Reserve> {
        let path = self.dir.join(name);
        let temp = self
            .dir
            .join(format!(".{name}.{}", fsutil::random_base32(8)));
        fs::write(&temp, id)?;
        let result = (|| {
            for _ in 0..2 {
                match fs::hard_link(&temp, &path) {
                    Ok(()) => return Ok(Reserve::Done),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match self.owner(name) {
                        Some(owner) if owner == id => return Ok(Reserve::Done),
                        Some(owner) if alive(&owner) => return Ok(Reserve::Taken(owner)),
                        _ => match fs::remove_file(&path) {
                            Ok(()) => continue,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(e),
                        },
                    },
                    Err(e) => return Err(e),
                }
            }
            // Lost a race against another take-over: whoever holds it now.
            Ok(self.owner(name).map_or(Reserve::Done, Reserve::Taken))
        })();
        let _ = fs::remove_file(&temp);
        result
    }

    /// Frees `name` if `id` holds it.
    pub fn release(&self, name: &str, id: &str) -> io::Result<()> {
        if self.owner(name).as_deref() == Some(id) {
            match fs::remove_file(self.dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_has_one_live_owner_and_stale_ones_are_taken_over() {
        let root = tempfile::tempdir().expect("tempdir");
        let index =
            NameIndex::open(root.path(), || Ok(vec![("old".into(), "id0".into())])).expect("open");
        assert_eq!(index.owner("old").as_deref(), Some("id0"));
        assert!(matches!(
            index.reserve("web", "id1", |_| true).unwrap(),
            Reserve::Done
        ));
        match index.reserve("web", "id2", |owner| owner == "id1").unwrap() {
            Reserve::Taken(owner) => assert_eq!(owner, "id1"),
            Reserve::Done => panic!("a live owner's name was taken"),
        }
        assert!(matches!(
            index.reserve("web", "id2", |_| false).unwrap(),
            Reserve::Done
        ));
        assert_eq!(index.owner("web").as_deref(), Some("id2"));
        index.release("web", "id1").unwrap();
        assert_eq!(
            index.owner("web").as_deref(),
            Some("id2"),
            "not id1's to free"
        );
        index.release("web", "id2").unwrap();
        assert_eq!(index.owner("web"), None);
        let left: Vec<_> = fs::read_dir(root.path().join("container-names"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("old")],
            "temp files left"
        );
    }
}
