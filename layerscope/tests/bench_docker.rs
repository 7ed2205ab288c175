//! `layerscope bench --docker` against a real dockerd per driver: the
//! workloads run inside containers, come back as `docker-*` rows with sane
//! latencies and ratios to `docker-volume`, and nothing (mount, loop
//! device, daemon, dir) is left behind, also after Ctrl-C in the middle of
//! a container's run. Without dockerd: one error line, non-zero exit.

#[path = "bench_support.rs"]
mod bench_support;

use std::path::Path;
use std::process::Command;

use bench_support::{assert_nothing_left_in, bench, interrupt_at};
use serde_json::Value;

fn layerscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_layerscope"))
}

fn rows<'a>(results: &'a Value, target: &str) -> Vec<&'a Value> {
    results["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["target"] == target)
        .collect()
}

/// Processes whose command line mentions `dir` (a daemon started there).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

#[test]
fn docker_mode_runs_the_workloads_in_real_containers_and_cleans_up() {
    testkit::require_root!();
    let leaks = testkit::LeakCheck::start().unwrap();
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = bench(
        leaks.dir(),
        out.path(),
        &[
            "--docker",
            "--scale",
            "tiny",
            "--workloads",
            "append-storm,copy-up",
            "--drivers",
            "overlay2,vfs",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench --docker failed: {stderr}");
    eprintln!("bench --docker tiny took {:?}", started.elapsed());

    let results: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    assert!(
        results["docker_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "no dockerd version in results"
    );
    let small_files = 512; // Scale::Tiny's append-storm files
    for target in ["docker-volume", "docker-overlay2", "docker-vfs"] {
        let rows = rows(&results, target);
        let labels: Vec<&str> = rows
            .iter()
            .map(|r| r["workload"].as_str().unwrap())
            .collect();
        assert_eq!(
            labels,
            [
                "append-storm",
                "copy-up/4KiB",
                "copy-up/64KiB",
                "copy-up/1MiB"
            ],
            "{target}"
        );
        for row in &rows {
            let latency = &row["latency"];
            let (p50, p99, max) = (
                latency["p50_seconds"].as_f64().unwrap(),
                latency["p99_seconds"].as_f64().unwrap(),
                latency["max_seconds"].as_f64().unwrap(),
            );
            assert!(
                p50 > 0.0 && p50 <= p99 && p99 <= max && max < 10.0,
                "{target} {}: {latency}",
                row["workload"]
            );
            let expected = if row["workload"] == "append-storm" {
                small_files
            } else {
                4
            };
            assert_eq!(row["ops"], expected, "{target} {}", row["workload"]);
            assert_eq!(row["latency"]["count"], expected);
            assert_eq!(row["filesystem"], "ext4");
        }
    }
    // Docker's overlay2 copies each lower file up on its first append: slower
    // than the volume, and the counting run (tracer attached, after the
    // timed ones) counts the copy-ups.
    let ratio = results["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == "docker-overlay2" && r["workload"] == "append-storm")
        .expect("a docker-overlay2 append-storm ratio");
    assert_eq!(ratio["baseline"], "docker-volume");
    assert!(ratio["p50_ratio"].as_f64().unwrap() > 1.5, "{ratio}");
    let storm = rows(&results, "docker-overlay2")[0];
    let copy_ups = storm["probes"]["copy_ups_data"]
        .as_u64()
        .unwrap_or_else(|| panic!("no probe counters on a docker row: {storm}"));
    assert!(copy_ups >= small_files * 9 / 10, "{storm}");
    // The timed rows only: the counting run's timings are dropped.
    let repeats = results["repeat"].as_u64().unwrap();
    for row in results["rows"].as_array().unwrap() {
        assert!(row["repeat"].as_u64().unwrap() < repeats, "{row}");
    }
    assert!(
        results["probe_strategy"]
            .as_str()
            .is_some_and(|s| !s.starts_with("unavailable")),
        "{}",
        results["probe_strategy"]
    );
    // layerscope's own targets for the same drivers ran too, for the
    // comparison table.
    assert!(!rows(&results, "overlay2-ext4").is_empty());
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    assert!(summary.contains("Docker vs layerscope"), "{summary}");

    let left = processes_mentioning(leaks.dir());
    assert!(left.is_empty(), "processes left: {left:?}");
    assert_nothing_left_in(leaks.dir());
    leaks.assert_clean();
}

#[test]
fn docker_mode_without_dockerd_fails_with_one_line() {
    let empty = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = layerscope()
        .args(["bench", "--docker", "--scale", "tiny"])
        .arg("--out")
        .arg(out.path())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("dockerd") && stderr.contains("not found"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_during_a_container_run_leaves_nothing_behind() {
    testkit::require_root!();
    let leaks = testkit::LeakCheck::start().unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = interrupt_at(
        bench(
            leaks.dir(),
            out.path(),
            &[
                "--docker",
                "--scale",
                "tiny",
                "--workloads",
                "append-storm",
                "--drivers",
                "overlay2",
            ],
        ),
        "\"target\":\"docker-volume\"",
        || {},
    );
    let seen = [run.before, run.after].concat().join("\n");
    assert!(run.sent, "the run never reached docker-volume: {seen}");
    assert!(!run.status.success(), "{seen}");
    assert!(seen.contains("interrupted"), "{seen}");
    assert!(!out.path().join("results.json").exists());

    let left = processes_mentioning(leaks.dir());
    assert!(left.is_empty(), "processes left: {left:?}");
    assert_nothing_left_in(leaks.dir());
    leaks.assert_clean();
}
