//! The part of `--docker` mode that runs inside the container: the hidden
//! `layerscope __bench-in-container --workload W --scale S --root DIR`
//! runs the workload's own [`Workload::run`](crate::workloads::Workload::run)
//! on `DIR` (the image's lower files, or a volume) and prints one JSON
//! [`ContainerReport`] on stdout; the host turns it back into outcomes.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use crate::scale::Scale;
use crate::stats::Latencies;
use crate::workloads::{self, Outcome};

/// The hidden subcommand's name (the first argument of the binary).
pub const SUBCOMMAND: &str = "__bench-in-container";

/// Bumped when the report's fields change meaning.
pub const REPORT_FORMAT: u32 = 1;

/// What one workload run in a container measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct ContainerReport {
    pub format: u32,
    pub workload: String,
    pub outcomes: Vec<ReportedOutcome>,
}

/// An [`Outcome`] on the wire: the latency histogram as
/// `(nanoseconds, count)` buckets.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportedOutcome {
    pub label: String,
    pub latency_ns: Vec<(u64, u64)>,
    pub bytes: u64,
    pub elapsed_ns: u64,
    pub page_cache_bytes: Option<u64>,
}

impl ReportedOutcome {
    fn of(outcome: &Outcome) -> Self {
        Self {
            label: outcome.label.clone(),
            latency_ns: outcome.latencies.counts(),
            bytes: outcome.bytes,
            elapsed_ns: outcome.elapsed.as_nanos() as u64,
            page_cache_bytes: outcome.page_cache_bytes,
        }
    }

    pub fn into_outcome(self) -> Outcome {
        Outcome {
            label: self.label,
            latencies: Latencies::from_counts(&self.latency_ns),
            bytes: self.bytes,
            elapsed: Duration::from_nanos(self.elapsed_ns),
            page_cache_bytes: self.page_cache_bytes,
        }
    }
}

impl ContainerReport {
    /// Parses the container's stdout (the report is its last non-empty
    /// line).
    pub fn parse(stdout: &str) -> Result<Self, String> {
        let line = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .ok_or("the container printed no report")?;
        let report: Self =
            serde_json::from_str(line).map_err(|e| format!("unreadable report: {e}"))?;
        if report.format != REPORT_FORMAT {
            return Err(format!(
                "report format {} (this layerscope reads {REPORT_FORMAT})",
                report.format
            ));
        }
        Ok(report)
    }
}

/// The arguments after the subcommand.
#[derive(Debug, PartialEq)]
struct Args {
    workload: String,
    scale: Scale,
    root: PathBuf,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (mut workload, mut scale, mut root) = (None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--workload" => workload = Some(value),
            "--scale" => scale = Some(value.parse::<Scale>()?),
            "--root" => root = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        workload: workload.ok_or("--workload is required")?,
        scale: scale.ok_or("--scale is required")?,
        root: root.ok_or("--root is required")?,
    })
}

/// Runs the hidden subcommand with `args` (those after its name) and
/// returns the JSON report line, or one line saying what failed.
pub fn main(args: &[String]) -> Result<String, String> {
    let args = parse_args(args)?;
    let workload = workloads::by_name(&args.workload).map_err(|e| e.to_string())?;
    if !super::supports(workload.as_ref(), args.scale) {
        return Err(format!(
            "workload {} drives a storage driver or several containers and cannot run in one container",
            args.workload
        ));
    }
    let outcomes = workload
        .run(&args.root, args.scale, workloads::Round::WHOLE)
        .map_err(|e| format!("workload {} on {}: {e}", args.workload, args.root.display()))?;
    let report = ContainerReport {
        format: REPORT_FORMAT,
        workload: args.workload,
        outcomes: outcomes.iter().map(ReportedOutcome::of).collect(),
    };
    serde_json::to_string(&report).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_parse_and_missing_ones_are_named() {
        let args = parse_args(&strings(&[
            "--workload",
            "copy-up",
            "--scale",
            "tiny",
            "--root",
            "/bench",
        ]))
        .unwrap();
        assert_eq!(
            args,
            Args {
                workload: "copy-up".into(),
                scale: Scale::Tiny,
                root: "/bench".into()
            }
        );
        let err = parse_args(&strings(&["--workload", "copy-up", "--root", "/b"])).unwrap_err();
        assert!(err.contains("--scale"), "{err}");
    }

    #[test]
    fn a_run_in_a_directory_reports_every_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let workload = workloads::by_name("create-delete").unwrap();
        workload.populate(dir.path(), Scale::Tiny).unwrap();
        let line = main(&strings(&[
            "--workload",
            "create-delete",
            "--scale",
            "tiny",
            "--root",
            dir.path().to_str().unwrap(),
        ]))
        .unwrap();
        let report = ContainerReport::parse(&format!("noise\n{line}\n")).unwrap();
        let outcomes: Vec<Outcome> = report
            .outcomes
            .into_iter()
            .map(ReportedOutcome::into_outcome)
            .collect();
        assert_eq!(outcomes.len(), 2);
        assert_eq!(
            outcomes[0].latencies.count(),
            Scale::Tiny.small_files() as u64
        );
    }
}
