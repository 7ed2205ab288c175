//! Mounting and serving a union: the arguments of the helper process (one
//! `key=value` per line in the `LAYERSCOPE_UNION_SERVE` environment
//! variable), the fuser session with the mount options a container root
//! needs (`allow_other`, `default_permissions`, `dev`, `suid`), and the pid
//! file the aufs driver uses to find and stop the helper.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};

use super::fs::{UnionFs, UnionOptions};
use super::{Branches, UnionError};

/// The environment variable carrying [`ServeArgs`] to the helper.
pub const SERVE_ENV: &str = "LAYERSCOPE_UNION_SERVE";

/// Everything needed to serve one union.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    pub mountpoint: PathBuf,
    /// The writable branch.
    pub rw: PathBuf,
    /// Read-only branches, top first.
    pub ro: Vec<PathBuf>,
    /// Written with the server's pid once the mount is live; removed on exit.
    pub pid_file: Option<PathBuf>,
    /// The mount's source name in /proc/self/mountinfo.
    pub fsname: String,
    pub options: UnionOptions,
}

impl ServeArgs {
    /// The `key=value` lines of the helper's environment variable.
    pub fn encode(&self) -> String {
        let mut out = format!(
            "mount={}\nrw={}\nname={}\nttl_ms={}\npassthrough={}\n",
            self.mountpoint.display(),
            self.rw.display(),
            self.fsname,
            self.options.ttl.as_millis(),
            u8::from(self.options.passthrough)
        );
        for ro in &self.ro {
            out.push_str(&format!("ro={}\n", ro.display()));
        }
        if let Some(pid) = &self.pid_file {
            out.push_str(&format!("pid={}\n", pid.display()));
        }
        out
    }

    pub fn decode(text: &str) -> Result<Self, UnionError> {
        let mut args = ServeArgs {
            mountpoint: PathBuf::new(),
            rw: PathBuf::new(),
            ro: Vec::new(),
            pid_file: None,
            fsname: "aufs".into(),
            options: UnionOptions::default(),
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| UnionError::Args(format!("line {line:?} is not key=value")))?;
            match key {
                "mount" => args.mountpoint = value.into(),
                "rw" => args.rw = value.into(),
                "ro" => args.ro.push(value.into()),
                "pid" => args.pid_file = Some(value.into()),
                "name" => args.fsname = value.into(),
                "ttl_ms" => {
                    let ms = value
                        .parse()
                        .map_err(|_| UnionError::Args(format!("bad ttl_ms {value:?}")))?;
                    args.options.ttl = Duration::from_millis(ms);
                }
                "passthrough" => args.options.passthrough = value == "1",
                other => return Err(UnionError::Args(format!("unknown key {other:?}"))),
            }
        }
        if args.mountpoint.as_os_str().is_empty() || args.rw.as_os_str().is_empty() {
            return Err(UnionError::Args("mount= and rw= are required".into()));
        }
        Ok(args)
    }
}

fn session(args: &ServeArgs) -> Result<Session<UnionFs>, UnionError> {
    let branches = Branches::new(args.rw.clone(), args.ro.clone());
    let fs = UnionFs::new(branches, args.options.clone())
        .map_err(UnionError::io("read branches of", &args.rw))?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(args.fsname.clone()),
        MountOption::Subtype("layerscope-aufs".into()),
        MountOption::DefaultPermissions,
        MountOption::Dev,
        MountOption::Suid,
        MountOption::RW,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(4);
    config.clone_fd = true;
    Session::new(fs, &args.mountpoint, &config)
        .map_err(UnionError::io("mount union on", &args.mountpoint))
}

fn write_pid(pid_file: &Path) -> Result<(), UnionError> {
    crate::fsutil::write_atomic(pid_file, std::process::id().to_string().as_bytes(), 0o644)
        .map_err(UnionError::io("write", pid_file))
}

/// Mounts the union and serves it in the calling thread until it is
/// unmounted.
pub fn serve(args: &ServeArgs) -> Result<(), UnionError> {
    let session = session(args)?;
    if let Some(pid_file) = &args.pid_file {
        write_pid(pid_file)?;
    }
    let served = session
        .run()
        .map_err(UnionError::io("serve union on", &args.mountpoint));
    if let Some(pid_file) = &args.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    served
}

/// The helper's entry point: serves the union described by
/// `LAYERSCOPE_UNION_SERVE`, or returns `None` when it is not set.
pub fn serve_from_env() -> Option<Result<(), UnionError>> {
    let text = std::env::var(SERVE_ENV).ok()?;
    Some(ServeArgs::decode(&text).and_then(|args| serve(&args)))
}

/// Mounts the union and serves it from a thread of this process; the
/// thread ends when the mount is unmounted (by anyone).
pub fn mount_background(args: &ServeArgs) -> Result<BackgroundSession, UnionError> {
    session(args)?
        .spawn()
        .map_err(UnionError::io("start union thread for", &args.mountpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_args_round_trip() {
        let args = ServeArgs {
            mountpoint: "/m".into(),
            rw: "/rw".into(),
            ro: vec!["/a".into(), "/b".into()],
            pid_file: Some("/m.pid".into()),
            fsname: "aufs:x".into(),
            options: UnionOptions {
                ttl: Duration::from_millis(1500),
                passthrough: false,
            },
        };
        let back = ServeArgs::decode(&args.encode()).unwrap();
        assert_eq!(back.ro, args.ro);
        assert_eq!(back.pid_file, args.pid_file);
        assert_eq!(back.options.ttl, args.options.ttl);
        assert!(!back.options.passthrough);
        assert!(ServeArgs::decode("rw=/x\n").is_err());
        assert!(ServeArgs::decode("mount=/m\nrw=/x\nbogus=1\n").is_err());
    }
}
