//! ebpf-probes: the kernel side of layerscope. BPF programs written in C with
//! CO-RE live in `bpf/`, are compiled by clang (build.rs or
//! `cargo xtask build-ebpf`), embedded in the binary and loaded with aya.
//!
//! Modules:
//! - [`object`]: the embedded `bpf/*.bpf.o` objects (empty placeholders when
//!   clang/bpftool were missing at build time);
//! - [`hello`]: the pipeline self-test probe ([`HelloProbe`]), a tracepoint
//!   program with a per-CPU counter and a ring buffer;
//! - [`tracefs`]: mounting tracefs when aya cannot find it;
//! - [`error`]: [`ProbeError`], one-line messages naming object and cause.

pub mod error;
pub mod features;
pub mod hello;
pub mod object;
pub mod sys;
pub mod tracefs;

pub use error::ProbeError;
pub use hello::{HelloEvent, HelloProbe};
pub use tracefs::ensure_tracefs;
