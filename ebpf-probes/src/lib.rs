//! ebpf-probes: the kernel side of layerscope. BPF programs written in C with
//! CO-RE live in `bpf/`, are compiled by clang (build.rs or
//! `cargo xtask build-ebpf`), embedded in the binary and loaded with aya.
