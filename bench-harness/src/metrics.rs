//! The run as Prometheus metrics: a textfile for node_exporter's textfile
//! collector (`layerscope_bench.prom`), read by the Benchmark dashboard.
//!
//! - `layerscope_bench_latency_seconds{workload,target,quantile}`
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
        "Operation latency of a workload on a target, by quantile (median over repeats).",
    );
    for (workload, target) in &series {
        let rows = rows_of(workload, target);
        let quantiles: [(&str, Pick); 4] = [
            ("0.5", |r| r.latency.p50_seconds),
            ("0.9", |r| r.latency.p90_seconds),
            ("0.99", |r| r.latency.p99_seconds),
            ("1", |r| r.latency.max_seconds),
        ];
        for (quantile, pick) in quantiles {
            let value = median(rows.iter().map(|r| pick(r)).collect());
            let labels = labels(workload, target);
            let _ = writeln!(
                out,
                "layerscope_bench_latency_seconds{{{labels},quantile=\"{quantile}\"}} {value}"
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
