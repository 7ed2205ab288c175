//! A target's latency as a ratio to its baseline (native; `docker-volume`
//! for `docker-*` targets), from the rows of one run.
//!
//! The p50 ratio pairs rounds, not repeats: in an interleaved workload
//! (`interleave.rs`) a target's round and native's ran a second apart, so
//! each round gives one ratio, the round's p50 over native's p50 of the
//! same round, and the p50 ratio is the median of those ratios over every
//! round of every repeat. A run's ratio is then one median of 160 paired
//! ratios (a copy-up size at `small`) instead of a median of 5 ratios of
//! p50s, and each pair cancels what its two samples share: on a shared VM
//! the machine's speed moves by tens of percent from one second to the
//! next. On per-sample traces this cut how far ratios moved between runs
//! from 5.3% to 3.8% (docs/performance.md, "Session 6"). Rows without
//! rounds (docker mode, the driver-level stack-depth workload) give one
//! ratio per repeat, the repeat's p50 over native's.
//!
//! The spread is per repeat: each repeat's own median ratio, min and max.
//! The p99 ratio is the median over repeats of p99 over p99 (a round has
//! too few operations for a p99).

use std::collections::BTreeMap;

use crate::report::{Ratio, ResultRow};

/// Every target's ratio to its baseline, per workload.
pub(crate) fn ratios(rows: &[ResultRow]) -> Vec<Ratio> {
    let mut by_key: BTreeMap<(&str, &str), Vec<&ResultRow>> = BTreeMap::new();
    for row in rows {
        by_key
            .entry((row.workload.as_str(), row.target.as_str()))
            .or_default()
            .push(row);
    }
    let mut ratios = Vec::new();
    for ((workload, target), runs) in &by_key {
        if crate::target::is_baseline(target) {
            continue;
        }
        let baseline = crate::target::baseline_of(target);
        let Some(native) = by_key.get(&(*workload, baseline)) else {
            continue;
        };
        // Pair repeat i with native's repeat i, as both ran in one run.
        let pairs: Vec<(&ResultRow, &ResultRow)> = runs
            .iter()
            .filter_map(|r| Some((*r, *native.iter().find(|n| n.repeat == r.repeat)?)))
            .collect();
        let per_repeat: Vec<Vec<f64>> = pairs
            .iter()
            .map(|(row, native)| p50_ratios(row, native))
            .filter(|ratios| !ratios.is_empty())
            .collect();
        let p99s: Vec<f64> = pairs
            .iter()
            .filter(|(_, native)| native.latency.p99_seconds > 0.0)
            .map(|(row, native)| row.latency.p99_seconds / native.latency.p99_seconds)
            .collect();
        let repeat_medians: Vec<f64> = per_repeat.iter().filter_map(|r| median(r)).collect();
        let every_round: Vec<f64> = per_repeat.concat();
        if let (Some(p50), Some(p99)) = (median(&every_round), median(&p99s)) {
            ratios.push(Ratio {
                workload: workload.to_string(),
                target: target.to_string(),
                baseline: baseline.to_string(),
                p50_ratio: p50,
                p99_ratio: p99,
                p50_ratio_min: repeat_medians.iter().copied().fold(f64::INFINITY, f64::min),
                p50_ratio_max: repeat_medians.iter().copied().fold(0.0, f64::max),
            });
        }
    }
    ratios
}

/// One repeat's p50 ratios: one per round both rows ran, or the repeat's
/// p50 over native's when either row has no rounds.
fn p50_ratios(row: &ResultRow, native: &ResultRow) -> Vec<f64> {
    if row.rounds.is_empty() || native.rounds.is_empty() {
        let theirs = native.latency.p50_seconds;
        return (theirs > 0.0)
            .then(|| row.latency.p50_seconds / theirs)
            .into_iter()
            .collect();
    }
    row.rounds
        .iter()
        .filter_map(|round| {
            let theirs = native.rounds.iter().find(|n| n.round == round.round)?;
            (theirs.p50_seconds > 0.0).then(|| round.p50_seconds / theirs.p50_seconds)
        })
        .collect()
}

pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut values = values.to_vec();
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RoundP50;
    use crate::stats::LatencySummary;

    fn row(target: &str, repeat: usize, p50: f64, rounds: &[(usize, f64)]) -> ResultRow {
        ResultRow {
            target: target.into(),
            driver: target.into(),
            filesystem: "ext4".into(),
            workload: "copy-up/64MiB".into(),
            repeat,
            latency: LatencySummary {
                count: rounds.len() as u64,
                p50_seconds: p50,
                p90_seconds: p50,
                p99_seconds: p50,
                max_seconds: p50,
                mean_seconds: p50,
            },
            ops: rounds.len() as u64,
            elapsed_seconds: 1.0,
            ops_per_second: 1.0,
            bytes_written: 0,
            device_bytes_written: None,
            probes: None,
            page_cache_bytes: None,
            rounds: rounds
                .iter()
                .map(|&(round, p50_seconds)| RoundP50 { round, p50_seconds })
                .collect(),
        }
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn rounds_pair_with_the_baselines_round_of_the_same_index() {
        // The machine slows by half in round 1 and round 2 for both sides:
        // each round's ratio is 10, though the repeat's p50s (taken over
        // the slow and fast rounds alike) would say 20 / 1.5.
        let rows = [
            row("native", 0, 1.5, &[(0, 1.0), (1, 2.0), (2, 2.0), (3, 1.0)]),
            row(
                "overlay2-ext4",
                0,
                20.0,
                &[(0, 10.0), (1, 20.0), (2, 20.0), (3, 10.0)],
            ),
        ];
        let ratios = ratios(&rows);
        assert_eq!(ratios.len(), 1);
        assert_eq!(ratios[0].p50_ratio, 10.0);
        assert_eq!(ratios[0].baseline, "native");
    }

    #[test]
    fn the_ratio_is_the_median_over_every_round_and_the_spread_per_repeat() {
        let rows = [
            row("native", 0, 1.0, &[(0, 1.0), (1, 1.0)]),
            row("vfs-ext4", 0, 1.0, &[(0, 2.0), (1, 2.0)]),
            row("native", 1, 1.0, &[(0, 1.0), (1, 1.0)]),
            row("vfs-ext4", 1, 1.0, &[(0, 3.0), (1, 4.0)]),
            row("native", 2, 1.0, &[(0, 1.0), (1, 1.0)]),
            // Round 5 has no native round to pair with: left out.
            row("vfs-ext4", 2, 1.0, &[(0, 2.0), (1, 2.0), (5, 100.0)]),
        ];
        let ratio = &ratios(&rows)[0];
        // Rounds: 2, 2, 3, 4, 2, 2 -> median 2; repeats: 2, 3.5, 2.
        assert_eq!(ratio.p50_ratio, 2.0);
        assert_eq!(ratio.p50_ratio_min, 2.0);
        assert_eq!(ratio.p50_ratio_max, 3.5);
    }

    #[test]
    fn rows_without_rounds_give_one_ratio_per_repeat() {
        let rows = [
            row("docker-volume", 0, 2.0, &[]),
            row("docker-overlay2", 0, 6.0, &[]),
            row("docker-volume", 1, 2.0, &[]),
            row("docker-overlay2", 1, 10.0, &[]),
        ];
        let ratio = &ratios(&rows)[0];
        assert_eq!(ratio.baseline, "docker-volume");
        assert_eq!(ratio.p50_ratio, 4.0);
        assert_eq!((ratio.p50_ratio_min, ratio.p50_ratio_max), (3.0, 5.0));
    }

    #[test]
    fn a_target_without_a_baseline_gets_no_ratio() {
        let rows = [row("overlay2-ext4", 0, 2.0, &[(0, 2.0)])];
        assert!(ratios(&rows).is_empty());
    }
}
