//! `layerscope volume ...` and the container volume flags through the
//! binary, as root on a real overlay2 store: Docker's output shapes, one
//! error line for bad input with nothing created, reference counts that
//! survive separate CLI runs, and several processes sharing one volume.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::{FsKind, ScratchFs, mountinfo};

fn layerscope(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run layerscope")
}

fn ok(root: &Path, args: &[&str]) -> String {
    let output = layerscope(root, args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn last_line(text: &str) -> String {
    text.lines().last().unwrap_or_default().to_string()
}

/// One clear line on stderr, non-zero exit.
fn fails_with(root: &Path, args: &[&str], needle: &str) {
    let output = layerscope(root, args);
    assert!(!output.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: want one error line, got: {stderr}"
    );
    assert!(lines[0].starts_with("layerscope: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: want {needle:?} in: {stderr}"
    );
}

/// A scratch ext4 with a data root and an image layer; every mount below
/// it is undone (deepest first) on drop, also after a failed assertion.
struct Fixture {
    fs: ScratchFs,
    root: PathBuf,
    chain: String,
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        if !testkit::require_root(test) {
            return None;
        }
        let fs = ScratchFs::new(FsKind::Ext4, 512 << 20).unwrap();
        let root = fs.path().join("root");
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data, mode) in [
            ("data/seed", &b"from image"[..], 0o640),
            ("etc/conf", b"c", 0o644),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_uid(1000);
            header.set_gid(1000);
            header.set_mtime(1_700_000_000);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, data).unwrap();
        }
        let tar_path = fs.path().join("image.tar");
        std::fs::write(&tar_path, builder.into_inner().unwrap()).unwrap();
        let chain = last_line(&ok(&root, &["layer", "apply", tar_path.to_str().unwrap()]));
        Some(Self { fs, root, chain })
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let mut mounts = mountinfo::mounts_under(self.fs.path()).unwrap_or_default();
        mounts.retain(|m| m.mount_point != self.fs.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
        for m in mounts {
            let _ = testkit::unmount::unmount_robust(&m.mount_point);
        }
    }
}

fn volume_names(root: &Path) -> Vec<String> {
    ok(root, &["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn volume_lifecycle_with_dockers_shapes() {
    let Some(fx) = Fixture::new("volume_cli_lifecycle") else {
        return;
    };
    let root = &fx.root;
    assert_eq!(
        last_line(&ok(root, &["volume", "create", "db", "--label", "team=x"])),
        "db"
    );
    // Creating it again is fine, as with docker.
    assert_eq!(last_line(&ok(root, &["volume", "create", "db"])), "db");
    let anon = last_line(&ok(root, &["volume", "create"]));
    assert_eq!(anon.len(), 64);

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(root, &["volume", "inspect", "db"])).unwrap();
    let v = &inspect[0];
    assert_eq!(v["Name"], "db");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"]["team"], "x");
    assert!(v["Options"].is_null());
    assert_eq!(
        v["Mountpoint"],
        root.join("volumes/db/_data").display().to_string()
    );
    let created = v["CreatedAt"].as_str().unwrap();
    assert!(created.len() == 20 && created.ends_with('Z'), "{created}");
    let anon_labels: serde_json::Value =
        serde_json::from_str(&ok(root, &["volume", "inspect", &anon])).unwrap();
    assert_eq!(anon_labels[0]["Labels"]["com.docker.volume.anonymous"], "");

    let table = ok(root, &["volume", "ls"]);
    assert!(table.starts_with("DRIVER    VOLUME NAME\n"), "{table}");
    assert!(table.contains("local     db\n"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&ok(
        root,
        &["volume", "ls", "--json", "--filter", "label=team"],
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);

    // In use: rm refused with Docker's message; prune skips it.
    let created = last_line(&ok(
        root,
        &[
            "container",
            "create",
            &fx.chain,
            "--name",
            "c1",
            "-v",
            "db:/data",
        ],
    ));
    fails_with(
        root,
        &["volume", "rm", "db"],
        &format!("remove db: volume is in use - [{created}]"),
    );
    let dangling = ok(root, &["volume", "ls", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.trim(), anon);
    let pruned = ok(root, &["volume", "prune"]);
    assert!(
        pruned.starts_with(&format!("Deleted Volumes:\n{anon}\n")),
        "{pruned}"
    );
    assert_eq!(volume_names(root), vec!["db"]);
    let report: serde_json::Value =
        serde_json::from_str(&ok(root, &["volume", "prune", "--all", "--json"])).unwrap();
    assert_eq!(report["VolumesDeleted"].as_array().unwrap().len(), 0);
    ok(root, &["container", "rm", "c1"]);
    ok(root, &["volume", "rm", "db"]);
    assert!(volume_names(root).is_empty());
    fails_with(root, &["volume", "rm", "db"], "get db: no such volume");
}

#[test]
fn container_volumes_mount_copy_ro_and_rm_v() {
    let Some(fx) = Fixture::new("volume_cli_container") else {
        return;
    };
    let root = &fx.root;
    let host = fx.fs.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("keep"), b"k").unwrap();
    let bind = format!("{}:/host:ro", host.display());
    let mount = format!("type=bind,source={},target=/host-rw", host.display());
    ok(
        root,
        &[
            "container",
            "create",
            &fx.chain,
            "--name",
            "c1",
            "-v",
            "named:/data",
            "-v",
            "/anon",
            "-v",
            &bind,
            "--mount",
            &mount,
            "--mount",
            "type=volume,source=quiet,target=/quiet,volume-nocopy,readonly",
        ],
    );
    ok(
        root,
        &[
            "container",
            "create",
            &fx.chain,
            "--name",
            "c2",
            "--volumes-from",
            "c1:ro",
        ],
    );

    let merged = PathBuf::from(last_line(&ok(root, &["container", "mount", "c1"])));
    assert_eq!(
        std::fs::read(merged.join("data/seed")).unwrap(),
        b"from image"
    );
    assert_eq!(
        std::fs::read(root.join("volumes/named/_data/seed")).unwrap(),
        b"from image"
    );
    let write = |p: &str| std::fs::write(merged.join(p), b"x");
    assert_eq!(
        write("host/new").unwrap_err().kind(),
        std::io::ErrorKind::ReadOnlyFilesystem
    );
    assert_eq!(
        write("quiet/new").unwrap_err().kind(),
        std::io::ErrorKind::ReadOnlyFilesystem
    );
    write("host-rw/new").unwrap();
    write("data/new").unwrap();
    assert!(
        std::fs::read_dir(merged.join("quiet"))
            .unwrap()
            .next()
            .is_none()
    );

    let c2 = PathBuf::from(last_line(&ok(root, &["container", "mount", "c2"])));
    assert!(c2.join("data/new").exists());
    assert_eq!(
        std::fs::write(c2.join("data/x"), b"x").unwrap_err().kind(),
        std::io::ErrorKind::ReadOnlyFilesystem
    );
    ok(root, &["container", "unmount", "c2"]);

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(root, &["container", "inspect", "c1"])).unwrap();
    let mounts = inspect["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 5);
    let data = mounts.iter().find(|m| m["Destination"] == "/data").unwrap();
    assert_eq!(
        *data,
        serde_json::json!({
            "Type": "volume", "Name": "named", "Driver": "local", "Mode": "z", "RW": true,
            "Propagation": "", "Destination": "/data",
            "Source": root.join("volumes/named/_data").display().to_string(),
        })
    );
    let host_mount = mounts.iter().find(|m| m["Destination"] == "/host").unwrap();
    assert_eq!(host_mount["Type"], "bind");
    assert_eq!(host_mount["RW"], false);
    assert_eq!(host_mount["Propagation"], "rprivate");
    assert!(host_mount.get("Name").is_none() && host_mount.get("Driver").is_none());
    let anon = mounts.iter().find(|m| m["Destination"] == "/anon").unwrap()["Name"]
        .as_str()
        .unwrap()
        .to_string();

    ok(root, &["container", "unmount", "c1"]);
    assert!(mountinfo::mounts_under(&merged).unwrap().is_empty());
    // c2 still uses the anonymous volume: rm -v of c1 leaves it.
    ok(root, &["container", "rm", "-v", "c1"]);
    assert!(volume_names(root).contains(&anon));
    ok(root, &["container", "rm", "-v", "c2"]);
    let left = volume_names(root);
    assert!(!left.contains(&anon), "anonymous volume removed by rm -v");
    assert_eq!(left, vec!["named", "quiet"], "named volumes stay");
    assert!(host.join("keep").exists() && host.join("new").exists());
}

#[test]
fn bad_input_is_one_line_and_creates_nothing() {
    let Some(fx) = Fixture::new("volume_cli_bad_input") else {
        return;
    };
    let root = &fx.root;
    let create = |extra: &[&str]| {
        let mut args = vec!["container", "create", fx.chain.as_str(), "--name", "ctr"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            create(&["-v", "bad@name:/x"]),
            "includes invalid characters for a local volume name",
        ),
        (
            create(&["-v", "rel/dir:/x"]),
            "If you intended to pass a host directory, use absolute path",
        ),
        (create(&["-v", "vol:/"]), "destination can't be '/'"),
        (
            create(&["--volumes-from", "ghost"]),
            "container ghost: not found",
        ),
        (
            create(&["--mount", "type=volume,target=/x,frob=1"]),
            "unexpected key 'frob'",
        ),
        (
            create(&["--mount", "type=nfs,target=/x"]),
            "mount type unknown",
        ),
        (
            create(&["-v", "vol:/etc/conf"]),
            "cannot mount volume over existing file",
        ),
        (
            ["volume", "create", "vol", "-o", "frob=1"]
                .map(String::from)
                .to_vec(),
            "create vol: invalid option: \"frob\"",
        ),
        (
            ["volume", "create", "vol", "-o", "type=xfs"]
                .map(String::from)
                .to_vec(),
            "needs a size",
        ),
        (
            ["volume", "create", "v"].map(String::from).to_vec(),
            "volume name is too short",
        ),
        (
            ["volume", "inspect", "ghost"].map(String::from).to_vec(),
            "get ghost: no such volume",
        ),
    ];
    for (args, needle) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(root, &args, needle);
        assert!(volume_names(root).is_empty(), "{args:?} created a volume");
        assert_eq!(
            ok(root, &["container", "ls", "--json"]).trim(),
            "[]",
            "{args:?}"
        );
    }
    assert!(
        mountinfo::mounts_under(&root.join("overlay2"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn tmpfs_volume_refcount_spans_cli_runs() {
    let Some(fx) = Fixture::new("volume_cli_refcount") else {
        return;
    };
    let root = &fx.root;
    ok(
        root,
        &[
            "volume",
            "create",
            "ram",
            "-o",
            "type=tmpfs",
            "-o",
            "o=size=16m",
        ],
    );
    for c in ["c1", "c2"] {
        ok(
            root,
            &[
                "container",
                "create",
                &fx.chain,
                "--name",
                c,
                "-v",
                "ram:/ram",
            ],
        );
    }
    let data = root.join("volumes/ram/_data");
    ok(root, &["container", "mount", "c1"]);
    assert_eq!(mountinfo::fstype_of(&data).as_deref(), Some("tmpfs"));
    let c2 = PathBuf::from(last_line(&ok(root, &["container", "mount", "c2"])));
    std::fs::write(c2.join("ram/shared"), b"x").unwrap();
    // Mounting again changes nothing.
    ok(root, &["container", "mount", "c2"]);
    ok(root, &["container", "unmount", "c1"]);
    assert!(data.join("shared").exists(), "c2 keeps the tmpfs alive");
    ok(root, &["container", "unmount", "c2"]);
    assert_eq!(
        mountinfo::fstype_of(&data),
        None,
        "last release unmounted it"
    );
}

#[test]
fn processes_share_one_named_volume() {
    let Some(fx) = Fixture::new("volume_cli_concurrency") else {
        return;
    };
    let root = &fx.root;
    let spawn = |args: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_layerscope"))
            .arg("--root")
            .arg(root)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let run_all = |make: &dyn Fn(usize) -> Vec<String>| {
        let children: Vec<_> = (0..4).map(|i| spawn(make(i))).collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    run_all(&|i| {
        [
            "container",
            "create",
            &fx.chain,
            "--name",
            &format!("c{i}"),
            "-v",
            "shared:/data",
        ]
        .map(String::from)
        .to_vec()
    });
    run_all(&|i| {
        ["container", "mount", &format!("c{i}")]
            .map(String::from)
            .to_vec()
    });
    let data = root.join("volumes/shared/_data");
    assert_eq!(std::fs::read(data.join("seed")).unwrap(), b"from image");
    run_all(&|i| {
        ["container", "unmount", &format!("c{i}")]
            .map(String::from)
            .to_vec()
    });
    assert_eq!(volume_names(root), vec!["shared"]);
    let output = layerscope(root, &["volume", "rm", "shared"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches(", ").count(), 3, "four users: {stderr}");
    run_all(&|i| {
        ["container", "rm", &format!("c{i}")]
            .map(String::from)
            .to_vec()
    });
    ok(root, &["volume", "rm", "shared"]);
    assert!(mountinfo::mounts_under(root).unwrap().is_empty());
}
