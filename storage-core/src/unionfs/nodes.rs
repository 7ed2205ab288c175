//! The inode table of the union: FUSE node ids for union paths, kept as
//! (parent, name) so a rename moves a whole subtree at once, with the
//! kernel's lookup counts, each directory's merging branches, and extra
//! names for hard links made through the union.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// The root's node id (FUSE_ROOT_ID).
pub const ROOT: u64 = 1;

#[derive(Debug)]
pub struct Node {
    /// Parent node and name; `None` once every name of the node is gone.
    pub place: Option<(u64, OsString)>,
    /// Other names of the same file (hard links made through the union).
    pub aliases: Vec<(u64, OsString)>,
    pub lookups: u64,
    /// For a directory, its merging branches (top first).
    pub dir_branches: Vec<usize>,
}

#[derive(Debug)]
pub struct Nodes {
    nodes: HashMap<u64, Node>,
    by_name: HashMap<(u64, OsString), u64>,
    next: u64,
}

impl Nodes {
    pub fn new(root_branches: Vec<usize>) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                place: None,
                aliases: Vec::new(),
                lookups: 1,
                dir_branches: root_branches,
            },
        );
        Self {
            nodes,
            by_name: HashMap::new(),
            next: ROOT + 1,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The union path of `ino` (empty for the root), `None` when unknown
    /// or unlinked.
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        let mut names: Vec<&OsStr> = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let (parent, name) = self.nodes.get(&at)?.place.as_ref()?;
            names.push(name);
            at = *parent;
        }
        let mut path = PathBuf::new();
        for name in names.iter().rev() {
            path.push(name);
        }
        Some(path)
    }

    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.by_name.get(&(parent, name.to_os_string())).copied()
    }

    /// Records one kernel lookup of `name` in `parent` and returns its id.
    pub fn looked_up(&mut self, parent: u64, name: &OsStr, dir_branches: Vec<usize>) -> u64 {
        let key = (parent, name.to_os_string());
        if let Some(&ino) = self.by_name.get(&key) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.lookups += 1;
                node.dir_branches = dir_branches;
                return ino;
            }
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                place: Some(key.clone()),
                aliases: Vec::new(),
                lookups: 1,
                dir_branches,
            },
        );
        self.by_name.insert(key, ino);
        ino
    }

    /// Adds the name `parent/name` to the existing node `ino` (a hard link)
    /// and counts the kernel's lookup of it.
    pub fn add_alias(&mut self, ino: u64, parent: u64, name: &OsStr) {
        let key = (parent, name.to_os_string());
        self.by_name.insert(key.clone(), ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.aliases.push(key);
            node.lookups += 1;
        }
    }

    /// Drops `nlookup` kernel references of `ino`.
    pub fn forget(&mut self, ino: u64, nlookup: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(nlookup);
        if node.lookups == 0 {
            let node = self.nodes.remove(&ino).expect("present");
            for key in node.place.into_iter().chain(node.aliases) {
                if self.by_name.get(&key) == Some(&ino) {
                    self.by_name.remove(&key);
                }
            }
        }
    }

    /// Forgets the name `parent/name` (unlink, rmdir, replaced by rename).
    pub fn remove_name(&mut self, parent: u64, name: &OsStr) {
        let key = (parent, name.to_os_string());
        let Some(ino) = self.by_name.remove(&key) else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.aliases.retain(|k| k != &key);
            if node.place.as_ref() == Some(&key) {
                node.place = node.aliases.pop();
            }
        }
    }

    /// Moves the name `parent/name` to `new_parent/new_name`.
    pub fn rename(&mut self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) {
        self.remove_name(new_parent, new_name);
        let key = (parent, name.to_os_string());
        let Some(ino) = self.by_name.remove(&key) else {
            return;
        };
        let new_key = (new_parent, new_name.to_os_string());
        self.by_name.insert(new_key.clone(), ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            if node.place.as_ref() == Some(&key) {
                node.place = Some(new_key);
            } else if let Some(alias) = node.aliases.iter_mut().find(|k| **k == key) {
                *alias = new_key;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn rename_moves_subtrees_and_aliases_survive_unlink() {
        let mut nodes = Nodes::new(vec![0]);
        let d = nodes.looked_up(ROOT, OsStr::new("d"), vec![0]);
        let f = nodes.looked_up(d, OsStr::new("f"), vec![]);
        assert_eq!(nodes.path(f).unwrap(), Path::new("d/f"));
        nodes.rename(ROOT, OsStr::new("d"), ROOT, OsStr::new("e"));
        assert_eq!(nodes.path(f).unwrap(), Path::new("e/f"));
        nodes.add_alias(f, ROOT, OsStr::new("link"));
        nodes.remove_name(d, OsStr::new("f"));
        assert_eq!(nodes.path(f).unwrap(), Path::new("link"));
        nodes.remove_name(ROOT, OsStr::new("link"));
        assert!(nodes.path(f).is_none());
        nodes.forget(f, 2);
        assert!(nodes.get(f).is_none());
    }
}
