//! Attribution against a real Docker data root: a private dockerd
//! (overlay2) runs two containers of one image at once, each of which
//! appends to lower files, deletes others and replaces a lower dir. The
//! tracer, given only the daemon's `--data-root`, must put every event on
//! the right Docker container id by its upper dir (layerdb
//! `mounts/<id>/mount-id` -> `overlay2/<cache-id>/diff`), with the layer
//! set to that cache-id, and the same id must come out of the event's
//! cgroup (Docker's `.../docker/<id>` or `docker-<id>.scope` cgroup).
//! Counts and bytes are exact.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{bpf_built, workload};
use ebpf_probes::{
    OverlayTracer, TracerOptions,
    attribution::Attribution,
    registry::{TraceEvent, wait_for_mount},
};
use testkit::docker::{DockerDaemon, LayerFile, busybox_files};

/// Lower files of the image's data layer: (path, size).
const DATA: &[(&str, usize)] = &[
    ("data/empty-file", 0),
    ("data/page", 4096),
    ("data/odd", 100_000),
    ("data/mib", 1 << 20),
    ("data/gone-1", 10),
    ("data/gone-2", 20_000),
    ("data/dir/inner", 7),
];
const APPENDED: &[&str] = &["data/empty-file", "data/page", "data/odd", "data/mib"];
const DELETED: &[&str] = &["data/gone-1", "data/gone-2"];
/// What each container runs once its overlay is registered.
const SCRIPT: &str = "for f in /data/empty-file /data/page /data/odd /data/mib; do \
                      echo appended >> $f; done && rm /data/gone-1 /data/gone-2 && \
                      rm -r /data/dir && mkdir /data/dir";

fn start_daemon() -> Option<DockerDaemon> {
    match DockerDaemon::start("overlay2") {
        Ok(daemon) => Some(daemon),
        Err(e) if e.is_unavailable() => {
            println!("skipped: dockerd unavailable: {e}");
            None
        }
        Err(e) => panic!("start dockerd: {e}"),
    }
}

/// The overlay2 cache-id (`mount-id`) of a container's rw layer.
fn mount_id(daemon: &DockerDaemon, container: &str) -> String {
    let path = daemon
        .data_root()
        .join("image/overlay2/layerdb/mounts")
        .join(container)
        .join("mount-id");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[test]
fn events_belong_to_the_docker_container_that_made_them() {
    testkit::require_root!();
    if !bpf_built() {
        return;
    }
    let busybox = std::fs::read("/bin/busybox")
        .expect("read /bin/busybox (Debian's busybox-static is part of the environment)");
    let Some(daemon) = start_daemon() else {
        return;
    };

    let contents: Vec<Vec<u8>> = DATA.iter().map(|(_, size)| vec![b'x'; *size]).collect();
    let data: Vec<LayerFile<'_>> = DATA
        .iter()
        .zip(&contents)
        .map(|((path, _), bytes)| (*path, bytes.as_slice(), 0o644))
        .collect();
    let base = busybox_files(&busybox);
    let image = daemon
        .load_image("layerscope-attribution:1", &[&base, &data])
        .expect("docker load");

    let mut tracer = OverlayTracer::start(TracerOptions {
        roots: vec![daemon.data_root()],
        ..TracerOptions::default()
    })
    .expect("start tracer");
    println!("{}", tracer.strategy());
    assert!(tracer.degraded().is_empty(), "{:?}", tracer.degraded());

    // Both containers sleep until their overlays are registered.
    let mut ids = Vec::new();
    for name in ["layerscope-attr-a", "layerscope-attr-b"] {
        let id = daemon
            .run(&[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "none",
                &image,
                "/bin/busybox",
                "sleep",
                "600",
            ])
            .expect("docker run");
        let cache_id = mount_id(&daemon, &id);
        let merged = daemon
            .data_root()
            .join("overlay2")
            .join(&cache_id)
            .join("merged");
        assert!(
            wait_for_mount(tracer.registry(), &merged).is_some(),
            "{name}: overlay {} not registered",
            merged.display()
        );
        ids.push((name, id, cache_id));
    }

    let workers: Vec<_> = ids
        .iter()
        .map(|(name, _, _)| {
            let mut command = std::process::Command::new("docker");
            command.arg("-H").arg(daemon.host()).args([
                "exec",
                name,
                "/bin/busybox",
                "sh",
                "-c",
                SCRIPT,
            ]);
            std::thread::spawn(move || {
                let status = command.status().expect("spawn docker exec");
                assert!(status.success(), "docker exec: {status}");
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("workload");
    }
    std::thread::sleep(Duration::from_millis(200));

    let raw = tracer.drain_events();
    let events: Vec<TraceEvent> = {
        let mut registry = tracer.lock_registry();
        raw.iter().map(|r| registry.resolve_fresh(r)).collect()
    };
    let totals = tracer.totals().expect("totals");
    assert_eq!(totals.lost, 0, "events lost: {totals:?}");

    let attribution = Attribution::new(vec![daemon.data_root()]);
    let cgroups = attribution.cgroup_paths();
    let known = attribution.container_ids();
    // Docker's overlay2 mounts without metacopy: every append is a data
    // copy-up of the whole file; /data and /data/dir are copied up as dirs
    // (`rm -r` whites out the inner file inside the dir, then the dir).
    let want: workload::Counts = [
        (("copy_up_data", ""), APPENDED.len() as u64),
        (("copy_up_dir", ""), 2),
        (("whiteout", "unlink"), DELETED.len() as u64 + 1),
        (("whiteout", "rmdir"), 1),
        (("opaque_dir", ""), 1),
    ]
    .into_iter()
    .collect();
    // Paths are as the process inside the container named them.
    let want_bytes: BTreeMap<String, u64> = APPENDED
        .iter()
        .map(|path| {
            let size = DATA.iter().find(|(p, _)| p == path).expect("data").1;
            (format!("/{path}"), size as u64)
        })
        .collect();
    for (name, id, cache_id) in &ids {
        let (counts, bytes, _blocked_ns) = workload::seen(&events, id);
        assert_eq!(counts, want, "{name}");
        assert_eq!(bytes, want_bytes, "{name}: bytes copied up");
        for ev in events.iter().filter(|e| &e.container == id) {
            assert_eq!(ev.driver, "overlay2", "{name}: {ev:?}");
            assert_eq!(
                ev.layer.as_deref(),
                Some(cache_id.as_str()),
                "{name}: {ev:?}"
            );
            let cgroup = cgroups
                .get(&ev.cgroup_id)
                .unwrap_or_else(|| panic!("{name}: cgroup {} unknown", ev.cgroup_id));
            assert_eq!(
                &attribution.container_of_cgroup(cgroup, &known),
                id,
                "{name}: cgroup {} of {ev:?}",
                cgroup.display()
            );
        }
    }
    drop(tracer);
    daemon.cleanup().expect("stop dockerd");
}
