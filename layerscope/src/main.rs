//! The `layerscope` binary: the CLI over storage-core, ebpf-probes and
//! bench-harness, and the Prometheus sidecar.

fn main() {}
