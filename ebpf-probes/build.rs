//! Build script of ebpf-probes: owns turning `bpf/*.bpf.c` (C, CO-RE) into
//! `$OUT_DIR/<name>.bpf.o`, which `src/object.rs` embeds.
//!
//! Steps, when clang and bpftool are found:
//! 1. `bpftool btf dump file /sys/kernel/btf/vmlinux format c` -> `$OUT_DIR/vmlinux.h`;
//! 2. `clang -target bpfel -O2 -g -Wall -c -D__TARGET_ARCH_x86 -I$OUT_DIR
//!    -I/usr/include/<multiarch> -Ibpf` for every `bpf/*.bpf.c` (flags after
//!    aya's `test/integration-test/build.rs`);
//! 3. `llvm-strip -g` on each object when llvm-strip is found: drops the
//!    DWARF (~600 KiB of vmlinux types), keeps `.BTF`/`.BTF.ext` for CO-RE.
//!
//! When clang, bpftool or the kernel BTF is missing the build does not fail:
//! every object is written empty, a `cargo:warning=` says why, and the reason
//! is passed to the crate as `LAYERSCOPE_BPF_NOT_BUILT` so the loader can
//! return a clear error at run time. Set `LAYERSCOPE_BPF_REQUIRED=1` (what
//! `cargo xtask build-ebpf` should do) to turn that into a hard error.
//! A C compile error always fails the build.
//!
//! Overrides: `LAYERSCOPE_CLANG`, `LAYERSCOPE_BPFTOOL`, `LAYERSCOPE_LLVM_STRIP`
//! (paths or names),
//! `LAYERSCOPE_VMLINUX_BTF` (BTF file to dump instead of the running kernel's).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const CLANG_ENV: &str = "LAYERSCOPE_CLANG";
const BPFTOOL_ENV: &str = "LAYERSCOPE_BPFTOOL";
const STRIP_ENV: &str = "LAYERSCOPE_LLVM_STRIP";
const BTF_ENV: &str = "LAYERSCOPE_VMLINUX_BTF";
const REQUIRED_ENV: &str = "LAYERSCOPE_BPF_REQUIRED";
const NOT_BUILT_ENV: &str = "LAYERSCOPE_BPF_NOT_BUILT";
/// Name suffixes tried for clang and llvm-strip, unversioned first.
const LLVM_VERSIONS: [&str; 8] = ["", "-20", "-19", "-18", "-17", "-16", "-15", "-14"];
const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Where the tools land when installed from Debian packages; watched while
/// they are missing so that `cargo xtask deps` followed by a build picks them up.
const WATCHED_TOOL_PATHS: &[&str] = &["/usr/bin/clang", "/usr/sbin/bpftool"];

fn main() {
    if let Err(message) = run() {
        // One line, like every other error of this crate.
        eprintln!("error: ebpf-probes build script: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let bpf_dir = manifest_dir.join("bpf");

    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    for var in [CLANG_ENV, BPFTOOL_ENV, STRIP_ENV, BTF_ENV, REQUIRED_ENV] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let sources = bpf_sources(&bpf_dir)?;
    match toolchain() {
        Ok(tools) => {
            let vmlinux_h = out_dir.join("vmlinux.h");
            generate_vmlinux_h(&tools, &vmlinux_h)?;
            for source in &sources {
                compile(&tools, source, &out_dir, &bpf_dir)?;
            }
            // An empty value tells the crate the objects are real.
            println!("cargo:rustc-env={NOT_BUILT_ENV}=");
        }
        Err(reason) => {
            if env::var_os(REQUIRED_ENV).is_some_and(|v| v != "0" && !v.is_empty()) {
                return Err(format!(
                    "BPF objects required ({REQUIRED_ENV} is set) but {reason}"
                ));
            }
            println!(
                "cargo:warning=BPF objects were not built ({reason}); \
                 `cargo xtask deps` installs clang and bpftool"
            );
            for path in WATCHED_TOOL_PATHS {
                println!("cargo:rerun-if-changed={path}");
            }
            for source in &sources {
                let object = object_path(source, &out_dir)?;
                fs::write(&object, [])
                    .map_err(|e| format!("write placeholder {}: {e}", object.display()))?;
            }
            println!("cargo:rustc-env={NOT_BUILT_ENV}={reason}");
        }
    }
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("{name}: {e}"))
}

/// Every `*.bpf.c` in `bpf/`, sorted for a stable build order.
fn bpf_sources(bpf_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(bpf_dir).map_err(|e| format!("read {}: {e}", bpf_dir.display()))?;
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("read {}: {e}", bpf_dir.display()))?
            .path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".bpf.c"))
        {
            sources.push(path);
        }
    }
    sources.sort();
    Ok(sources)
}

/// `bpf/hello.bpf.c` -> `$OUT_DIR/hello.bpf.o`.
fn object_path(source: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".c"))
        .ok_or_else(|| format!("unexpected BPF source name {}", source.display()))?;
    Ok(out_dir.join(format!("{name}.o")))
}

struct Tools {
    clang: PathBuf,
    bpftool: PathBuf,
    /// Optional: without it the objects keep their DWARF and are bigger.
    strip: Option<PathBuf>,
    btf: PathBuf,
}

/// Finds clang, bpftool and the kernel BTF, or says which is missing.
fn toolchain() -> Result<Tools, String> {
    let clang = find_tool(CLANG_ENV, &LLVM_VERSIONS.map(|v| ["clang", v].concat()))
        .ok_or_else(|| "clang was not found at build time".to_owned())?;
    let bpftool = find_tool(BPFTOOL_ENV, &["bpftool".to_owned()])
        .ok_or_else(|| "bpftool was not found at build time".to_owned())?;
    let btf = env::var_os(BTF_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_BTF), PathBuf::from);
    if !btf.is_file() {
        return Err(format!(
            "no kernel BTF at {} at build time (CONFIG_DEBUG_INFO_BTF kernel needed, or set {BTF_ENV})",
            btf.display()
        ));
    }
    println!("cargo:rerun-if-changed={}", btf.display());
    let strip = find_tool(
        STRIP_ENV,
        &LLVM_VERSIONS.map(|v| ["llvm-strip", v].concat()),
    );
    Ok(Tools {
        clang,
        bpftool,
        strip,
        btf,
    })
}

/// The override from `env_name` if set, else the first of `names` on PATH
/// (plus the sbin directories, which a non-root PATH may lack).
fn find_tool(env_name: &str, names: &[String]) -> Option<PathBuf> {
    if let Some(value) = env::var_os(env_name).filter(|v| !v.is_empty()) {
        let value = PathBuf::from(value);
        return if value.components().count() > 1 {
            value.is_file().then_some(value)
        } else {
            search_path(value.to_str()?)
        };
    }
    names.iter().find_map(|name| search_path(name))
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn generate_vmlinux_h(tools: &Tools, dst: &Path) -> Result<(), String> {
    let mut cmd = Command::new(&tools.bpftool);
    cmd.args(["btf", "dump", "file"])
        .arg(&tools.btf)
        .args(["format", "c"]);
    let output = run_cmd(&mut cmd)?;
    fs::write(dst, &output.stdout).map_err(|e| format!("write {}: {e}", dst.display()))
}

/// The clang flags, shared by every object. Kept here (not in xtask) so that
/// `cargo build -p ebpf-probes` is the one way to build the objects.
fn clang_args(out_dir: &Path) -> Result<Vec<String>, String> {
    let target = match env_var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "little" => "bpfel",
        "big" => "bpfeb",
        other => return Err(format!("unsupported target endian {other}")),
    };
    let arch = env_var("CARGO_CFG_TARGET_ARCH")?;
    let target_arch = match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "powerpc64" => "powerpc",
        "riscv64" => "riscv",
        "s390x" => "s390",
        other => other,
    };
    let mut args = vec![
        "-target".to_owned(),
        target.to_owned(),
        "-O2".to_owned(),
        "-g".to_owned(),
        "-Wall".to_owned(),
        "-c".to_owned(),
        format!("-D__TARGET_ARCH_{target_arch}"),
        format!("-I{}", out_dir.display()),
    ];
    // For <asm/...> should a program ever include uapi headers; vmlinux.h
    // alone does not need it.
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    if Path::new(&multiarch).is_dir() {
        args.push(format!("-I{multiarch}"));
    }
    Ok(args)
}

fn compile(tools: &Tools, source: &Path, out_dir: &Path, bpf_dir: &Path) -> Result<(), String> {
    let object = object_path(source, out_dir)?;
    let mut cmd = Command::new(&tools.clang);
    cmd.args(clang_args(out_dir)?)
        .arg(format!("-I{}", bpf_dir.display()))
        .arg(source)
        .arg("-o")
        .arg(&object);
    let output = run_cmd(&mut cmd)?;
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        println!("cargo:warning={line}");
    }
    if let Some(strip) = &tools.strip {
        run_cmd(Command::new(strip).arg("-g").arg(&object))?;
    }
    Ok(())
}

fn run_cmd(cmd: &mut Command) -> Result<Output, String> {
    let output = cmd.output().map_err(|e| format!("run {cmd:?}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Keep clang's diagnostics visible, then fail with one summary line.
        for line in stderr.lines() {
            println!("cargo:warning={line}");
        }
        Err(format!(
            "{cmd:?} failed with {}: {}",
            output.status,
            stderr
                .lines()
                .find(|l| l.contains("error"))
                .unwrap_or("see warnings above")
        ))
    }
}
