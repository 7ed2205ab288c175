//! End-to-end check of the BPF pipeline: the embedded `hello` object is a
//! BPF ELF with the expected program and maps, and once attached to
//! `syscalls:sys_enter_getppid` it counts exactly our getppid(2) calls and
//! pushes one ring-buffer event per call carrying our pid.

use std::{
    io::{self, Write as _},
    sync::{Mutex, MutexGuard},
};

use ebpf_probes::{HelloProbe, hello, object};

const N: u64 = 100;

/// The tests below call getppid(2) from the same process, so a probe of one
/// would see the calls of another running in parallel: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// ELF `e_machine` for BPF.
const EM_BPF: u16 = 247;

/// Prints a skip notice that `cargo test` shows even without
/// `--nocapture` (libtest captures only the print macros).
fn skip(reason: &str) {
    let _ignored = writeln!(io::stderr(), "skipped: {reason}");
}

fn skip_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        false
    } else {
        skip("needs root (CAP_BPF)");
        true
    }
}

/// Skips when build.rs wrote a placeholder, unless `LAYERSCOPE_BPF_REQUIRED`
/// is set (CI), where a missing object is a failure.
fn skip_unless_built() -> bool {
    match object::HELLO.bytes() {
        Ok(_) => false,
        Err(e) if std::env::var_os("LAYERSCOPE_BPF_REQUIRED").is_some() => {
            panic!("{e} (LAYERSCOPE_BPF_REQUIRED is set)")
        }
        Err(e) => {
            skip(&e.to_string());
            true
        }
    }
}

#[test]
fn embedded_object_is_a_bpf_elf_with_hello_count() {
    if skip_unless_built() {
        return;
    }
    let bytes = object::HELLO.bytes().expect("built");
    assert!(bytes.len() > 64, "object too small: {} bytes", bytes.len());
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF");
    assert_eq!(bytes[4], 2, "not ELF64");
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    assert_eq!(machine, EM_BPF, "e_machine is not EM_BPF");

    let parsed = aya_obj::Object::parse(bytes).expect("aya-obj parses the object");
    assert!(
        parsed.programs.contains_key(hello::PROGRAM),
        "programs: {:?}",
        parsed.programs.keys().collect::<Vec<_>>()
    );
    for map in ["hello_counts", "hello_events"] {
        assert!(
            parsed.maps.contains_key(map),
            "map {map} missing: {:?}",
            parsed.maps.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn tracepoint_counts_our_getppid_calls_and_streams_events() {
    if skip_unless_root() || skip_unless_built() {
        return;
    }
    let _serial = serial();
    let pid = std::process::id();
    let expected_ppid = u32::try_from(nix::unistd::getppid().as_raw()).expect("ppid >= 0");

    let mut probe = HelloProbe::attach().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(probe.tgid(), pid);
    let before = probe.count().expect("read counter");
    // Events from before this point (none expected) must not be counted.
    let stale = probe.drain_events().len();

    for _ in 0..N {
        std::hint::black_box(nix::unistd::getppid());
    }

    let after = probe.count().expect("read counter");
    assert_eq!(
        after - before,
        N,
        "counter moved by {} for {N} calls",
        after - before
    );
    assert_eq!(probe.dropped().expect("read drop counter"), 0);

    let events = probe.drain_events();
    assert_eq!(events.len() as u64, N, "{stale} stale events drained first");
    for event in &events {
        assert_eq!(event.tgid, pid, "{event:?}");
        // real_parent->tgid, read in the kernel with CO-RE.
        assert_eq!(event.ppid, expected_ppid, "{event:?}");
    }
    assert!(
        events.windows(2).all(|w| w[0].ktime_ns <= w[1].ktime_ns),
        "events out of order"
    );

    probe.detach().expect("detach");
}

#[test]
fn other_processes_are_not_counted() {
    if skip_unless_root() || skip_unless_built() {
        return;
    }
    let _serial = serial();
    // A tgid that is not ours: our own calls must not count.
    let other = std::process::id() + 1_000_000;
    let mut probe = HelloProbe::attach_to(other).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..N {
        std::hint::black_box(nix::unistd::getppid());
    }
    assert_eq!(probe.count().expect("read counter"), 0);
    assert!(probe.drain_events().is_empty());
}
