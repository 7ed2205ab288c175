//! `layerscope bench` on layerscope's own targets, end to end on real loop
//! filesystems: file workloads run round by round on every target, the
//! rows hold the timed repeats only, the probe counters come from the
//! counting pass and belong to their own target (overlay2 copies up, vfs
//! does not), page-cache's readers share the cache on overlay2 and each
//! cache a copy on vfs, and nothing is left behind, also after Ctrl-C: no mount,
//! no loop device, no file, and the memory agents the run held off
//! (free page reporting, DAMON) running again as before.

#[path = "bench_support.rs"]
mod bench_support;

use bench_support::{assert_nothing_left_in, bench, interrupt_at, memory_agent_settings};
use serde_json::Value;

/// The tracer counts every overlay on the host: the two tests take turns,
/// or one's copy-ups would land in the other's counters.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn row<'a>(results: &'a Value, workload: &str, target: &str, repeat: u64) -> &'a Value {
    results["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["workload"] == workload && r["target"] == target && r["repeat"] == repeat)
        .unwrap_or_else(|| panic!("no row {workload} {target} repeat {repeat}"))
}

#[test]
fn every_target_runs_round_by_round_with_its_own_counters_and_cleans_up() {
    testkit::require_root!();
    let _turn = one_at_a_time();
    let leaks = testkit::LeakCheck::start().unwrap();
    let out = tempfile::tempdir().unwrap();
    let memory_before = memory_agent_settings();
    let output = bench(
        leaks.dir(),
        out.path(),
        &[
            "--scale",
            "tiny",
            "--drivers",
            "overlay2-ext4,vfs-ext4",
            "--workloads",
            "copy-up,create-delete",
            "--repeat",
            "2",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();

    // Two timed repeats; the counting pass leaves no rows of its own.
    let repeats: std::collections::BTreeSet<u64> = results["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repeat"].as_u64().unwrap())
        .collect();
    assert_eq!(repeats.into_iter().collect::<Vec<_>>(), [0, 1]);

    let tracer = results["probe_strategy"].as_str().unwrap();
    for repeat in [0, 1] {
        for target in ["native", "overlay2-ext4", "vfs-ext4"] {
            // Every round's share adds up to the whole workload.
            for size in ["4KiB", "64KiB", "1MiB"] {
                let copy_up = row(&results, &format!("copy-up/{size}"), target, repeat);
                assert_eq!(copy_up["ops"], 4, "{copy_up}");
            }
            let delete = row(&results, "create-delete/delete", target, repeat);
            assert_eq!(delete["ops"], 512, "{delete}");
            assert_eq!(delete["bytes_written"], 0, "{delete}");
            let create = row(&results, "create-delete/create", target, repeat);
            assert_eq!(create["bytes_written"], 512 * 4096, "{create}");
        }
        if tracer.starts_with("unavailable") {
            eprintln!("skipping counter checks: tracer {tracer}");
            continue;
        }
        // The counters are each target's own, though the targets ran
        // interleaved: overlay2 copied the 12 files up (4 of each size)
        // and each of the 4 rounds' 4 KiB warm-up file, and whited out the
        // 512 deletes; vfs, on the same kind of filesystem, did neither.
        let overlay = row(&results, "copy-up/1MiB", "overlay2-ext4", repeat);
        assert_eq!(overlay["probes"]["copy_ups_data"], 12 + 4, "{overlay}");
        let copied = overlay["probes"]["copy_up_bytes"].as_u64().unwrap();
        assert_eq!(copied, 4 * (4096 + 65536 + 1048576) + 4 * 4096, "{overlay}");
        let whiteouts = row(&results, "create-delete/delete", "overlay2-ext4", repeat);
        assert_eq!(whiteouts["probes"]["whiteouts"], 512, "{whiteouts}");
        let vfs = row(&results, "copy-up/1MiB", "vfs-ext4", repeat);
        assert_eq!(vfs["probes"]["copy_ups_data"], 0, "{vfs}");
        assert_eq!(vfs["probes"]["whiteouts"], 0, "{vfs}");
    }
    let ratio = results["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workload"] == "copy-up/1MiB" && r["target"] == "overlay2-ext4")
        .expect("an overlay2 copy-up ratio");
    assert!(ratio["p50_ratio"].as_f64().unwrap() > 2.0, "{ratio}");

    assert_nothing_left_in(leaks.dir());
    leaks.assert_clean();
    // The run says what it held off, in results.json too, and put it back.
    let hold = results["memory_hold"].as_str().expect("memory_hold");
    assert!(
        stderr.contains(&format!("bench: memory: {hold}\n")),
        "{hold} not in {stderr}"
    );
    assert_eq!(
        memory_agent_settings(),
        memory_before,
        "not put back: {hold}"
    );
}

/// page-cache: each target's readers are containers of their own, made
/// up front and read in turns with the other targets. On overlay2 they
/// share the lower file's pages, as native's readers share one volume;
/// on vfs each container has its own copy, so the cache holds one per
/// reader. Every container is unmounted and removed after the run.
#[test]
fn page_cache_is_shared_on_overlay2_and_copied_per_container_on_vfs() {
    testkit::require_root!();
    // The workload reads the kernel's page-cache size: nothing else of
    // this test binary may write files meanwhile.
    let _turn = one_at_a_time();
    let leaks = testkit::LeakCheck::start().unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = bench(
        leaks.dir(),
        out.path(),
        &[
            "--scale",
            "tiny",
            "--drivers",
            "overlay2-ext4,vfs-ext4",
            "--workloads",
            "page-cache",
            "--repeat",
            "1",
            "--no-probes",
            "--no-memory-hold",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();

    // Tiny scale: 2 readers of a 16 MiB file, 2 cold starts (one sample
    // each). The cache's size moves by a few pages as the rest of the
    // system frees and reads, so one copy is 0.9 to 1.5 files.
    const FILE: u64 = 16 << 20;
    let grown = |target: &str| {
        let row = row(&results, "page-cache/2x16MiB", target, 0);
        assert_eq!(row["ops"], 2, "{row}");
        row["page_cache_bytes"].as_u64().expect("page_cache_bytes")
    };
    for shared in ["native", "overlay2-ext4"] {
        let bytes = grown(shared);
        assert!(
            (FILE - FILE / 10..FILE + FILE / 2).contains(&bytes),
            "{shared}: {bytes} B cached, want one copy of {FILE}"
        );
    }
    let copied = grown("vfs-ext4");
    assert!(
        (2 * FILE - FILE / 10..2 * FILE + FILE / 2).contains(&copied),
        "vfs-ext4: {copied} B cached, want a copy per reader (2 x {FILE})"
    );
    assert_nothing_left_in(leaks.dir());
    leaks.assert_clean();
}

#[test]
fn ctrl_c_between_rounds_leaves_nothing_behind() {
    testkit::require_root!();
    let _turn = one_at_a_time();
    let leaks = testkit::LeakCheck::start().unwrap();
    let out = tempfile::tempdir().unwrap();
    let memory_before = memory_agent_settings();
    // Interrupt once the second workload's stacks are being set up: the
    // first one's rounds ran with every target mounted at once.
    let mut memory_held = Vec::new();
    let run = interrupt_at(
        bench(
            leaks.dir(),
            out.path(),
            &[
                "--scale",
                "tiny",
                "--drivers",
                "overlay2-ext4,btrfs,aufs-ext4",
                "--workloads",
                "append-storm,create-delete",
                "--repeat",
                "3",
            ],
        ),
        "\"workload\":\"create-delete\"",
        || memory_held = memory_agent_settings(),
    );
    let (seen, rest) = (&run.before, &run.after);
    assert!(run.sent, "the run never reached create-delete: {seen:?}");
    assert!(
        !run.status.success(),
        "an interrupted bench must fail; saw {seen:?} {rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("interrupted")),
        "no interrupted line in {rest:?}"
    );
    assert_nothing_left_in(leaks.dir());
    leaks.assert_clean();
    let hold = seen
        .iter()
        .find(|l| l.starts_with("bench: memory: "))
        .unwrap_or_else(|| panic!("no memory line in {seen:?}"));
    if hold.contains("put back at exit") {
        assert_ne!(memory_held, memory_before, "{hold}");
    } else {
        assert!(hold.contains("nothing to hold"), "{hold}");
        assert_eq!(memory_held, memory_before, "{hold}");
    }
    assert_eq!(
        memory_agent_settings(),
        memory_before,
        "not put back: {hold}"
    );
}
