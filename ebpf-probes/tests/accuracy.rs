//! The acceptance test for the tracepoint strategy, as root on a
//! scratch filesystem (ext4, and xfs with reflink: Docker's usual overlay2
//! backing) with real overlay mounts (metacopy=on): 200 lower files of
//! mixed sizes, two containers running the same workload at once (append
//! to 73 files, chmod 20 more, delete 31, rmdir + mkdir of an empty lower
//! dir = an opaque dir), the second overlay mounted after the tracer
//! started and discovered from mountinfo. Each container must see exactly
//! 73 data copy-ups whose bytes equal the file sizes (on xfs overlay
//! clones them: still the file sizes), 20 metadata copy-ups, 10 dir
//! copy-ups, 31 whiteouts from unlink plus 1 from the rmdir, 1 opaque dir,
//! and no event lost. The upper dirs are checked too.

mod common;

use std::{fs, path::Path, time::Duration};

use common::{
    Store, append, bpf_built, container_id, events_of, expected_rename_events,
    lay_out_rename_sequence, run_rename_sequence,
    workload::{self, FILES, rel_path},
    write_file,
};
use ebpf_probes::{
    OverlayTracer, TracerOptions,
    events::{EventKind, RawEvent},
    registry::{TraceEvent, wait_for_mount},
};
use testkit::{FsKind, ScratchFs};

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

/// The tp_btf programs that have a classic-tracepoint fallback: made to
/// fail, the tracer runs as where ext4 is a module (Debian's kernels).
const TP_BTF_WITH_FALLBACK: &str = "ovl_allocate_inode,ovl_mark_inode_dirty";

/// The tracer's start, with `missing` programs made to fail: no degraded
/// line unless some are, then one per fallback.
fn start(store: &Store, missing: Option<&str>, no_watcher: bool) -> OverlayTracer {
    let tracer = OverlayTracer::start(TracerOptions {
        roots: vec![store.root.clone()],
        missing_tracepoint: missing.map(str::to_owned),
        no_watcher,
        ..TracerOptions::default()
    })
    .expect("start tracer");
    for line in tracer.degraded() {
        println!("{line}");
    }
    match missing {
        None => assert!(tracer.degraded().is_empty(), "{:?}", tracer.degraded()),
        Some(list) => {
            let degraded = tracer.degraded();
            assert_eq!(degraded.len(), list.split(',').count(), "{degraded:?}");
            assert!(
                degraded
                    .iter()
                    .all(|l| l.contains("attached instead") && !l.contains('\n')),
                "{degraded:?}"
            );
        }
    }
    tracer
}

/// The workload in two containers on a `kind` scratch filesystem.
fn counts_are_exact_per_container(kind: FsKind, missing: Option<&str>) {
    let scratch = ScratchFs::new(kind, 2 << 30).expect("scratch filesystem");
    let store = Store::new(&scratch);
    workload::make_lower(&store.lower, size_of_file);

    let id_a = container_id('a');
    let id_b = container_id('b');
    let a = store.container(&id_a, "cacheaaaa", true);

    let mut tracer = start(&store, missing, false);
    println!("{kind:?}: {}", tracer.strategy());
    assert!(
        tracer.lock_registry().by_mount_point(&a.merged).is_some(),
        "A registered at start"
    );

    // B is mounted after the start: only the mountinfo watcher finds it.
    let b = store.container(&id_b, "cachebbbb", true);
    let found = wait_for_mount(tracer.registry(), &b.merged);
    assert!(found.is_some(), "B not discovered from mountinfo");

    let (ma, mb) = (a.merged.clone(), b.merged.clone());
    let ta = std::thread::spawn(move || workload::run(&ma));
    let tb = std::thread::spawn(move || workload::run(&mb));
    ta.join().expect("workload A");
    tb.join().expect("workload B");
    std::thread::sleep(Duration::from_millis(100));

    let raw: Vec<RawEvent> = tracer.drain_events();
    let events: Vec<TraceEvent> = {
        let registry = tracer.lock_registry();
        raw.iter().map(|r| registry.resolve(r)).collect()
    };
    let totals = tracer.totals().expect("totals");
    println!("{kind:?} totals: {totals:?}");
    workload::assert_nothing_lost(&totals, &events, &[&id_a, &id_b]);
    // How the bytes were seen: one clone per file on reflink xfs, else
    // one write per page or splice chunk.
    let data: Vec<&RawEvent> = raw
        .iter()
        .zip(&events)
        .filter(|(r, e)| {
            r.kind() == Some(EventKind::Data)
                && r.bytes > 0
                && (e.container == id_a || e.container == id_b)
        })
        .map(|(r, _)| r)
        .collect();
    let clones = data.iter().filter(|r| r.writes == 1).count();
    println!(
        "{kind:?}: {} non-empty data copy-ups, {clones} counted from one write or clone",
        data.len()
    );
    if kind == (FsKind::Xfs { reflink: true }) {
        assert_eq!(clones, data.len(), "reflink xfs clones every copy-up");
    }

    for (id, container) in [(&id_a, &a), (&id_b, &b)] {
        let (counts, bytes, _) = workload::seen(&events, id);
        for ev in events.iter().filter(|e| &e.container == id).take(3) {
            println!("{}", serde_json::to_string(ev).expect("json"));
        }
        assert_eq!(
            counts,
            workload::expected_counts(),
            "{kind:?}, container {}",
            &id[..8]
        );
        assert_eq!(
            bytes,
            workload::expected_bytes(&container.merged, size_of_file),
            "{kind:?} bytes, container {}",
            &id[..8]
        );
        println!(
            "{kind:?} container {}: exact; {} bytes copied up",
            &id[..8],
            bytes.values().sum::<u64>()
        );
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

#[test]
fn copy_up_whiteout_and_opaque_counts_are_exact_per_container() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    counts_are_exact_per_container(FsKind::Ext4, None);
}

#[test]
fn counts_are_exact_with_the_classic_fallbacks_of_the_tp_btf_ext4_programs() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    counts_are_exact_per_container(FsKind::Ext4, Some(TP_BTF_WITH_FALLBACK));
}

#[test]
fn counts_are_exact_per_container_with_the_upper_on_reflink_xfs() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    counts_are_exact_per_container(FsKind::Xfs { reflink: true }, None);
}

#[test]
fn counts_are_exact_per_container_with_the_upper_on_xfs_without_reflink() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    counts_are_exact_per_container(FsKind::Xfs { reflink: false }, None);
}

fn xattr_present(path: &Path, name: &str) -> bool {
    storage_core::sys::xattr::lget(path, name)
        .ok()
        .flatten()
        .is_some()
}

#[test]
fn tracer_survives_unmount_and_sees_later_mounts() {
    let _serial = common::serial();
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
    let _serial = common::serial();
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
    let _serial = common::serial();
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
    let _serial = common::serial();
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

/// Renames, a create over a whiteout and metacopy-then-data on `kind`.
fn renames_are_classified_on(kind: FsKind, missing: Option<&str>) {
    let scratch = ScratchFs::new(kind, 512 << 20).expect("scratch filesystem");
    let store = Store::new(&scratch);
    lay_out_rename_sequence(&store.lower, 12_345);
    let mut tracer = start(&store, missing, true);
    let id = container_id('f');
    let c = store.container(&id, "cacheffff", true);
    // What the watcher does within milliseconds of the mount.
    tracer.refresh_mounts().expect("refresh");
    run_rename_sequence(&c.merged);
    let seen = events_of(&mut tracer, &id);
    let expected = expected_rename_events(12_345);
    assert_eq!(seen, expected, "{kind:?}");
    assert!(xattr_present(
        &c.upper.join("sub/mv_lower.new"),
        "trusted.overlay.metacopy"
    ));
}

#[test]
fn renames_creates_over_whiteouts_and_metacopy_data_are_classified() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    renames_are_classified_on(FsKind::Ext4, None);
}

#[test]
fn renames_are_classified_with_the_classic_fallbacks_of_the_tp_btf_ext4_programs() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    renames_are_classified_on(FsKind::Ext4, Some(TP_BTF_WITH_FALLBACK));
}

#[test]
fn renames_creates_over_whiteouts_and_metacopy_data_are_classified_on_xfs() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    renames_are_classified_on(FsKind::Xfs { reflink: true }, None);
}

/// Eight writers appending to 2,000 small lower files of one overlay whose
/// upper is on reflink xfs: every copy-up counted, with its bytes.
#[test]
fn an_append_storm_on_xfs_counts_every_copy_up() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 250;
    let scratch = ScratchFs::new(FsKind::Xfs { reflink: true }, 512 << 20).expect("xfs scratch");
    let store = Store::new(&scratch);
    for w in 0..WRITERS {
        fs::create_dir(store.lower.join(format!("w{w}"))).expect("mkdir");
        for i in 0..PER_WRITER {
            fs::write(store.lower.join(format!("w{w}/f{i}")), vec![b'x'; 100 + i])
                .expect("write lower file");
        }
    }
    let id = container_id('s');
    let c = store.container(&id, "cachessss", true);
    let mut tracer = start(&store, None, false);
    assert!(wait_for_mount(tracer.registry(), &c.merged).is_some());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let merged = c.merged.clone();
            std::thread::spawn(move || {
                for i in 0..PER_WRITER {
                    append(&merged.join(format!("w{w}/f{i}")));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    std::thread::sleep(Duration::from_millis(200));
    let raw = tracer.drain_events();
    let events: Vec<TraceEvent> = {
        let registry = tracer.lock_registry();
        raw.iter().map(|r| registry.resolve(r)).collect()
    };
    let totals = tracer.totals().expect("totals");
    workload::assert_nothing_lost(&totals, &events, &[&id]);
    let mine: Vec<&TraceEvent> = events.iter().filter(|e| e.container == id).collect();
    let data: Vec<&&TraceEvent> = mine.iter().filter(|e| e.kind == "copy_up_data").collect();
    assert_eq!(data.len(), WRITERS * PER_WRITER, "{totals:?}");
    let expected: u64 = (0..PER_WRITER as u64).map(|i| 100 + i).sum::<u64>() * WRITERS as u64;
    assert_eq!(data.iter().map(|e| e.bytes).sum::<u64>(), expected);
    assert_eq!(
        mine.iter().filter(|e| e.kind == "copy_up_dir").count(),
        WRITERS
    );
    assert_eq!(mine.len(), WRITERS * PER_WRITER + WRITERS, "only copy-ups");
    println!(
        "xfs append storm: {} copy-ups, {expected} bytes, exact",
        data.len()
    );
}
