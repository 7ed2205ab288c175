//! bench-harness: runs write-heavy workloads on every storage driver in one
//! run and reports each as a ratio to the native filesystem, with the probe
//! counters that explain it.
