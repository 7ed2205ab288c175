//! `image::load` of hand-made `docker save` archives (root only, overlay2
//! on a scratch ext4): the legacy layout Docker 20.10 writes (with a
//! symlinked repeated layer) and the OCI layout of Docker 25+ (gzip
//! layers); chain-ids, configs, tags and layer bytes must come out as
//! Docker's; a second load reuses every layer; and the store operations
//! (get by reference, id and prefix; tag, untag, rmi) behave like Docker's.

mod image_support;

use std::os::unix::fs::PermissionsExt;

use image_support::*;
use storage_core::image::{self, ImageError};
use storage_core::layer::chain_ids;

#[test]
fn loads_a_legacy_archive() {
    testkit::require_root!();
    let scratch = scratch();
    let stores = Stores::open(&scratch.path().join("root"));
    // base, second, base again: the third layer.tar is a symlink.
    let img = TestImage::new(
        vec![base_layer(), second_layer(), base_layer()],
        &["busybox:latest", "example.com:5000/team/app:v1"],
        "legacy",
    );
    let archive = write(scratch.path(), "legacy.tar", &legacy_archive(&[&img]));

    let loaded = image::load(&stores.images, &stores.layers, &archive).unwrap();
    assert_eq!(loaded.len(), 1);
    let got = &loaded[0];
    assert_eq!(got.id, img.id);
    assert_eq!(got.chain_ids, chain_ids(&img.diff_ids));
    assert_eq!(got.applied_layers, 3);
    assert_eq!(
        got.repo_tags,
        ["busybox:latest", "example.com:5000/team/app:v1"]
    );

    // Layers: diff-ids and parents as Docker's layerdb, bytes as loaded.
    for (i, chain) in got.chain_ids.iter().enumerate() {
        let info = stores.layers.get(chain).unwrap();
        assert_eq!(info.diff_id, img.diff_ids[i]);
        assert_eq!(
            info.parent.as_deref(),
            i.checked_sub(1).map(|p| got.chain_ids[p].as_str())
        );
        assert_eq!(stores.export(chain), img.layers[i], "layer {i} bytes");
    }

    // Image store: config bytes, modes, repositories.json as dockerd writes it.
    let dir = stores.root.join("image/overlay2");
    let content = dir.join("imagedb/content/sha256").join(hex(&img.id));
    assert_eq!(std::fs::read(&content).unwrap(), img.config);
    assert_eq!(
        std::fs::metadata(&content).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let repos = std::fs::read_to_string(dir.join("repositories.json")).unwrap();
    assert_eq!(
        repos,
        format!(
            r#"{{"Repositories":{{"busybox":{{"busybox:latest":"{0}"}},"example.com:5000/team/app":{{"example.com:5000/team/app:v1":"{0}"}}}}}}"#,
            img.id
        )
    );
    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox",
        &img.id,
        hex(&img.id),
        &hex(&img.id)[..6],
        "example.com:5000/team/app:v1",
    ] {
        assert_eq!(stores.images.get(name).unwrap().id, img.id, "{name}");
    }
    assert!(matches!(
        stores.images.get("example.com:5000/team/app"),
        Err(ImageError::NotFound { .. })
    ));

    // Loading again applies nothing.
    let again = image::load(&stores.images, &stores.layers, &archive).unwrap();
    assert_eq!(again[0].applied_layers, 0);
    assert_eq!(stores.layers.list().unwrap().len(), 3);
    scratch.cleanup().unwrap();
}

#[test]
fn loads_an_oci_layout_archive_with_gzip_layers() {
    testkit::require_root!();
    let scratch = scratch();
    let stores = Stores::open(&scratch.path().join("root"));
    let a = TestImage::new(vec![base_layer(), second_layer()], &["app:one"], "a");
    let b = TestImage::new(
        vec![base_layer(), second_layer(), third_layer("b")],
        &["app:two", "other:latest"],
        "b",
    );
    let untagged = TestImage::new(vec![third_layer("untagged")], &[], "c");
    for (n, gzip) in [(0, true), (1, false)] {
        let archive = write(
            scratch.path(),
            &format!("oci{n}.tar"),
            &oci_archive(&[&a, &b, &untagged], gzip),
        );
        let loaded = image::load(&stores.images, &stores.layers, &archive).unwrap();
        let ids: Vec<&str> = loaded.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, [a.id.as_str(), b.id.as_str(), untagged.id.as_str()]);
        if n == 0 {
            // b reuses a's two layers.
            let applied: Vec<usize> = loaded.iter().map(|l| l.applied_layers).collect();
            assert_eq!(applied, [2, 1, 1]);
        }
        for (l, img) in loaded.iter().zip([&a, &b, &untagged]) {
            assert_eq!(l.chain_ids, img.chain_ids());
            for (chain, tar) in l.chain_ids.iter().zip(&img.layers) {
                assert_eq!(&stores.export(chain), tar);
            }
        }
    }
    assert_eq!(stores.images.get("app:two").unwrap().id, b.id);
    assert_eq!(stores.images.get("other").unwrap().id, b.id);
    assert_eq!(stores.images.list().unwrap().len(), 3);
    assert!(
        stores
            .images
            .get(&untagged.id)
            .unwrap()
            .repo_tags
            .is_empty()
    );
    scratch.cleanup().unwrap();
}

#[test]
fn tag_untag_and_rmi_behave_like_docker() {
    testkit::require_root!();
    let scratch = scratch();
    let stores = Stores::open(&scratch.path().join("root"));
    let base = TestImage::new(vec![base_layer()], &["base:latest"], "base");
    let app = TestImage::new(vec![base_layer(), second_layer()], &["app:latest"], "app");
    let archive = write(scratch.path(), "two.tar", &legacy_archive(&[&base, &app]));
    image::load(&stores.images, &stores.layers, &archive).unwrap();

    let r = stores.images.tag("app", "app:v2").unwrap();
    assert_eq!(r.to_string(), "app:v2");
    assert!(stores.images.get("app:v2").unwrap().last_updated.is_some());
    let err = stores
        .images
        .tag("app", "sha256:abc")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ambiguous tag") || err.contains("digest"),
        "{err}"
    );

    // Untag by reference keeps the image while another tag remains.
    let done = image::delete(&stores.images, &stores.layers, "app:v2", false).unwrap();
    assert_eq!(done.lines(), ["Untagged: app:v2"]);
    // The last reference takes the image and its own layer, not the shared base.
    let done = image::delete(&stores.images, &stores.layers, "app", false).unwrap();
    assert_eq!(done.untagged, ["app:latest"]);
    assert_eq!(done.image.as_deref(), Some(app.id.as_str()));
    assert_eq!(done.layers, [app.chain_ids()[1].clone()]);
    assert!(stores.layers.get(&base.chain_ids()[0]).is_ok());

    // A container on the image blocks its deletion.
    stores
        .layers
        .create_rw("c1", Some(&base.chain_ids()[0]), None)
        .unwrap();
    let err = image::delete(&stores.images, &stores.layers, "base", false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("container c1"), "{err}");
    assert!(!err.contains('\n'));
    stores.layers.remove_rw("c1").unwrap();
    let done = image::delete(&stores.images, &stores.layers, &hex(&base.id)[..10], false).unwrap();
    assert_eq!(done.untagged, ["base:latest"]);
    assert!(stores.layers.list().unwrap().is_empty());
    assert!(stores.images.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(stores.root.join("image/overlay2/repositories.json")).unwrap(),
        r#"{"Repositories":{}}"#
    );
    scratch.cleanup().unwrap();
}
