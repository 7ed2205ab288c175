//! Interop with a real dockerd (root only): a private daemon on overlay2
//! builds images three ways (`docker import`, `docker run` + `docker commit`
//! with a whiteout and an opaque dir, `docker load` of a hand-made save
//! tar) and runs containers; `storage_core::docker_root` must then read the
//! same diff-ids, chain-ids that verify, and the exact `SizeRw` /
//! `SizeRootFs` Docker reports, without changing a byte or an mtime of the
//! data root.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use storage_core::docker_root::{self, DockerRoot};
use testkit::docker::{DockerDaemon, LayerFile, busybox_files, layer_tar};

/// What must not change when the root is read: kind and mode, size,
/// mtime and ctime (nanoseconds) of every entry.
type Listing = BTreeMap<PathBuf, (u32, u64, i64, i64, i64, i64)>;

fn listing(dir: &Path) -> Listing {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let meta = std::fs::symlink_metadata(&current).unwrap();
        out.insert(
            current.clone(),
            (
                meta.mode(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ctime(),
                meta.ctime_nsec(),
            ),
        );
        if meta.is_dir() {
            for entry in std::fs::read_dir(&current).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out
}

fn sha256_id(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `docker image inspect` of `image`: (diff-ids, size).
fn docker_image(daemon: &DockerDaemon, image: &str) -> (Vec<String>, u64) {
    let layers = daemon
        .run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            image,
        ])
        .unwrap();
    let size = daemon
        .run(&["image", "inspect", "--format", "{{.Size}}", image])
        .unwrap();
    (
        serde_json::from_str(&layers).unwrap(),
        size.parse().unwrap(),
    )
}

/// What `docker container inspect --size` says about one container.
#[derive(Debug)]
struct DockerContainer {
    id: String,
    image: String,
    running: bool,
    size_rw: u64,
    size_root_fs: u64,
    upper_dir: PathBuf,
}

fn docker_container(daemon: &DockerDaemon, name: &str) -> DockerContainer {
    let text = daemon
        .run(&[
            "container",
            "inspect",
            "--size",
            "--format",
            "{{json .}}",
            name,
        ])
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    DockerContainer {
        id: json["Id"].as_str().unwrap().to_string(),
        image: json["Image"].as_str().unwrap().to_string(),
        running: json["State"]["Running"].as_bool().unwrap(),
        size_rw: json["SizeRw"].as_u64().unwrap_or(0),
        size_root_fs: json["SizeRootFs"].as_u64().unwrap(),
        upper_dir: PathBuf::from(json["GraphDriver"]["Data"]["UpperDir"].as_str().unwrap()),
    }
}

fn check_image(daemon: &DockerDaemon, view: &DockerRoot, tag: &str, id: &str) -> Vec<String> {
    let (diff_ids, size) = docker_image(daemon, tag);
    let image = view
        .image(id)
        .unwrap_or_else(|| panic!("image {tag} ({id}) not read: {:#?}", view.images));
    assert!(image.tags.iter().any(|t| t == tag), "{image:?}");
    let ours: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(ours, diff_ids, "diff-ids of {tag}");
    for layer in &image.layers {
        let stored = view.layer(&layer.chain_id).unwrap();
        assert!(stored.chain_id_verified, "{stored:?}");
        assert_eq!(layer.cache_id.as_deref(), Some(stored.cache_id.as_str()));
        assert!(
            view.root
                .join("overlay2")
                .join(&stored.cache_id)
                .join("diff")
                .is_dir(),
            "no overlay2 dir for {stored:?}"
        );
    }
    assert_eq!(image.size, Some(size), "size of {tag}");
    println!("image {tag}: docker Size {size}, ours {:?}", image.size);
    diff_ids
}

fn check_container(daemon: &DockerDaemon, view: &DockerRoot, name: &str) -> DockerContainer {
    let docker = docker_container(daemon, name);
    let ours = view
        .container(name)
        .unwrap_or_else(|| panic!("container {name} not read: {:#?}", view.containers));
    println!(
        "container {name}: docker SizeRw {} SizeRootFs {}; ours {:?} {:?}",
        docker.size_rw, docker.size_root_fs, ours.size_rw, ours.size_root_fs
    );
    assert_eq!(ours.id, docker.id);
    assert_eq!(ours.image, docker.image);
    assert_eq!(ours.running, docker.running, "{name} running");
    assert_eq!(ours.size_rw, Some(docker.size_rw), "{name} SizeRw");
    assert_eq!(
        ours.size_root_fs,
        Some(docker.size_root_fs),
        "{name} SizeRootFs"
    );
    let mount_id = ours.mount_id.clone().unwrap();
    assert_eq!(
        docker.upper_dir,
        daemon
            .data_root()
            .join("overlay2")
            .join(&mount_id)
            .join("diff")
    );
    assert_eq!(
        ours.init_id.as_deref(),
        Some(format!("{mount_id}-init").as_str())
    );
    assert_eq!(ours.rw_dir.as_deref(), Some(docker.upper_dir.as_path()));
    docker
}

#[test]
fn reads_what_a_real_dockerd_wrote() {
    testkit::require_root!();
    let busybox = std::fs::read("/bin/busybox")
        .expect("read /bin/busybox (Debian's busybox-static is part of the environment)");
    let mut daemon = match DockerDaemon::start("overlay2") {
        Ok(daemon) => daemon,
        Err(e) if e.is_unavailable() => {
            println!("skipped: dockerd unavailable: {e}");
            return;
        }
        Err(e) => panic!("start dockerd: {e}"),
    };

    // Base image by `docker import`: busybox, a file to delete, a dir to
    // make opaque, and a hard link pair.
    let mut files = busybox_files(&busybox);
    files.extend_from_slice(&[
        ("a", b"a\n", 0o644),
        ("d/old", b"old\n", 0o644),
        ("keep/k", b"kept\n", 0o600),
    ]);
    let base = daemon.import_image("layerscope-base:1", &files).unwrap();

    // Two more layers by run + commit; the second deletes /a (whiteout) and
    // replaces /d (opaque dir).
    let sh = |script: &'static str| ["/bin/busybox", "sh", "-c", script];
    let mid = daemon
        .run_and_commit(
            &base,
            "layerscope-mid:1",
            &sh("echo two > /two && mkdir /d2 && echo y > /d2/y"),
        )
        .unwrap();
    let top = daemon
        .run_and_commit(
            &mid,
            "layerscope-three:1",
            &sh("rm /a && rm -rf /d && mkdir /d && echo x > /d/new"),
        )
        .unwrap();

    // A two-layer image by `docker load`: its diff-ids are known up front.
    let lower: &[LayerFile<'_>] = &[("etc/motd", b"hello\n", 0o644), ("x/y", b"y\n", 0o644)];
    let upper: &[LayerFile<'_>] = &[
        ("etc/.wh.motd", b"", 0o644),
        ("x/.wh..wh..opq", b"", 0o644),
        ("x/z", b"zz\n", 0o644),
    ];
    let loaded = daemon
        .load_image("layerscope-loaded:1", &[lower, upper])
        .unwrap();
    let expected_loaded = vec![
        sha256_id(&layer_tar(lower).unwrap()),
        sha256_id(&layer_tar(upper).unwrap()),
    ];

    // A stopped container that wrote 1 MiB (plus a hard link to it, counted
    // once, and a whiteout of a lower file), and a running one.
    daemon
        .run(&[
            "run",
            "--name",
            "layerscope-writer",
            "--network",
            "none",
            &top,
            "/bin/busybox",
            "sh",
            "-c",
            "dd if=/dev/zero of=/big bs=1024 count=1024 && ln /big /big-link && rm /two",
        ])
        .unwrap();
    daemon
        .run(&[
            "run",
            "-d",
            "--name",
            "layerscope-sleeper",
            "--network",
            "none",
            &mid,
            "/bin/busybox",
            "sleep",
            "600",
        ])
        .unwrap();
    daemon
        .run(&[
            "exec",
            "layerscope-sleeper",
            "/bin/busybox",
            "sh",
            "-c",
            "echo hello > /hello && chmod 600 /d2/y",
        ])
        .unwrap();
    daemon
        .run(&[
            "create",
            "--name",
            "layerscope-fresh",
            "--network",
            "none",
            &base,
            "/bin/busybox",
            "true",
        ])
        .unwrap();

    // Read while the daemon runs, as on a live host.
    let view = docker_root::read(&daemon.data_root()).unwrap();
    assert_eq!(view.driver, "overlay2");
    assert!(view.problems.is_empty(), "{:?}", view.problems);
    assert!(view.layers.iter().all(|l| l.chain_id_verified));

    let base_ids = check_image(&daemon, &view, "layerscope-base:1", &base);
    check_image(&daemon, &view, "layerscope-mid:1", &mid);
    let top_ids = check_image(&daemon, &view, "layerscope-three:1", &top);
    assert_eq!(top_ids.len(), 3);
    assert_eq!(top_ids[0], base_ids[0]);
    let loaded_ids = check_image(&daemon, &view, "layerscope-loaded:1", &loaded);
    assert_eq!(loaded_ids, expected_loaded, "diff-ids of the loaded image");
    // The chain-ids of the top image are the layer store's directory names.
    let top_image = view.image(&top).unwrap();
    assert_eq!(
        top_image
            .layers
            .iter()
            .map(|l| l.chain_id.clone())
            .collect::<Vec<_>>(),
        docker_root::chain_ids(&top_ids)
    );

    let writer = check_container(&daemon, &view, "layerscope-writer");
    assert_eq!(writer.size_rw, 1024 * 1024, "1 MiB, hard link counted once");
    assert!(!writer.running);
    let sleeper = check_container(&daemon, &view, "layerscope-sleeper");
    assert!(sleeper.running);
    let fresh = check_container(&daemon, &view, "layerscope-fresh");
    assert_eq!(fresh.size_rw, 0);
    assert_eq!(
        view.container("layerscope-writer")
            .unwrap()
            .parent
            .as_deref(),
        top_image.layers.last().map(|l| l.chain_id.as_str())
    );

    // Stop the daemon, then reading must leave every mtime and ctime as it was.
    daemon.stop().unwrap();
    let root = daemon.data_root();
    let before = listing(&root);
    let again = docker_root::read(&root).unwrap();
    let after = listing(&root);
    assert_eq!(before.len(), after.len());
    for (path, stat) in &before {
        assert_eq!(after.get(path), Some(stat), "{} changed", path.display());
    }
    assert_eq!(again.images, view.images);
    assert_eq!(again.layers, view.layers);
    for (old, new) in view.containers.iter().zip(&again.containers) {
        assert_eq!(
            (&old.id, old.size_rw, old.size_root_fs),
            (&new.id, new.size_rw, new.size_root_fs)
        );
    }
    assert!(!again.container("layerscope-sleeper").unwrap().running);

    let dir = daemon.dir().to_path_buf();
    daemon.cleanup().unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
}
