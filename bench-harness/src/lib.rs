//! bench-harness: runs write-heavy workloads on every storage driver in one
//! run and reports each as a ratio to the native filesystem, with the
//! numbers that explain it.
//!
//! - [`scale`]: how big a run is (tiny, small, full);
//! - [`target`]: the driver matrix, each on its own loop-backed filesystem;
//! - [`workloads`]: one module per workload;
//! - [`stats`]: latency histograms and device counters;
//! - [`report`]: `results.json` and `summary.md`; [`plots`]: SVG charts;
//!   [`metrics`]: a Prometheus textfile; [`baseline`]: regression checks;
//! - [`probes`]: the overlayfs counters that say why a result is what it is;
//! - [`run`]: the loop over drivers and workloads; [`memory_hold`]: keeps
//!   a VM's memory agents (free page reporting, DAMON) off for the run;
//! - [`docker`]: `--docker` mode, the same workloads in containers of a
//!   real dockerd per driver; [`push`]: metrics to a Pushgateway.

pub mod baseline;
pub mod docker;
pub mod error;
mod interleave;
pub mod memory_agents;
pub mod memory_hold;
pub mod metrics;
pub mod plots;
pub mod probes;
pub mod push;
mod ratios;
pub mod report;
pub mod run;
pub mod scale;
pub mod stats;
pub mod target;
pub mod workloads;

pub use error::BenchError;
pub use run::{BenchConfig, run_bench};
pub use scale::Scale;
