//! Regression check for CI hosts: compare a run's ratios to native with a
//! stored `results.json` and name every workload/target whose p50 ratio
//! grew by more than the allowed fraction. Ratios, not absolute times, are
//! compared, so a baseline from one machine still means something on
//! another of the same kind.

use std::path::Path;

use serde::Deserialize;

use crate::BenchError;
use crate::report::Results;

/// A ratio that got worse than allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    pub workload: String,
    pub target: String,
    pub baseline_ratio: f64,
    pub ratio: f64,
}

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {}: p50 ratio {:.2}x vs baseline {:.2}x (+{:.0}%)",
            self.workload,
            self.target,
            self.ratio,
            self.baseline_ratio,
            (self.ratio / self.baseline_ratio - 1.0) * 100.0
        )
    }
}

#[derive(Deserialize)]
struct StoredRatio {
    workload: String,
    target: String,
    p50_ratio: f64,
}

#[derive(Deserialize)]
struct StoredResults {
    schema_version: u32,
    ratios: Vec<StoredRatio>,
}

/// Parses `10%` or `0.1` as a fraction.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(percent) => (percent, 100.0),
        None => (text, 1.0),
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v / scale)
        .ok_or_else(|| format!("{text:?} is not a fraction like 10% or 0.1"))
}

/// Ratios of `results` that exceed the baseline's by more than `allowed`.
pub fn compare(
    results: &Results,
    baseline: &Path,
    allowed: f64,
) -> Result<Vec<Regression>, BenchError> {
    let bytes = std::fs::read(baseline).map_err(|source| BenchError::Io {
        op: "read baseline",
        path: baseline.to_path_buf(),
        source,
    })?;
    let stored: StoredResults = serde_json::from_slice(&bytes).map_err(|e| BenchError::Io {
        op: "parse baseline",
        path: baseline.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    if stored.schema_version != crate::report::SCHEMA_VERSION {
        return Err(BenchError::Io {
            op: "read baseline",
            path: baseline.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "schema version {} (this build writes {})",
                    stored.schema_version,
                    crate::report::SCHEMA_VERSION
                ),
            ),
        });
    }
    Ok(results
        .ratios
        .iter()
        .filter_map(|now| {
            let before = stored
                .ratios
                .iter()
                .find(|b| b.workload == now.workload && b.target == now.target)?;
            (before.p50_ratio > 0.0 && now.p50_ratio > before.p50_ratio * (1.0 + allowed)).then(
                || Regression {
                    workload: now.workload.clone(),
                    target: now.target.clone(),
                    baseline_ratio: before.p50_ratio,
                    ratio: now.p50_ratio,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_parse_as_percent_or_plain() {
        assert_eq!(parse_fraction("10%"), Ok(0.1));
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("ten").is_err());
        assert!(parse_fraction("-5%").is_err());
    }
}
