//! Measurements: a latency histogram per workload run (hdrhistogram, in
//! nanoseconds), the bytes a block device had written to it, and the
//! kernel's memory figures (/proc/meminfo).

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies of one run's operations.
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            // 1 ns .. 1 hour at 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }
}

impl Latencies {
    pub fn record(&mut self, took: Duration) {
        let nanos = (took.as_nanos() as u64).clamp(1, 3_600_000_000_000);
        self.histogram.record(nanos).expect("value within bounds");
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.histogram.add(&other.histogram).expect("same bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The histogram as `(nanoseconds, count)` pairs, one per recorded
    /// bucket: what a run inside a container sends to the host.
    pub fn counts(&self) -> Vec<(u64, u64)> {
        self.histogram
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// Rebuilds latencies from [`Latencies::counts`] (the same buckets, so
    /// the same percentiles).
    pub fn from_counts(counts: &[(u64, u64)]) -> Self {
        let mut latencies = Self::default();
        for &(nanos, count) in counts {
            let nanos = nanos.clamp(1, 3_600_000_000_000);
            latencies
                .histogram
                .record_n(nanos, count)
                .expect("value within bounds");
        }
        latencies
    }

    pub fn summary(&self) -> LatencySummary {
        let at = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1e9;
        LatencySummary {
            count: self.histogram.len(),
            p50_seconds: at(0.50),
            p90_seconds: at(0.90),
            p99_seconds: at(0.99),
            max_seconds: self.histogram.max() as f64 / 1e9,
            mean_seconds: self.histogram.mean() / 1e9,
        }
    }
}

/// Percentiles in seconds (Prometheus base units).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_seconds: f64,
    pub p90_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
    pub mean_seconds: f64,
}

/// Bytes written to the block device `device` (e.g. `/dev/loop3`) so far,
/// from `/sys/block/<name>/stat` (sectors written, field 7, in 512-byte units).
pub fn device_bytes_written(device: &Path) -> Option<u64> {
    let name = device.file_name()?.to_string_lossy().into_owned();
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// A field of /proc/meminfo (`"Cached"`, `"MemAvailable"`, ...), in bytes.
pub fn meminfo_bytes(field: &str) -> std::io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| std::io::Error::other(format!("no {field}: line in /proc/meminfo")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_come_out_in_bytes() {
        let total = meminfo_bytes("MemTotal").unwrap();
        assert!(total > 64 << 20, "{total}");
        assert!(meminfo_bytes("Cached").unwrap() < total);
        let missing = meminfo_bytes("NoSuchField").unwrap_err().to_string();
        assert_eq!(missing, "no NoSuchField: line in /proc/meminfo");
    }

    #[test]
    fn percentiles_come_out_in_seconds() {
        let mut latencies = Latencies::default();
        for micros in 1..=100 {
            latencies.record(Duration::from_micros(micros));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_seconds - 50e-6).abs() < 1e-6, "{summary:?}");
        assert!((summary.p99_seconds - 99e-6).abs() < 1e-6, "{summary:?}");
        assert!((summary.max_seconds - 100e-6).abs() < 1e-6, "{summary:?}");
    }

    #[test]
    fn counts_round_trip_keeps_the_percentiles() {
        let mut latencies = Latencies::default();
        for micros in [3, 3, 7, 50, 900, 12_000] {
            latencies.record(Duration::from_micros(micros));
        }
        let back = Latencies::from_counts(&latencies.counts());
        assert_eq!(back.summary(), latencies.summary());
    }
}
