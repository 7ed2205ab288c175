//! The overlay2 driver on the real kernel: Docker's layout, mounts with
//! the page-size fallback, the 128-lower limit, metacopy, ref-counted
//! get/put, and crash leftovers swept by the layer store.

use std::fs;
use std::path::Path;

use storage_core::driver::overlay2::{MAX_DEPTH, Overlay2};
use storage_core::driver::{CreateOpts, Driver, DriverError, DriverOptions};
use storage_core::sys::mount::is_mount_point;
use testkit::{FsKind, ScratchFs};

fn driver_on(fs: &ScratchFs, options: &[(&str, &str)]) -> Overlay2 {
    let mut opts = DriverOptions::default();
    for (k, v) in options {
        opts.storage_opt.insert(k.to_string(), v.to_string());
    }
    Overlay2::open(&fs.path().join("overlay2"), &opts).unwrap()
}

fn scratch() -> Option<ScratchFs> {
    testkit::require_root("overlay2").then(|| ScratchFs::new(FsKind::Ext4, 256 << 20).unwrap())
}

#[test]
fn layout_matches_dockers() {
    let Some(fs) = scratch() else { return };
    let driver = driver_on(&fs, &[]);
    let none = CreateOpts::default();
    driver.create("base", None, &none).unwrap();
    driver.create("child", Some("base"), &none).unwrap();
    let home = fs.path().join("overlay2");

    let base_link = fs::read_to_string(home.join("base/link")).unwrap();
    assert_eq!(base_link.len(), 26);
    assert!(
        base_link
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    );
    assert_eq!(
        fs::read_link(home.join("l").join(&base_link)).unwrap(),
        Path::new("../base/diff")
    );
    assert!(home.join("base/diff").is_dir());
    assert!(
        !home.join("base/lower").exists(),
        "a base layer has no lower file"
    );
    assert!(!home.join("base/work").exists(), "nor a workdir");
    assert!(
        home.join("base/committed").exists(),
        "a parent is marked committed"
    );
    assert_eq!(
        fs::read_to_string(home.join("child/lower")).unwrap(),
        format!("l/{base_link}")
    );
    assert!(home.join("child/work").is_dir());

    let metadata = driver.metadata("child").unwrap();
    assert_eq!(
        metadata["LowerDir"],
        home.join("base/diff").display().to_string()
    );
    assert_eq!(
        metadata["UpperDir"],
        home.join("child/diff").display().to_string()
    );

    // Mounted, lowers are the absolute l/ links (short enough for a page)
    // and metacopy stays off unless asked for. (The kernel does not show
    // index=off: it is its default here.)
    let merged = driver.get("child").unwrap();
    let options = mount_options(&merged);
    let link_path = home.join("l").join(&base_link);
    assert!(
        options.contains(&format!("lowerdir={}", link_path.display())),
        "{options}"
    );
    assert!(!options.contains("metacopy=on"), "{options}");
    driver.put("child").unwrap();
    assert!(!is_mount_point(&merged));
}

fn mount_options(path: &Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} not mounted", path.display()));
    line.rsplit(' ').next().unwrap().to_string()
}

#[test]
fn get_and_put_are_reference_counted() {
    let Some(fs) = scratch() else { return };
    let driver = driver_on(&fs, &[]);
    let none = CreateOpts::default();
    driver.create("img", None, &none).unwrap();
    fs::write(driver.get("img").unwrap().join("file"), b"lower").unwrap();
    driver.create_rw("ctr", Some("img"), &none).unwrap();
    let first = driver.get("ctr").unwrap();
    let second = driver.get("ctr").unwrap();
    assert_eq!(first, second);
    assert_eq!(fs::read(first.join("file")).unwrap(), b"lower");
    driver.put("ctr").unwrap();
    assert!(is_mount_point(&first), "one reference left: still mounted");
    driver.put("ctr").unwrap();
    assert!(!is_mount_point(&first), "last reference gone: unmounted");
}

#[test]
fn a_stack_of_128_lowers_mounts_and_the_129th_is_refused() {
    let Some(fs) = scratch() else { return };
    let driver = driver_on(&fs, &[]);
    let none = CreateOpts::default();
    driver.create("layer0", None, &none).unwrap();
    fs::write(driver.get("layer0").unwrap().join("deepest"), b"0").unwrap();
    for i in 1..=MAX_DEPTH {
        driver
            .create(
                &format!("layer{i}"),
                Some(&format!("layer{}", i - 1)),
                &none,
            )
            .unwrap();
    }
    // layer128 has 128 lowers: its absolute option string exceeds a page,
    // so the mount goes through the relative-path fallback.
    let top = format!("layer{MAX_DEPTH}");
    let merged = driver.get(&top).unwrap();
    assert_eq!(fs::read(merged.join("deepest")).unwrap(), b"0");
    assert!(
        mount_options(&merged).contains("lowerdir=l/"),
        "relative lowers"
    );
    driver.put(&top).unwrap();

    let err = driver
        .create("one-too-many", Some(&top), &none)
        .unwrap_err();
    assert!(
        matches!(
            err,
            DriverError::MaxDepth {
                depth: 129,
                limit: 128,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "layer one-too-many: 129 lower layers exceed overlay2's limit of 128 (Docker's maxDepth)"
    );
    assert!(!driver.exists("one-too-many"), "nothing created");
    let links = fs::read_dir(fs.path().join("overlay2/l")).unwrap().count();
    assert_eq!(links, MAX_DEPTH + 1, "no dangling l/ link");
}

#[test]
fn metacopy_chmod_copies_metadata_only() {
    let Some(fs) = scratch() else { return };
    let driver = driver_on(&fs, &[("overlay2.metacopy", "on")]);
    assert!(
        driver
            .status()
            .contains(&("Using metacopy".into(), "true".into()))
    );
    let none = CreateOpts::default();
    driver.create("img", None, &none).unwrap();
    fs::write(driver.get("img").unwrap().join("big"), vec![1u8; 1 << 20]).unwrap();
    driver.create_rw("ctr", Some("img"), &none).unwrap();
    let merged = driver.get("ctr").unwrap();
    assert!(mount_options(&merged).contains("metacopy=on"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(merged.join("big"), fs::Permissions::from_mode(0o600)).unwrap();
    driver.put("ctr").unwrap();
    use std::os::unix::fs::MetadataExt;
    let upper = fs::metadata(fs.path().join("overlay2/ctr/diff/big")).unwrap();
    assert_eq!(upper.mode() & 0o777, 0o600);
    // 1 MiB of data would be 2048 blocks; the metacopy inode holds only
    // its xattr block.
    assert!(
        upper.blocks() < 16,
        "metacopy copied data: {} blocks",
        upper.blocks()
    );
}

#[test]
fn unknown_options_and_ids_are_refused() {
    let Some(fs) = scratch() else { return };
    let mut opts = DriverOptions::default();
    opts.storage_opt
        .insert("overlay2.turbo".into(), "on".into());
    let err = Overlay2::open(&fs.path().join("overlay2"), &opts)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "layer overlay2: unknown storage option \"turbo\""
    );
    let driver = driver_on(&fs, &[]);
    for bad in ["", "..", "a/b", ".hidden", "l"] {
        assert!(
            matches!(
                driver.create(bad, None, &CreateOpts::default()),
                Err(DriverError::InvalidId { .. })
            ),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        driver.create("x", Some("missing"), &CreateOpts::default()),
        Err(DriverError::NotFound { .. })
    ));
    assert!(!driver.exists("x"));
}

#[test]
fn sweep_removes_what_a_crash_left() {
    let Some(fs) = scratch() else { return };
    let driver = driver_on(&fs, &[]);
    let home = fs.path().join("overlay2");
    fs::create_dir_all(home.join(".creating-dead/diff")).unwrap();
    std::os::unix::fs::symlink("../dead/diff", home.join("l/DANGLINGLINK")).unwrap();
    driver
        .create("alive", None, &CreateOpts::default())
        .unwrap();
    assert_eq!(driver.sweep_incomplete().unwrap(), 2);
    assert!(!home.join(".creating-dead").exists());
    assert!(!home.join("l/DANGLINGLINK").exists());
    assert!(driver.exists("alive"));
    assert_eq!(fs::read_dir(home.join("l")).unwrap().count(), 1);
}
