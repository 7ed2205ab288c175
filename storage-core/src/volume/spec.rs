//! `-v`, `--mount` and `--volumes-from` parsed as moby's Linux parser
//! (`volume/mounts/linux_parser.go`) and docker's CLI (`opts/mount.go`) do,
//! with their error messages. Parsing has no side effects: volumes are
//! created later, when the container registers its mount points.

use std::path::{Component, Path};

use super::mountpoint::{
    BindOptions, MountPoint, MountSpec, MountType, TmpfsOptions, VolumeOptions,
};
use super::{DRIVER, VolumeError};

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];
const DEFAULT_PROPAGATION: &str = "rprivate";

fn invalid_spec(raw: &str) -> String {
    format!("invalid volume specification: '{raw}'")
}

fn invalid_mode(mode: &str) -> VolumeError {
    VolumeError::Spec(format!("invalid mode: {mode}"))
}

/// moby's `linuxValidMountMode`: at most one of each kind of mode.
pub fn valid_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let (mut rw, mut label, mut propagation, mut copy, mut consistency) = (0, 0, 0, 0, 0);
    for o in mode.split(',') {
        match o {
            "ro" | "rw" => rw += 1,
            "z" | "Z" => label += 1,
            "nocopy" => copy += 1,
            "consistent" | "cached" | "delegated" => consistency += 1,
            p if PROPAGATIONS.contains(&p) => propagation += 1,
            _ => return false,
        }
    }
    rw <= 1 && label <= 1 && propagation <= 1 && copy <= 1 && consistency <= 1
}

/// moby's `ReadWrite`: a valid mode without `ro`.
pub fn read_write(mode: &str) -> bool {
    valid_mode(mode) && !mode.split(',').any(|o| o == "ro")
}

fn propagation_of(mode: &str) -> Option<&str> {
    mode.split(',').find(|o| PROPAGATIONS.contains(o))
}

/// `path.Clean` for the absolute paths moby cleans.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

fn config_error(kind: MountType, what: &str) -> VolumeError {
    VolumeError::Spec(format!(
        "invalid mount config for type \"{}\": {what}",
        kind.as_str()
    ))
}

/// moby's `validateMountConfigImpl` plus `parseMountSpec`: the mount point
/// a spec makes. `check_bind_source`: `--mount` requires the bind source to
/// exist, `-v` creates it on mount.
pub fn mount_point_of(spec: MountSpec, check_bind_source: bool) -> Result<MountPoint, VolumeError> {
    let kind = spec.kind.unwrap_or_default();
    if spec.target.is_empty() {
        return Err(config_error(kind, "field Target must not be empty"));
    }
    if !spec.target.starts_with('/') {
        return Err(config_error(
            kind,
            &format!(
                "invalid mount path: '{}' mount path must be absolute",
                spec.target
            ),
        ));
    }
    if clean(&spec.target) == "/" {
        return Err(config_error(
            kind,
            "invalid specification: destination can't be '/'",
        ));
    }
    if kind != MountType::Bind && spec.bind_options.is_some() {
        return Err(config_error(
            kind,
            "field BindOptions must not be specified",
        ));
    }
    if kind != MountType::Volume && spec.volume_options.is_some() {
        return Err(config_error(
            kind,
            "field VolumeOptions must not be specified",
        ));
    }
    if kind != MountType::Tmpfs && spec.tmpfs_options.is_some() {
        return Err(config_error(
            kind,
            "field TmpfsOptions must not be specified",
        ));
    }
    let mut mp = MountPoint {
        rw: !spec.read_only,
        destination: clean(&spec.target),
        kind,
        ..MountPoint::default()
    };
    match kind {
        MountType::Bind => {
            if spec.source.is_empty() {
                return Err(config_error(kind, "field Source must not be empty"));
            }
            if !spec.source.starts_with('/') {
                return Err(config_error(
                    kind,
                    &format!(
                        "invalid mount path: '{}' mount path must be absolute",
                        spec.source
                    ),
                ));
            }
            if let Some(p) = spec.bind_options.as_ref().map(|b| b.propagation.as_str())
                && !p.is_empty()
                && !PROPAGATIONS.contains(&p)
            {
                return Err(config_error(
                    kind,
                    &format!("invalid propagation mode: {p}"),
                ));
            }
            if check_bind_source && std::fs::symlink_metadata(&spec.source).is_err() {
                return Err(config_error(
                    kind,
                    &format!("bind source path does not exist: {}", spec.source),
                ));
            }
            mp.source = clean(&spec.source);
            mp.propagation = spec
                .bind_options
                .as_ref()
                .map(|b| b.propagation.clone())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| DEFAULT_PROPAGATION.to_string());
            mp.skip_mountpoint_creation = check_bind_source;
        }
        MountType::Volume => {
            if !spec.source.is_empty() {
                super::name::validate(&spec.source)?;
                mp.name = spec.source.clone();
            }
            mp.driver = DRIVER.to_string();
            mp.copy_data = !spec.volume_options.as_ref().is_some_and(|o| o.no_copy);
            if let Some(driver) = spec
                .volume_options
                .as_ref()
                .and_then(|o| o.driver_config.as_ref())
                .map(|d| d.name.as_str())
                .filter(|d| !d.is_empty() && *d != DRIVER)
            {
                return Err(VolumeError::Spec(format!(
                    "volume driver {driver:?}: only the \"local\" driver exists"
                )));
            }
        }
        MountType::Tmpfs => {
            if !spec.source.is_empty() {
                return Err(config_error(kind, "field Source must not be specified"));
            }
        }
    }
    mp.spec = spec;
    Ok(mp)
}

/// `-v SPEC` (moby's `ParseMountRaw`): `/dest`, `name:/dest[:mode]`,
/// `/host:/dest[:mode]`.
pub fn parse_volume_flag(raw: &str) -> Result<MountPoint, VolumeError> {
    let parts: Vec<&str> = raw.splitn(4, ':').collect();
    if parts[0].is_empty() {
        return Err(VolumeError::Spec(invalid_spec(raw)));
    }
    let mut spec = MountSpec::default();
    let mut mode = "";
    match parts.as_slice() {
        [target] => spec.target = target.to_string(),
        [source, target] => {
            if valid_mode(target) {
                return Err(VolumeError::Spec(invalid_spec(raw)));
            }
            spec.source = source.to_string();
            spec.target = target.to_string();
        }
        [source, target, m] => {
            spec.source = source.to_string();
            spec.target = target.to_string();
            mode = m;
        }
        _ => return Err(VolumeError::Spec(invalid_spec(raw))),
    }
    if !valid_mode(mode) {
        return Err(invalid_mode(mode));
    }
    spec.kind = Some(if spec.source.starts_with('/') {
        MountType::Bind
    } else {
        MountType::Volume
    });
    spec.read_only = !read_write(mode);
    if mode.split(',').any(|o| o == "nocopy") {
        spec.volume_options = Some(VolumeOptions {
            no_copy: true,
            ..VolumeOptions::default()
        });
    }
    if let Some(p) = propagation_of(mode) {
        spec.bind_options = Some(BindOptions {
            propagation: p.to_string(),
            ..BindOptions::default()
        });
    }
    let mut mp = mount_point_of(spec, false).map_err(|e| match e {
        VolumeError::Spec(what) => VolumeError::Spec(format!("{}: {what}", invalid_spec(raw))),
        other => other,
    })?;
    mp.mode = mode.to_string();
    if mp.kind == MountType::Volume && mp.mode.is_empty() && !mp.name.is_empty() {
        // setBindModeIfNull: the local driver's volumes get `z`. A bare
        // `-v /path` is no bind for docker's CLI but a `Config.Volumes`
        // entry, which keeps an empty mode.
        mp.mode = "z".into();
    }
    Ok(mp)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, VolumeError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(VolumeError::Spec(format!(
            "invalid value for {key}: {value}"
        ))),
    }
}

/// `--mount type=...,source=...,target=...,...` as docker's CLI reads it,
/// then validated like the daemon does.
pub fn parse_mount_flag(value: &str) -> Result<MountPoint, VolumeError> {
    let mut spec = MountSpec::default();
    let mut volume_options: Option<VolumeOptions> = None;
    let mut bind_options: Option<BindOptions> = None;
    let mut tmpfs_options: Option<TmpfsOptions> = None;
    let mut kind = "volume".to_string();
    for field in value.split(',').filter(|f| !f.is_empty()) {
        let Some((key, val)) = field.split_once('=') else {
            match field {
                "readonly" | "ro" => spec.read_only = true,
                "volume-nocopy" => volume_options.get_or_insert_default().no_copy = true,
                "bind-nonrecursive" => bind_options.get_or_insert_default().non_recursive = true,
                _ => {
                    return Err(VolumeError::Spec(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
            }
            continue;
        };
        match key {
            "type" => kind = val.to_ascii_lowercase(),
            "source" | "src" => spec.source = val.to_string(),
            "target" | "dst" | "destination" => spec.target = val.to_string(),
            "readonly" | "ro" => spec.read_only = parse_bool(key, val)?,
            "volume-nocopy" => {
                volume_options.get_or_insert_default().no_copy = parse_bool(key, val)?
            }
            "volume-label" => {
                let (k, v) = val.split_once('=').unwrap_or((val, ""));
                if !k.is_empty() {
                    volume_options
                        .get_or_insert_default()
                        .labels
                        .insert(k.to_string(), v.to_string());
                }
            }
            "volume-driver" => {
                volume_options
                    .get_or_insert_default()
                    .driver_config
                    .get_or_insert_default()
                    .name = val.to_string()
            }
            "volume-opt" => {
                let (k, v) = val.split_once('=').unwrap_or((val, ""));
                if !k.is_empty() {
                    volume_options
                        .get_or_insert_default()
                        .driver_config
                        .get_or_insert_default()
                        .options
                        .insert(k.to_string(), v.to_string());
                }
            }
            "bind-propagation" => {
                bind_options.get_or_insert_default().propagation = val.to_ascii_lowercase()
            }
            "bind-nonrecursive" => {
                bind_options.get_or_insert_default().non_recursive = parse_bool(key, val)?
            }
            "tmpfs-size" => {
                let size = super::options::parse_size(val)
                    .map_err(|_| VolumeError::Spec(format!("invalid value for {key}: {val}")))?;
                tmpfs_options.get_or_insert_default().size_bytes = size as i64;
            }
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(val, 8)
                    .map_err(|_| VolumeError::Spec(format!("invalid value for {key}: {val}")))?;
                tmpfs_options.get_or_insert_default().mode = mode;
            }
            _ => {
                return Err(VolumeError::Spec(format!(
                    "unexpected key '{key}' in '{field}'"
                )));
            }
        }
    }
    let kind = match kind.as_str() {
        "volume" => MountType::Volume,
        "bind" => MountType::Bind,
        "tmpfs" => MountType::Tmpfs,
        "" => return Err(VolumeError::Spec("type is required".into())),
        other => {
            return Err(VolumeError::Spec(format!(
                "invalid mount config for type \"{other}\": mount type unknown"
            )));
        }
    };
    spec.kind = Some(kind);
    if spec.target.is_empty() {
        return Err(VolumeError::Spec("target is required".into()));
    }
    for (set, prefix, wanted) in [
        (volume_options.is_some(), "volume", MountType::Volume),
        (bind_options.is_some(), "bind", MountType::Bind),
        (tmpfs_options.is_some(), "tmpfs", MountType::Tmpfs),
    ] {
        if set && kind != wanted {
            return Err(VolumeError::Spec(format!(
                "cannot mix '{prefix}-*' options with mount type '{}'",
                kind.as_str()
            )));
        }
    }
    // docker's CLI always gives VolumeOptions a (maybe empty) DriverConfig.
    if let Some(vo) = volume_options.as_mut() {
        vo.driver_config.get_or_insert_default();
    }
    spec.volume_options = volume_options;
    spec.bind_options = bind_options;
    spec.tmpfs_options = tmpfs_options;
    let mut mp = mount_point_of(spec, true)?;
    if mp.kind == MountType::Volume {
        mp.mode = "z".into();
    }
    Ok(mp)
}

/// `--volumes-from C[:mode]` (moby's `ParseVolumesFrom`): the container
/// and the mode, `rw` by default; propagation and copy modes refused.
pub fn parse_volumes_from(spec: &str) -> Result<(String, String), VolumeError> {
    if spec.is_empty() {
        return Err(VolumeError::Spec(
            "volumes-from specification cannot be an empty string".into(),
        ));
    }
    let (id, mode) = spec.split_once(':').unwrap_or((spec, ""));
    if mode.is_empty() {
        return Ok((id.to_string(), "rw".to_string()));
    }
    if !valid_mode(mode) || propagation_of(mode).is_some() || mode.split(',').any(|o| o == "nocopy")
    {
        return Err(invalid_mode(mode));
    }
    Ok((id.to_string(), mode.to_string()))
}

/// The tmpfs data string for a `--mount type=tmpfs` (moby's
/// `ConvertTmpfsOptions`).
pub fn tmpfs_data(spec: &MountSpec) -> String {
    let mut opts = Vec::new();
    if spec.read_only {
        opts.push("ro".to_string());
    }
    if let Some(t) = &spec.tmpfs_options {
        if t.mode != 0 {
            opts.push(format!("mode={:o}", t.mode));
        }
        if t.size_bytes != 0 {
            let size = t.size_bytes;
            let suffixed = [("g", 1i64 << 30), ("m", 1 << 20), ("k", 1 << 10)]
                .into_iter()
                .find(|(_, d)| size % d == 0)
                .map(|(s, d)| format!("{}{s}", size / d))
                .unwrap_or_else(|| size.to_string());
            opts.push(format!("size={suffixed}"));
        }
    }
    opts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flag_forms() {
        let anon = parse_volume_flag("/data").unwrap();
        assert_eq!(anon.kind, MountType::Volume);
        assert!(anon.is_anonymous_volume() && anon.rw && anon.copy_data);
        assert_eq!(anon.mode, "");

        let named = parse_volume_flag("db:/var/lib/db:ro,nocopy").unwrap();
        assert_eq!(named.name, "db");
        assert!(!named.rw && !named.copy_data);
        assert_eq!(named.mode, "ro,nocopy");

        let bind = parse_volume_flag("/srv/x:/x/../y:ro").unwrap();
        assert_eq!(bind.kind, MountType::Bind);
        assert_eq!(bind.destination, "/y");
        assert_eq!(bind.propagation, "rprivate");
        assert!(!bind.rw);
    }

    #[test]
    fn volume_flag_errors_are_dockers() {
        let e = parse_volume_flag("./rel:/x").unwrap_err().to_string();
        assert!(e.contains("includes invalid characters"), "{e}");
        let e = parse_volume_flag("vol:/").unwrap_err().to_string();
        assert!(e.contains("destination can't be '/'"), "{e}");
        let e = parse_volume_flag("/x:rw").unwrap_err().to_string();
        assert_eq!(e, "invalid volume specification: '/x:rw'");
        let e = parse_volume_flag("v:/x:bogus").unwrap_err().to_string();
        assert_eq!(e, "invalid mode: bogus");
        assert!(parse_volume_flag("v:relative").is_err());
        assert!(parse_volume_flag("a:b:c:d").is_err());
    }

    #[test]
    fn mount_flag_forms() {
        let v =
            parse_mount_flag("type=volume,source=db,target=/db,readonly,volume-nocopy").unwrap();
        assert_eq!(v.name, "db");
        assert!(!v.rw && !v.copy_data);
        let t = parse_mount_flag("type=tmpfs,target=/run,tmpfs-size=64m,tmpfs-mode=1777").unwrap();
        assert_eq!(tmpfs_data(&t.spec), "mode=1777,size=64m");
        let e = parse_mount_flag("type=bind,source=/nonexistent-x,target=/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bind source path does not exist"), "{e}");
        let e = parse_mount_flag("type=volume,target=/x,foo=bar")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unexpected key 'foo' in 'foo=bar'");
        let e = parse_mount_flag("type=bind,source=/tmp,target=/x,volume-nocopy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot mix 'volume-*' options"), "{e}");
        assert!(parse_mount_flag("type=volume,source=a,target=/").is_err());
    }

    #[test]
    fn volumes_from_modes() {
        assert_eq!(parse_volumes_from("c").unwrap(), ("c".into(), "rw".into()));
        assert_eq!(parse_volumes_from("c:ro").unwrap().1, "ro");
        assert!(parse_volumes_from("c:nocopy").is_err());
        assert!(parse_volumes_from("c:rshared").is_err());
        assert!(parse_volumes_from("").is_err());
    }
}
