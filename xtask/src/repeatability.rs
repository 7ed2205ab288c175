//! How well a benchmark repeats: given the `results.json` of several runs
//! of `layerscope bench`, the p50 ratio of every (workload, target) in each
//! run and its spread, `max / min - 1`, as a Markdown table with a verdict
//! against the bound (ratios within 10% across three runs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

/// The largest spread that counts as repeating.
pub const BOUND: f64 = 0.10;

/// p50 ratios per (workload, target), one value per run, in run order.
pub type RatioRuns = BTreeMap<(String, String), Vec<f64>>;

/// Reads the `ratios` of each results file.
pub fn read(files: &[impl AsRef<Path>]) -> anyhow::Result<RatioRuns> {
    let mut runs = RatioRuns::new();
    for file in files {
        let file = file.as_ref();
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", file.display()))?;
        let ratios = json["ratios"]
            .as_array()
            .with_context(|| format!("{}: no ratios array", file.display()))?;
        for ratio in ratios {
            let (Some(workload), Some(target), Some(p50)) = (
                ratio["workload"].as_str(),
                ratio["target"].as_str(),
                ratio["p50_ratio"].as_f64(),
            ) else {
                continue;
            };
            runs.entry((workload.to_owned(), target.to_owned()))
                .or_default()
                .push(p50);
        }
    }
    Ok(runs)
}

/// `max / min - 1` of positive values; `None` with fewer than two.
pub fn spread(values: &[f64]) -> Option<f64> {
    if values.len() < 2 || values.iter().any(|v| *v <= 0.0) {
        return None;
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    Some(max / min - 1.0)
}

/// The table and a one-line verdict; also how many pairs exceed [`BOUND`].
pub fn report(runs: &RatioRuns, expected_runs: usize) -> (String, usize) {
    let mut out =
        String::from("| workload | target | p50 ratio per run | spread |\n|---|---|---|---|\n");
    let mut over = 0;
    let mut measured = 0;
    for ((workload, target), values) in runs {
        let list = values
            .iter()
            .map(|v| format!("{v:.3}"))
            .collect::<Vec<_>>()
            .join(" / ");
        let cell = match spread(values) {
            Some(s) if values.len() == expected_runs => {
                measured += 1;
                if s > BOUND {
                    over += 1;
                    format!("**{:.1}%**", s * 100.0)
                } else {
                    format!("{:.1}%", s * 100.0)
                }
            }
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(out, "| {workload} | {target} | {list} | {cell} |");
    }
    let _ = writeln!(
        out,
        "\n{} of {measured} ratios repeat within {:.0}% across {expected_runs} runs.",
        measured - over,
        BOUND * 100.0
    );
    (out, over)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_max_over_min() {
        assert_eq!(spread(&[1.0]), None);
        let s = spread(&[2.0, 2.2, 2.1]).unwrap();
        assert!((s - 0.1).abs() < 1e-9, "{s}");
    }

    #[test]
    fn report_flags_ratios_that_move_more_than_the_bound() {
        let mut runs = RatioRuns::new();
        runs.insert(("copy-up".into(), "vfs".into()), vec![2.0, 2.1, 2.05]);
        runs.insert(("append".into(), "btrfs".into()), vec![1.0, 1.5, 1.2]);
        let (table, over) = report(&runs, 3);
        assert_eq!(over, 1, "{table}");
        assert!(table.contains("**50.0%**"), "{table}");
        assert!(table.contains("1 of 2 ratios"), "{table}");
    }
}
