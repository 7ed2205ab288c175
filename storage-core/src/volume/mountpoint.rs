//! A container's mount points in Docker's shapes: [`MountPoint`] is moby's
//! `volume/mounts.MountPoint` as `config.v2.json` stores it (under
//! `MountPoints`, keyed by destination), [`MountSpec`] is the API's
//! `mount.Mount` it was made from, and [`ApiMountPoint`] is one element of
//! `docker inspect`'s `Mounts` array.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountType {
    #[default]
    #[serde(rename = "volume")]
    Volume,
    #[serde(rename = "bind")]
    Bind,
    #[serde(rename = "tmpfs")]
    Tmpfs,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Volume => "volume",
            MountType::Bind => "bind",
            MountType::Tmpfs => "tmpfs",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindOptions {
    #[serde(
        rename = "Propagation",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub propagation: String,
    #[serde(rename = "NonRecursive", default, skip_serializing_if = "is_false")]
    pub non_recursive: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverConfig {
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(
        rename = "Options",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOptions {
    #[serde(rename = "NoCopy", default, skip_serializing_if = "is_false")]
    pub no_copy: bool,
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "DriverConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub driver_config: Option<DriverConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsOptions {
    #[serde(rename = "SizeBytes", default, skip_serializing_if = "is_zero")]
    pub size_bytes: i64,
    #[serde(rename = "Mode", default, skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// The API's `mount.Mount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// `None` only for volumes from `Config.Volumes` (image `VOLUME`, bare
    /// `-v /path`), whose spec Docker leaves empty.
    #[serde(rename = "Type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MountType>,
    #[serde(rename = "Source", default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(rename = "Target", default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(rename = "ReadOnly", default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(
        rename = "BindOptions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bind_options: Option<BindOptions>,
    #[serde(
        rename = "VolumeOptions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub volume_options: Option<VolumeOptions>,
    #[serde(
        rename = "TmpfsOptions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tmpfs_options: Option<TmpfsOptions>,
}

/// moby's `MountPoint` as persisted in `config.v2.json`. `CopyData` is not
/// persisted by Docker (it copies at create time); layerscope copies on the
/// first `container mount`, so it keeps the flag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    #[serde(rename = "Source")]
    pub source: String,
    #[serde(rename = "Destination")]
    pub destination: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Type")]
    pub kind: MountType,
    /// The user's mode string (`ro,nocopy`, `z`, ...); Docker's JSON name.
    #[serde(rename = "Relabel", default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(
        rename = "Propagation",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub propagation: String,
    #[serde(rename = "Spec")]
    pub spec: MountSpec,
    #[serde(rename = "SkipMountpointCreation", default)]
    pub skip_mountpoint_creation: bool,
    #[serde(rename = "CopyData", default)]
    pub copy_data: bool,
}

impl MountPoint {
    /// Whether the volume behind it was created without a name.
    pub fn is_anonymous_volume(&self) -> bool {
        self.kind == MountType::Volume && self.spec.source.is_empty()
    }

    /// The element of `docker inspect`'s `Mounts` (a volume's `Source` is
    /// its path even where `config.v2.json` leaves it empty).
    pub fn to_api(&self) -> ApiMountPoint {
        ApiMountPoint {
            kind: self.kind.as_str().to_string(),
            name: self.name.clone(),
            source: self.source.clone(),
            destination: self.destination.clone(),
            driver: self.driver.clone(),
            mode: self.mode.clone(),
            rw: self.rw,
            propagation: self.propagation.clone(),
        }
    }
}

/// The API's `container.MountPoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiMountPoint {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "Source")]
    pub source: String,
    #[serde(rename = "Destination")]
    pub destination: String,
    #[serde(rename = "Driver", default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    #[serde(rename = "Mode")]
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    #[serde(rename = "Propagation")]
    pub propagation: String,
}
