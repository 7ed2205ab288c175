//! The base device's filesystem: `mkfs.xfs` / `mkfs.ext4` as Docker runs
//! them, and reading the type and UUID back from the superblock (Docker
//! asks blkid; the two superblock formats are all this driver makes).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::process::Command;

use super::options::BaseFs;
use crate::driver::DriverError;

/// Formats `device` with `fs` plus the user's `dm.mkfsarg`s.
pub fn mkfs(fs: BaseFs, device: &Path, extra: &[String]) -> Result<(), DriverError> {
    let run = |program: &'static str, args: &[&str]| -> Result<(), DriverError> {
        let out = Command::new(program)
            .args(args)
            .args(extra)
            .arg(device)
            .output()
            .map_err(DriverError::io(program, device))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(DriverError::io(program, device)(io::Error::other(format!(
            "{}: {}",
            out.status,
            last.trim()
        ))))
    };
    match fs {
        BaseFs::Xfs => run("mkfs.xfs", &["-q", "-f"]),
        BaseFs::Ext4 => run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
            ],
        )
        .or_else(|_| {
            run(
                "mkfs.ext4",
                &["-q", "-F", "-E", "nodiscard,lazy_itable_init=0"],
            )
        }),
    }
}

/// The filesystem type and UUID of what is on `device`, if it is xfs or ext4.
pub fn probe(device: &Path) -> io::Result<Option<(BaseFs, String)>> {
    let mut head = vec![0u8; 2048];
    File::open(device)?.read_exact(&mut head)?;
    Ok(probe_bytes(&head))
}

fn probe_bytes(head: &[u8]) -> Option<(BaseFs, String)> {
    if head.get(0..4) == Some(b"XFSB") {
        return Some((BaseFs::Xfs, uuid_string(head.get(32..48)?)));
    }
    let magic = head.get(1024 + 0x38..1024 + 0x3a)?;
    if magic == [0x53, 0xef] {
        return Some((
            BaseFs::Ext4,
            uuid_string(head.get(1024 + 0x68..1024 + 0x78)?),
        ));
    }
    None
}

fn uuid_string(bytes: &[u8]) -> String {
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_xfs_and_ext4_superblocks() {
        let mut head = vec![0u8; 2048];
        head[0..4].copy_from_slice(b"XFSB");
        head[32..48].copy_from_slice(&[0x11; 16]);
        assert_eq!(
            probe_bytes(&head),
            Some((BaseFs::Xfs, "11111111-1111-1111-1111-111111111111".into()))
        );
        let mut head = vec![0u8; 2048];
        head[1024 + 0x38] = 0x53;
        head[1024 + 0x39] = 0xef;
        head[1024 + 0x68] = 0xab;
        let (fs, uuid) = probe_bytes(&head).unwrap();
        assert_eq!(fs, BaseFs::Ext4);
        assert!(uuid.starts_with("ab000000-"), "{uuid}");
        assert_eq!(probe_bytes(&[0u8; 2048]), None);
    }
}
