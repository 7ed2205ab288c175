//! Corrupt `docker save` archives (root only, overlay2 on a scratch ext4):
//! a layer whose content is not the config's diff-id, a truncated archive,
//! a truncated layer tar, a missing config, a manifest naming a missing
//! file, and more. Each load fails with one line naming the archive entry
//! and the cause, and leaves the data root exactly as before, also when
//! earlier images and layers of the same archive were already stored and
//! when the archive retags an existing image.

mod image_support;

use std::path::Path;

use image_support::*;
use storage_core::image;

/// A data root holding one image, `busybox:latest` on the base layer.
fn seeded(dir: &Path) -> Stores {
    let stores = Stores::open(&dir.join("root"));
    let seed = TestImage::new(vec![base_layer()], &["busybox:latest"], "seed");
    let path = write(dir, "seed.tar", &legacy_archive(&[&seed]));
    image::load(&stores.images, &stores.layers, &path).unwrap();
    stores
}

/// Loads `archive` and expects a one-line error containing every `needle`,
/// with the data root unchanged.
fn fails(stores: &Stores, dir: &Path, name: &str, archive: &[u8], needles: &[&str]) {
    let path = write(dir, name, archive);
    let before = snapshot(&stores.root);
    let err = image::load(&stores.images, &stores.layers, &path)
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\n'), "{name}: not one line: {err}");
    assert!(
        err.contains(&path.display().to_string()),
        "{name}: no archive path: {err}"
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "{name}: {needle:?} missing from: {err}"
        );
    }
    assert_same(&before, &snapshot(&stores.root));
    println!("{name}: {err}");
}

#[test]
fn a_layer_that_is_not_its_diff_id_fails_and_is_undone() {
    testkit::require_root!();
    let scratch = scratch();
    let dir = scratch.path();
    let stores = seeded(dir);

    // Image one is fine (and retags busybox:latest); image two's second
    // layer holds other bytes than its config says.
    let one = TestImage::new(
        vec![base_layer(), third_layer("one")],
        &["busybox:latest", "one:latest"],
        "one",
    );
    let mut two = TestImage::new(
        vec![base_layer(), second_layer(), third_layer("two")],
        &["two:latest"],
        "two",
    );
    two.layers[1] = third_layer("impostor");
    let actual = sha256(&two.layers[1]);
    let archive = legacy_archive(&[&one, &two]);
    let layer_dir = hex(&two.chain_ids()[1])[..40].to_string();
    fails(
        &stores,
        dir,
        "bad-diff-id.tar",
        &archive,
        &[&format!("{layer_dir}/layer.tar"), &actual, &two.diff_ids[1]],
    );

    // The same with the bad layer at the bottom (its chain-id is its diff-id).
    let mut three = TestImage::new(vec![second_layer()], &["three:latest"], "three");
    three.layers[0] = third_layer("bottom");
    let actual = sha256(&three.layers[0]);
    fails(
        &stores,
        dir,
        "bad-base.tar",
        &legacy_archive(&[&one, &three]),
        &[&actual, &three.diff_ids[0]],
    );

    // And when the wrong bytes are a layer the store already has.
    let mut four = TestImage::new(vec![second_layer()], &["four:latest"], "four");
    four.layers[0] = base_layer();
    fails(
        &stores,
        dir,
        "existing-content.tar",
        &legacy_archive(&[&four]),
        &[&sha256(&base_layer()), &four.diff_ids[0]],
    );
    drop(stores);
    scratch.cleanup().unwrap();
}

#[test]
fn truncated_archives_and_layers_fail_and_are_undone() {
    testkit::require_root!();
    let scratch = scratch();
    let dir = scratch.path();
    let stores = seeded(dir);
    let img = TestImage::new(vec![third_layer("t"), second_layer()], &["t:latest"], "t");

    // The outer archive cut inside the last layer's data (manifest.json
    // comes first here, so the cut hits layer.tar).
    let mut a = ArchiveBuilder::new();
    a.file("manifest.json", &serde_json::to_vec(&serde_json::json!([{
        "Config": "config.json", "RepoTags": ["t:latest"], "Layers": ["l0/layer.tar", "l1/layer.tar"],
    }])).unwrap());
    a.file("config.json", &img.config);
    a.file("l0/layer.tar", &img.layers[0]);
    a.file("l1/layer.tar", &img.layers[1]);
    let whole = a.finish();
    let cut = &whole[..whole.len() - 1024 - 200_000];
    fails(&stores, dir, "cut.tar", cut, &["l1/layer.tar", "truncated"]);

    // A layer tar that ends inside a file's content, its diff-id right.
    let mut short = img.clone();
    short.layers[1] = second_layer()[..100_000].to_vec();
    let diff_ids = vec![img.diff_ids[0].clone(), sha256(&short.layers[1])];
    let config = String::from_utf8(img.config.clone())
        .unwrap()
        .replace(&img.diff_ids[1], &diff_ids[1]);
    short.config = config.into_bytes();
    short.id = sha256(&short.config);
    short.diff_ids = diff_ids;
    let layer_dir = hex(&short.chain_ids()[1])[..40].to_string();
    fails(
        &stores,
        dir,
        "short-layer.tar",
        &legacy_archive(&[&short]),
        &[&format!("layer {layer_dir}/layer.tar")],
    );
    drop(stores);
    scratch.cleanup().unwrap();
}

#[test]
fn broken_manifests_fail_before_anything_is_written() {
    testkit::require_root!();
    let scratch = scratch();
    let dir = scratch.path();
    let stores = seeded(dir);
    let img = TestImage::new(vec![third_layer("m"), second_layer()], &["m:latest"], "m");

    let missing_config =
        legacy_archive_with(&[&img], |_, item| item["Config"] = "nope.json".into());
    fails(
        &stores,
        dir,
        "no-config.tar",
        &missing_config,
        &["manifest.json", "nope.json", "not in the archive"],
    );

    let missing_layer = legacy_archive_with(&[&img], |_, item| {
        item["Layers"][1] = "gone/layer.tar".into()
    });
    fails(
        &stores,
        dir,
        "no-layer.tar",
        &missing_layer,
        &["gone/layer.tar", "not in the archive"],
    );

    let escape = legacy_archive_with(&[&img], |_, item| {
        item["Layers"][1] = "../../../etc/passwd".into()
    });
    fails(
        &stores,
        dir,
        "escape.tar",
        &escape,
        &["etc/passwd", "not in the archive"],
    );

    let count = legacy_archive_with(&[&img], |_, item| {
        item["Layers"].as_array_mut().unwrap().pop();
    });
    fails(
        &stores,
        dir,
        "count.tar",
        &count,
        &["lists 1 layers", "has 2 diff-ids"],
    );

    let bad_tag = legacy_archive_with(&[&img], |_, item| {
        item["RepoTags"] = serde_json::json!(["Not/Valid:x"])
    });
    fails(&stores, dir, "bad-tag.tar", &bad_tag, &["Not/Valid:x"]);
    let digest_tag = legacy_archive_with(&[&img], |_, item| {
        item["RepoTags"] = serde_json::json!(["m"])
    });
    fails(
        &stores,
        dir,
        "untagged-tag.tar",
        &digest_tag,
        &["\"m\"", "name:tag"],
    );

    let mut a = ArchiveBuilder::new();
    a.file("manifest.json", b"null");
    fails(
        &stores,
        dir,
        "null.tar",
        &a.finish(),
        &["manifest.json", "null"],
    );
    let mut a = ArchiveBuilder::new();
    a.file("repositories", b"{}");
    fails(
        &stores,
        dir,
        "old.tar",
        &a.finish(),
        &["manifest.json", "pre-Docker-1.10"],
    );
    let mut a = ArchiveBuilder::new();
    a.file("manifest.json", b"[{\"Config\":\"c.json\",\"Layers\":[]}]");
    a.file("c.json", b"{\"os\":\"linux\"}");
    fails(
        &stores,
        dir,
        "no-rootfs.tar",
        &a.finish(),
        &["config c.json", "rootfs"],
    );
    fails(&stores, dir, "garbage.tar", &[0x42u8; 4096], &["tar"]);
    drop(stores);
    scratch.cleanup().unwrap();
}
