//! The `layerscope` binary as users run it: usage errors, doctor, and the
//! layer and container commands on a real overlay2 store (as root).

use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use testkit::{FsKind, ScratchFs};

fn layerscope(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run layerscope")
}

fn stdout_last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One clear line on stderr, non-zero exit.
fn assert_one_line_error(output: &Output, needle: &str) {
    assert!(!output.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {stderr}");
    assert!(lines[0].starts_with("layerscope: "), "{stderr}");
    assert!(lines[0].contains(needle), "want {needle:?} in: {stderr}");
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_device_major(0).unwrap();
        header.set_device_minor(0).unwrap();
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn unknown_subcommand_gets_clap_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
    assert!(stderr.contains("Usage:"), "{stderr}");
}

#[test]
fn doctor_json_reports_every_feature_with_reasons_for_no() {
    let output = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert_success(&output, "doctor --json");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let features = report["features"].as_array().expect("features array");
    for name in [
        "overlay",
        "overlay.metacopy",
        "btrfs",
        "xfs.reflink",
        "fuse",
        "aufs",
        "dm-thin-pool",
        "tracepoint",
        "kprobe",
        "fentry",
        "cachestat",
        "vm.free_page_reporting",
        "vm.damon_reclaim",
    ] {
        let feature = features
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("doctor lacks {name}: {report}"));
        if feature["supported"] == false {
            assert!(
                feature["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}: a no needs its reason: {feature}"
            );
        }
    }
}

#[test]
fn layer_apply_export_round_trips_bytes_and_bad_input_changes_nothing() {
    if !testkit::require_root("layer_apply_export_round_trips_bytes") {
        return;
    }
    let fs = ScratchFs::new(FsKind::Ext4, 256 << 20).unwrap();
    let root = fs.path().join("root");
    let tar = tar_of(&[("etc/hostname", b"box\n"), ("bin/tool", b"#!/bin/sh\n")]);
    let tar_path = fs.path().join("base.tar");
    std::fs::write(&tar_path, &tar).unwrap();

    let applied = layerscope(&root, &["layer", "apply", tar_path.to_str().unwrap()]);
    assert_success(&applied, "layer apply");
    let chain = stdout_last_line(&applied);
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    assert_eq!(chain, diff_id, "a base layer's chain-id is its diff-id");

    let exported = fs.path().join("out.tar");
    assert_success(
        &layerscope(
            &root,
            &["layer", "export", &chain, "-o", exported.to_str().unwrap()],
        ),
        "layer export",
    );
    assert_eq!(
        std::fs::read(&exported).unwrap(),
        tar,
        "export gives the original bytes"
    );

    // Bad input: a missing parent, a corrupt tar, a duplicate.
    let before = layerscope(&root, &["layer", "ls", "--json"]).stdout;
    let missing = format!("sha256:{}", "ab".repeat(32));
    assert_one_line_error(
        &layerscope(
            &root,
            &[
                "layer",
                "apply",
                tar_path.to_str().unwrap(),
                "--parent",
                &missing,
            ],
        ),
        "not found",
    );
    let corrupt = fs.path().join("corrupt.tar");
    std::fs::write(&corrupt, &tar[..700]).unwrap();
    assert!(
        !layerscope(&root, &["layer", "apply", corrupt.to_str().unwrap()])
            .status
            .success()
    );
    assert_one_line_error(
        &layerscope(&root, &["layer", "apply", tar_path.to_str().unwrap()]),
        "already exists",
    );
    assert_eq!(layerscope(&root, &["layer", "ls", "--json"]).stdout, before);
    let driver_dirs: Vec<_> = std::fs::read_dir(root.join("overlay2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        driver_dirs.len(),
        2,
        "only l/ and the one layer: {driver_dirs:?}"
    );
    assert_eq!(
        std::fs::read_dir(root.join("overlay2/l")).unwrap().count(),
        1
    );
}

#[test]
fn container_lifecycle_through_the_cli() {
    if !testkit::require_root("container_lifecycle_through_the_cli") {
        return;
    }
    let fs = ScratchFs::new(FsKind::Ext4, 256 << 20).unwrap();
    let root = fs.path().join("root");
    let tar_path = fs.path().join("base.tar");
    std::fs::write(
        &tar_path,
        tar_of(&[("etc/motd", b"hello\n"), ("data/old", b"x")]),
    )
    .unwrap();
    let chain = stdout_last_line(&layerscope(
        &root,
        &["layer", "apply", tar_path.to_str().unwrap()],
    ));

    assert_success(
        &layerscope(&root, &["container", "create", &chain, "--name", "web"]),
        "create",
    );
    let mount = layerscope(&root, &["container", "mount", "web"]);
    assert_success(&mount, "mount");
    let merged = std::path::PathBuf::from(stdout_last_line(&mount));
    assert_eq!(std::fs::read(merged.join("etc/motd")).unwrap(), b"hello\n");
    assert!(
        merged.join("etc/hosts").exists(),
        "init layer provides /etc/hosts"
    );
    std::fs::write(merged.join("etc/motd"), b"changed\n").unwrap();
    std::fs::remove_file(merged.join("data/old")).unwrap();
    std::fs::write(merged.join("new.txt"), vec![7u8; 1000]).unwrap();

    let diff = layerscope(&root, &["container", "diff", "web"]);
    assert_success(&diff, "diff");
    let diff = String::from_utf8_lossy(&diff.stdout);
    // /etc keeps its mtime (a file in it was rewritten, none added): moby
    // does not list such a directory.
    for line in ["C /etc/motd", "C /data", "D /data/old", "A /new.txt"] {
        assert!(
            diff.lines().any(|l| l == line),
            "missing {line:?} in:\n{diff}"
        );
    }
    assert!(
        !diff.contains("/etc/hosts"),
        "init-layer files are not the container's changes:\n{diff}"
    );

    let size = layerscope(&root, &["container", "size", "web", "--json"]);
    assert_success(&size, "size");
    let size: serde_json::Value = serde_json::from_slice(&size.stdout).unwrap();
    assert_eq!(size["size_rw"], 1008, "new.txt + motd: {size}");
    assert_eq!(
        size["size_root_fs"],
        1008 + 7,
        "rw + the image layer's 7 bytes: {size}"
    );

    assert_success(
        &layerscope(&root, &["container", "unmount", "web"]),
        "unmount",
    );
    assert!(!storage_core::sys::mount::is_mount_point(&merged));
    let committed = layerscope(&root, &["container", "commit", "web"]);
    assert_success(&committed, "commit");
    let new_chain = stdout_last_line(&committed);
    let inspect = layerscope(&root, &["layer", "inspect", &new_chain]);
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["parent"], chain.as_str());

    assert_success(&layerscope(&root, &["container", "rm", "web"]), "rm");
    assert_one_line_error(
        &layerscope(&root, &["container", "mount", "web"]),
        "not found",
    );
    assert_success(&layerscope(&root, &["layer", "rm", &new_chain]), "layer rm");
    assert_success(
        &layerscope(&root, &["layer", "rm", &chain]),
        "layer rm base",
    );
    let left: Vec<_> = std::fs::read_dir(root.join("overlay2"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("l")],
        "nothing left but l/"
    );
}

#[test]
fn a_killed_apply_leaves_nothing_the_next_command_does_not_clean() {
    if !testkit::require_root("a_killed_apply_leaves_nothing") {
        return;
    }
    use std::io::Write;
    let fs = ScratchFs::new(FsKind::Ext4, 256 << 20).unwrap();
    let root = fs.path().join("root");
    let big: Vec<u8> = vec![0x42; 8 << 20];
    let tar = tar_of(&[("a", b"first"), ("big", &big)]);
    let fifo = fs.path().join("layer.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .arg("--root")
        .arg(&root)
        .args(["layer", "apply"])
        .arg(&fifo)
        .spawn()
        .unwrap();
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // Half the layer, then the writer "crashes" mid-apply.
    writer.write_all(&tar[..tar.len() / 2]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(writer);
    assert!(
        std::fs::read_dir(root.join("image/overlay2/layerdb/tmp"))
            .unwrap()
            .count()
            > 0,
        "the killed apply left its intent behind"
    );

    // The next command repairs: no layer, no orphaned driver dir, no link.
    let ls = layerscope(&root, &["layer", "ls", "--json"]);
    assert_success(&ls, "layer ls");
    assert_eq!(String::from_utf8_lossy(&ls.stdout).trim(), "[]");
    let driver_dirs: Vec<_> = std::fs::read_dir(root.join("overlay2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(driver_dirs, vec!["l".to_string()]);
    assert_eq!(
        std::fs::read_dir(root.join("overlay2/l")).unwrap().count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(root.join("image/overlay2/layerdb/tmp"))
            .unwrap()
            .count(),
        0
    );
}
