//! Shared fixtures of the tracer tests: a Docker-shaped store on a scratch
//! filesystem (`overlay2/<cache-id>/{diff,work,merged}` and
//! `image/overlay2/layerdb/mounts/<container>/mount-id`), overlay mounts of
//! one shared lower layer, and the skip rules.

#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
};

use ebpf_probes::object;
use storage_core::sys::mount::MountFlags;
use testkit::{MountGuard, ScratchFs};

/// Skips when build.rs wrote placeholders, unless LAYERSCOPE_BPF_REQUIRED.
pub fn bpf_built() -> bool {
    match object::OVERLAY_TRACE.bytes() {
        Ok(_) => true,
        Err(e) if std::env::var_os("LAYERSCOPE_BPF_REQUIRED").is_some() => {
            panic!("{e} (LAYERSCOPE_BPF_REQUIRED is set)")
        }
        Err(e) => testkit::feature_available(false, "bpf objects", e),
    }
}

/// A store root on a scratch filesystem with one lower layer.
pub struct Store {
    pub root: PathBuf,
    pub lower: PathBuf,
}

impl Store {
    pub fn new(scratch: &ScratchFs) -> Self {
        let root = scratch.path().join("root");
        let lower = root.join("overlay2/lowerlayer0000/diff");
        fs::create_dir_all(&lower).expect("mkdir lower");
        fs::create_dir_all(root.join("image/overlay2/layerdb/mounts")).expect("mkdir layerdb");
        Self { root, lower }
    }

    /// A container: its rw layer `<cache_id>`, layerdb entry, and the
    /// overlay mounted on `merged`.
    pub fn container(&self, container: &str, cache_id: &str, metacopy: bool) -> Container {
        let layer = self.root.join("overlay2").join(cache_id);
        for dir in ["diff", "work", "merged"] {
            fs::create_dir_all(layer.join(dir)).expect("mkdir layer dir");
        }
        let mounts = self
            .root
            .join("image/overlay2/layerdb/mounts")
            .join(container);
        fs::create_dir_all(&mounts).expect("mkdir mounts");
        fs::write(mounts.join("mount-id"), cache_id).expect("write mount-id");
        let merged = layer.join("merged");
        let mut options = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.display(),
            layer.join("diff").display(),
            layer.join("work").display()
        );
        if metacopy {
            options.push_str(",metacopy=on");
        }
        let guard = MountGuard::mount(
            "overlay",
            &merged,
            "overlay",
            MountFlags::empty(),
            Some(&options),
        )
        .expect("mount overlay");
        Container {
            id: container.to_owned(),
            merged,
            upper: layer.join("diff"),
            guard: Some(guard),
        }
    }
}

pub struct Container {
    pub id: String,
    pub merged: PathBuf,
    pub upper: PathBuf,
    pub guard: Option<MountGuard>,
}

/// A 64-hex container id from a short tag.
pub fn container_id(tag: char) -> String {
    std::iter::repeat_n(tag, 64).collect()
}

/// Writes `size` bytes of a pattern (never sparse).
pub fn write_file(path: &Path, size: u64) {
    use std::io::Write as _;
    let mut file = fs::File::create(path).expect("create lower file");
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).expect("write lower file");
        left -= n as u64;
    }
    file.sync_all().expect("fsync lower file");
}
