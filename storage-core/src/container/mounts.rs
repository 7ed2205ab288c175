//! A container's volumes and bind mounts: registering its mount points at
//! create time (moby's `registerMountPoints`: `--volumes-from` first, then
//! `-v`, then `--mount`, then the image's `VOLUME`s), and mounting them
//! into the mounted root filesystem (moby's `setupMounts`): parents before
//! children, destinations resolved inside the root, read-only binds
//! remounted read-only by the kernel, empty volumes filled with the image's
//! content first. What got mounted where is recorded in
//! `<root>/containers/<id>/volume-mounts.json` so `unmount` (children
//! first) works from another process.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::sys::mount::{self, MountFlags};
use crate::volume::store::{CONTAINER_MOUNTS, LockedVolumes};
use crate::volume::{MountPoint, MountSpec, MountType, VolumeError, copy, resolve, spec};

use super::{Container, ContainerError, ContainerStore};

/// What `container create` takes besides the image: `-v`, `--mount`,
/// `--volumes-from`, and the image config's `Volumes`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub volumes: Vec<String>,
    pub mounts: Vec<String>,
    pub volumes_from: Vec<String>,
    pub image_volumes: Vec<String>,
}

/// One mount made by `container mount`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActiveMount {
    #[serde(rename = "Destination")]
    destination: String,
    #[serde(rename = "Target")]
    target: PathBuf,
    #[serde(rename = "Volume", default, skip_serializing_if = "Option::is_none")]
    volume: Option<String>,
}

fn duplicate(destination: &str) -> ContainerError {
    ContainerError::Volume(VolumeError::Spec(format!(
        "Duplicate mount point: {destination}"
    )))
}

/// Parses and checks every mount point, with no side effect.
pub(super) fn plan(
    store: &ContainerStore<'_>,
    options: &CreateOptions,
) -> Result<Vec<MountPoint>, ContainerError> {
    let mut points: BTreeMap<String, MountPoint> = BTreeMap::new();
    for from in &options.volumes_from {
        let (id, mode) = spec::parse_volumes_from(from)?;
        let source = store.find(&id)?;
        for m in source.mount_points.values() {
            let mut copy = m.clone();
            copy.rw = m.rw && spec::read_write(&mode);
            copy.copy_data = false;
            points.insert(copy.destination.clone(), copy);
        }
    }
    let mut explicit = BTreeMap::new();
    // A bare `-v /path` is, for docker's CLI, a `Config.Volumes` entry like
    // the image's: it yields to any other mount on that destination.
    let mut bare = Vec::new();
    for raw in &options.volumes {
        let mp = spec::parse_volume_flag(raw)?;
        if !raw.contains(':') {
            bare.push(mp.destination);
            continue;
        }
        if explicit.insert(mp.destination.clone(), ()).is_some() {
            return Err(duplicate(&mp.destination));
        }
        points.insert(mp.destination.clone(), mp);
    }
    for raw in &options.mounts {
        let mp = spec::parse_mount_flag(raw)?;
        if explicit.insert(mp.destination.clone(), ()).is_some() {
            return Err(duplicate(&mp.destination));
        }
        points.insert(mp.destination.clone(), mp);
    }
    for dest in bare.iter().chain(&options.image_volumes) {
        let destination = spec::clean(dest);
        if destination == "/" || points.contains_key(&destination) {
            continue;
        }
        points.insert(
            destination.clone(),
            MountPoint {
                destination: destination.clone(),
                rw: true,
                driver: crate::volume::DRIVER.to_string(),
                kind: MountType::Volume,
                copy_data: true,
                spec: MountSpec::default(),
                ..MountPoint::default()
            },
        );
    }
    Ok(points.into_values().collect())
}

/// Checks every destination against the image's root (mounted at `root`):
/// no escape through symlinks, no volume over a file.
pub(super) fn check_destinations(root: &Path, points: &[MountPoint]) -> Result<(), ContainerError> {
    for mp in points {
        let resolved = resolve::resolve(root, &mp.destination)?;
        if mp.kind != MountType::Bind && resolved.exists && !resolved.is_dir {
            return Err(ContainerError::Volume(VolumeError::Destination {
                destination: mp.destination.clone(),
                what: "cannot mount volume over existing file".into(),
            }));
        }
    }
    Ok(())
}

/// Creates (or finds) the volumes of `points` and references them for
/// container `id`; fills in each mount point's name and source. Returns
/// the volumes it created, for the caller's rollback; on error it has
/// already undone everything itself.
pub(super) fn register(
    locked: &mut LockedVolumes<'_>,
    id: &str,
    points: &mut [MountPoint],
) -> Result<Vec<String>, ContainerError> {
    let mut created = Vec::new();
    let result = (|| {
        for mp in points.iter_mut() {
            if mp.kind != MountType::Volume {
                continue;
            }
            let volume = if mp.name.is_empty() {
                let v = locked.create(None, BTreeMap::new(), BTreeMap::new())?;
                created.push(v.name.clone());
                v
            } else {
                match locked.get(&mp.name) {
                    Ok(v) => v,
                    Err(VolumeError::NotFound { .. }) => {
                        let vo = mp.spec.volume_options.clone().unwrap_or_default();
                        let driver_opts = vo.driver_config.map(|d| d.options).unwrap_or_default();
                        let v = locked.create(Some(&mp.name), vo.labels, driver_opts)?;
                        created.push(v.name.clone());
                        v
                    }
                    Err(e) => return Err(e),
                }
            };
            mp.name = volume.name.clone();
            if mp.spec.kind.is_some() {
                mp.source = volume.mountpoint.display().to_string();
            }
            locked.add_ref(&volume.name, id)?;
        }
        Ok::<(), VolumeError>(())
    })();
    match result {
        Ok(()) => Ok(created),
        Err(e) => {
            unregister(locked, id, points, false);
            for name in &created {
                let _ = locked.remove(name);
            }
            Err(e.into())
        }
    }
}

/// Drops container `id`'s references; with `remove_anonymous` also
/// removes its anonymous volumes no other container uses (`rm -v`).
pub(super) fn unregister(
    locked: &mut LockedVolumes<'_>,
    id: &str,
    points: &[MountPoint],
    remove_anonymous: bool,
) {
    for mp in points {
        if mp.kind != MountType::Volume || mp.name.is_empty() {
            continue;
        }
        let _ = locked.remove_ref(&mp.name, id);
        if remove_anonymous
            && mp.is_anonymous_volume()
            && locked.refs(&mp.name).is_empty()
            && let Err(e) = locked.remove(&mp.name)
        {
            tracing::warn!("container {id}: removing volume {}: {e}", mp.name);
        }
    }
}

fn record_path(store: &ContainerStore<'_>, container: &Container) -> PathBuf {
    store.dir.join(&container.id).join(CONTAINER_MOUNTS)
}

fn read_record(path: &Path) -> Option<Vec<ActiveMount>> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Mounts the container's mount points into `root`, unless a previous
/// `container mount` (maybe another process) already did.
pub(super) fn mount_all(
    store: &ContainerStore<'_>,
    container: &Container,
    root: &Path,
) -> Result<(), ContainerError> {
    if container.mount_points.is_empty() {
        return Ok(());
    }
    let mut locked = store.volumes.lock()?;
    let record = record_path(store, container);
    if let Some(done) = read_record(&record) {
        if done.iter().all(|m| mount::is_mount_point(&m.target)) {
            return Ok(());
        }
        undo(&mut locked, &container.id, &done);
    }
    let mut points: Vec<&MountPoint> = container.mount_points.values().collect();
    // moby's sortMounts: fewer path separators first, so parents come
    // before what is mounted inside them.
    points.sort_by_key(|m| (m.destination.matches('/').count(), m.destination.clone()));
    let mut done = Vec::new();
    for mp in points {
        match mount_one(&mut locked, container, root, mp) {
            Ok(active) => done.push(active),
            Err(e) => {
                undo(&mut locked, &container.id, &done);
                return Err(e);
            }
        }
    }
    let json = serde_json::to_vec_pretty(&done).expect("mount record serializes");
    if let Err(e) = fsutil::write_atomic(&record, &json, 0o600) {
        undo(&mut locked, &container.id, &done);
        return Err(ContainerError::Io {
            op: "write",
            path: record,
            source: e,
        });
    }
    Ok(())
}

/// Unmounts what [`mount_all`] mounted, children first.
pub(super) fn unmount_all(
    store: &ContainerStore<'_>,
    container: &Container,
) -> Result<(), ContainerError> {
    let record = record_path(store, container);
    if !record.exists() {
        return Ok(());
    }
    let mut locked = store.volumes.lock()?;
    let done = read_record(&record).unwrap_or_default();
    undo(&mut locked, &container.id, &done);
    match fs::remove_file(&record) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ContainerError::Io {
            op: "remove",
            path: record,
            source: e,
        }),
        _ => Ok(()),
    }
}

fn undo(locked: &mut LockedVolumes<'_>, id: &str, done: &[ActiveMount]) {
    for m in done.iter().rev() {
        if mount::is_mount_point(&m.target) {
            let _ = mount::unmount(&m.target).or_else(|_| mount::unmount_detach(&m.target));
        }
        if let Some(name) = &m.volume
            && let Err(e) = locked.release(name, id)
        {
            tracing::warn!("container {id}: releasing volume {name}: {e}");
        }
    }
}

fn mount_one(
    locked: &mut LockedVolumes<'_>,
    container: &Container,
    root: &Path,
    mp: &MountPoint,
) -> Result<ActiveMount, ContainerError> {
    let resolved = resolve::resolve(root, &mp.destination)?;
    let target = resolved.host_path(root);
    let dest_err = |what: String| {
        ContainerError::Volume(VolumeError::Destination {
            destination: mp.destination.clone(),
            what,
        })
    };
    match mp.kind {
        MountType::Volume => {
            if resolved.exists && !resolved.is_dir {
                return Err(dest_err("cannot mount volume over existing file".into()));
            }
            let data = locked.acquire(&mp.name, &container.id)?;
            let filled = (|| {
                if mp.copy_data && resolved.exists && copy::is_empty_dir(&data)? {
                    copy::copy_dir_contents(&target, &data)?;
                }
                Ok::<(), std::io::Error>(())
            })();
            let mounted = filled
                .map_err(|e| {
                    dest_err(format!(
                        "copying image content into volume {}: {e}",
                        mp.name
                    ))
                })
                .and_then(|()| {
                    resolve::create_missing(root, &resolved, true)?;
                    bind_into(&data, root, &resolved, mp)
                });
            if let Err(e) = mounted {
                let _ = locked.release(&mp.name, &container.id);
                return Err(e);
            }
            Ok(ActiveMount {
                destination: mp.destination.clone(),
                target,
                volume: Some(mp.name.clone()),
            })
        }
        MountType::Bind => {
            let source = Path::new(&mp.source);
            if fs::metadata(source).is_err() {
                if mp.skip_mountpoint_creation {
                    return Err(dest_err(format!(
                        "bind source path does not exist: {}",
                        mp.source
                    )));
                }
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(source)
                    .map_err(|e| ContainerError::Io {
                        op: "create bind source",
                        path: source.to_path_buf(),
                        source: e,
                    })?;
            }
            resolve::create_missing(root, &resolved, source.is_dir())?;
            bind_into(source, root, &resolved, mp)?;
            Ok(ActiveMount {
                destination: mp.destination.clone(),
                target,
                volume: None,
            })
        }
        MountType::Tmpfs => {
            if resolved.exists && !resolved.is_dir {
                return Err(dest_err("cannot mount tmpfs over existing file".into()));
            }
            resolve::create_missing(root, &resolved, true)?;
            let fd = resolve::open_target(root, &resolved.relative)?;
            let data = spec::tmpfs_data(&mp.spec);
            mount::mount(
                "tmpfs",
                &resolve::fd_path(&fd),
                "tmpfs",
                MountFlags::MS_NOSUID | MountFlags::MS_NODEV,
                (!data.is_empty()).then_some(data.as_str()),
            )
            .map_err(|e| dest_err(e.to_string()))?;
            Ok(ActiveMount {
                destination: mp.destination.clone(),
                target,
                volume: None,
            })
        }
    }
}

/// Binds `source` on the resolved destination, then makes it read-only
/// (a second, remounting call: a bind ignores MS_RDONLY) and sets its
/// propagation.
fn bind_into(
    source: &Path,
    root: &Path,
    resolved: &resolve::Resolved,
    mp: &MountPoint,
) -> Result<(), ContainerError> {
    let fail = |e: mount::MountError| {
        ContainerError::Volume(VolumeError::Destination {
            destination: mp.destination.clone(),
            what: e.to_string(),
        })
    };
    let fd = resolve::open_target(root, &resolved.relative)?;
    mount::bind(source, &resolve::fd_path(&fd), false).map_err(fail)?;
    drop(fd);
    // Reopened, the path now ends in the new mount's root.
    let fd = resolve::open_target(root, &resolved.relative)?;
    let on = resolve::fd_path(&fd);
    let mut result = Ok(());
    if !mp.rw {
        result = mount::mount(
            "none",
            &on,
            "",
            MountFlags::MS_BIND | MountFlags::MS_REMOUNT | MountFlags::MS_RDONLY,
            None,
        );
    }
    let propagation = match mp.propagation.as_str() {
        "private" => Some(MountFlags::MS_PRIVATE),
        "rprivate" | "" => Some(MountFlags::MS_PRIVATE | MountFlags::MS_REC),
        "shared" => Some(MountFlags::MS_SHARED),
        "rshared" => Some(MountFlags::MS_SHARED | MountFlags::MS_REC),
        "slave" => Some(MountFlags::MS_SLAVE),
        "rslave" => Some(MountFlags::MS_SLAVE | MountFlags::MS_REC),
        _ => None,
    };
    if result.is_ok()
        && let Some(flags) = propagation
    {
        result = mount::mount("none", &on, "", flags, None);
    }
    if let Err(e) = result {
        let target = resolved.host_path(root);
        let _ = mount::unmount_detach(&target);
        return Err(fail(e));
    }
    Ok(())
}
