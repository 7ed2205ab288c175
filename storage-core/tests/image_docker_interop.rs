//! `image::load` and `image::save` against a real dockerd (root only; a
//! private daemon from `testkit::docker`, overlay2): `docker save` of an
//! image Docker built (a hand-made base with owners, modes, a symlink, a
//! hardlink and a file capability, plus a `docker commit` layer with a
//! whiteout, an opaque dir, a chown and a new symlink) loads here with
//! Docker's image id, diff-ids and chain-ids, and a container mounted on it
//! has the tree `docker export` gives; our `save` of it is entry for entry
//! and JSON for JSON what `docker save` wrote; and an image that only our
//! store has, saved by us, loads in Docker, runs, and exports the same tree.

mod image_support;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use image_support::*;
use storage_core::container::ContainerStore;
use storage_core::image;
use storage_core::sys::xattr;
use testkit::docker::DockerDaemon;

/// `security.capability` (v2): cap_net_bind_service permitted.
const FILE_CAP: &[u8] = &[0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// What the init layers add (moby's and ours) and `docker export` shows
/// besides the image: left out of the comparison.
const INIT_PATHS: &[&str] = &[
    ".dockerenv",
    "dev",
    "dev/console",
    "dev/pts",
    "dev/shm",
    "etc/hostname",
    "etc/hosts",
    "etc/mtab",
    "etc/resolv.conf",
    "proc",
    "sys",
];

/// path -> "kind mode uid:gid [content digest | -> target] [mtime] [cap]".
type Tree = BTreeMap<String, String>;

fn describe(kind: &str, mode: u32, uid: u64, gid: u64, body: &str, cap: Option<&[u8]>) -> String {
    let cap = cap
        .map(|c| format!(" cap={}", hex::encode(c)))
        .unwrap_or_default();
    format!("{kind} {:o} {uid}:{gid} {body}{cap}", mode & 0o7777)
}

/// The tree of a `docker export` tar (hardlinks resolved to their target).
fn export_tree(tar: &[u8]) -> Tree {
    let mut tree = Tree::new();
    let mut contents: BTreeMap<String, String> = BTreeMap::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut e = entry.unwrap();
        let path = e
            .path()
            .unwrap()
            .display()
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let h = e.header().clone();
        let mut cap = None;
        if let Some(pax) = e.pax_extensions().unwrap() {
            for ext in pax {
                let ext = ext.unwrap();
                if ext.key().unwrap() == "SCHILY.xattr.security.capability" {
                    cap = Some(ext.value_bytes().to_vec());
                }
            }
        }
        let (mode, uid, gid) = (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap());
        let desc = match h.entry_type() {
            tar::EntryType::Directory => describe("dir", mode, uid, gid, "", cap.as_deref()),
            tar::EntryType::Symlink => {
                let target = e.link_name().unwrap().unwrap().display().to_string();
                describe(
                    "link",
                    mode,
                    uid,
                    gid,
                    &format!("-> {target}"),
                    cap.as_deref(),
                )
            }
            tar::EntryType::Link => {
                let target = e.link_name().unwrap().unwrap().display().to_string();
                let body = contents[target.trim_end_matches('/')].clone();
                describe("file", mode, uid, gid, &body, cap.as_deref())
            }
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let body = format!("{} {}", sha256(&data), h.mtime().unwrap());
                contents.insert(path.clone(), body.clone());
                describe("file", mode, uid, gid, &body, cap.as_deref())
            }
            other => describe(&format!("{other:?}"), mode, uid, gid, "", cap.as_deref()),
        };
        if !path.is_empty() && path != "." {
            tree.insert(path, desc);
        }
    }
    tree
}

/// The tree of a mounted root.
fn mounted_tree(root: &Path) -> Tree {
    let mut tree = Tree::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = path
            .symlink_metadata()
            .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let cap = xattr::lget(path, "security.capability").unwrap();
        let (mode, uid, gid) = (meta.mode(), u64::from(meta.uid()), u64::from(meta.gid()));
        let desc = if meta.is_dir() {
            describe("dir", mode, uid, gid, "", cap.as_deref())
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(path).unwrap().display().to_string();
            describe(
                "link",
                0o777,
                uid,
                gid,
                &format!("-> {target}"),
                cap.as_deref(),
            )
        } else if meta.is_file() {
            let body = format!("{} {}", sha256(&std::fs::read(path).unwrap()), meta.mtime());
            describe("file", mode, uid, gid, &body, cap.as_deref())
        } else {
            describe("other", mode, uid, gid, "", cap.as_deref())
        };
        tree.insert(path.strip_prefix(root).unwrap().display().to_string(), desc);
    }
    tree
}

fn without_init(tree: &Tree) -> Tree {
    tree.iter()
        .filter(|(p, _)| {
            !INIT_PATHS.contains(&p.as_str())
                && !p.starts_with("dev/")
                && !p.starts_with("proc/")
                && !p.starts_with("sys/")
        })
        .map(|(p, d)| (p.clone(), d.clone()))
        .collect()
}

fn assert_same_tree(ours: &Tree, docker: &Tree, what: &str) {
    let (ours, docker) = (without_init(ours), without_init(docker));
    let mut diffs = Vec::new();
    for (path, d) in &docker {
        match ours.get(path) {
            None => diffs.push(format!("only in docker export: {path} {d}")),
            Some(o) if o != d => diffs.push(format!("{path}: docker {d}, ours {o}")),
            _ => {}
        }
    }
    for (path, o) in &ours {
        if !docker.contains_key(path) {
            diffs.push(format!("only in ours: {path} {o}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
    assert!(ours.len() > 10, "{what}: suspiciously small tree: {ours:?}");
    // The comparison saw what it is meant to see.
    assert!(
        docker["bin/ping"].ends_with(&format!("cap={}", hex::encode(FILE_CAP))),
        "{what}: {}",
        docker["bin/ping"]
    );
    assert!(
        docker["home/user/notes"].contains(" 1000:1000 "),
        "{what}: {}",
        docker["home/user/notes"]
    );
    assert_eq!(docker["bin/sh"], "link 777 0:0 -> busybox", "{what}");
}

/// Our container on image `reference`, mounted: its tree.
fn our_container_tree(stores: &Stores, reference: &str, name: &str) -> Tree {
    let img = stores.images.get(reference).unwrap();
    let containers = ContainerStore::open(&stores.root, &stores.layers).unwrap();
    let c = containers
        .create(name, reference, img.top_chain_id().as_deref())
        .unwrap();
    let root = containers.mount(&c).unwrap();
    let tree = mounted_tree(&root);
    containers.unmount(&c).unwrap();
    containers.remove(&c).unwrap();
    tree
}

fn docker_export_tree(daemon: &DockerDaemon, image: &str, name: &str) -> Tree {
    daemon
        .run(&["create", "--name", name, image, "/bin/busybox", "true"])
        .unwrap();
    let out = daemon.docker(&["export", name]);
    assert!(
        out.status.success(),
        "docker export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.run(&["rm", name]).unwrap();
    export_tree(&out.stdout)
}

fn docker_diff_ids(daemon: &DockerDaemon, image: &str) -> Vec<String> {
    let json = daemon
        .run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            image,
        ])
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

/// The base layer with a static busybox, an owner, a setuid file, a
/// symlink, a hardlink and a file capability.
fn busybox_base(busybox: &[u8]) -> Vec<u8> {
    layer_tar(&[
        Entry::Dir("bin/", 0o755),
        Entry::File("bin/busybox", busybox, 0o755),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        Entry::Owned("home/user/notes", b"owned by 1000\n", 0o4750, 1000, 1000),
        Entry::Hardlink("home/user/notes2", "home/user/notes", 0o4750, 1000, 1000),
        Entry::Xattr(
            "bin/ping",
            b"pretend ping\n",
            "security.capability",
            FILE_CAP,
        ),
        Entry::Dir("opaque/", 0o755),
        Entry::File("opaque/old", b"old\n", 0o644),
        Entry::Dir("tmp/", 0o1777),
    ])
}

/// A layer on [`busybox_base`] made here: a whiteout, an opaque dir, an
/// owner, an absolute symlink.
fn our_changes() -> Vec<u8> {
    layer_tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::Whiteout("etc/passwd"),
        Entry::Dir("opaque/", 0o700),
        Entry::File("opaque/.wh..wh..opq", b"", 0o644),
        Entry::File("opaque/fresh", b"fresh\n", 0o644),
        Entry::Dir("data/", 0o755),
        Entry::Owned("data/x", b"x", 0o640, 33, 33),
        Entry::Symlink("data/abs", "/etc/passwd"),
    ])
}

#[test]
fn docker_save_loads_here_and_our_save_loads_in_docker() {
    testkit::require_root!();
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static provides /bin/busybox");
    let daemon = match DockerDaemon::start("overlay2") {
        Ok(d) => d,
        Err(e) if e.is_unavailable() => {
            testkit::feature_available(false, "dockerd", e);
            return;
        }
        Err(e) => panic!("start dockerd: {e}"),
    };
    let scratch = scratch();
    let dir = scratch.path();

    // ---- Docker -> us -------------------------------------------------
    let base = TestImage::new(vec![busybox_base(&busybox)], &["lsbase:latest"], "base");
    let base_tar = write(dir, "base.tar", &legacy_archive(&[&base]));
    let out = daemon
        .run(&["load", "-i", &base_tar.display().to_string()])
        .unwrap();
    assert!(out.contains("lsbase:latest"), "{out}");
    let script = "rm /etc/passwd && rm -r /opaque && mkdir /opaque && echo new > /opaque/new \
                  && mkdir -p /data && echo hi > /data/f && chown 1000:1000 /data/f && ln -s /data/f /data/link \
                  && chmod 0600 /home/user/notes";
    daemon
        .run_and_commit(
            "lsbase:latest",
            "lsapp:v1",
            &["/bin/busybox", "sh", "-c", script],
        )
        .unwrap();
    let docker_id = daemon
        .run(&["image", "inspect", "--format", "{{.Id}}", "lsapp:v1"])
        .unwrap();
    let saved = dir.join("docker-saved.tar");
    daemon
        .run(&["save", "-o", &saved.display().to_string(), "lsapp:v1"])
        .unwrap();

    let ours = Stores::open(&dir.join("root"));
    let loaded = image::load(&ours.images, &ours.layers, &saved).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, docker_id);
    assert_eq!(loaded[0].repo_tags, ["lsapp:v1"]);
    let diff_ids = docker_diff_ids(&daemon, "lsapp:v1");
    assert_eq!(
        loaded[0].chain_ids,
        storage_core::layer::chain_ids(&diff_ids)
    );
    for (chain, diff_id) in loaded[0].chain_ids.iter().zip(&diff_ids) {
        assert_eq!(&ours.layers.get(chain).unwrap().diff_id, diff_id);
    }
    assert_same_tree(
        &our_container_tree(&ours, "lsapp:v1", "c1"),
        &docker_export_tree(&daemon, "lsapp:v1", "d1"),
        "docker-built image",
    );

    // Our save of it is docker save's layout, entry for entry.
    let mut our_tar = Vec::new();
    image::save(
        &ours.images,
        &ours.layers,
        &["lsapp:v1".to_string()],
        &mut our_tar,
    )
    .unwrap();
    let theirs = std::fs::read(&saved).unwrap();
    let listing = |tar: &[u8]| -> BTreeMap<String, (tar::EntryType, String, String)> {
        let mut out = BTreeMap::new();
        for e in tar::Archive::new(tar).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(path, (kind, link, sha256(&data)));
        }
        out
    };
    let (ours_listed, theirs_listed) = (listing(&our_tar), listing(&theirs));
    let mismatched: Vec<String> = theirs_listed
        .iter()
        .filter(|(p, v)| ours_listed.get(*p) != Some(v))
        .map(|(p, v)| format!("{p}: docker {v:?}, ours {:?}", ours_listed.get(p)))
        .chain(
            ours_listed
                .keys()
                .filter(|p| !theirs_listed.contains_key(*p))
                .map(|p| format!("only ours: {p}")),
        )
        .collect();
    assert!(
        mismatched.is_empty(),
        "our save differs from docker save:\n{}",
        mismatched.join("\n")
    );

    // ---- us -> Docker -------------------------------------------------
    let ours_only = TestImage::new(
        vec![busybox_base(&busybox), our_changes(), third_layer("ours")],
        &["ours/only:1.0"],
        "made here",
    );
    image::load(
        &ours.images,
        &ours.layers,
        &write(dir, "ours.tar", &legacy_archive(&[&ours_only])),
    )
    .unwrap();
    let out_path = dir.join("our-save.tar");
    let mut file = std::fs::File::create(&out_path).unwrap();
    image::save(
        &ours.images,
        &ours.layers,
        &["ours/only".to_string(), "lsapp:v1".to_string()],
        &mut file,
    )
    .unwrap();
    drop(file);
    daemon.run(&["rmi", "lsapp:v1", "lsbase:latest"]).unwrap();
    let out = daemon
        .run(&["load", "-i", &out_path.display().to_string()])
        .unwrap();
    assert!(
        out.contains("Loaded image: ours/only:1.0") && out.contains("Loaded image: lsapp:v1"),
        "{out}"
    );
    assert_eq!(
        daemon
            .run(&["image", "inspect", "--format", "{{.Id}}", "ours/only:1.0"])
            .unwrap(),
        ours_only.id
    );
    assert_eq!(
        docker_diff_ids(&daemon, "ours/only:1.0"),
        ours_only.diff_ids
    );
    assert_eq!(
        daemon
            .run(&["image", "inspect", "--format", "{{.Id}}", "lsapp:v1"])
            .unwrap(),
        docker_id
    );
    // Docker's own image store reads as ours does (configs, tags).
    let docker_store =
        storage_core::image::ImageStore::open(&daemon.data_root(), "overlay2").unwrap();
    for name in ["ours/only:1.0", "lsapp:v1"] {
        let (d, o) = (
            docker_store.get(name).unwrap(),
            ours.images.get(name).unwrap(),
        );
        assert_eq!(
            (&d.id, &d.raw_config, &d.repo_tags),
            (&o.id, &o.raw_config, &o.repo_tags),
            "{name}"
        );
    }
    let hello = daemon
        .run(&[
            "run",
            "--rm",
            "--network",
            "none",
            "ours/only:1.0",
            "/bin/busybox",
            "cat",
            "/hello",
        ])
        .unwrap();
    assert_eq!(hello, "hello from ours");
    assert_same_tree(
        &our_container_tree(&ours, "ours/only:1.0", "c2"),
        &docker_export_tree(&daemon, "ours/only:1.0", "d2"),
        "image saved by us",
    );
    drop(ours);
    daemon.cleanup().unwrap();
    scratch.cleanup().unwrap();
}
