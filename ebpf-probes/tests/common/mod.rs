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

/// Appends one byte to `path` (a data copy-up of a lower file).
pub fn append(path: &Path) {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    file.write_all(b"x").expect("append");
}

/// Lays out the rename sequence's lower files, `size` bytes each, in
/// `lower/sub`.
pub fn lay_out_rename_sequence(lower: &Path, size: u64) {
    fs::create_dir(lower.join("sub")).expect("mkdir");
    for name in ["mv_lower", "mv_upper", "recreate", "meta_then_data"] {
        write_file(&lower.join("sub").join(name), size);
    }
}

/// Renames, a create over a whiteout and metacopy-then-data in
/// `merged/sub`: every classification the tracer makes, once each.
pub fn run_rename_sequence(merged: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let sub = merged.join("sub");
    // 1. rename of a lower file: dir copy-up of sub/, metadata-only copy-up
    //    (metacopy=on: a rename needs no data), whiteout.
    fs::rename(sub.join("mv_lower"), sub.join("mv_lower.new")).expect("rename lower");
    // 2. an already copied-up file hiding a lower one: only the whiteout.
    append(&sub.join("mv_upper"));
    fs::rename(sub.join("mv_upper"), sub.join("mv_upper.new")).expect("rename upper");
    // 3. rm then create again: a whiteout, then a file over it (no copy-up).
    fs::remove_file(sub.join("recreate")).expect("unlink");
    fs::write(sub.join("recreate"), b"new").expect("create over whiteout");
    // 4. chmod (metadata copy-up), then append: the data follows.
    fs::set_permissions(
        sub.join("meta_then_data"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    append(&sub.join("meta_then_data"));
    std::thread::sleep(std::time::Duration::from_millis(100));
}

/// The events the rename sequence must give, in order, for files of `size`.
pub fn expected_rename_events(size: u64) -> Vec<(String, &'static str, u64)> {
    [
        ("mv_lower", "copy_up_dir", 0),
        ("mv_lower", "copy_up_metadata", 0),
        ("mv_lower", "whiteout", 0),
        ("mv_upper", "copy_up_data", size),
        ("mv_upper", "whiteout", 0),
        ("recreate", "whiteout", 0),
        ("recreate", "create_over_whiteout", 0),
        ("meta_then_data", "copy_up_metadata", 0),
        ("meta_then_data", "copy_up_data", size),
    ]
    .into_iter()
    .map(|(n, k, b)| (n.to_owned(), k, b))
    .collect()
}

/// What the tracer saw for container `id`: (file name, kind, bytes).
pub fn events_of(
    tracer: &mut ebpf_probes::OverlayTracer,
    id: &str,
) -> Vec<(String, &'static str, u64)> {
    let raw = tracer.drain_events();
    let mut registry = tracer.lock_registry();
    raw.iter()
        .map(|r| registry.resolve_fresh(r))
        .filter(|e| e.container == id)
        .map(|e| {
            let name = Path::new(&e.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, e.kind, e.bytes)
        })
        .collect()
}

/// The accuracy workload: 200 lower files in 10 dirs, of which a
/// container appends to 73, chmods 20 and deletes 31, then removes and
/// recreates the empty lower dir `empty` (an opaque dir).
pub mod workload {
    use std::{
        collections::BTreeMap,
        fs,
        io::Write as _,
        ops::Range,
        os::unix::fs::PermissionsExt as _,
        path::{Path, PathBuf},
    };

    use ebpf_probes::{events::Totals, registry::TraceEvent};

    pub const FILES: usize = 200;
    pub const DIRS: usize = 10;
    pub const APPEND: Range<usize> = 0..73;
    pub const CHMOD: Range<usize> = 73..93;
    pub const DELETE: Range<usize> = 93..124;

    /// (kind, syscall for whiteouts) -> count.
    pub type Counts = BTreeMap<(&'static str, &'static str), u64>;

    /// `d<i % 10>/f<i>`.
    pub fn rel_path(i: usize) -> PathBuf {
        PathBuf::from(format!("d{}/f{i:03}", i % DIRS))
    }

    /// Lays out the lower layer, file `i` being `size_of(i)` bytes.
    pub fn make_lower(lower: &Path, size_of: fn(usize) -> u64) {
        for d in 0..DIRS {
            fs::create_dir_all(lower.join(format!("d{d}"))).expect("mkdir");
        }
        for i in 0..FILES {
            super::write_file(&lower.join(rel_path(i)), size_of(i));
        }
        fs::create_dir(lower.join("empty")).expect("mkdir empty");
    }

    /// Runs the workload in an overlay mounted on `merged`.
    pub fn run(merged: &Path) {
        for i in APPEND {
            let mut file = fs::OpenOptions::new()
                .append(true)
                .open(merged.join(rel_path(i)))
                .expect("open for append");
            file.write_all(b"appended\n").expect("append");
        }
        for i in CHMOD {
            fs::set_permissions(merged.join(rel_path(i)), fs::Permissions::from_mode(0o600))
                .expect("chmod");
        }
        for i in DELETE {
            fs::remove_file(merged.join(rel_path(i))).expect("unlink");
        }
        fs::remove_dir(merged.join("empty")).expect("rmdir");
        fs::create_dir(merged.join("empty")).expect("mkdir over whiteout");
    }

    /// What one container's workload must give: 73 data, 20 metadata and
    /// 10 dir copy-ups, 31 whiteouts from unlink and 1 from rmdir, 1
    /// opaque dir.
    pub fn expected_counts() -> Counts {
        let mut expected = Counts::new();
        expected.insert(("copy_up_data", ""), APPEND.len() as u64);
        expected.insert(("copy_up_metadata", ""), CHMOD.len() as u64);
        expected.insert(("copy_up_dir", ""), DIRS as u64);
        expected.insert(("whiteout", "unlink"), DELETE.len() as u64);
        expected.insert(("whiteout", "rmdir"), 1);
        expected.insert(("opaque_dir", ""), 1);
        expected
    }

    /// The bytes each data copy-up must report: path -> file size.
    pub fn expected_bytes(merged: &Path, size_of: fn(usize) -> u64) -> BTreeMap<String, u64> {
        APPEND
            .map(|i| (merged.join(rel_path(i)).display().to_string(), size_of(i)))
            .collect()
    }

    /// No event lost. The tracer traces every overlay of the host and its
    /// loss counters are global: when overlays outside the test (other
    /// workloads on a shared host) showed events, a loss is printed, not
    /// failed on; the exact per-container counts the callers check then
    /// catch any loss of the test's own events.
    pub fn assert_nothing_lost(totals: &Totals, events: &[TraceEvent], ours: &[&str]) {
        let foreign = events
            .iter()
            .filter(|e| !ours.contains(&e.container.as_str()))
            .count();
        if foreign == 0 {
            assert_eq!(totals.lost, 0, "events lost: {totals:?}");
        } else if totals.lost > 0 {
            println!(
                "{} lost with {foreign} events of overlays outside this test traced too",
                totals.lost
            );
        }
    }

    /// The counts, data bytes per path and summed blocked time (ns) of the
    /// data copy-ups of `container`'s events.
    pub fn seen(events: &[TraceEvent], container: &str) -> (Counts, BTreeMap<String, u64>, u64) {
        let mut counts = Counts::new();
        let mut bytes = BTreeMap::new();
        let mut blocked_ns = 0;
        for ev in events.iter().filter(|e| e.container == container) {
            let syscall = if ev.kind == "whiteout" {
                ev.syscall
            } else {
                ""
            };
            *counts.entry((ev.kind, syscall)).or_insert(0) += 1;
            if ev.kind == "copy_up_data" {
                let prev = bytes.insert(ev.path.clone(), ev.bytes);
                assert!(prev.is_none(), "two data copy-ups of {}", ev.path);
                blocked_ns += ev.duration_ns;
            }
        }
        (counts, bytes, blocked_ns)
    }
}

/// Held by every test that starts a tracer: the tracer follows every
/// overlay on the host, so two such tests of one binary running at once
/// (cargo runs a binary's tests in parallel) would count each other's
/// events, and the same container ids, twice.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
