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
//! - [`error`]: [`ProbeError`], one-line messages naming object and cause;
//! - [`tracer`]: [`OverlayTracer`], copy-ups, whiteouts and opaque dirs
//!   exact per syscall from tracepoints (`bpf/overlay_trace.bpf.c`), with
//!   [`events`] (wire format), [`registry`] (watched overlays, mountinfo),
//!   [`mounts`] (mountinfo parsing), [`attribution`] (mount -> layer ->
//!   container), [`pagecache`] (sharing picture) and [`strategy`] (ladder);
//! - [`hooks`]: the fentry and kprobe rungs (`bpf/overlay_hooks.bpf.c`);
//! - `tpformat`: the fixed record layouts of classic tracepoints, checked
//!   against the kernel's tracefs `format` files before attaching.

pub mod attribution;
pub mod error;
pub mod events;
pub mod features;
pub mod hello;
pub mod hooks;
pub mod mounts;
pub mod object;
pub mod pagecache;
pub mod registry;
pub mod strategy;
pub mod sys;
mod tpformat;
pub mod tracefs;
pub mod tracer;

pub use error::ProbeError;
pub use hello::{HelloEvent, HelloProbe};
pub use tracefs::ensure_tracefs;
pub use tracer::{EventStream, OverlayTracer, TracerOptions};
