//! One conformance suite for every storage driver (like moby's graphtest):
//! the same scenario runs on each driver of [`CASES`] available here, on
//! its own loop-backed filesystem, and must give the same results:
//! three layers applied through the `LayerStore` (adds, changes,
//! deletions, an opaque dir), a container written to, `changes` as
//! `docker diff` lists them, `commit` then `export` with the same entries,
//! the same `ContainerStore::size`, nothing left on disk or mounted after
//! removal, and layers that round-trip from one driver to another. A
//! driver is added with one line in [`CASES`].
//!
//! `LAYERSCOPE_CONFORMANCE_CASES=devicemapper,overlay2-ext4` restricts the
//! scenario to those cases, and then each of them must run (no skip): the
//! guest kernel of `cargo xtask vm-test conformance` has dm-thin but no
//! FUSE. Unset, every case runs that the kernel can host.

#[path = "conformance/support.rs"]
mod support;

use std::fs;
use std::io::Write;
use std::path::Path;

use storage_core::container::ContainerStore;
use storage_core::driver::{self, DriverError, DriverOptions};
use storage_core::layer::LayerStore;
use support::{LayerTar, Node};
use testkit::{FsKind, ScratchFs};

/// How a driver lists changes, as Docker does: a walk of the layer's own
/// diff dir (overlay2, aufs: moby's `archive.Changes`, parents of added and
/// deleted paths listed) or a comparison of full trees (vfs, btrfs,
/// devicemapper: moby's `ChangesDirs`, every ancestor of a change listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiffStyle {
    Walk,
    Naive,
}

/// A driver on a filesystem, with its `--storage-opt`s.
struct Case {
    name: &'static str,
    driver: &'static str,
    fs: FsKind,
    options: &'static [(&'static str, &'static str)],
    diff: DiffStyle,
}

/// Every driver the suite runs, one line each. A driver the kernel cannot
/// host (devicemapper without dm-thin) is skipped with one line.
#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "overlay2-ext4", driver: "overlay2", fs: FsKind::Ext4, options: &[], diff: DiffStyle::Walk },
    Case { name: "overlay2-xfs", driver: "overlay2", fs: FsKind::Xfs { reflink: true }, options: &[], diff: DiffStyle::Walk },
    Case { name: "vfs-ext4", driver: "vfs", fs: FsKind::Ext4, options: &[], diff: DiffStyle::Naive },
    Case { name: "vfs-xfs-reflink", driver: "vfs", fs: FsKind::Xfs { reflink: true }, options: &[], diff: DiffStyle::Naive },
    Case { name: "btrfs", driver: "btrfs", fs: FsKind::Btrfs, options: &[], diff: DiffStyle::Naive },
    Case { name: "devicemapper", driver: "devicemapper", fs: FsKind::Ext4, options: &[], diff: DiffStyle::Naive },
    Case { name: "aufs-ext4", driver: "aufs", fs: FsKind::Ext4, options: &[], diff: DiffStyle::Walk },
];

const FS_BYTES: u64 = 512 << 20;

const CASES_ENV: &str = "LAYERSCOPE_CONFORMANCE_CASES";

/// The cases to run and whether each is required to run (named in
/// [`CASES_ENV`]) rather than skipped when the kernel cannot host it.
fn selected_cases() -> (Vec<&'static Case>, bool) {
    let Ok(list) = std::env::var(CASES_ENV) else {
        return (CASES.iter().collect(), false);
    };
    let mut selected = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let case = CASES.iter().find(|c| c.name == name).unwrap_or_else(|| {
            let known: Vec<&str> = CASES.iter().map(|c| c.name).collect();
            panic!("{CASES_ENV}: unknown case {name:?} (known: {known:?})")
        });
        selected.push(case);
    }
    assert!(!selected.is_empty(), "{CASES_ENV} names no case");
    (selected, true)
}

/// What a driver keeps in its home when every layer is gone: the
/// devicemapper pool's loop files and its base device (Docker's too).
fn driver_state(case: &Case) -> &'static [&'static str] {
    match case.driver {
        "devicemapper" => &[
            "devicemapper/data",
            "devicemapper/metadata",
            "metadata/base",
            "metadata/deviceset-metadata",
            "metadata/transaction-metadata",
        ],
        _ => &[],
    }
}

fn options(case: &Case) -> DriverOptions {
    let mut opts = DriverOptions::default();
    for (k, v) in case.options {
        opts.storage_opt.insert(k.to_string(), v.to_string());
    }
    opts
}

/// The three image layers: base; changes, a deletion and an opaque dir;
/// a deletion, an add and a chmod.
fn image_layers() -> Vec<Vec<u8>> {
    let lib = vec![7u8; 10 * 1024];
    let base = LayerTar::default()
        .dir("bin/", 0o755)
        .file("bin/sh", 0o755, b"#!/bin/sh\n")
        .symlink("bin/link", "sh")
        .dir("etc/", 0o755)
        .file_with(
            "etc/passwd",
            0o644,
            b"root:x:0:0::/root:/bin/sh\n",
            &[("user.layerscope", b"1")],
        )
        .file("etc/shadow", 0o600, b"root:*:1::::::\n")
        .owned_dir("home/", 0o755, 0, 0)
        .owned_dir("home/user/", 0o750, 1000, 1000)
        .dir("opt/", 0o755)
        .dir("opt/old/", 0o755)
        .file("opt/old/x", 0o644, b"x")
        .file("opt/old/y", 0o644, b"y")
        .dir("run/", 0o755)
        .fifo("run/fifo", 0o600)
        .dir("srv/", 0o755)
        .dir("srv/www/", 0o755)
        .dir("tmp/", 0o1777)
        .dir("usr/", 0o755)
        .dir("usr/lib/", 0o755)
        .file("usr/lib/a.so", 0o644, &lib)
        .hardlink("usr/lib/hard", "usr/lib/a.so")
        .dir("usr/share/", 0o755)
        .dir("var/", 0o755)
        .dir("var/lib/", 0o755)
        .dir("var/lib/app/", 0o755)
        .file("var/lib/app/data", 0o644, b"data1")
        .file("var/lib/app/keep", 0o644, b"keep")
        .finish();
    let second = LayerTar::default()
        .dir("etc/", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\n")
        .dir("opt/old/", 0o755)
        .opaque("opt/old/")
        .file("opt/old/z", 0o644, b"z")
        .dir("usr/share/doc/", 0o755)
        .file("usr/share/doc/readme", 0o644, b"read me")
        .dir("var/lib/app/", 0o755)
        .whiteout("var/lib/app/", "data")
        .finish();
    let third = LayerTar::default()
        .dir("bin/", 0o755)
        .whiteout("bin/", "link")
        .dir("etc/", 0o755)
        .file("etc/shadow", 0o640, b"root:*:1::::::\n")
        .dir("srv/www/", 0o755)
        .file("srv/www/index.html", 0o644, b"<html></html>\n")
        .finish();
    vec![base, second, third]
}

/// What the container does: add, modify, delete and rename files.
fn write_container(root: &Path) -> std::io::Result<()> {
    fs::write(root.join("srv/www/new.txt"), b"hello")?;
    let mut group = fs::OpenOptions::new()
        .append(true)
        .open(root.join("etc/group"))?;
    group.write_all(b"user:x:1000:\n")?;
    drop(group);
    fs::remove_file(root.join("etc/shadow"))?;
    fs::remove_file(root.join("usr/share/doc/readme"))?;
    fs::rename(root.join("var/lib/app/keep"), root.join("var/lib/app/kept"))?;
    fs::create_dir(root.join("data"))?;
    fs::write(root.join("data/f"), vec![1u8; 4096])?;
    Ok(())
}

/// `docker diff` of the container on every driver.
const EXPECTED_CHANGES: &[&str] = &[
    "A /data",
    "A /data/f",
    "C /etc",
    "C /etc/group",
    "D /etc/shadow",
    "C /srv/www",
    "A /srv/www/new.txt",
    "C /usr/share/doc",
    "D /usr/share/doc/readme",
    "C /var/lib/app",
    "D /var/lib/app/keep",
    "A /var/lib/app/kept",
];

/// The unchanged ancestors of changes a naive diff adds (moby's
/// `addChanges`: "If there were changes inside this directory, we need to
/// add it"); a walking diff lists only the direct parents.
const NAIVE_ANCESTORS: &[&str] = &["C /srv", "C /usr", "C /usr/share", "C /var", "C /var/lib"];

fn expected_changes(style: DiffStyle) -> Vec<String> {
    let mut all: Vec<&str> = EXPECTED_CHANGES.to_vec();
    if style == DiffStyle::Naive {
        all.extend(NAIVE_ANCESTORS);
    }
    all.sort_by_key(|c| c[2..].to_string());
    all.into_iter().map(str::to_string).collect()
}

/// Bytes the container added: new.txt, group (rewritten), kept, data/f.
const EXPECTED_SIZE_RW: u64 = 5 + 23 + 4 + 4096;

/// What one driver produced.
struct Outcome {
    chain_ids: Vec<String>,
    layer_sizes: Vec<u64>,
    /// The image layers as `LayerStore::export` wrote them.
    exports: Vec<Vec<u8>>,
    image_tree: Vec<Node>,
    changes: Vec<String>,
    size_rw: u64,
    size_root_fs: u64,
    commit_entries: Vec<Node>,
    commit_export: Vec<u8>,
    committed_tree: Vec<Node>,
}

fn check<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e}"))
}

/// Opens the case's driver on `fs`; `Ok(None)` (after the skip line) when
/// the kernel lacks what the driver needs.
fn open_store(case: &Case, fs: &ScratchFs) -> Result<Option<LayerStore>, String> {
    let root = fs.path().join("root");
    match driver::open(case.driver, &root, &options(case)) {
        Ok(driver) => Ok(Some(check(
            LayerStore::open(&root, driver),
            "open layer store",
        )?)),
        Err(DriverError::Unavailable { why, .. }) if why.contains("kernel") => {
            testkit::feature_available(false, case.driver, why);
            Ok(None)
        }
        Err(e) => Err(format!("open driver: {e}")),
    }
}

/// The tree of the layer `cache_id`, read through the driver.
fn layer_tree(store: &LayerStore, cache_id: &str) -> Result<Vec<Node>, String> {
    let root = check(store.driver().get(cache_id), "get")?;
    let nodes = support::tree(&root);
    check(store.driver().put(cache_id), "put")?;
    Ok(nodes)
}

fn run_scenario(case: &Case, fs: &ScratchFs) -> Result<Option<Outcome>, String> {
    let Some(store) = open_store(case, fs)? else {
        return Ok(None);
    };
    let root = fs.path().join("root");
    let mut parent: Option<String> = None;
    let mut chain_ids = Vec::new();
    let mut layer_sizes = Vec::new();
    for (i, tar) in image_layers().into_iter().enumerate() {
        let info = check(
            store.apply(&tar[..], parent.as_deref()),
            &format!("apply layer {}", i + 1),
        )?;
        if info.diff_id != support::digest(&tar) {
            return Err(format!(
                "layer {}: diff-id {} is not the tar's sha256",
                i + 1,
                info.diff_id
            ));
        }
        chain_ids.push(info.chain_id.clone());
        layer_sizes.push(info.size);
        parent = Some(info.chain_id);
    }
    let top = store.get(chain_ids.last().unwrap()).unwrap();
    let image_tree = layer_tree(&store, &top.cache_id)?;
    let mut exports = Vec::new();
    for id in &chain_ids {
        let mut out = Vec::new();
        check(store.export(id, &mut out), "export image layer")?;
        exports.push(out);
    }

    let containers = check(ContainerStore::open(&root, &store), "open container store")?;
    let ctr = check(
        containers.create("ctr", "test-image", parent.as_deref()),
        "create container",
    )?;
    let mounted = check(containers.mount(&ctr), "mount container")?;
    let written = write_container(&mounted);
    check(containers.unmount(&ctr), "unmount container")?;
    check(written, "write in the container")?;

    let changes = check(containers.changes(&ctr), "changes")?
        .iter()
        .map(|c| c.to_string())
        .collect();
    let size = check(containers.size(&ctr), "size")?;
    let committed = check(containers.commit(&ctr), "commit")?;
    let mut commit_export = Vec::new();
    check(
        store.export(&committed.chain_id, &mut commit_export),
        "export commit",
    )?;
    if support::digest(&commit_export) != committed.diff_id {
        return Err("export of the commit does not hash to its diff-id".into());
    }
    let committed_tree = layer_tree(&store, &committed.cache_id)?;

    // Remove everything: nothing may be left on disk or mounted.
    check(containers.remove(&ctr), "remove container")?;
    check(store.remove(&committed.chain_id), "remove committed layer")?;
    for id in chain_ids.iter().rev() {
        check(store.remove(id), "remove image layer")?;
    }
    check(store.driver().cleanup(), "cleanup")?;
    let left = support::leftovers_beyond(store.driver().home(), driver_state(case));
    if !left.is_empty() {
        return Err(format!("left in the driver home after removal: {left:?}"));
    }
    let mounts = support::mounts_below(fs.path());
    if !mounts.is_empty() {
        return Err(format!("still mounted after removal: {mounts:?}"));
    }
    Ok(Some(Outcome {
        chain_ids,
        layer_sizes,
        exports,
        image_tree,
        changes,
        size_rw: size.size_rw,
        size_root_fs: size.size_root_fs,
        commit_entries: support::tar_entries(&commit_export),
        commit_export,
        committed_tree,
    }))
}

/// Chain-ids, image tree and committed tree of an import.
type Imported = (Vec<String>, Vec<Node>, Vec<Node>);

/// Applies `layers` (then `commit` on top) on a fresh store of `case`;
/// returns the chain-ids, the image tree and the committed tree.
fn import(case: &Case, layers: &[Vec<u8>], commit: &[u8]) -> Result<Option<Imported>, String> {
    let fs = check(ScratchFs::new(case.fs, FS_BYTES), "scratch filesystem")?;
    let Some(store) = open_store(case, &fs)? else {
        return Ok(None);
    };
    let mut parent: Option<String> = None;
    let mut chain_ids = Vec::new();
    for tar in layers {
        let info = check(
            store.apply(&tar[..], parent.as_deref()),
            "apply exported layer",
        )?;
        chain_ids.push(info.chain_id.clone());
        parent = Some(info.chain_id);
    }
    let image = store.get(parent.as_deref().unwrap()).unwrap();
    let image_tree = layer_tree(&store, &image.cache_id)?;
    let info = check(
        store.apply(commit, parent.as_deref()),
        "apply exported commit",
    )?;
    let committed_tree = layer_tree(&store, &info.cache_id)?;
    check(store.remove(&info.chain_id), "remove")?;
    for id in chain_ids.iter().rev() {
        check(store.remove(id), "remove")?;
    }
    check(store.driver().cleanup(), "cleanup")?;
    Ok(Some((chain_ids, image_tree, committed_tree)))
}

fn diff_nodes(a: &[Node], b: &[Node]) -> String {
    let a_only: Vec<String> = a
        .iter()
        .filter(|n| !b.contains(n))
        .map(|n| n.to_string())
        .collect();
    let b_only: Vec<String> = b
        .iter()
        .filter(|n| !a.contains(n))
        .map(|n| n.to_string())
        .collect();
    format!("only in first: {a_only:#?}\nonly in second: {b_only:#?}")
}

#[test]
fn every_driver_gives_the_same_results() {
    testkit::require_root!();
    let mut failures: Vec<String> = Vec::new();
    let mut outcomes: Vec<(&Case, Outcome)> = Vec::new();
    let (cases, required) = selected_cases();
    for case in cases {
        let fs = match ScratchFs::new(case.fs, FS_BYTES) {
            Ok(fs) => fs,
            Err(e) => {
                failures.push(format!("{}: scratch filesystem: {e}", case.name));
                continue;
            }
        };
        match run_scenario(case, &fs) {
            Ok(Some(outcome)) => outcomes.push((case, outcome)),
            Ok(None) if required => failures.push(format!(
                "{}: named in {CASES_ENV} but skipped (see the line above)",
                case.name
            )),
            Ok(None) => {}
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }

    for (case, o) in &outcomes {
        let expected = expected_changes(case.diff);
        if o.changes != expected {
            failures.push(format!(
                "{}: changes {:#?}, want {expected:#?}",
                case.name, o.changes
            ));
        }
        if o.size_rw != EXPECTED_SIZE_RW {
            failures.push(format!(
                "{}: size_rw {}, want {EXPECTED_SIZE_RW}",
                case.name, o.size_rw
            ));
        }
        if o.size_root_fs != o.size_rw + o.layer_sizes.iter().sum::<u64>() {
            failures.push(format!(
                "{}: size_root_fs {} is not rw + layers",
                case.name, o.size_root_fs
            ));
        }
        let commit_paths: Vec<(&str, char)> = o
            .commit_entries
            .iter()
            .map(|n| (n.path.as_str(), n.kind))
            .collect();
        for want in [
            ("etc/.wh.shadow", 'f'),
            ("var/lib/app/.wh.keep", 'f'),
            ("var/lib/app/kept", 'f'),
            ("data/f", 'f'),
        ] {
            if !commit_paths.contains(&want) {
                failures.push(format!(
                    "{}: commit export lacks {want:?}: {commit_paths:?}",
                    case.name
                ));
            }
        }
    }
    // Every driver against the first one.
    if let Some(((first_case, first), rest)) = outcomes.split_first() {
        for (case, o) in rest {
            let pair = format!("{} vs {}", first_case.name, case.name);
            if o.chain_ids != first.chain_ids {
                failures.push(format!("{pair}: chain-ids differ"));
            }
            if o.layer_sizes != first.layer_sizes {
                failures.push(format!(
                    "{pair}: layer sizes {:?} vs {:?}",
                    first.layer_sizes, o.layer_sizes
                ));
            }
            if o.exports != first.exports {
                failures.push(format!("{pair}: exported image layers differ"));
            }
            if o.image_tree != first.image_tree {
                failures.push(format!(
                    "{pair}: image trees differ\n{}",
                    diff_nodes(&first.image_tree, &o.image_tree)
                ));
            }
            if o.commit_entries != first.commit_entries {
                failures.push(format!(
                    "{pair}: commit exports differ\n{}",
                    diff_nodes(&first.commit_entries, &o.commit_entries)
                ));
            }
            if o.committed_tree != first.committed_tree {
                failures.push(format!(
                    "{pair}: committed trees differ\n{}",
                    diff_nodes(&first.committed_tree, &o.committed_tree)
                ));
            }
            if (o.size_rw, o.size_root_fs) != (first.size_rw, first.size_root_fs) {
                failures.push(format!("{pair}: sizes differ"));
            }
        }
    }
    // Round trip: what driver i exported, driver i+1 imports.
    for (i, (from_case, from)) in outcomes.iter().enumerate() {
        if outcomes.len() < 2 {
            break;
        }
        let (to_case, to) = &outcomes[(i + 1) % outcomes.len()];
        let pair = format!("{} -> {}", from_case.name, to_case.name);
        match import(to_case, &from.exports, &from.commit_export) {
            Ok(Some((chain_ids, image_tree, committed_tree))) => {
                if chain_ids != from.chain_ids {
                    failures.push(format!("{pair}: chain-ids after import differ"));
                }
                if image_tree != to.image_tree {
                    failures.push(format!(
                        "{pair}: imported image tree differs\n{}",
                        diff_nodes(&to.image_tree, &image_tree)
                    ));
                }
                if committed_tree != from.committed_tree {
                    failures.push(format!(
                        "{pair}: imported commit tree differs\n{}",
                        diff_nodes(&from.committed_tree, &committed_tree)
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => failures.push(format!("{pair}: {e}")),
        }
    }
    let ran: Vec<&str> = outcomes.iter().map(|(c, _)| c.name).collect();
    println!("conformance ran on: {ran:?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_driver_refuses_a_filesystem_that_cannot_host_it() {
    testkit::require_root!();
    let fs = ScratchFs::new(FsKind::Ext4, FsKind::Ext4.small_size()).unwrap();
    let root = fs.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let err = driver::open("btrfs", &root, &DriverOptions::default())
        .err()
        .expect("btrfs on ext4 must fail");
    let line = err.to_string();
    assert_eq!(
        line,
        format!(
            "driver btrfs unavailable: {} is on ext4, not btrfs",
            root.join("btrfs").display()
        )
    );
    assert!(!root.join("btrfs").exists(), "nothing created on refusal");
}

#[test]
fn unknown_options_are_refused_in_one_line() {
    testkit::require_root!();
    let fs = ScratchFs::new(FsKind::Ext4, FsKind::Ext4.small_size()).unwrap();
    for name in ["vfs", "overlay2"] {
        let mut opts = DriverOptions::default();
        opts.storage_opt.insert("bogus.option".into(), "1".into());
        let err = driver::open(name, &fs.path().join("root"), &opts)
            .err()
            .expect("unknown option must fail");
        let line = err.to_string();
        assert!(
            line.contains("bogus.option") && !line.contains('\n'),
            "{name}: {line}"
        );
    }
}

mod vfs {
    //! vfs specifics: the child copy preserves everything, and clones on
    //! a reflink filesystem.

    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use storage_core::driver::Driver;
    use storage_core::driver::vfs::Vfs;

    /// `security.capability` v2 granting cap_net_bind_service.
    const CAP: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    fn fill(root: &Path) {
        use std::os::unix::fs::symlink;
        let x = storage_core::sys::xattr::lset;
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/file"), b"content").unwrap();
        fs::set_permissions(root.join("a/b/file"), fs::Permissions::from_mode(0o4750)).unwrap();
        std::os::unix::fs::chown(root.join("a/b/file"), Some(1000), Some(50)).unwrap();
        fs::write(root.join("a/cap"), b"bin").unwrap();
        x(&root.join("a/cap"), "security.capability", &CAP).unwrap();
        x(&root.join("a/b/file"), "user.k", b"v").unwrap();
        x(&root.join("a"), "user.dir", b"d").unwrap();
        fs::hard_link(root.join("a/b/file"), root.join("a/hard")).unwrap();
        symlink("b/file", root.join("a/sym")).unwrap();
        std::os::unix::fs::lchown(root.join("a/sym"), Some(7), Some(8)).unwrap();
        nix::unistd::mkfifo(
            &root.join("a/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        nix::sys::stat::mknod(
            &root.join("a/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let sparse = fs::File::create(root.join("sparse")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&sparse, b"end", 64 << 20).unwrap();
        drop(sparse);
        fs::create_dir(root.join("ro")).unwrap();
        fs::write(root.join("ro/f"), b"f").unwrap();
        fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        for p in ["a/b", "a", "ro", ""] {
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &root.join(p),
                &nix::sys::time::TimeSpec::new(1_600_000_000, 123_456_789),
                &nix::sys::time::TimeSpec::new(1_500_000_000, 987_654_321),
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
    }

    /// Tree nodes plus mtimes and link counts (atimes move under relatime
    /// as the tree is read).
    fn full(root: &Path) -> Vec<(Node, i64, i64, u64)> {
        let nodes = support::tree(root);
        nodes
            .into_iter()
            .map(|n| {
                let m = fs::symlink_metadata(root.join(&n.path)).unwrap();
                (n, m.mtime(), m.mtime_nsec(), m.nlink())
            })
            .collect()
    }

    fn copy_preserves(kind: FsKind) {
        let fs = ScratchFs::new(kind, FS_BYTES).unwrap();
        let driver = Vfs::open(&fs.path().join("vfs"), &DriverOptions::default()).unwrap();
        driver.create("base", None, &Default::default()).unwrap();
        fill(&driver.get("base").unwrap());
        let stats = driver.create_layer("child", Some("base")).unwrap();
        let base = driver.get("base").unwrap();
        let child = driver.get("child").unwrap();
        let (a, b) = (full(&base), full(&child));
        assert!(a == b, "child differs from base:\n{a:#?}\n{b:#?}");
        let root_a = fs::metadata(&base).unwrap();
        let root_b = fs::metadata(&child).unwrap();
        assert_eq!(
            (root_a.mtime(), root_a.mtime_nsec()),
            (root_b.mtime(), root_b.mtime_nsec())
        );
        assert_eq!(
            fs::metadata(child.join("a/hard")).unwrap().ino(),
            fs::metadata(child.join("a/b/file")).unwrap().ino()
        );
        assert_eq!(stats.hardlinks, 1);
        let reflink = driver
            .status()
            .contains(&("Reflink".to_string(), "yes".to_string()));
        if reflink {
            assert_eq!(stats.cloned, stats.files, "{stats:?}");
        } else {
            assert_eq!(stats.cloned, 0, "{stats:?}");
            let blocks = fs::metadata(child.join("sparse")).unwrap().blocks();
            assert!(blocks * 512 < 1 << 20, "holes filled: {blocks} blocks");
        }
        assert_eq!(reflink, matches!(kind, FsKind::Xfs { reflink: true }));
        driver.remove("child").unwrap();
        driver.remove("base").unwrap();
        assert!(support::leftovers(driver.home()).is_empty());
    }

    #[test]
    fn child_copy_preserves_everything_on_ext4() {
        testkit::require_root!();
        copy_preserves(FsKind::Ext4);
    }

    #[test]
    fn child_copy_preserves_everything_and_clones_on_xfs_reflink() {
        testkit::require_root!();
        copy_preserves(FsKind::Xfs { reflink: true });
    }

    #[test]
    fn interrupted_create_is_swept() {
        testkit::require_root!();
        let fs = ScratchFs::new(FsKind::Ext4, FsKind::Ext4.small_size()).unwrap();
        let home = fs.path().join("vfs");
        let driver = Vfs::open(&home, &DriverOptions::default()).unwrap();
        fs::create_dir_all(home.join("dir/.creating-x/sub")).unwrap();
        fs::create_dir_all(home.join("dir/.removing-y")).unwrap();
        assert!(!driver.exists(".creating-x"));
        assert_eq!(driver.sweep_incomplete().unwrap(), 2);
        assert!(support::leftovers(&home).is_empty());
    }
}

mod btrfs {
    //! btrfs specifics: nested subvolumes, and qgroup size limits.

    use super::*;
    use std::ffi::OsStr;
    use storage_core::driver::btrfs::Btrfs;
    use storage_core::driver::{CreateOpts, Driver};
    use storage_core::sys::btrfs as ioctl;

    #[test]
    fn layers_are_subvolumes_and_nested_ones_are_removed_deepest_first() {
        testkit::require_root!();
        let fs = ScratchFs::new(FsKind::Btrfs, FS_BYTES).unwrap();
        let driver = Btrfs::open(&fs.path().join("btrfs"), &DriverOptions::default()).unwrap();
        driver.create("base", None, &CreateOpts::default()).unwrap();
        let base = driver.get("base").unwrap();
        assert_eq!(base, fs.path().join("btrfs/subvolumes/base"));
        assert!(ioctl::is_subvolume(&base).unwrap());
        fs::write(base.join("f"), b"x").unwrap();
        driver
            .create_rw("ctr", Some("base"), &CreateOpts::default())
            .unwrap();
        let ctr = driver.get("ctr").unwrap();
        assert!(ioctl::is_subvolume(&ctr).unwrap());
        assert_eq!(
            fs::read(ctr.join("f")).unwrap(),
            b"x",
            "a snapshot holds the parent's files"
        );
        // A container makes subvolumes inside its layer, nested two deep.
        fs::create_dir(ctr.join("d")).unwrap();
        ioctl::create_subvolume(&ctr.join("d"), OsStr::new("inner")).unwrap();
        ioctl::create_subvolume(&ctr.join("d/inner"), OsStr::new("deeper")).unwrap();
        fs::write(ctr.join("d/inner/deeper/file"), b"y").unwrap();
        driver.remove("ctr").unwrap();
        assert!(!driver.exists("ctr"));
        driver.remove("base").unwrap();
        assert!(
            support::leftovers(driver.home()).is_empty(),
            "{:?}",
            support::leftovers(driver.home())
        );
    }

    #[test]
    fn size_option_limits_the_layer_with_a_qgroup() {
        testkit::require_root!();
        let fs = ScratchFs::new(FsKind::Btrfs, FS_BYTES).unwrap();
        let mut opts = DriverOptions::default();
        opts.storage_opt
            .insert("btrfs.min_space".into(), "1M".into());
        let driver = Btrfs::open(&fs.path().join("btrfs"), &opts).unwrap();
        let mut small = CreateOpts::default();
        small.storage_opt.insert("size".into(), "512k".into());
        let err = driver
            .create_rw("tiny", None, &small)
            .unwrap_err()
            .to_string();
        assert!(err.contains("below btrfs.min_space"), "{err}");
        small.storage_opt.insert("size".into(), "8M".into());
        driver.create_rw("limited", None, &small).unwrap();
        assert_eq!(
            fs::read_to_string(fs.path().join("btrfs/quotas/limited")).unwrap(),
            (8u64 << 20).to_string()
        );
        let root = driver.get("limited").unwrap();
        let mut file = fs::File::create(root.join("big")).unwrap();
        let chunk = vec![0xAAu8; 1 << 20];
        let mut written = 0;
        let mut failure = None;
        for _ in 0..32 {
            match file.write_all(&chunk).and_then(|_| file.sync_all()) {
                Ok(()) => written += 1,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let failure = failure.unwrap_or_else(|| panic!("wrote {written} MiB into an 8 MiB layer"));
        assert_eq!(failure.raw_os_error(), Some(libc::EDQUOT), "{failure}");
        drop(file);
        driver.remove("limited").unwrap();
        assert!(
            support::leftovers(driver.home()).is_empty(),
            "{:?}",
            support::leftovers(driver.home())
        );
    }
}
