//! The run as Prometheus metrics: a textfile for node_exporter's textfile
//! collector (`layerscope_bench.prom`), read by the Benchmark dashboard.
//!
//! - `layerscope_bench_latency_seconds{workload,target,stat="p50|p90|p99|max"}`
//!   (a `stat` label, not `quantile`: promtool refuses `quantile` on a gauge)
//! - `layerscope_bench_ratio{workload,target,stat="p50|p99"}` (to native)
//! - `layerscope_bench_ops_per_second{workload,target}`
//! - `layerscope_bench_device_written_bytes{workload,target}`
//! - `layerscope_bench_run_timestamp_seconds`, `layerscope_bench_run_duration_seconds`

use std::fmt::Write as _;

use crate::report::{ResultRow, Results};

/// The metrics of `results` in the Prometheus text format. With repeats,
/// each series carries the median over repeats.
pub fn textfile(results: &Results, timestamp_seconds: u64) -> String {
    let mut out = String::new();
    let series = pairs(results);
    let rows_of = |workload: &str, target: &str| -> Vec<&ResultRow> {
        results
            .rows
            .iter()
            .filter(|r| r.workload == workload && r.target == target)
            .collect()
    };

    family(
        &mut out,
        "layerscope_bench_latency_seconds",
        "Operation latency of a workload on a target, by statistic p50, p90, p99, max (median over repeats).",
    );
    for (workload, target) in &series {
        let rows = rows_of(workload, target);
        let stats: [(&str, Pick); 4] = [
            ("p50", |r| r.latency.p50_seconds),
            ("p90", |r| r.latency.p90_seconds),
            ("p99", |r| r.latency.p99_seconds),
            ("max", |r| r.latency.max_seconds),
        ];
        for (stat, pick) in stats {
            let value = median(rows.iter().map(|r| pick(r)).collect());
            let labels = labels(workload, target);
            let _ = writeln!(
                out,
                "layerscope_bench_latency_seconds{{{labels},stat=\"{stat}\"}} {value}"
            );
        }
    }

    family(
        &mut out,
        "layerscope_bench_ratio",
        "Latency of a target as a ratio to native in the same run (1 = as fast as a volume).",
    );
    for ratio in &results.ratios {
        let labels = labels(&ratio.workload, &ratio.target);
        for (stat, value) in [("p50", ratio.p50_ratio), ("p99", ratio.p99_ratio)] {
            let _ = writeln!(
                out,
                "layerscope_bench_ratio{{{labels},stat=\"{stat}\"}} {value}"
            );
        }
    }

    family(
        &mut out,
        "layerscope_bench_ops_per_second",
        "Operations per second of a workload on a target (median over repeats).",
    );
    for (workload, target) in &series {
        let value = median(
            rows_of(workload, target)
                .iter()
                .map(|r| r.ops_per_second)
                .collect(),
        );
        let labels = labels(workload, target);
        let _ = writeln!(out, "layerscope_bench_ops_per_second{{{labels}}} {value}");
    }

    family(
        &mut out,
        "layerscope_bench_device_written_bytes",
        "Bytes the target's block device received during the workload (median over repeats).",
    );
    for (workload, target) in &series {
        let values: Vec<f64> = rows_of(workload, target)
            .iter()
            .filter_map(|r| r.device_bytes_written.map(|b| b as f64))
            .collect();
        if !values.is_empty() {
            let labels = labels(workload, target);
            let _ = writeln!(
                out,
                "layerscope_bench_device_written_bytes{{{labels}}} {}",
                median(values)
            );
        }
    }

    family(
        &mut out,
        "layerscope_bench_run_timestamp_seconds",
        "When the benchmark run finished (Unix time).",
    );
    let _ = writeln!(
        out,
        "layerscope_bench_run_timestamp_seconds {timestamp_seconds}"
    );
    family(
        &mut out,
        "layerscope_bench_run_duration_seconds",
        "How long the benchmark run took.",
    );
    let _ = writeln!(
        out,
        "layerscope_bench_run_duration_seconds {}",
        results.duration_seconds
    );
    out
}

/// Picks one latency statistic of a row.
type Pick = fn(&ResultRow) -> f64;

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

fn labels(workload: &str, target: &str) -> String {
    format!(
        "workload=\"{}\",target=\"{}\"",
        escape(workload),
        escape(target)
    )
}

fn pairs(results: &Results) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for row in &results.rows {
        let pair = (row.workload.clone(), row.target.clone());
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    pairs
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Machine, Ratio};
    use crate::scale::Scale;
    use crate::stats::LatencySummary;

    fn row(target: &str, p50: f64) -> ResultRow {
        ResultRow {
            target: target.into(),
            driver: "overlay2".into(),
            filesystem: "ext4".into(),
            workload: "copy-up/4KiB".into(),
            repeat: 0,
            latency: LatencySummary {
                count: 8,
                p50_seconds: p50,
                p90_seconds: p50 * 2.0,
                p99_seconds: p50 * 3.0,
                max_seconds: p50 * 4.0,
                mean_seconds: p50,
            },
            ops: 8,
            elapsed_seconds: 0.1,
            ops_per_second: 80.0,
            bytes_written: 8,
            device_bytes_written: Some(4096),
            probes: None,
            page_cache_bytes: None,
            rounds: Vec::new(),
        }
    }

    #[test]
    fn the_textfile_passes_promtool() {
        let results = Results {
            schema_version: crate::report::SCHEMA_VERSION,
            scale: Scale::Tiny,
            repeat: 1,
            machine: Machine {
                kernel: "test".into(),
                cpus: 2,
            },
            duration_seconds: 1.5,
            rows: vec![row("native", 1e-5), row("overlay2-ext4", 1e-3)],
            ratios: vec![Ratio {
                workload: "copy-up/4KiB".into(),
                target: "overlay2-ext4".into(),
                baseline: "native".into(),
                p50_ratio: 100.0,
                p99_ratio: 100.0,
                p50_ratio_min: 100.0,
                p50_ratio_max: 100.0,
            }],
            unavailable: Vec::new(),
            probe_strategy: String::new(),
            memory_hold: String::new(),
            skipped: Vec::new(),
            docker_version: None,
        };
        let text = textfile(&results, 1_700_000_000);
        assert!(text.contains(
            "layerscope_bench_ratio{workload=\"copy-up/4KiB\",target=\"overlay2-ext4\",stat=\"p50\"} 100"
        ));
        let mut promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (installed by cargo xtask deps, package prometheus)");
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = promtool.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "{report}\n{text}"
        );
    }
}
