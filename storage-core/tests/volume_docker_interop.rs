//! Our volume formats against a real dockerd (as root): `opts.json` byte
//! for byte, `docker volume inspect`'s fields, `docker inspect`'s `Mounts`
//! and `config.v2.json`'s `MountPoints` for the same `-v`/`--mount` specs.

use std::collections::BTreeMap;
use std::fs;

use serde_json::Value;
use storage_core::container::{ContainerStore, CreateOptions};
use storage_core::driver::{self, DriverOptions};
use storage_core::layer::LayerStore;
use storage_core::volume::VolumeStore;
use testkit::docker::DockerDaemon;
use testkit::{FsKind, ScratchFs};

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Replaces `root` in every string and 64-hex names by `<anon>`, and sorts
/// arrays of mounts by destination, so both sides compare.
fn normalize(value: &Value, root: &str) -> Value {
    match value {
        Value::String(s) => {
            let s = s.replace(root, "<root>");
            let hex = |t: &str| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit());
            let s = s
                .split('/')
                .map(|part| if hex(part) { "<anon>" } else { part })
                .collect::<Vec<_>>()
                .join("/");
            Value::String(s)
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(|v| normalize(v, root)).collect();
            items.sort_by_key(|v| v["Destination"].as_str().unwrap_or_default().to_string());
            Value::Array(items)
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalize(v, root)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn formats_match_a_real_dockerd() {
    testkit::require_root!();
    let daemon = match DockerDaemon::start("overlay2") {
        Ok(d) => d,
        Err(e) if e.is_unavailable() => {
            testkit::feature_available(false, "dockerd", e);
            return;
        }
        Err(e) => panic!("start dockerd: {e}"),
    };
    let scratch = ScratchFs::new(FsKind::Ext4, 512 << 20).unwrap();
    let ours = scratch.path().join("root");
    let docker_root = daemon.data_root();
    let host = scratch.path().join("host");
    fs::create_dir_all(&host).unwrap();

    // opts.json, byte for byte.
    daemon
        .run(&[
            "volume",
            "create",
            "-o",
            "type=tmpfs",
            "-o",
            "device=tmpfs",
            "-o",
            "o=size=1m",
            "t1",
        ])
        .unwrap();
    let volumes = VolumeStore::open(&ours).unwrap();
    volumes
        .create(
            Some("t1"),
            kv(&[]),
            kv(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")]),
        )
        .unwrap();
    assert_eq!(
        fs::read_to_string(ours.join("volumes/t1/opts.json")).unwrap(),
        fs::read_to_string(docker_root.join("volumes/t1/opts.json")).unwrap()
    );

    // volume inspect.
    daemon
        .run(&["volume", "create", "--label", "a=b", "named"])
        .unwrap();
    volumes
        .create(Some("named"), kv(&[("a", "b")]), kv(&[]))
        .unwrap();
    let theirs: Value =
        serde_json::from_str(&daemon.run(&["volume", "inspect", "named", "t1"]).unwrap()).unwrap();
    let mine = serde_json::to_value(vec![
        volumes.get("named").unwrap(),
        volumes.get("t1").unwrap(),
    ])
    .unwrap();
    for (t, m) in theirs
        .as_array()
        .unwrap()
        .iter()
        .zip(mine.as_array().unwrap())
    {
        let (mut t, mut m) = (t.clone(), m.clone());
        for v in [&mut t, &mut m] {
            let created = v["CreatedAt"].as_str().unwrap().to_string();
            assert!(
                created.starts_with("20") && created.contains('T'),
                "{created}"
            );
            v["CreatedAt"] = Value::Null;
        }
        assert_eq!(
            normalize(&t, &docker_root.display().to_string()),
            normalize(&m, &ours.display().to_string())
        );
    }

    // Mounts and MountPoints for the same specs.
    daemon
        .import_image("volimg", &[("data/seed", b"x", 0o644)])
        .unwrap();
    let bind = format!("{}:/b:ro", host.display());
    let specs = CreateOptions {
        volumes: vec![
            "named:/data".into(),
            "/anon".into(),
            bind.clone(),
            "nc:/nc:nocopy".into(),
        ],
        mounts: vec![
            "type=volume,source=m2,target=/m2,readonly,volume-nocopy".into(),
            "type=tmpfs,target=/t,tmpfs-size=1m".into(),
            format!("type=bind,source={},target=/b2", host.display()),
        ],
        volumes_from: vec![],
        image_volumes: vec![],
    };
    let mut args = vec!["create".to_string(), "--name".into(), "ctr".into()];
    for v in &specs.volumes {
        args.extend(["-v".to_string(), v.clone()]);
    }
    for m in &specs.mounts {
        args.extend(["--mount".to_string(), m.clone()]);
    }
    args.extend(["volimg".to_string(), "/bin/true".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = daemon.run(&args).unwrap().trim().to_string();
    let theirs: Value = serde_json::from_str(&daemon.run(&["inspect", "ctr"]).unwrap()).unwrap();

    let driver = driver::open("overlay2", &ours, &DriverOptions::default()).unwrap();
    let layers = LayerStore::open(&ours, driver).unwrap();
    let tar = testkit::docker::layer_tar(&[("data/seed", b"x", 0o644)]).unwrap();
    let top = layers.apply(&tar[..], None).unwrap().chain_id;
    let containers = ContainerStore::open(&ours, &layers).unwrap();
    let c = containers
        .create_with("ctr", &top, Some(&top), &specs)
        .unwrap();
    assert_eq!(
        normalize(&theirs[0]["Mounts"], &docker_root.display().to_string()),
        normalize(
            &serde_json::to_value(containers.mounts(&c)).unwrap(),
            &ours.display().to_string()
        ),
        "docker inspect's Mounts"
    );

    let their_config: Value = serde_json::from_slice(
        &fs::read(
            docker_root
                .join("containers")
                .join(&id)
                .join("config.v2.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let our_config: Value = serde_json::from_slice(
        &fs::read(ours.join("containers").join(&c.id).join("config.v2.json")).unwrap(),
    )
    .unwrap();
    let mut our_points = our_config["MountPoints"].clone();
    for point in our_points.as_object_mut().unwrap().values_mut() {
        // Docker copies at create time and does not persist the flag.
        point.as_object_mut().unwrap().remove("CopyData");
    }
    assert_eq!(
        normalize(
            &their_config["MountPoints"],
            &docker_root.display().to_string()
        ),
        normalize(&our_points, &ours.display().to_string()),
        "config.v2.json MountPoints"
    );
    daemon.run(&["rm", "-v", "ctr"]).unwrap();
    containers.remove_with_volumes(&c, true).unwrap();
}
