//! FITRIM on loop-backed filesystems: space freed inside the filesystem
//! goes back to the host's disk (holes punched in the backing file), on
//! every filesystem the drivers and the benchmark use. Runs as root.

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use storage_core::sys::trim::trim;
use testkit::{FsKind, ScratchFs};

const MIB: u64 = 1 << 20;

fn allocated(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).expect("stat backing file").blocks() * 512
}

#[test]
fn trimming_gives_freed_space_back_to_the_backing_file() {
    testkit::require_root!();
    for kind in [FsKind::Ext4, FsKind::Xfs { reflink: true }, FsKind::Btrfs] {
        let fs = ScratchFs::new(kind, 512 * MIB).expect("scratch filesystem");
        let backing = fs.backing_file().expect("loop-backed").to_path_buf();
        let file = fs.path().join("big");
        let mut out = std::fs::File::create(&file).expect("create");
        let block = vec![0x5a_u8; MIB as usize];
        for _ in 0..128 {
            out.write_all(&block).expect("write");
        }
        out.sync_all().expect("fsync");
        drop(out);
        let written = allocated(&backing);
        std::fs::remove_file(&file).expect("remove");
        // xfs frees an unlinked file's blocks in the background (inode
        // GC) and skips extents still busy in its log: a few rounds.
        let mut trimmed = written;
        for _ in 0..20 {
            nix::unistd::sync();
            trim(fs.path()).unwrap_or_else(|e| panic!("{kind:?}: FITRIM: {e}"));
            trimmed = allocated(&backing);
            if trimmed + 100 * MIB < written {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        println!("{kind:?}: backing file {written} -> {trimmed} bytes allocated");
        assert!(
            trimmed + 100 * MIB < written,
            "{kind:?}: trim gave back {} bytes of 128 MiB freed",
            written.saturating_sub(trimmed)
        );
        fs.cleanup().expect("cleanup");
    }
}
