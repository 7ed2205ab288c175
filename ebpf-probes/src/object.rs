//! The compiled BPF objects embedded in the binary: one [`BpfObject`] per
//! `bpf/<name>.bpf.c`, as build.rs left it in `$OUT_DIR/<name>.bpf.o`
//! (an empty placeholder when the toolchain was missing at build time).

use crate::error::ProbeError;

/// Why build.rs did not build the objects; empty when it did.
const NOT_BUILT_REASON: &str = match option_env!("LAYERSCOPE_BPF_NOT_BUILT") {
    Some(reason) => reason,
    None => "build.rs did not report a BPF build status",
};

/// One embedded BPF ELF object.
#[derive(Debug, Clone, Copy)]
pub struct BpfObject {
    name: &'static str,
    bytes: &'static [u8],
}

/// `bpf/hello.bpf.c`: the pipeline self-test (see [`crate::hello`]).
pub const HELLO: BpfObject = BpfObject {
    name: "hello",
    // 8-byte aligned: the ELF parser reads headers in place.
    bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hello.bpf.o")),
};

/// `bpf/overlay_trace.bpf.c`: copy-ups, whiteouts, page cache (see
/// [`crate::tracer`]).
pub const OVERLAY_TRACE: BpfObject = BpfObject {
    name: "overlay_trace",
    bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay_trace.bpf.o")),
};

/// `bpf/overlay_hooks.bpf.c`: `overlay_trace` plus the fentry and kprobe
/// rungs' copy hooks (see [`crate::hooks`]).
pub const OVERLAY_HOOKS: BpfObject = BpfObject {
    name: "overlay_hooks",
    bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay_hooks.bpf.o")),
};

/// Every embedded object, for diagnostics (`layerscope doctor`).
pub const ALL: &[BpfObject] = &[HELLO, OVERLAY_TRACE, OVERLAY_HOOKS];

impl BpfObject {
    /// The object's name: its source file name without `.bpf.c`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// True when build.rs compiled it (rather than writing a placeholder).
    pub const fn is_built(&self) -> bool {
        !self.bytes.is_empty()
    }

    /// The raw bytes as embedded, possibly empty.
    pub const fn raw_bytes(&self) -> &'static [u8] {
        self.bytes
    }

    /// The ELF bytes, or [`ProbeError::NotBuilt`] with build.rs's reason.
    pub fn bytes(&self) -> Result<&'static [u8], ProbeError> {
        if self.is_built() {
            Ok(self.bytes)
        } else {
            Err(ProbeError::NotBuilt {
                object: self.name,
                reason: if NOT_BUILT_REASON.is_empty() {
                    "empty object file"
                } else {
                    NOT_BUILT_REASON
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_and_build_status_agree() {
        for object in ALL {
            assert_eq!(
                object.is_built(),
                NOT_BUILT_REASON.is_empty(),
                "object {} vs build status {NOT_BUILT_REASON:?}",
                object.name()
            );
            if !object.is_built() {
                let err = object.bytes().unwrap_err().to_string();
                assert!(err.contains("cargo xtask deps"), "{err}");
            }
        }
    }
}
