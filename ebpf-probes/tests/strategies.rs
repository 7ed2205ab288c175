//! The strategy ladder on the real kernel, as root. Where the kernel
//! refuses fentry and kprobes (the development hosts), the ladder must land
//! on tracepoints and say why with the kernel's own errors, and a forced
//! fentry or kprobe start must fail with them. Where a rung works (the
//! Debian 6.1 guest of `cargo xtask vm-test strategies -p ebpf-probes`,
//! detected by the doctor's probes), the accuracy workload of
//! `tests/accuracy.rs` (two containers, 200 lower files, 73 data copy-ups
//! with exact bytes, 20 metadata, 10 dirs, 31+1 whiteouts, 1 opaque dir)
//! must give exact counts under that rung, forced.

mod common;

use std::time::Duration;

use common::{
    Store, bpf_built, container_id, events_of, expected_rename_events, lay_out_rename_sequence,
    run_rename_sequence,
    workload::{self},
};
use ebpf_probes::{
    OverlayTracer, TracerOptions,
    features::probe_bpf,
    registry::{TraceEvent, wait_for_mount},
    strategy::Strategy,
};
use testkit::{FsKind, ScratchFs};

/// Sizes around page and splice-chunk (1 MiB) boundaries; smaller than
/// accuracy.rs's (the guest runs under TCG).
const CYCLE: [u64; 10] = [
    0,
    1,
    100,
    4095,
    4096,
    4097,
    65_536,
    1 << 20,
    (1 << 20) + 1,
    3_000_000,
];

fn size_of_file(i: usize) -> u64 {
    match i {
        0 => 8 << 20,
        _ => CYCLE[i % CYCLE.len()],
    }
}

/// Whether the doctor's probe says the kernel runs `name` programs, and
/// its line.
fn kernel_allows(name: &str) -> (bool, String) {
    let features = probe_bpf();
    let line = features
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no {name} line in {features:?}"));
    (line.supported, line.to_string())
}

/// Runs the workload in two containers under `strategy`, forced, and
/// checks the exact counts and bytes of each.
fn accuracy_under(strategy: Strategy) {
    let scratch = ScratchFs::new(FsKind::Ext4, 1 << 30).expect("ext4 scratch");
    let store = Store::new(&scratch);
    workload::make_lower(&store.lower, size_of_file);
    let id_a = container_id('a');
    let id_b = container_id('b');
    let a = store.container(&id_a, "cacheaaaa", true);

    let mut tracer = OverlayTracer::start(TracerOptions {
        roots: vec![store.root.clone()],
        strategy: Some(strategy),
        ..TracerOptions::default()
    })
    .unwrap_or_else(|e| panic!("start tracer with {strategy} forced: {e}"));
    println!("{}", tracer.strategy());
    for line in tracer.degraded() {
        println!("{line}");
    }
    assert_eq!(tracer.strategy().strategy, strategy);
    assert!(tracer.strategy().passed_over.is_empty());
    assert!(
        !tracer
            .degraded()
            .iter()
            .any(|l| l.contains("ovl_") && (l.contains("ovl_kp_") || l.contains("ovl_fx_splice"))),
        "{:?}",
        tracer.degraded()
    );

    let b = store.container(&id_b, "cachebbbb", true);
    assert!(
        wait_for_mount(tracer.registry(), &b.merged).is_some(),
        "B not discovered from mountinfo"
    );
    let (ma, mb) = (a.merged.clone(), b.merged.clone());
    let ta = std::thread::spawn(move || workload::run(&ma));
    let tb = std::thread::spawn(move || workload::run(&mb));
    ta.join().expect("workload A");
    tb.join().expect("workload B");
    std::thread::sleep(Duration::from_millis(200));

    let raw = tracer.drain_events();
    let events: Vec<TraceEvent> = {
        let registry = tracer.lock_registry();
        raw.iter().map(|r| registry.resolve(r)).collect()
    };
    let totals = tracer.totals().expect("totals");
    println!("{strategy} totals: {totals:?}");
    workload::assert_nothing_lost(&totals, &events, &[&id_a, &id_b]);

    for (id, container) in [(&id_a, &a), (&id_b, &b)] {
        let (counts, bytes, blocked_ns) = workload::seen(&events, id);
        for ev in events.iter().filter(|e| &e.container == id) {
            assert_eq!(ev.layer.as_deref().map(|l| &l[..5]), Some("cache"));
            assert_eq!(ev.mount_point.as_deref(), Some(container.merged.as_path()));
        }
        let expected_bytes = workload::expected_bytes(&container.merged, size_of_file);
        assert_eq!(
            counts,
            workload::expected_counts(),
            "{strategy}, container {}",
            &id[..8]
        );
        assert_eq!(
            bytes,
            expected_bytes,
            "{strategy} bytes, container {}",
            &id[..8]
        );
        assert!(blocked_ns > 0, "no blocked time measured");
        println!(
            "{strategy} container {}: exact; {} bytes copied up, blocked {:.1} ms",
            &id[..8],
            expected_bytes.values().sum::<u64>(),
            blocked_ns as f64 / 1e6
        );
    }
}

/// A forced rung the kernel refuses: one line naming the program and the
/// kernel's error.
fn assert_refused(strategy: Strategy, doctor: &str) {
    let err = OverlayTracer::start(TracerOptions {
        strategy: Some(strategy),
        no_watcher: true,
        ..TracerOptions::default()
    })
    .expect_err("the kernel refuses this rung");
    let text = err.to_string();
    println!("{strategy} forced: {text} (doctor: {doctor})");
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.contains("ovl_fx_") || text.contains("ovl_fe_") || text.contains("ovl_kp_"),
        "the error names the rung's program: {text}"
    );
    assert!(err.errno().is_some(), "a kernel errno: {text}");
}

#[test]
fn the_ladder_reports_each_rung_passed_over_with_the_kernels_reason() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let (fentry_ok, fentry_line) = kernel_allows("fentry");
    let (kprobe_ok, kprobe_line) = kernel_allows("kprobe");
    let tracer = OverlayTracer::start(TracerOptions {
        no_watcher: true,
        ..TracerOptions::default()
    })
    .expect("start tracer");
    let choice = tracer.strategy().clone();
    println!("{choice}");
    println!("doctor: {fentry_line}; {kprobe_line}");
    let expected = if fentry_ok {
        Strategy::Fentry
    } else if kprobe_ok {
        Strategy::Kprobe
    } else {
        Strategy::Tracepoints
    };
    assert_eq!(choice.strategy, expected, "{choice}");
    let mut above = Vec::new();
    if !fentry_ok {
        above.push("fentry");
        if !kprobe_ok {
            above.push("kprobe");
        }
    }
    assert_eq!(choice.passed_over.len(), above.len(), "{choice}");
    for (line, rung) in choice.passed_over.iter().zip(&above) {
        assert!(line.starts_with(&format!("{rung}: ")), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
    if !fentry_ok {
        // This host: fentry loads are refused with EPERM.
        assert!(
            choice.passed_over[0].contains("Operation not permitted")
                || choice.passed_over[0].contains("not supported"),
            "{}",
            choice.passed_over[0]
        );
        assert_refused(Strategy::Fentry, &fentry_line);
    }
    if !kprobe_ok {
        assert_refused(Strategy::Kprobe, &kprobe_line);
    }
}

#[test]
fn kprobe_rung_counts_the_accuracy_workload_exactly() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let (ok, line) = kernel_allows("kprobe");
    if !ok {
        assert_refused(Strategy::Kprobe, &line);
        println!("skipped: kprobe unavailable: {line}");
        return;
    }
    accuracy_under(Strategy::Kprobe);
}

#[test]
fn fentry_rung_counts_the_accuracy_workload_exactly() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let (ok, line) = kernel_allows("fentry");
    if !ok {
        assert_refused(Strategy::Fentry, &line);
        println!("skipped: fentry unavailable: {line}");
        return;
    }
    accuracy_under(Strategy::Fentry);
}

/// The tracepoint rung, forced: exact on every kernel, also where its
/// tp_btf ext4 programs cannot attach (ext4 a module, as in the Debian 6.1
/// guest) and it runs their classic-tracepoint fallbacks, each said in one
/// `degraded:` line.
#[test]
fn tracepoint_rung_counts_the_accuracy_workload_exactly() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    accuracy_under(Strategy::Tracepoints);
}

#[test]
fn tracepoint_rung_classifies_renames_and_creates_over_whiteouts() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    renames_under(Strategy::Tracepoints);
}

/// tests/accuracy.rs's rename/create-over-whiteout/metacopy-then-data
/// sequence under a forced rung: the same events in the same order.
fn renames_under(strategy: Strategy) {
    let scratch = ScratchFs::new(FsKind::Ext4, 256 << 20).expect("ext4 scratch");
    let store = Store::new(&scratch);
    lay_out_rename_sequence(&store.lower, 1_234_567);
    let mut tracer = OverlayTracer::start(TracerOptions {
        roots: vec![store.root.clone()],
        no_watcher: true,
        strategy: Some(strategy),
        ..TracerOptions::default()
    })
    .unwrap_or_else(|e| panic!("start tracer with {strategy} forced: {e}"));
    let id = container_id('f');
    let c = store.container(&id, "cacheffff", true);
    tracer.refresh_mounts().expect("refresh");
    run_rename_sequence(&c.merged);
    let seen = events_of(&mut tracer, &id);
    let expected = expected_rename_events(1_234_567);
    assert_eq!(seen, expected, "{strategy}");
    println!("{strategy}: renames, create over whiteout, metacopy then data: exact");
}

#[test]
fn kprobe_and_fentry_rungs_classify_renames_and_creates_over_whiteouts() {
    let _serial = common::serial();
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    for (strategy, name) in [(Strategy::Kprobe, "kprobe"), (Strategy::Fentry, "fentry")] {
        let (ok, line) = kernel_allows(name);
        if !ok {
            assert_refused(strategy, &line);
            println!("skipped: {name} unavailable: {line}");
            continue;
        }
        renames_under(strategy);
    }
}
