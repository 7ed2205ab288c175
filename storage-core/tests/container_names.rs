//! Container names as users rely on them (`create --name`): one container
//! per name, even when creates race from several threads; the name is
//! free again after `rm`; a store written before the name index existed
//! still refuses a duplicate; a refused create leaves nothing behind.
//! Runs on vfs in a plain temp dir (no mount needed).

use std::fs;
use std::path::Path;

use storage_core::container::{ContainerError, ContainerStore};
use storage_core::driver::{self, DriverOptions};
use storage_core::layer::LayerStore;

fn layers(root: &Path) -> LayerStore {
    let driver = driver::open("vfs", root, &DriverOptions::default()).expect("vfs driver");
    LayerStore::open(root, driver).expect("layer store")
}

fn entries(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn a_name_belongs_to_one_container_until_it_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let layers = layers(root);
    let containers = ContainerStore::open(root, &layers).expect("container store");

    let web = containers
        .create("web", "scratch", None)
        .expect("create web");
    let rw_layers = entries(&root.join("image/vfs/layerdb/mounts"));
    match containers.create("web", "scratch", None) {
        Err(ContainerError::NameInUse { name, id }) => {
            assert_eq!((name.as_str(), id.as_str()), ("web", web.id.as_str()));
        }
        other => panic!("second create of web: {:?}", other.map(|c| c.id)),
    }
    assert_eq!(
        entries(&root.join("containers")),
        1,
        "refused create left a config"
    );
    assert_eq!(
        entries(&root.join("image/vfs/layerdb/mounts")),
        rw_layers,
        "refused create left a rw layer"
    );
    assert_eq!(containers.find("web").expect("find web").id, web.id);
    assert_eq!(
        containers.find(&web.id[..12]).expect("find by prefix").id,
        web.id
    );

    containers.remove(&web).expect("rm web");
    assert!(matches!(
        containers.find("web"),
        Err(ContainerError::NotFound { .. })
    ));
    let again = containers
        .create("web", "scratch", None)
        .expect("name free after rm");
    assert_ne!(again.id, web.id);
}

#[test]
fn racing_creates_of_one_name_have_one_winner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let layers = layers(root);
    let winners: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let layers = &layers;
                scope.spawn(move || {
                    // Each thread its own store handle, as separate CLI
                    // processes would have.
                    let containers = ContainerStore::open(root, layers).expect("open");
                    containers.create("db", "scratch", None).map(|c| c.id)
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join().expect("thread") {
                Ok(id) => Some(id),
                Err(ContainerError::NameInUse { .. }) => None,
                Err(e) => panic!("create db: {e}"),
            })
            .collect()
    });
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(entries(&root.join("containers")), 1);
    assert_eq!(entries(&root.join("image/vfs/layerdb/mounts")), 1);
}

#[test]
fn a_store_from_before_the_name_index_keeps_its_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let layers = layers(root);
    let old = {
        let containers = ContainerStore::open(root, &layers).expect("open");
        containers
            .create("old", "scratch", None)
            .expect("create old")
    };
    fs::remove_dir_all(root.join("container-names")).expect("drop the index");

    let containers = ContainerStore::open(root, &layers).expect("reopen");
    assert!(matches!(
        containers.create("old", "scratch", None),
        Err(ContainerError::NameInUse { id, .. }) if id == old.id
    ));
    assert_eq!(containers.find("old").expect("find old").id, old.id);
}
