//! `migrate aufs-to-overlay2` on a synthetic aufs-era Docker root, built on
//! a real ext4 exactly as Docker's aufs driver left it: layer tars applied
//! with aufs whiteouts (`.wh.` files kept), `aufs/layers/<id>` parent
//! lists, a container's init and rw layers with aufs internals, layerdb
//! with tar-split, imagedb and `config.v2.json`. After the migration the
//! overlay2 stack, mounted by the real overlay2 driver, must show exactly
//! the tree aufs semantics define (the same tars applied naively, one after
//! the other), and the layerdb must be untouched.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use storage_core::archive::{ApplyOptions, WhiteoutFormat, apply_layer};
use storage_core::driver::overlay2::Overlay2;
use storage_core::driver::{Driver, DriverOptions};
use storage_core::layer::{LayerStore, chain_ids};
use storage_core::migrate::{
    self, CrashPoint, JOURNAL_FILE, Journal, MigrateError, MigrateOptions, Phase,
};
use storage_core::sys::{mount::MountFlags, xattr};
use testkit::{FsKind, MountGuard, ScratchFs};

const MTIME: u64 = 1_700_000_000;
const CONTAINER: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

// ---------------------------------------------------------------- tars

enum Entry {
    Dir(&'static str),
    File(&'static str, &'static [u8], u32),
    Xattr(&'static str, &'static [u8], &'static str, &'static [u8]),
    Link(&'static str, &'static str),
    Symlink(&'static str, &'static str),
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            Entry::File(path, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data).unwrap();
            }
            Entry::Xattr(path, data, name, value) => {
                builder
                    .append_pax_extensions([(format!("SCHILY.xattr.{name}").as_str(), *value)])
                    .unwrap();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data).unwrap();
            }
            Entry::Link(path, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn image_tars() -> Vec<Vec<u8>> {
    use Entry::*;
    vec![
        tar_of(&[
            Dir("bin"),
            File("bin/tool", b"tool v1\n", 0o755),
            Link("bin/tool-link", "bin/tool"),
            Symlink("bin/sh", "tool"),
            Dir("etc"),
            File("etc/removed", b"bye\n", 0o644),
            File("etc/keep", b"keep\n", 0o644),
            Dir("etc/conf.d"),
            File("etc/conf.d/old", b"old\n", 0o600),
            Dir("dirgone"),
            File("dirgone/inner", b"x\n", 0o644),
            Dir("usr"),
            Xattr("usr/data", b"data\n", "user.note", b"v1"),
        ]),
        tar_of(&[
            Dir("bin"),
            File("bin/tool", b"tool v2, copied up\n", 0o755),
            Dir("etc"),
            File("etc/.wh.removed", b"", 0o644),
            File("etc/added", b"two\n", 0o644),
        ]),
        tar_of(&[
            Dir("etc"),
            Dir("etc/conf.d"),
            File("etc/conf.d/.wh..wh..opq", b"", 0o644),
            File("etc/conf.d/new", b"new\n", 0o644),
            File(".wh.dirgone", b"", 0o644),
            Dir("usr"),
            Xattr("usr/data2", b"data2\n", "user.other", b"v3"),
            File("usr/h1", b"linked\n", 0o644),
            Link("usr/h2", "usr/h1"),
        ]),
    ]
}

fn init_tar() -> Vec<u8> {
    use Entry::*;
    tar_of(&[
        Dir("dev"),
        File("dev/console", b"", 0o755),
        Dir("etc"),
        File("etc/hosts", b"", 0o755),
        File("etc/hostname", b"", 0o755),
        File("etc/resolv.conf", b"", 0o755),
        Dir("proc"),
        Dir("sys"),
    ])
}

fn rw_tar() -> Vec<u8> {
    use Entry::*;
    tar_of(&[
        Dir("etc"),
        File("etc/keep", b"changed in the container\n", 0o644),
        File("etc/.wh.added", b"", 0o644),
        Dir("usr"),
        File("usr/.wh..wh..opq", b"", 0o644),
        File("usr/fresh", b"fresh\n", 0o644),
        Dir("tmp"),
        File("tmp/new", b"new in rw\n", 0o644),
    ])
}

// ---------------------------------------------------------------- fixture

struct Layer {
    cache_id: String,
    chain_id: String,
    diff_id: String,
    tar: Vec<u8>,
}

struct Fixture {
    root: PathBuf,
    layers: Vec<Layer>,
    mount_id: String,
    init_id: String,
    expected_image: PathBuf,
    expected_container: PathBuf,
    config_text: String,
    pid_file: PathBuf,
}

fn apply_aufs(root: &Path, id: &str, parents: &[&str], tar: &[u8]) -> (String, u64, Vec<u8>) {
    let diff = root.join("aufs/diff").join(id);
    fs::create_dir_all(&diff).unwrap();
    fs::create_dir_all(root.join("aufs/mnt").join(id)).unwrap();
    let mut list = String::new();
    for parent in parents {
        list.push_str(parent);
        list.push('\n');
    }
    fs::write(root.join("aufs/layers").join(id), list).unwrap();
    let mut split = GzEncoder::new(Vec::new(), Compression::default());
    let applied = apply_layer(
        tar,
        &diff,
        &ApplyOptions::new(WhiteoutFormat::Aufs),
        Some(&mut split),
    )
    .unwrap();
    (applied.diff_id, applied.size, split.finish().unwrap())
}

fn apply_naive(dir: &Path, tar: &[u8]) {
    apply_layer(tar, dir, &ApplyOptions::new(WhiteoutFormat::Naive), None).unwrap();
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

/// An aufs-era Docker root under `base/root`, and the expected merged
/// trees under `base/expected-*`.
fn build_fixture(base: &Path) -> Fixture {
    let root = base.join("root");
    for dir in ["aufs/diff", "aufs/layers", "aufs/mnt", "containers"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    let image = root.join("image/aufs");
    let tars = image_tars();
    let cache_ids: Vec<String> = (0..tars.len())
        .map(|i| format!("{:064x}", 0xa0 + i))
        .collect();
    let mut diff_ids = Vec::new();
    let mut applied = Vec::new();
    for (i, tar) in tars.iter().enumerate() {
        let parents: Vec<&str> = cache_ids[..i].iter().rev().map(String::as_str).collect();
        let (diff_id, size, split) = apply_aufs(&root, &cache_ids[i], &parents, tar);
        diff_ids.push(diff_id.clone());
        applied.push((size, split));
    }
    let chains = chain_ids(&diff_ids);
    let mut layers = Vec::new();
    for (i, tar) in tars.into_iter().enumerate() {
        let dir = image
            .join("layerdb/sha256")
            .join(chains[i].trim_start_matches("sha256:"));
        write(&dir.join("diff"), &diff_ids[i]);
        write(&dir.join("size"), applied[i].0.to_string());
        write(&dir.join("cache-id"), &cache_ids[i]);
        write(&dir.join("tar-split.json.gz"), &applied[i].1);
        if i > 0 {
            write(&dir.join("parent"), &chains[i - 1]);
        }
        layers.push(Layer {
            cache_id: cache_ids[i].clone(),
            chain_id: chains[i].clone(),
            diff_id: diff_ids[i].clone(),
            tar,
        });
    }

    // The container: init layer, rw layer with aufs internals.
    let mount_id = format!("{:064x}", 0xbeef);
    let init_id = format!("{mount_id}-init");
    let mut parents: Vec<&str> = cache_ids.iter().rev().map(String::as_str).collect();
    apply_aufs(&root, &init_id, &parents, &init_tar());
    parents.insert(0, &init_id);
    apply_aufs(&root, &mount_id, &parents, &rw_tar());
    let rw = root.join("aufs/diff").join(&mount_id);
    write(&rw.join(".wh..wh.aufs"), b"");
    // aufs makes whiteouts as hard links to its base whiteout file.
    fs::create_dir(rw.join("bin")).unwrap();
    fs::hard_link(rw.join(".wh..wh.aufs"), rw.join("bin/.wh.sh")).unwrap();
    write(&rw.join(".wh..wh.plnk/1234.5678"), b"pseudo-link");
    fs::create_dir(rw.join(".wh..wh.orph")).unwrap();
    let mounts = image.join("layerdb/mounts").join(CONTAINER);
    write(&mounts.join("mount-id"), &mount_id);
    write(&mounts.join("init-id"), &init_id);
    write(&mounts.join("parent"), chains.last().unwrap());

    // imagedb, repositories, the container's config.
    let config = format!(
        r#"{{"architecture":"amd64","config":{{"Cmd":["/bin/sh"]}},"os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        diff_ids.join("\",\"")
    );
    let image_id = hex::encode(Sha256::digest(config.as_bytes()));
    write(
        &image.join("imagedb/content/sha256").join(&image_id),
        &config,
    );
    fs::create_dir_all(image.join("imagedb/metadata/sha256")).unwrap();
    write(
        &image.join("repositories.json"),
        format!(r#"{{"Repositories":{{"demo":{{"demo:latest":"sha256:{image_id}"}}}}}}"#),
    );
    let config_text = format!(
        r#"{{"StreamConfig":{{}},"State":{{"Running":false,"Paused":false,"Pid":0,"ExitCode":0}},"ID":"{CONTAINER}","Created":"2021-06-01T10:00:00.000000000Z","Path":"/bin/sh","Args":[],"Config":{{"Hostname":"c0ffee00c0ff","Image":"demo"}},"Image":"sha256:{image_id}","LogPath":"","Name":"/web","RestartCount":0,"Driver":"aufs","OS":"linux","MountLabel":"","ProcessLabel":"","MountPoints":{{}}}}"#
    );
    write(
        &root
            .join("containers")
            .join(CONTAINER)
            .join("config.v2.json"),
        &config_text,
    );
    write(
        &root
            .join("containers")
            .join(CONTAINER)
            .join("hostconfig.json"),
        r#"{"Binds":null,"NetworkMode":"none"}"#,
    );

    // What aufs shows: the same tars applied one after the other, naively.
    let expected_image = base.join("expected-image");
    let expected_container = base.join("expected-container");
    for dir in [&expected_image, &expected_container] {
        fs::create_dir(dir).unwrap();
        for layer in &layers {
            apply_naive(dir, &layer.tar);
        }
    }
    apply_naive(&expected_container, &init_tar());
    apply_naive(&expected_container, &rw_tar());
    fs::remove_file(expected_container.join("bin/sh")).unwrap();

    Fixture {
        root,
        layers,
        mount_id,
        init_id,
        expected_image,
        expected_container,
        config_text,
        pid_file: base.join("docker.pid"),
    }
}

impl Fixture {
    fn options(&self) -> MigrateOptions {
        MigrateOptions {
            pid_file: self.pid_file.clone(),
            ..MigrateOptions::default()
        }
    }

    fn crash_at(&self, point: CrashPoint) -> MigrateOptions {
        MigrateOptions {
            crash_at: Some(point),
            ..self.options()
        }
    }

    /// Driver ids in the order the migration converts them.
    fn all_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.layers.iter().map(|l| l.cache_id.clone()).collect();
        ids.push(self.init_id.clone());
        ids.push(self.mount_id.clone());
        ids
    }
}

// ---------------------------------------------------------------- listings

/// Everything observable of a tree, by relative path: type, mode, owner,
/// content, link target, device, xattrs (overlay's own excluded), file
/// mtimes, and which visible names share an inode.
fn listing(dir: &Path, with_dir_times: bool) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .sort_by_file_name()
        .same_file_system(true)
    {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(dir).unwrap().to_path_buf();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        let kind = meta.file_type();
        let mut text = format!(
            "mode={:o} uid={} gid={}",
            meta.mode(),
            meta.uid(),
            meta.gid()
        );
        if kind.is_file() {
            let data = fs::read(entry.path()).unwrap();
            text.push_str(&format!(
                " sha={}",
                &hex::encode(Sha256::digest(&data))[..16]
            ));
        } else if kind.is_symlink() {
            text.push_str(&format!(
                " -> {}",
                fs::read_link(entry.path()).unwrap().display()
            ));
        } else if kind.is_char_device() || kind.is_block_device() {
            text.push_str(&format!(" rdev={}", meta.rdev()));
        }
        if !kind.is_dir() || with_dir_times {
            text.push_str(&format!(" mtime={}.{}", meta.mtime(), meta.mtime_nsec()));
        }
        let mut names = xattr::llist(entry.path()).unwrap();
        names.sort();
        for name in names {
            let name_text = name.to_string_lossy();
            let value = xattr::lget(entry.path(), &name)
                .unwrap()
                .unwrap_or_default();
            text.push_str(&format!(" {name_text}={}", String::from_utf8_lossy(&value)));
        }
        if !kind.is_dir() {
            let first = inodes
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| rel.clone());
            if *first != rel {
                text.push_str(&format!(" same-inode-as={}", first.display()));
            }
        }
        out.insert(rel, text);
    }
    out
}

fn assert_same_tree(actual: &Path, expected: &Path) {
    let actual = listing(actual, false);
    let expected = listing(expected, false);
    for (path, want) in &expected {
        assert_eq!(actual.get(path), Some(want), "entry {}", path.display());
    }
    for path in actual.keys() {
        assert!(
            expected.contains_key(path),
            "unexpected entry {}",
            path.display()
        );
    }
}

/// Every byte of every file under `dir`.
fn file_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn scratch(test: &str) -> Option<ScratchFs> {
    testkit::require_root(test).then(|| ScratchFs::new(FsKind::Ext4, 256 << 20).unwrap())
}

// ---------------------------------------------------------------- checks

/// Everything a finished migration must show.
fn verify_migrated(fx: &Fixture, layerdb_before: &BTreeMap<PathBuf, Vec<u8>>) {
    let root = &fx.root;
    assert!(!root.join("aufs").exists(), "aufs/ is removed once emptied");
    assert!(!root.join("image/aufs").exists());
    assert!(!root.join(".layerscope-migrate.lock").exists());
    assert_eq!(Journal::load(root).unwrap().unwrap().phase, Phase::Complete);

    // layerdb and imagedb: byte for byte.
    assert_same_files(&file_bytes(&root.join("image/overlay2")), layerdb_before);

    // Docker's overlay2 layout.
    let home = root.join("overlay2");
    let ids = fx.all_ids();
    let link = |id: &str| fs::read_to_string(home.join(id).join("link")).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let dir = home.join(id);
        assert!(dir.join("diff").is_dir(), "{id}/diff");
        assert!(!home.join(format!("{id}.migrating")).exists());
        let l = link(id);
        assert_eq!(l.len(), 26);
        assert_eq!(
            fs::read_link(home.join("l").join(&l)).unwrap(),
            Path::new("..").join(id).join("diff")
        );
        let lower: Vec<String> = ids[..i]
            .iter()
            .rev()
            .map(|p| format!("l/{}", link(p)))
            .collect();
        if i == 0 {
            assert!(!dir.join("lower").exists() && !dir.join("work").exists());
        } else {
            assert_eq!(
                fs::read_to_string(dir.join("lower")).unwrap(),
                lower.join(":")
            );
            assert!(dir.join("work").is_dir());
        }
        assert_eq!(
            dir.join("committed").exists(),
            i + 1 < ids.len(),
            "{id}: committed iff it has a child"
        );
        for entry in walkdir::WalkDir::new(dir.join("diff")) {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy();
            assert!(
                !name.starts_with(".wh."),
                "marker left: {}",
                entry.path().display()
            );
        }
    }
    let whiteout = |path: PathBuf| {
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(
            meta.file_type().is_char_device() && meta.rdev() == 0,
            "{}",
            path.display()
        );
    };
    whiteout(home.join(&ids[1]).join("diff/etc/removed"));
    whiteout(home.join(&ids[2]).join("diff/dirgone"));
    whiteout(home.join(&fx.mount_id).join("diff/etc/added"));
    whiteout(home.join(&fx.mount_id).join("diff/bin/sh"));
    for opaque in [
        home.join(&ids[2]).join("diff/etc/conf.d"),
        home.join(&fx.mount_id).join("diff/usr"),
    ] {
        assert_eq!(
            xattr::lget(&opaque, "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..]),
            "{}",
            opaque.display()
        );
    }

    // The container's config names overlay2, nothing else changed.
    let config = fs::read_to_string(
        root.join("containers")
            .join(CONTAINER)
            .join("config.v2.json"),
    )
    .unwrap();
    assert_eq!(
        config,
        fx.config_text
            .replace(r#""Driver":"aufs""#, r#""Driver":"overlay2""#)
    );

    // The real overlay2 driver mounts what aufs showed.
    let driver = Overlay2::open(&home, &DriverOptions::default()).unwrap();
    let unmount_all = UnmountAll(&driver);
    let top = &fx.layers.last().unwrap().cache_id;
    let merged = driver.get(top).unwrap();
    assert_same_tree(&merged, &fx.expected_image);
    driver.put(top).unwrap();
    let merged = driver.get(&fx.mount_id).unwrap();
    assert_same_tree(&merged, &fx.expected_container);
    fs::write(merged.join("tmp/written-after"), b"rw").unwrap();
    driver.put(&fx.mount_id).unwrap();
    assert!(
        home.join(&fx.mount_id)
            .join("diff/tmp/written-after")
            .is_file()
    );

    drop(unmount_all);

    // The layer store exports each image layer as its original tar.
    let store = LayerStore::open(root, Box::new(driver)).unwrap();
    for layer in &fx.layers {
        let info = store.get(&layer.chain_id).unwrap();
        assert_eq!(info.cache_id, layer.cache_id);
        assert_eq!(info.diff_id, layer.diff_id);
        let mut out = Vec::new();
        store.export(&layer.chain_id, &mut out).unwrap();
        assert!(
            out == layer.tar,
            "layer {} exports its original tar",
            layer.chain_id
        );
    }
    let rw = store.rw_layer(CONTAINER).unwrap();
    assert_eq!(rw.mount_id, fx.mount_id);
    assert_eq!(rw.init_id.as_deref(), Some(fx.init_id.as_str()));
    // The store added its lock and tmp/; later checks compare Docker's files.
    drop(store);
    let layerdb = root.join("image/overlay2/layerdb");
    fs::remove_file(layerdb.join("lock")).unwrap();
    fs::remove_dir(layerdb.join("tmp")).unwrap();
}

/// Unmounts whatever a failed check left mounted under the driver's home.
struct UnmountAll<'a>(&'a Overlay2);

impl Drop for UnmountAll<'_> {
    fn drop(&mut self) {
        let _ = self.0.cleanup();
    }
}

fn assert_same_files(actual: &BTreeMap<PathBuf, Vec<u8>>, expected: &BTreeMap<PathBuf, Vec<u8>>) {
    let differ: Vec<&PathBuf> = actual
        .keys()
        .chain(expected.keys())
        .filter(|k| actual.get(*k) != expected.get(*k))
        .collect();
    assert!(differ.is_empty(), "files differ: {differ:?}");
}

// ---------------------------------------------------------------- tests

#[test]
fn migrates_in_place_and_overlay2_shows_the_aufs_view() {
    let Some(fs) = scratch("migrates_in_place_and_overlay2_shows_the_aufs_view") else {
        return;
    };
    let fx = build_fixture(fs.path());
    let layerdb_before = file_bytes(&fx.root.join("image/aufs"));
    // Renames, not copies: the files keep their inodes.
    let tool_ino = fs::metadata(
        fx.root
            .join("aufs/diff")
            .join(&fx.layers[0].cache_id)
            .join("bin/tool"),
    )
    .unwrap()
    .ino();

    let outcome = migrate::aufs_to_overlay2(&fx.root, &fx.options()).unwrap();
    assert_eq!(outcome.converted, 5);
    assert_eq!(outcome.containers_updated, 1);
    assert_eq!(outcome.markers.whiteouts, 4);
    assert_eq!(outcome.markers.opaque_dirs, 2);
    assert_eq!(outcome.markers.internal, 3);
    assert_eq!(outcome.markers.conflicts, 0);
    assert!(outcome.leftovers.is_empty(), "{:?}", outcome.leftovers);
    let moved = fx
        .root
        .join("overlay2")
        .join(&fx.layers[0].cache_id)
        .join("diff/bin/tool");
    assert_eq!(fs::metadata(moved).unwrap().ino(), tool_ino);

    verify_migrated(&fx, &layerdb_before);

    // Running it again is a no-op that says so.
    let again = migrate::aufs_to_overlay2(&fx.root, &fx.options()).unwrap();
    assert!(again.already_complete);
    assert_eq!(again.converted, 0);

    // And back: overlay2-to-aufs restores Docker's aufs layout (markers,
    // parent lists), then forward again gives the same result.
    fs::remove_file(
        fx.root
            .join("overlay2")
            .join(&fx.mount_id)
            .join("diff/tmp/written-after"),
    )
    .unwrap();
    let back = migrate::reverse::overlay2_to_aufs(&fx.root, &fx.options()).unwrap();
    assert_eq!(back.converted, 5);
    assert_eq!(back.markers.whiteouts, 4);
    assert_eq!(back.markers.opaque_dirs, 2);
    assert!(!fx.root.join("overlay2").exists() && !fx.root.join("image/overlay2").exists());
    assert_same_files(&file_bytes(&fx.root.join("image/aufs")), &layerdb_before);
    let ids = fx.all_ids();
    for (i, id) in ids.iter().enumerate() {
        let parents: String = ids[..i].iter().rev().map(|p| format!("{p}\n")).collect();
        assert_eq!(
            fs::read_to_string(fx.root.join("aufs/layers").join(id)).unwrap(),
            parents
        );
        assert!(fx.root.join("aufs/mnt").join(id).is_dir());
    }
    let rw = fx.root.join("aufs/diff").join(&fx.mount_id);
    assert!(rw.join("bin/.wh.sh").is_file() && !rw.join("bin/sh").exists());
    assert!(rw.join("usr/.wh..wh..opq").is_file());
    assert!(
        fs::read_to_string(
            fx.root
                .join("containers")
                .join(CONTAINER)
                .join("config.v2.json")
        )
        .unwrap()
            == fx.config_text
    );
    let forward = migrate::aufs_to_overlay2(&fx.root, &fx.options()).unwrap();
    assert_eq!(forward.converted, 5);
    verify_migrated(&fx, &layerdb_before);
}

#[test]
fn resumes_after_a_crash_at_any_step() {
    let Some(fs) = scratch("resumes_after_a_crash_at_any_step") else {
        return;
    };
    let crashes: &[&[CrashPoint]] = &[
        &[CrashPoint::AfterLayers(2)],
        &[CrashPoint::AfterMove(1), CrashPoint::AfterWhiteouts(1)],
        &[CrashPoint::AfterWhiteouts(4)],
        &[
            CrashPoint::AfterMove(0),
            CrashPoint::AfterLayers(4),
            CrashPoint::AfterLayerdb,
        ],
    ];
    for (n, points) in crashes.iter().enumerate() {
        let base = fs.path().join(format!("case{n}"));
        fs::create_dir(&base).unwrap();
        let fx = build_fixture(&base);
        let layerdb_before = file_bytes(&fx.root.join("image/aufs"));
        for point in *points {
            let err = migrate::aufs_to_overlay2(&fx.root, &fx.crash_at(*point)).unwrap_err();
            assert!(matches!(err, MigrateError::Interrupted { .. }), "{err}");
            assert!(fx.root.join(JOURNAL_FILE).is_file());
            if let CrashPoint::AfterMove(i) = point {
                let id = &fx.all_ids()[*i];
                assert!(!fx.root.join("aufs/diff").join(id).exists());
                let staged = fx
                    .root
                    .join("overlay2")
                    .join(format!("{id}.migrating/diff"));
                assert!(staged.is_dir(), "data tracked in {}", staged.display());
            }
            let plan = migrate::plan(&fx.root, &fx.pid_file).unwrap();
            assert!(plan.resumed);
        }
        if n == 1 {
            // A kill inside the whiteout walk: the device made, its marker
            // not yet removed.
            let id = &fx.all_ids()[1];
            let staged = fx
                .root
                .join("overlay2")
                .join(format!("{id}.migrating/diff"));
            if staged.join("etc/.wh.removed").exists() {
                nix::sys::stat::mknod(
                    &staged.join("etc/removed"),
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .unwrap();
            }
        }
        let outcome = migrate::aufs_to_overlay2(&fx.root, &fx.options()).unwrap();
        assert!(!outcome.already_complete);
        verify_migrated(&fx, &layerdb_before);
    }
}

#[test]
fn dry_run_reports_the_plan_and_changes_nothing() {
    let Some(fs) = scratch("dry_run_reports_the_plan_and_changes_nothing") else {
        return;
    };
    let fx = build_fixture(fs.path());
    let before = listing(fs.path(), true);
    let outcome = migrate::aufs_to_overlay2(
        &fx.root,
        &MigrateOptions {
            dry_run: true,
            ..fx.options()
        },
    )
    .unwrap();
    assert_eq!(listing(fs.path(), true), before, "dry run changed the disk");

    let plan = &outcome.plan;
    assert!(outcome.dry_run && !plan.resumed && plan.blocker.is_none());
    let ids: Vec<&str> = plan.layers.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, fx.all_ids());
    assert_eq!(plan.totals.layers, 5);
    assert_eq!(plan.totals.image_layers, 3);
    assert_eq!(plan.totals.container_layers, 2);
    assert_eq!(plan.totals.containers, 1);
    assert_eq!(plan.containers[0].name, "web");
    assert_eq!(plan.totals.markers.whiteouts, 4);
    assert_eq!(plan.totals.markers.opaque_dirs, 2);
    assert_eq!(plan.totals.markers.internal, 3);
    let bytes: u64 = fx
        .all_ids()
        .iter()
        .map(|id| {
            storage_core::fsutil::directory_size(&fx.root.join("aufs/diff").join(id)).unwrap()
        })
        .sum();
    assert_eq!(plan.totals.bytes, bytes);
    assert!(matches!(
        plan.layers[4].kind,
        migrate::LayerKind::Rw { ref container } if container == CONTAINER
    ));

    // A dry run of an interrupted migration changes nothing either.
    migrate::aufs_to_overlay2(&fx.root, &fx.crash_at(CrashPoint::AfterMove(2))).unwrap_err();
    let before = listing(fs.path(), true);
    let outcome = migrate::aufs_to_overlay2(
        &fx.root,
        &MigrateOptions {
            dry_run: true,
            ..fx.options()
        },
    )
    .unwrap();
    assert_eq!(listing(fs.path(), true), before);
    assert!(outcome.plan.resumed);
    assert_eq!(outcome.plan.totals.layers_to_convert, 3);
}

#[test]
fn refuses_while_mounted_or_dockerd_runs_and_changes_nothing() {
    let Some(fs) = scratch("refuses_while_mounted_or_dockerd_runs_and_changes_nothing") else {
        return;
    };
    let fx = build_fixture(fs.path());
    let before = listing(fs.path(), true);

    let mnt = fx.root.join("aufs/mnt").join(&fx.mount_id);
    let guard = MountGuard::mount("tmpfs", &mnt, "tmpfs", MountFlags::empty(), None).unwrap();
    let err = migrate::aufs_to_overlay2(&fx.root, &fx.options()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MigrateError::Refused { .. }), "{text}");
    assert!(
        text.contains(&format!("{} is mounted", mnt.display())),
        "{text}"
    );
    assert!(!text.contains('\n'));
    let dry = migrate::aufs_to_overlay2(
        &fx.root,
        &MigrateOptions {
            dry_run: true,
            ..fx.options()
        },
    )
    .unwrap();
    assert!(dry.plan.blocker.is_some(), "the dry run names the blocker");
    guard.unmount().unwrap();
    assert_eq!(listing(fs.path(), true), before);

    fs::write(&fx.pid_file, format!("{}\n", std::process::id())).unwrap();
    let before = listing(fs.path(), true);
    let err = migrate::aufs_to_overlay2(&fx.root, &fx.options()).unwrap_err();
    assert!(err.to_string().contains("dockerd is running"), "{err}");
    assert_eq!(listing(fs.path(), true), before);
    fs::remove_file(&fx.pid_file).unwrap();

    // An overlay2 image store in the way.
    fs::create_dir_all(fx.root.join("image/overlay2")).unwrap();
    let before = listing(fs.path(), true);
    let err = migrate::aufs_to_overlay2(&fx.root, &fx.options()).unwrap_err();
    assert!(
        err.to_string().contains("image/overlay2 already exists"),
        "{err}"
    );
    assert_eq!(listing(fs.path(), true), before);
}
