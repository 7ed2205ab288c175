//! The pipeline self-test probe (`bpf/hello.bpf.c`): [`HelloProbe`] loads
//! the embedded `hello` object, restricts it to one thread group, attaches
//! `hello_count` to the `syscalls:sys_enter_getppid` tracepoint, and reads
//! back the per-CPU call counter and the [`HelloEvent`]s from the ring
//! buffer. It proves C -> clang -> embed -> aya load -> attach -> read works
//! on a kernel, and is what `layerscope doctor` can run.

use std::mem::{offset_of, size_of};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint, trace_point::TracePointLinkId},
};

use crate::{
    error::{BPF_CAPS, ProbeError, cause_of, io_cause},
    object::{self, BpfObject},
    tracefs::ensure_tracefs,
};

/// Name of the BPF program (the C function).
pub const PROGRAM: &str = "hello_count";
/// Tracepoint category and name it attaches to.
pub const TRACEPOINT: (&str, &str) = ("syscalls", "sys_enter_getppid");
/// The `const volatile` global holding the tgid to count.
const TARGET_TGID_GLOBAL: &str = "target_tgid";
/// Per-CPU `u64` array: slot [`SLOT_CALLS`] and [`SLOT_DROPPED`].
const COUNTS_MAP: &str = "hello_counts";
/// `BPF_MAP_TYPE_RINGBUF` of [`HelloEvent`].
const EVENTS_MAP: &str = "hello_events";
/// `HELLO_SLOT_CALLS` in the C source.
const SLOT_CALLS: u32 = 0;
/// `HELLO_SLOT_DROPPED` in the C source: ring buffer full.
const SLOT_DROPPED: u32 = 1;

/// Mirror of `struct hello_event` in `bpf/hello.bpf.c`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloEvent {
    /// `bpf_ktime_get_ns()` at syscall entry (CLOCK_MONOTONIC, ns).
    pub ktime_ns: u64,
    /// Thread group id (process id) of the caller.
    pub tgid: u32,
    /// The caller's `real_parent->tgid`, read with CO-RE.
    pub ppid: u32,
}

// The C layout: u64 at 0, u32 at 8, u32 at 12, 16 bytes, no padding.
const _: () = assert!(size_of::<HelloEvent>() == 16);
const _: () = assert!(offset_of!(HelloEvent, ktime_ns) == 0);
const _: () = assert!(offset_of!(HelloEvent, tgid) == 8);
const _: () = assert!(offset_of!(HelloEvent, ppid) == 12);

impl HelloEvent {
    /// Decodes one ring-buffer record (native endian, the C layout);
    /// `None` if it is not exactly `size_of::<HelloEvent>()` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; size_of::<Self>()] = bytes.try_into().ok()?;
        let (ktime, rest) = bytes.split_first_chunk::<8>()?;
        let (tgid, ppid) = rest.split_first_chunk::<4>()?;
        Some(Self {
            ktime_ns: u64::from_ne_bytes(*ktime),
            tgid: u32::from_ne_bytes(*tgid),
            ppid: u32::from_ne_bytes(ppid.try_into().ok()?),
        })
    }
}

/// The attached `hello` probe. Dropping it detaches the program and frees
/// its maps.
pub struct HelloProbe {
    counts: PerCpuArray<MapData, u64>,
    events: RingBuf<MapData>,
    tgid: u32,
    link: Option<TracePointLinkId>,
    // Last: owns the program (and so the link) after the maps are taken out.
    ebpf: Ebpf,
}

impl std::fmt::Debug for HelloProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelloProbe")
            .field("tgid", &self.tgid)
            .field("attached", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

impl HelloProbe {
    /// Attaches the probe counting the current process's getppid(2) calls.
    pub fn attach() -> Result<Self, ProbeError> {
        Self::attach_to(std::process::id())
    }

    /// Attaches the probe counting getppid(2) calls of thread group `tgid`.
    pub fn attach_to(tgid: u32) -> Result<Self, ProbeError> {
        let obj = object::HELLO;
        let bytes = obj.bytes()?;
        ensure_tracefs()?;

        let mut ebpf = EbpfLoader::new()
            .override_global(TARGET_TGID_GLOBAL, &tgid, true)
            .load(bytes)
            .map_err(|e| {
                let (cause, errno) = cause_of(&e);
                ProbeError::LoadObject {
                    object: obj.name(),
                    cause,
                    errno,
                }
            })?;

        let counts = PerCpuArray::try_from(take_map(&mut ebpf, obj, COUNTS_MAP)?)
            .map_err(|e| map_error(COUNTS_MAP, &e))?;
        let events = RingBuf::try_from(take_map(&mut ebpf, obj, EVENTS_MAP)?)
            .map_err(|e| map_error(EVENTS_MAP, &e))?;

        let program: &mut TracePoint = ebpf
            .program_mut(PROGRAM)
            .ok_or(ProbeError::Missing {
                object: obj.name(),
                kind: "program",
                name: PROGRAM,
            })?
            .try_into()
            .map_err(|e: ProgramError| program_error(&e))?;
        program.load().map_err(|e| program_error(&e))?;
        let (category, name) = TRACEPOINT;
        let link = program
            .attach(category, name)
            .map_err(|e| attach_error(&e))?;
        tracing::debug!(tgid, program = PROGRAM, "attached to {category}:{name}");

        Ok(Self {
            counts,
            events,
            tgid,
            link: Some(link),
            ebpf,
        })
    }

    /// The thread group being counted.
    pub fn tgid(&self) -> u32 {
        self.tgid
    }

    /// getppid(2) calls seen so far, summed over CPUs.
    pub fn count(&self) -> Result<u64, ProbeError> {
        self.slot_sum(SLOT_CALLS)
    }

    /// Events the program could not push because the ring buffer was full.
    pub fn dropped(&self) -> Result<u64, ProbeError> {
        self.slot_sum(SLOT_DROPPED)
    }

    fn slot_sum(&self, slot: u32) -> Result<u64, ProbeError> {
        let values = self
            .counts
            .get(&slot, 0)
            .map_err(|e| map_error(COUNTS_MAP, &e))?;
        Ok(values.iter().sum())
    }

    /// The next event from the ring buffer, without blocking; `None` when
    /// it is empty. Malformed records are skipped (and logged).
    pub fn next_event(&mut self) -> Option<HelloEvent> {
        loop {
            let item = self.events.next()?;
            match HelloEvent::from_bytes(&item) {
                Some(event) => return Some(event),
                None => tracing::warn!(
                    len = item.len(),
                    "{EVENTS_MAP}: skipping record of unexpected size"
                ),
            }
        }
    }

    /// Every event currently in the ring buffer.
    pub fn drain_events(&mut self) -> Vec<HelloEvent> {
        std::iter::from_fn(|| self.next_event()).collect()
    }

    /// Detaches now and reports a failure, rather than on drop silently.
    pub fn detach(mut self) -> Result<(), ProbeError> {
        self.detach_link()
    }

    fn detach_link(&mut self) -> Result<(), ProbeError> {
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        let program: &mut TracePoint = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(ProbeError::Missing {
                object: object::HELLO.name(),
                kind: "program",
                name: PROGRAM,
            })?
            .try_into()
            .map_err(|e: ProgramError| program_error(&e))?;
        program.detach(link).map_err(|e| attach_error(&e))
    }
}

impl Drop for HelloProbe {
    fn drop(&mut self) {
        if let Err(e) = self.detach_link() {
            tracing::warn!("{e}");
        }
    }
}

fn take_map(
    ebpf: &mut Ebpf,
    obj: BpfObject,
    name: &'static str,
) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::Missing {
        object: obj.name(),
        kind: "map",
        name,
    })
}

fn map_error(map: &'static str, e: &aya::maps::MapError) -> ProbeError {
    let (cause, errno) = cause_of(e);
    ProbeError::Map { map, cause, errno }
}

fn program_error(e: &ProgramError) -> ProbeError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => ProbeError::LoadProgram {
            program: PROGRAM,
            cause: io_cause(io_error, BPF_CAPS),
            errno: io_error.raw_os_error(),
            verifier_log: verifier_log.to_string(),
        },
        other => {
            let (cause, errno) = cause_of(other);
            ProbeError::LoadProgram {
                program: PROGRAM,
                cause,
                errno,
                verifier_log: String::new(),
            }
        }
    }
}

fn attach_error(e: &ProgramError) -> ProbeError {
    let (cause, errno) = cause_of(e);
    let (category, name) = TRACEPOINT;
    ProbeError::Attach {
        program: PROGRAM,
        target: format!("tracepoint {category}:{name}"),
        cause,
        errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_decodes_c_layout() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&123_456_789_u64.to_ne_bytes());
        raw.extend_from_slice(&4242_u32.to_ne_bytes());
        raw.extend_from_slice(&1_u32.to_ne_bytes());
        assert_eq!(
            HelloEvent::from_bytes(&raw),
            Some(HelloEvent {
                ktime_ns: 123_456_789,
                tgid: 4242,
                ppid: 1,
            })
        );
        assert_eq!(HelloEvent::from_bytes(&raw[..15]), None);
        raw.push(0);
        assert_eq!(HelloEvent::from_bytes(&raw), None);
    }
}
