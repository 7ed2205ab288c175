//! The acceptance test for the tracepoint strategy, as root on an
//! ext4 scratch filesystem with real overlay mounts (metacopy=on):
//! 200 lower files of mixed sizes, two containers running the same workload
//! at once (append to 73 files, chmod 20 more, delete 31, rmdir + mkdir of
//! an empty lower dir = an opaque dir), the second overlay mounted after the
//! tracer started and discovered from mountinfo. Each container must see
//! exactly 73 data copy-ups whose bytes equal the file sizes, 20 metadata
//! copy-ups, 10 dir copy-ups, 31 whiteouts from unlink plus 1 from the
//! rmdir, 1 opaque dir, and no event lost. The upper dirs are checked too.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    Store, append, bpf_built, container_id, events_of, expected_rename_events,
    lay_out_rename_sequence, run_rename_sequence, write_file,
};
use ebpf_probes::{
    OverlayTracer, TracerOptions,
    events::RawEvent,
    registry::{TraceEvent, wait_for_mount},
};
use testkit::{FsKind, ScratchFs};

const FILES: usize = 200;
const DIRS: usize = 10;
const APPEND: std::ops::Range<usize> = 0..73;
const CHMOD: std::ops::Range<usize> = 73..93;
const DELETE: std::ops::Range<usize> = 93..124;
const CYCLE: [u64; 10] = [
    0,
    1,
    100,
    4095,
    4096,
    4097,
    65_536,
    100_000,
    1 << 20,
    3_000_000,
];

fn size_of_file(i: usize) -> u64 {
    match i {
        0 => 64 << 20,
        1 => 16 << 20,
        2 => 8 << 20,
        _ => CYCLE[i % CYCLE.len()],
    }
}

fn rel_path(i: usize) -> PathBuf {
    PathBuf::from(format!("d{}/f{i:03}", i % DIRS))
}

fn make_lower(lower: &Path) {
    for d in 0..DIRS {
        fs::create_dir_all(lower.join(format!("d{d}"))).expect("mkdir");
    }
    for i in 0..FILES {
        write_file(&lower.join(rel_path(i)), size_of_file(i));
    }
    fs::create_dir(lower.join("empty")).expect("mkdir empty");
}

fn workload(merged: &Path) {
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

#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    by_kind: BTreeMap<(&'static str, &'static str), u64>,
    data_bytes: BTreeMap<String, u64>,
}

fn summarize(events: &[TraceEvent], container: &str) -> Seen {
    let mut seen = Seen::default();
    for ev in events.iter().filter(|e| e.container == container) {
        let syscall = if ev.kind == "whiteout" {
            ev.syscall
        } else {
            ""
        };
        *seen.by_kind.entry((ev.kind, syscall)).or_insert(0) += 1;
        if ev.kind == "copy_up_data" {
            let prev = seen.data_bytes.insert(ev.path.clone(), ev.bytes);
            assert!(prev.is_none(), "two data copy-ups of {}", ev.path);
        }
    }
    seen
}

#[test]
fn copy_up_whiteout_and_opaque_counts_are_exact_per_container() {
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Ext4, 2 << 30).expect("ext4 scratch");
    let store = Store::new(&scratch);
    make_lower(&store.lower);

    let id_a = container_id('a');
    let id_b = container_id('b');
    let a = store.container(&id_a, "cacheaaaa", true);

    let mut tracer = OverlayTracer::start(TracerOptions {
        roots: vec![store.root.clone()],
        ..TracerOptions::default()
    })
    .expect("start tracer");
    println!("{}", tracer.strategy());
    assert!(tracer.degraded().is_empty(), "{:?}", tracer.degraded());
    assert!(
        tracer.lock_registry().by_mount_point(&a.merged).is_some(),
        "A registered at start"
    );

    // B is mounted after the start: only the mountinfo watcher finds it.
    let b = store.container(&id_b, "cachebbbb", true);
    let found = wait_for_mount(tracer.registry(), &b.merged);
    assert!(found.is_some(), "B not discovered from mountinfo");

    let (ma, mb) = (a.merged.clone(), b.merged.clone());
    let ta = std::thread::spawn(move || workload(&ma));
    let tb = std::thread::spawn(move || workload(&mb));
    ta.join().expect("workload A");
    tb.join().expect("workload B");
    std::thread::sleep(Duration::from_millis(100));

    let raw: Vec<RawEvent> = tracer.drain_events();
    let events: Vec<TraceEvent> = {
        let registry = tracer.lock_registry();
        raw.iter().map(|r| registry.resolve(r)).collect()
    };
    let totals = tracer.totals().expect("totals");
    println!("totals: {totals:?}");
    assert_eq!(totals.lost, 0, "events lost: {totals:?}");

    let mut expected = Seen::default();
    expected
        .by_kind
        .insert(("copy_up_data", ""), APPEND.len() as u64);
    expected
        .by_kind
        .insert(("copy_up_metadata", ""), CHMOD.len() as u64);
    expected.by_kind.insert(("copy_up_dir", ""), DIRS as u64);
    expected
        .by_kind
        .insert(("whiteout", "unlink"), DELETE.len() as u64);
    expected.by_kind.insert(("whiteout", "rmdir"), 1);
    expected.by_kind.insert(("opaque_dir", ""), 1);

    for (id, container) in [(&id_a, &a), (&id_b, &b)] {
        for i in APPEND {
            expected.data_bytes.insert(
                container.merged.join(rel_path(i)).display().to_string(),
                size_of_file(i),
            );
        }
        let seen = summarize(&events, id);
        for ev in events.iter().filter(|e| &e.container == id).take(3) {
            println!("{}", serde_json::to_string(ev).expect("json"));
        }
        assert_eq!(seen.by_kind, expected.by_kind, "container {}", &id[..8]);
        assert_eq!(
            seen.data_bytes,
            expected.data_bytes,
            "bytes, container {}",
            &id[..8]
        );
        expected.data_bytes.clear();
        for ev in events.iter().filter(|e| &e.container == id) {
            assert_eq!(ev.driver, "overlay2");
            assert_eq!(
                ev.layer.as_deref(),
                Some(if id == &id_a {
                    "cacheaaaa"
                } else {
                    "cachebbbb"
                })
            );
            assert_eq!(ev.mount_point.as_deref(), Some(container.merged.as_path()));
        }

        // Cross-check with the upper dir itself.
        let upper = &container.upper;
        let mut metacopies = 0;
        let mut full = 0;
        let mut whiteouts = 0;
        for i in 0..FILES {
            let path = upper.join(rel_path(i));
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                whiteouts += 1;
            } else if xattr_present(&path, "trusted.overlay.metacopy") {
                metacopies += 1;
            } else {
                full += 1;
            }
        }
        assert_eq!(
            (full, metacopies, whiteouts),
            (73, 20, 31),
            "upper dir of {}",
            &id[..8]
        );
        assert!(xattr_present(
            &upper.join("empty"),
            "trusted.overlay.opaque"
        ));
    }
    drop(tracer);
}

fn xattr_present(path: &Path, name: &str) -> bool {
    storage_core::sys::xattr::lget(path, name)
        .ok()
        .flatten()
        .is_some()
}

#[test]
fn tracer_survives_unmount_and_sees_later_mounts() {
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Ext4, 256 << 20).expect("ext4 scratch");
    let store = Store::new(&scratch);
    for i in 0..4 {
        write_file(&store.lower.join(format!("f{i}")), 10_000);
    }
    let mut tracer = OverlayTracer::start(TracerOptions {
        roots: vec![store.root.clone()],
        ..TracerOptions::default()
    })
    .expect("start tracer");
    let id = container_id('c');
    let mut c = store.container(&id, "cachecccc", true);
    assert!(wait_for_mount(tracer.registry(), &c.merged).is_some());
    append(&c.merged.join("f0"));
    // Unmount while tracing, then mount again (new work/work inode).
    c.guard.take().expect("guard").unmount().expect("unmount");
    std::thread::sleep(Duration::from_millis(50));
    let c2 = store.container(&id, "cachecccc", true);
    assert!(wait_for_mount(tracer.registry(), &c2.merged).is_some());
    append(&c2.merged.join("f1"));
    std::thread::sleep(Duration::from_millis(50));
    let raw = tracer.drain_events();
    let registry = tracer.lock_registry();
    let data: Vec<TraceEvent> = raw
        .iter()
        .map(|r| registry.resolve(r))
        .filter(|e| e.container == id && e.kind == "copy_up_data")
        .collect();
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(data.iter().all(|e| e.bytes == 10_000), "{data:?}");
    assert_eq!(
        registry
            .mounts()
            .filter(|m| m.owner.container == id)
            .count(),
        2,
        "both mounts known, one unmounted"
    );
}

#[test]
fn a_missing_tracepoint_degrades_with_one_line() {
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let tracer = OverlayTracer::start(TracerOptions {
        missing_tracepoint: Some("ovl_free_inode".into()),
        no_watcher: true,
        ..TracerOptions::default()
    })
    .expect("start tracer");
    let degraded = tracer.degraded();
    assert_eq!(degraded.len(), 1, "{degraded:?}");
    assert!(!degraded[0].contains('\n'));
    assert!(
        degraded[0].contains("ext4_free_inode_missing"),
        "{}",
        degraded[0]
    );
    println!("{}", degraded[0]);

    // A required one fails the start with one line.
    let err = OverlayTracer::start(TracerOptions {
        missing_tracepoint: Some("ovl_sys_enter".into()),
        no_watcher: true,
        ..TracerOptions::default()
    })
    .expect_err("sys_enter is required");
    assert!(!err.to_string().contains('\n'), "{err}");
    assert!(err.to_string().contains("sys_enter_missing"), "{err}");
}

const CHILD_ENV: &str = "LAYERSCOPE_TEST_NOT_ROOT_CHILD";

#[test]
fn not_root_is_one_clear_error() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child, running as nobody.
        let err = OverlayTracer::start(TracerOptions::default()).expect_err("not root");
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("needs root"), "{text}");
        println!("child error: {text}");
        return;
    }
    testkit::require_root!();
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().expect("current_exe");
    let output = std::process::Command::new(exe)
        .args(["--exact", "not_root_is_one_clear_error", "--nocapture"])
        .env(CHILD_ENV, "1")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("child error:"),
        "child failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn an_overlay_used_right_after_its_mount_is_counted_exactly() {
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Ext4, 256 << 20).expect("ext4 scratch");
    let store = Store::new(&scratch);
    for i in 0..20 {
        write_file(&store.lower.join(format!("f{i}")), 5000 + i);
    }
    let mut tracer = OverlayTracer::start(TracerOptions {
        roots: vec![store.root.clone()],
        no_watcher: true,
        ..TracerOptions::default()
    })
    .expect("start tracer");
    // No watcher, no refresh: only the BPF side sees this mount before use.
    let id = container_id('e');
    let c = store.container(&id, "cacheeeee", true);
    for i in 0..10 {
        append(&c.merged.join(format!("f{i}")));
    }
    for i in 10..15 {
        fs::remove_file(c.merged.join(format!("f{i}"))).expect("unlink");
    }
    std::thread::sleep(Duration::from_millis(50));
    let raw = tracer.drain_events();
    let mut registry = tracer.lock_registry();
    let events: Vec<TraceEvent> = raw.iter().map(|r| registry.resolve_fresh(r)).collect();
    let mine: Vec<&TraceEvent> = events.iter().filter(|e| e.container == id).collect();
    let data: Vec<u64> = mine
        .iter()
        .filter(|e| e.kind == "copy_up_data")
        .map(|e| e.bytes)
        .collect();
    assert_eq!(
        data,
        (0..10).map(|i| 5000 + i).collect::<Vec<u64>>(),
        "{mine:?}"
    );
    assert_eq!(mine.iter().filter(|e| e.kind == "whiteout").count(), 5);
    assert_eq!(mine.len(), 15, "{mine:?}");
}

#[test]
fn renames_creates_over_whiteouts_and_metacopy_data_are_classified() {
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Ext4, 256 << 20).expect("ext4 scratch");
    let store = Store::new(&scratch);
    lay_out_rename_sequence(&store.lower, 12_345);
    let mut tracer = OverlayTracer::start(TracerOptions {
        roots: vec![store.root.clone()],
        no_watcher: true,
        ..TracerOptions::default()
    })
    .expect("start tracer");
    let id = container_id('f');
    let c = store.container(&id, "cacheffff", true);
    // What the watcher does within milliseconds of the mount.
    tracer.refresh_mounts().expect("refresh");
    run_rename_sequence(&c.merged);
    let seen = events_of(&mut tracer, &id);
    let expected = expected_rename_events(12_345);
    assert_eq!(seen, expected);
    assert!(xattr_present(
        &c.upper.join("sub/mv_lower.new"),
        "trusted.overlay.metacopy"
    ));
}
