//! A burst of copy-ups at the default ring size: 100,000 lower files
//! appended to by two writers while a consumer drains events, as `trace`
//! and the sidecar do. Prints how many copy-ups were counted, how many
//! events arrived and how many were lost (counted, never hidden). Run as
//! root: `cargo bench -p ebpf-probes --bench burst` (figures go to
//! docs/performance.md).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Store, container_id};
use ebpf_probes::{OverlayTracer, TracerOptions};
use testkit::{FsKind, ScratchFs};

const FILES: usize = 100_000;
const WRITERS: usize = 2;

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipped: burst needs root (BPF, mounts)");
        return;
    }
    let scratch = ScratchFs::new(FsKind::Ext4, 4 << 30).expect("ext4 scratch");
    let store = Store::new(&scratch);
    for bucket in 0..1000 {
        fs::create_dir(store.lower.join(format!("d{bucket}"))).unwrap();
    }
    for i in 0..FILES {
        fs::write(
            store.lower.join(format!("d{}/f{i}", i % 1000)),
            b"0123456789",
        )
        .unwrap();
    }
    let mut tracer = OverlayTracer::start(TracerOptions {
        roots: vec![store.root.clone()],
        ..TracerOptions::default()
    })
    .expect("start tracer");
    let id = container_id('b');
    let container = store.container(&id, "cacheburst", false);
    tracer.refresh_mounts().expect("refresh");
    let before = tracer.totals().expect("totals");
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (took, drained) = std::thread::scope(|scope| {
        let tracer = &mut tracer;
        let done = &done;
        let drainer = scope.spawn(move || {
            let mut drained = 0;
            while !done.load(Ordering::SeqCst) {
                drained += tracer.drain_events().len();
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(500));
            drained + tracer.drain_events().len()
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let merged = &container.merged;
                scope.spawn(move || {
                    for i in (writer..FILES).step_by(WRITERS) {
                        let mut file = fs::OpenOptions::new()
                            .append(true)
                            .open(merged.join(format!("d{}/f{i}", i % 1000)))
                            .unwrap();
                        file.write_all(b"x").unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let took = started.elapsed();
        done.store(true, Ordering::SeqCst);
        (took, drainer.join().unwrap())
    });
    let after = tracer.totals().expect("totals");
    println!(
        "burst: {FILES} appends to lower files by {WRITERS} writers in {:.1} s: \
         {} data copy-ups counted, {} events drained, {} lost",
        took.as_secs_f64(),
        after.data - before.data,
        drained,
        after.lost - before.lost
    );
}
