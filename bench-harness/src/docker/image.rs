//! The bench image of `--docker` mode, built without a registry or a
//! Dockerfile: layer 1 holds this very `layerscope` binary and the shared
//! libraries `ldd` names; layer 2 holds a workload's lower files under
//! `/bench` (made by the same `populate` as the driver-level run). Layer
//! tars are written once to a work dir with their diff-ids; a `docker save`
//! archive around them is streamed into `docker load` on each daemon.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// Where the binary sits in the image.
pub const BINARY_IN_IMAGE: &str = "/usr/local/bin/layerscope";
/// Where a workload's lower files sit in the image.
pub const BENCH_ROOT: &str = "/bench";

/// Entries' timestamp, so a layer's diff-id depends on its content only.
const MTIME: u64 = 1_700_000_000;

/// A layer tar on disk and its diff-id (`sha256:` of the tar).
#[derive(Debug, Clone)]
pub struct LayerTar {
    pub path: PathBuf,
    pub diff_id: String,
}

/// A writer that hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a layer tar at `path` with `fill` and returns it with its diff-id.
fn write_layer(
    path: &Path,
    fill: impl FnOnce(&mut tar::Builder<Hashing<BufWriter<File>>>) -> io::Result<()>,
) -> io::Result<LayerTar> {
    let file = File::create(path)?;
    let mut builder = tar::Builder::new(Hashing {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
    });
    builder.mode(tar::HeaderMode::Deterministic);
    fill(&mut builder)?;
    let mut hashing = builder.into_inner()?;
    hashing.flush()?;
    hashing.inner.into_inner().map_err(|e| e.into_error())?;
    Ok(LayerTar {
        path: path.to_path_buf(),
        diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())),
    })
}

fn dir_header() -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_size(0);
    header
}

/// The files `ldd` says `binary` loads (the dynamic loader included);
/// none for a static binary.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new("ldd").arg(binary).output() else {
        return Vec::new();
    };
    let mut libraries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    libraries
}

/// Layer 1: `binary` as [`BINARY_IN_IMAGE`] (a copy with its debug info
/// stripped when `strip` exists, so every daemon loads less) and its shared
/// libraries at the paths the loader looks them up by.
pub fn binary_layer(binary: &Path, work: &Path) -> io::Result<LayerTar> {
    let copy = work.join("layerscope");
    std::fs::copy(binary, &copy)?;
    let _ = Command::new("strip")
        .arg("--strip-debug")
        .arg(&copy)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let mut files = vec![(copy, BINARY_IN_IMAGE.trim_start_matches('/').to_string())];
    for library in shared_libraries(binary) {
        let name = library
            .to_string_lossy()
            .trim_start_matches('/')
            .to_string();
        files.push((library, name));
    }
    write_layer(&work.join("layer-binary.tar"), |builder| {
        let mut dirs = std::collections::BTreeSet::new();
        for (_, name) in &files {
            let mut parent = Path::new(name).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_path_buf());
                parent = dir.parent();
            }
        }
        for dir in &dirs {
            builder.append_data(&mut dir_header(), dir, io::empty())?;
        }
        builder.append_data(&mut dir_header(), "tmp", io::empty())?;
        // Regular files with their targets' contents (the builder follows
        // symlinks such as /lib64/ld-linux-x86-64.so.2).
        for (source, name) in &files {
            builder.append_path_with_name(source, name)?;
        }
        Ok(())
    })
}

/// Layer 2: the tree at `dir` as [`BENCH_ROOT`].
pub fn tree_layer(dir: &Path, out: &Path) -> io::Result<LayerTar> {
    write_layer(out, |builder| {
        builder.append_dir_all(BENCH_ROOT.trim_start_matches('/'), dir)
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Writes a `docker save` archive of image `tag` with `layers` (bottom
/// first) to `out` (e.g. `docker load`'s stdin), reading the layer tars
/// from disk.
pub fn write_save_archive(out: impl Write, tag: &str, layers: &[&LayerTar]) -> io::Result<()> {
    let history: Vec<serde_json::Value> = layers
        .iter()
        .map(|_| {
            serde_json::json!({
                "created": "2023-11-14T22:13:20Z",
                "created_by": "layerscope bench --docker",
            })
        })
        .collect();
    let config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": { "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        },
        "history": history,
    });
    let config = serde_json::to_vec(&config).map_err(io::Error::other)?;
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    let layer_names: Vec<String> = (0..layers.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": layer_names,
    }]))
    .map_err(io::Error::other)?;

    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    let file_header = |size: usize| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_mtime(MTIME);
        header.set_size(size as u64);
        header
    };
    builder.append_data(&mut file_header(config.len()), &config_name, &config[..])?;
    for (name, layer) in layer_names.iter().zip(layers) {
        builder.append_data(
            &mut dir_header(),
            name.trim_end_matches("layer.tar"),
            io::empty(),
        )?;
        builder.append_path_with_name(&layer.path, name)?;
    }
    builder.append_data(
        &mut file_header(manifest.len()),
        "manifest.json",
        &manifest[..],
    )?;
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_path: &Path) -> Vec<String> {
        let mut archive = tar::Archive::new(File::open(tar_path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn tree_layers_hold_the_tree_under_bench_and_are_reproducible() {
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("tree");
        std::fs::create_dir_all(tree.join("a")).unwrap();
        std::fs::write(tree.join("a/f"), b"x").unwrap();
        let one = tree_layer(&tree, &work.path().join("1.tar")).unwrap();
        let two = tree_layer(&tree, &work.path().join("2.tar")).unwrap();
        assert_eq!(one.diff_id, two.diff_id);
        let hash = hex::encode(Sha256::digest(std::fs::read(&one.path).unwrap()));
        assert_eq!(one.diff_id, format!("sha256:{hash}"));
        let got = names(&one.path);
        assert!(got.contains(&"bench/a/f".to_string()), "{got:?}");
    }

    #[test]
    fn save_archives_name_config_layers_and_manifest() {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir(work.path().join("t")).unwrap();
        let layer = tree_layer(&work.path().join("t"), &work.path().join("l.tar")).unwrap();
        let out = work.path().join("save.tar");
        write_save_archive(File::create(&out).unwrap(), "x:1", &[&layer]).unwrap();
        let got = names(&out);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].ends_with(".json"));
        assert_eq!(&got[1..], ["0/", "0/layer.tar", "manifest.json"]);
    }
}
