//! `image::save` (root only, overlay2 on a scratch ext4): the archive has
//! moby v20.10's legacy layout (config, `<v1 id>/{VERSION,json,layer.tar}`,
//! a symlink for a repeated diff-id, `manifest.json`, `repositories`, in
//! Docker's walk order), each `layer.tar` is the layer byte for byte (its
//! sha256 is the diff-id), and loading it into a second data root gives the
//! same images, tags, chain-ids and layer bytes.

mod image_support;

use std::collections::BTreeMap;
use std::io::Read;

use image_support::*;
use storage_core::image::{self, ImageError};

/// Every entry of an archive: path -> (type, link target, data).
fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, String, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
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
            (path, kind, link, data)
        })
        .collect()
}

#[test]
fn save_then_load_round_trips_byte_identical_layers() {
    testkit::require_root!();
    let scratch = scratch();
    let a = Stores::open(&scratch.path().join("a"));
    let base = TestImage::new(
        vec![base_layer(), second_layer()],
        &["app:latest", "app:v1"],
        "one",
    );
    let top = TestImage::new(
        vec![base_layer(), second_layer(), base_layer(), third_layer("x")],
        &["reg.example.com/x:1"],
        "two",
    );
    let archive = write(scratch.path(), "in.tar", &legacy_archive(&[&base, &top]));
    image::load(&a.images, &a.layers, &archive).unwrap();

    let mut out = Vec::new();
    let names = ["app".to_string(), "reg.example.com/x:1".to_string()];
    let summary = image::save(&a.images, &a.layers, &names, &mut out).unwrap();
    assert_eq!(summary.images, [base.id.clone(), top.id.clone()]);
    assert_eq!(
        summary.layers, 3,
        "base, second, third; the repeated base is a symlink"
    );
    assert_eq!(summary.bytes, out.len() as u64);
    assert_eq!(out.len() % 512, 0);

    let listed = entries(&out);
    let paths: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort_by(|x, y| {
        x.trim_end_matches('/')
            .split('/')
            .cmp(y.trim_end_matches('/').split('/'))
    });
    assert_eq!(paths, sorted, "Docker's walk order");
    let by_path: BTreeMap<&str, &(String, tar::EntryType, String, Vec<u8>)> =
        listed.iter().map(|e| (e.0.as_str(), e)).collect();

    let manifest: serde_json::Value = serde_json::from_slice(&by_path["manifest.json"].3).unwrap();
    assert!(by_path["manifest.json"].3.ends_with(b"]\n"));
    let items = manifest.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["Config"], format!("{}.json", hex(&base.id)));
    assert_eq!(
        items[0]["RepoTags"],
        serde_json::json!(["app:latest", "app:v1"])
    );
    assert_eq!(
        items[1]["RepoTags"],
        serde_json::json!(["reg.example.com/x:1"])
    );
    assert_eq!(
        by_path[format!("{}.json", hex(&top.id)).as_str()].3,
        top.config
    );
    let mut symlinks = 0;
    for (item, img) in items.iter().zip([&base, &top]) {
        let layers = item["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), img.layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let path = layer.as_str().unwrap();
            let dir = path.strip_suffix("/layer.tar").unwrap();
            assert_eq!(by_path[format!("{dir}/VERSION").as_str()].3, b"1.0");
            let json: serde_json::Value =
                serde_json::from_slice(&by_path[format!("{dir}/json").as_str()].3).unwrap();
            assert_eq!(json["id"], dir);
            if i > 0 {
                assert!(json["parent"].is_string());
            }
            let entry = by_path[path];
            let data = if entry.1 == tar::EntryType::Symlink {
                symlinks += 1;
                let target = format!("{dir}/{}", entry.2);
                let target = target.replace(&format!("{dir}/../"), "");
                by_path[target.as_str()].3.clone()
            } else {
                entry.3.clone()
            };
            assert_eq!(data, img.layers[i], "layer {i} of {}", img.id);
            assert_eq!(sha256(&data), img.diff_ids[i]);
        }
    }
    // top's base layer is base's own dir (same v1 id); its second layer is
    // a new v1 id (no longer the top) and its third repeats the base: both
    // symlinks to the first copy of their diff-id.
    assert_eq!(symlinks, 2);
    let repositories: serde_json::Value =
        serde_json::from_slice(&by_path["repositories"].3).unwrap();
    let base_top_v1 = items[0]["Layers"][1]
        .as_str()
        .unwrap()
        .trim_end_matches("/layer.tar");
    assert_eq!(repositories["app"]["latest"], base_top_v1);
    assert_eq!(repositories["app"]["v1"], base_top_v1);

    // Into a second data root.
    let saved = write(scratch.path(), "saved.tar", &out);
    let b = Stores::open(&scratch.path().join("b"));
    let loaded = image::load(&b.images, &b.layers, &saved).unwrap();
    assert_eq!(loaded.len(), 2);
    for img in [&base, &top] {
        let got = b.images.get(&img.id).unwrap();
        assert_eq!(got.raw_config, img.config);
        assert_eq!(got.repo_tags, a.images.get(&img.id).unwrap().repo_tags);
        for chain in img.chain_ids() {
            assert_eq!(
                b.layers.get(&chain).unwrap().diff_id,
                a.layers.get(&chain).unwrap().diff_id
            );
            assert_eq!(b.export(&chain), a.export(&chain), "layer {chain}");
        }
    }
    scratch.cleanup().unwrap();
}

#[test]
fn layer_tar_size_is_known_before_the_export() {
    testkit::require_root!();
    let scratch = scratch();
    let stores = Stores::open(&scratch.path().join("root"));
    for layer in [
        base_layer(),
        layer_tar(&[]),
        layer_tar(&[Entry::File("f", &[7u8; 511], 0o644)]),
    ] {
        let info = stores.layers.apply(&layer[..], None).unwrap();
        assert_eq!(
            image::layer_tar_size(&stores.layers, &info.chain_id).unwrap(),
            layer.len() as u64
        );
        stores.layers.remove(&info.chain_id).unwrap();
    }
    scratch.cleanup().unwrap();
}

#[test]
fn save_refuses_unknown_images_in_one_line() {
    testkit::require_root!();
    let scratch = scratch();
    let stores = Stores::open(&scratch.path().join("root"));
    let img = TestImage::new(vec![base_layer()], &["app:latest"], "x");
    image::load(
        &stores.images,
        &stores.layers,
        &write(scratch.path(), "a.tar", &legacy_archive(&[&img])),
    )
    .unwrap();
    for name in ["app:nope", "nothing", "Bad Name"] {
        let err = image::save(
            &stores.images,
            &stores.layers,
            &[name.to_string()],
            Vec::new(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                ImageError::NotFound { .. } | ImageError::InvalidReference { .. }
            ),
            "{text}"
        );
        assert!(
            text.contains(name.split(' ').next().unwrap()) && !text.contains('\n'),
            "{text}"
        );
    }
    // An id saves the image without tags.
    let mut out = Vec::new();
    image::save(
        &stores.images,
        &stores.layers,
        &[hex(&img.id)[..12].to_string()],
        &mut out,
    )
    .unwrap();
    let listed = entries(&out);
    let manifest = &listed.iter().find(|e| e.0 == "manifest.json").unwrap().3;
    assert!(String::from_utf8_lossy(manifest).contains(r#""RepoTags":null"#));
    assert!(!listed.iter().any(|e| e.0 == "repositories"));
    scratch.cleanup().unwrap();
}
