//! [`DockerDaemon`]: a real, private `dockerd` for interop tests, on a fresh
//! data root under `/var/tmp/layerscope-dockerd-*`, stopped by pid and
//! removed on drop (also when the test panicked).
//!
//! Nothing is shared with a system Docker or an earlier run: the daemon gets
//! its own socket, exec-root, pidfile, data root, `daemon.json` (so
//! `/etc/docker/daemon.json` is not read and the 20.10 trust key is not
//! written to `/etc/docker/key.json`) and its own `containerd`, started here
//! with a private config, root, state and socket and passed with
//! `--containerd`. (Left to itself, dockerd would use
//! `/run/containerd/containerd.sock` whenever that socket exists, and only
//! otherwise start a managed containerd.) The CLI runs with `-H` and a
//! private `DOCKER_CONFIG`.
//!
//! Images come without a registry: [`DockerDaemon::import_image`] (one
//! layer, `docker import`), [`DockerDaemon::load_image`] (several layers, a
//! hand-made `docker save` tar through `docker load`) and
//! [`DockerDaemon::run_and_commit`] (`docker run` + `docker commit`; needs
//! an image holding a static `/bin/busybox`, see [`busybox_files`]).

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use storage_core::sys::mount::unmount_detach;

use crate::mountinfo;

/// Where daemon dirs go (a disk: overlay2 cannot use a tmpfs-on-overlay
/// upper, and `/var/tmp` is not cleaned at boot mid-test).
pub const DAEMON_PARENT: &str = "/var/tmp";
/// The name prefix of every daemon dir.
pub const DAEMON_PREFIX: &str = "layerscope-dockerd-";

/// How long SIGTERM gets before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long dockerd gets to answer `docker version`.
const READY_WAIT: Duration = Duration::from_secs(60);
/// How long containerd gets to create its socket.
const CONTAINERD_WAIT: Duration = Duration::from_secs(20);
/// Timestamp of every tar entry made here, so layers (and diff-ids) are
/// reproducible.
const TAR_MTIME: u64 = 1_700_000_000;

/// A file of a hand-made layer: path inside the image (a trailing `/` makes
/// a directory), contents, mode bits. Whiteouts are plain entries named
/// `.wh.<name>` (and `<dir>/.wh..wh..opq` for an opaque dir), as in any
/// Docker layer tar.
pub type LayerFile<'a> = (&'a str, &'a [u8], u32);

/// A failure to start, use or stop the daemon; one line each.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// A program could not be started at all (not installed?).
    #[error("run {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    /// A file-system step failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// containerd or dockerd exited while starting.
    #[error("{program} exited while starting ({status}): {log}")]
    Exited {
        program: &'static str,
        status: ExitStatus,
        log: String,
    },
    /// The daemon did not become ready in time.
    #[error("{program} not ready after {waited:?} ({what}): {log}")]
    NotReady {
        program: &'static str,
        waited: Duration,
        what: String,
        log: String,
    },
    /// A `docker` command ran and failed.
    #[error("docker {args} failed ({status}): {stderr}")]
    Command {
        args: String,
        status: ExitStatus,
        stderr: String,
    },
    /// A `docker` command succeeded but printed something unexpected.
    #[error("docker {args}: unexpected output: {output}")]
    Output { args: String, output: String },
    /// Stopping or cleaning up failed in one or more steps.
    #[error("clean up {}: {}", dir.display(), errors.join("; "))]
    Cleanup { dir: PathBuf, errors: Vec<String> },
}

impl DockerError {
    /// Whether Docker truly cannot run here: a binary is not installed, or
    /// dockerd refused the storage driver on this kernel. Only then may a
    /// test skip.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Spawn { source, .. } => source.kind() == io::ErrorKind::NotFound,
            Self::Exited { program, log, .. } => {
                *program == "dockerd"
                    && (log.contains("driver not supported")
                        || log.contains("error initializing graphdriver"))
            }
            _ => false,
        }
    }

    fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result with [`DockerError`].
pub type Result<T, E = DockerError> = std::result::Result<T, E>;

/// Where and how [`DockerDaemon::start_with`] runs a daemon; the default
/// is what [`DockerDaemon::start`] does.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// The parent of the daemon dir (default [`DAEMON_PARENT`]). Keep it
    /// short: containerd's sockets live below it (108-byte limit).
    pub parent: Option<PathBuf>,
    /// The data root (default `<dir>/root`), e.g. on a filesystem the
    /// storage driver needs (btrfs). The caller owns it: mounts below it are
    /// released on stop, the directory itself is left in place.
    pub data_root: Option<PathBuf>,
    /// Starts containerd and dockerd in their own process group, so that a
    /// Ctrl-C at the terminal reaches only the caller, which then stops
    /// them in order (containers, dockerd, containerd) by pid.
    pub own_process_group: bool,
}

/// A running private dockerd and the containerd it uses.
#[derive(Debug)]
pub struct DockerDaemon {
    dir: PathBuf,
    driver: String,
    options: DaemonOptions,
    dockerd: Option<Child>,
    containerd: Option<Child>,
    removed: bool,
}

impl DockerDaemon {
    /// Starts containerd and dockerd (`--storage-driver=<driver>`) in a new
    /// `/var/tmp/layerscope-dockerd-*` dir and waits until `docker version`
    /// answers. Needs root. On error everything started is stopped and the
    /// dir removed.
    pub fn start(driver: &str) -> Result<Self> {
        Self::start_with(driver, DaemonOptions::default())
    }

    /// As [`DockerDaemon::start`], with the daemon dir, data root and
    /// process group chosen by `options`.
    pub fn start_with(driver: &str, options: DaemonOptions) -> Result<Self> {
        let parent = options
            .parent
            .clone()
            .unwrap_or_else(|| PathBuf::from(DAEMON_PARENT));
        let dir = tempfile::Builder::new()
            .prefix(DAEMON_PREFIX)
            .tempdir_in(&parent)
            .map_err(|e| DockerError::io("create daemon dir in", &parent, e))?
            // Removal is ours: never recurse into a live mount.
            .keep();
        let mut daemon = DockerDaemon {
            dir,
            driver: driver.to_string(),
            options,
            dockerd: None,
            containerd: None,
            removed: false,
        };
        // On error, dropping `daemon` stops and removes what was started.
        daemon.start_containerd()?;
        daemon.start_dockerd()?;
        Ok(daemon)
    }

    /// The temp dir holding everything (`root/`, `exec/`, `containerd/`,
    /// the socket, pidfile and logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data root (`--data-root`).
    pub fn data_root(&self) -> PathBuf {
        self.options
            .data_root
            .clone()
            .unwrap_or_else(|| self.dir.join("root"))
    }

    /// The dirs whose mounts are this daemon's: its dir and an external
    /// data root.
    fn owned_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.dir.clone()];
        if let Some(root) = &self.options.data_root {
            if !root.starts_with(&self.dir) {
                dirs.push(root.clone());
            }
        }
        dirs
    }

    /// The mounts below the daemon's dir and its data root.
    fn own_mounts(&self) -> io::Result<Vec<mountinfo::MountEntry>> {
        let mut mounts = Vec::new();
        for dir in self.owned_dirs() {
            mounts.extend(mountinfo::mounts_under(&dir)?);
        }
        Ok(mounts)
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix://<socket>`, for `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The storage driver the daemon was started with.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// dockerd's pid while it runs.
    pub fn dockerd_pid(&self) -> Option<u32> {
        self.dockerd.as_ref().map(Child::id)
    }

    /// containerd's pid while it runs.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    fn containerd_dir(&self) -> PathBuf {
        self.dir.join("containerd")
    }

    fn containerd_socket(&self) -> PathBuf {
        self.containerd_dir().join("containerd.sock")
    }

    fn log_path(&self, program: &str) -> PathBuf {
        self.dir.join(format!("{program}.log"))
    }

    fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).map_err(|e| DockerError::io("write", &path, e))?;
        Ok(path)
    }

    fn spawn_logged(&self, program: &'static str, args: &[String]) -> Result<Child> {
        let log_path = self.log_path(program);
        let log = std::fs::File::create(&log_path)
            .map_err(|e| DockerError::io("create log", &log_path, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| DockerError::io("open log", &log_path, e))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if self.options.own_process_group {
            command.process_group(0);
        }
        command
            .spawn()
            .map_err(|source| DockerError::Spawn { program, source })
    }

    fn start_containerd(&mut self) -> Result<()> {
        let base = self.containerd_dir();
        std::fs::create_dir(&base).map_err(|e| DockerError::io("create", &base, e))?;
        let socket = self.containerd_socket();
        // The CRI plugin is Kubernetes' and would want CNI: off, as in
        // dockerd's own managed containerd.
        let config = format!(
            "version = 2\n\
             root = \"{base}/root\"\n\
             state = \"{base}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{base}/opt\"\n",
            base = base.display(),
            sock = socket.display(),
        );
        let config_path = self.write_file("containerd.toml", &config)?;
        let args = vec!["--config".to_string(), config_path.display().to_string()];
        self.containerd = Some(self.spawn_logged("containerd", &args)?);
        let start = Instant::now();
        while !socket.exists() {
            self.check_alive("containerd")?;
            if start.elapsed() > CONTAINERD_WAIT {
                return Err(DockerError::NotReady {
                    program: "containerd",
                    waited: CONTAINERD_WAIT,
                    what: format!("no socket {}", socket.display()),
                    log: log_tail(&self.log_path("containerd")),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn start_dockerd(&mut self) -> Result<()> {
        // `deprecated-key-path` keeps dockerd 20.10's key.json out of
        // /etc/docker; later versions accept and ignore the key.
        let config = format!(
            "{{\"deprecated-key-path\": \"{}\"}}\n",
            self.dir.join("key.json").display()
        );
        let config_path = self.write_file("daemon.json", &config)?;
        let dir = self.dir.display().to_string();
        let args: Vec<String> = vec![
            format!("--config-file={}", config_path.display()),
            format!("--storage-driver={}", self.driver),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--bridge=none".into(),
            format!("--host={}", self.host()),
            format!("--exec-root={dir}/exec"),
            format!("--pidfile={dir}/docker.pid"),
            format!("--data-root={}", self.data_root().display()),
            format!("--containerd={}", self.containerd_socket().display()),
        ];
        self.dockerd = Some(self.spawn_logged("dockerd", &args)?);
        let start = Instant::now();
        loop {
            self.check_alive("dockerd")?;
            let output = self.docker(&["version", "--format", "{{.Server.Version}}"]);
            if output.status.success() {
                return Ok(());
            }
            if start.elapsed() > READY_WAIT {
                return Err(DockerError::NotReady {
                    program: "dockerd",
                    waited: READY_WAIT,
                    what: format!(
                        "docker version: {}",
                        one_line(&String::from_utf8_lossy(&output.stderr))
                    ),
                    log: log_tail(&self.log_path("dockerd")),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails when the child `program` has exited.
    fn check_alive(&mut self, program: &'static str) -> Result<()> {
        let child = match program {
            "dockerd" => self.dockerd.as_mut(),
            _ => self.containerd.as_mut(),
        };
        let Some(child) = child else {
            return Ok(());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                match program {
                    "dockerd" => self.dockerd = None,
                    _ => self.containerd = None,
                }
                Err(DockerError::Exited {
                    program,
                    status,
                    log: log_tail(&self.log_path(program)),
                })
            }
            Err(e) => Err(DockerError::Spawn { program, source: e }),
        }
    }

    /// A `docker` CLI command against this daemon (private `DOCKER_CONFIG`,
    /// no `DOCKER_HOST` from the environment), for callers that need to
    /// spawn it themselves (poll it, or put it in its own process group).
    pub fn command(&self, args: &[&str]) -> Command {
        self.docker_command(args)
    }

    fn docker_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .arg("-H")
            .arg(self.host())
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        command
    }

    /// Runs the `docker` CLI against this daemon. When the CLI cannot be
    /// started at all, the output has exit code 127 and says why on stderr.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_with_input(args, None)
    }

    fn docker_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut command = self.docker_command(args);
        command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let result = command.spawn().and_then(|mut child| {
            std::thread::scope(|scope| {
                if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
                    // Feed stdin from a thread while the output is read, so
                    // a chatty CLI cannot deadlock us; EOF when it is done.
                    scope.spawn(move || {
                        let _ = stdin.write_all(data);
                    });
                }
                child.wait_with_output()
            })
        });
        result.unwrap_or_else(|e| Output {
            status: ExitStatus::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: format!("run docker: {e}").into_bytes(),
        })
    }

    /// Runs `docker args...` and returns its trimmed stdout, or the failure
    /// with its stderr on one line.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        checked(args, self.docker(args))
    }

    fn run_with_input(&self, args: &[&str], input: &[u8]) -> Result<String> {
        checked(args, self.docker_with_input(args, Some(input)))
    }

    /// Makes a one-layer image `name` from `files` (a tar built in memory,
    /// parent directories added) with `docker import`; returns its id
    /// (`sha256:...`).
    pub fn import_image(&self, name: &str, files: &[LayerFile<'_>]) -> Result<String> {
        let tar =
            layer_tar(files).map_err(|e| DockerError::io("build tar for", Path::new(name), e))?;
        let id = self.run_with_input(&["import", "-", name], &tar)?;
        expect_image_id(&["import", "-", name], id)
    }

    /// Makes an image `tag` with one layer per entry of `layers` (bottom
    /// first) by `docker load` of a hand-made `docker save` tar; returns its
    /// id (`sha256:` + the config's digest).
    pub fn load_image(&self, tag: &str, layers: &[&[LayerFile<'_>]]) -> Result<String> {
        let (archive, id) = save_tar(tag, layers)
            .map_err(|e| DockerError::io("build docker-save tar for", Path::new(tag), e))?;
        let out = self.run_with_input(&["load"], &archive)?;
        if !out.contains(tag) {
            return Err(DockerError::Output {
                args: "load".into(),
                output: one_line(&out),
            });
        }
        let loaded = self.run(&["image", "inspect", "--format", "{{.Id}}", tag])?;
        if loaded != id {
            return Err(DockerError::Output {
                args: format!("image inspect {tag}"),
                output: format!("id {loaded}, expected {id}"),
            });
        }
        Ok(id)
    }

    /// Adds one layer to `image`: runs `cmd` in a new container of it
    /// (`--network none`), commits the container as `tag`, removes the
    /// container and returns the new image's id. The command must exit 0.
    pub fn run_and_commit(&self, image: &str, tag: &str, cmd: &[&str]) -> Result<String> {
        static BUILDS: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "layerscope-build-{}-{}",
            std::process::id(),
            BUILDS.fetch_add(1, Ordering::Relaxed)
        );
        let mut args = vec!["run", "--name", &name, "--network", "none", image];
        args.extend_from_slice(cmd);
        let result = self
            .run(&args)
            .and_then(|_| self.run(&["commit", &name, tag]))
            .and_then(|id| expect_image_id(&["commit", &name, tag], id));
        let removed = self.run(&["rm", "-f", &name]);
        let id = result?;
        removed?;
        Ok(id)
    }

    /// Stops dockerd and containerd (and any shim or container they left),
    /// and unmounts what is left under the dir; the data root stays for
    /// reading until drop.
    pub fn stop(&mut self) -> Result<()> {
        let errors = self.stop_processes();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DockerError::Cleanup {
                dir: self.dir.clone(),
                errors,
            })
        }
    }

    /// Stops everything and removes the dir now, reporting every failed
    /// step (drop does the same and logs them to stderr).
    pub fn cleanup(mut self) -> Result<()> {
        let errors = self.tear_down();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DockerError::Cleanup {
                dir: self.dir.clone(),
                errors,
            })
        }
    }

    fn stop_processes(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        // dockerd first: it unmounts its layers. Its running containers are
        // killed through the API before, or dockerd's shutdown would give
        // each one 10 s of SIGTERM (a shell as pid 1 ignores it).
        if self.dockerd.is_some() {
            self.kill_containers();
        }
        if let Some(child) = self.dockerd.take() {
            if let Err(e) = stop_child(child, "dockerd", &self.log_path("dockerd")) {
                errors.push(e);
            }
        }
        if let Some(child) = self.containerd.take() {
            if let Err(e) = stop_child(child, "containerd", &self.log_path("containerd")) {
                errors.push(e);
            }
        }
        errors.extend(self.kill_leftovers());
        errors.extend(self.unmount_all());
        errors
    }

    /// `docker kill` of every running container; errors are left to the
    /// SIGTERM path.
    fn kill_containers(&self) {
        let Ok(ids) = self.run(&["ps", "-q", "--no-trunc"]) else {
            return;
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["kill"];
            args.extend(ids);
            let _ = self.docker(&args);
        }
    }

    /// Shims of our containerd (found by its socket on their command line)
    /// and the container processes they ran (their `init.pid` files), if
    /// any outlived dockerd's shutdown.
    fn kill_leftovers(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let task_dir = self
            .containerd_dir()
            .join("state/io.containerd.runtime.v2.task");
        let mut pids = BTreeSet::new();
        for namespace in read_dir_paths(&task_dir) {
            for task in read_dir_paths(&namespace) {
                if let Ok(text) = std::fs::read_to_string(task.join("init.pid")) {
                    if let Ok(pid) = text.trim().parse::<i32>() {
                        pids.insert(pid);
                    }
                }
            }
        }
        let socket = self.containerd_socket().display().to_string();
        for proc_dir in read_dir_paths(Path::new("/proc")) {
            let Some(pid) = proc_dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
                continue;
            };
            let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if words.contains(&socket.as_bytes()) && pid != std::process::id() as i32 {
                pids.insert(pid);
            }
        }
        for pid in pids {
            let pid = Pid::from_raw(pid);
            match kill(pid, Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => errors.push(format!("kill leftover pid {pid}: {e}")),
            }
        }
        errors
    }

    /// Detaches every mount under the dir (and an external data root),
    /// deepest first.
    fn unmount_all(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for _ in 0..3 {
            let mounts = match self.own_mounts() {
                Ok(mounts) => mounts,
                Err(e) => {
                    errors.push(format!("read mountinfo: {e}"));
                    return errors;
                }
            };
            if mounts.is_empty() {
                return errors;
            }
            let mut points: Vec<PathBuf> = mounts.into_iter().map(|m| m.mount_point).collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            points.dedup();
            for point in points {
                if let Err(e) = unmount_detach(&point) {
                    if e.source != nix::errno::Errno::EINVAL {
                        errors.push(e.to_string());
                    }
                }
            }
        }
        match self.own_mounts() {
            Ok(left) if !left.is_empty() => errors.push(format!(
                "still mounted: {}",
                left.iter()
                    .map(|m| m.mount_point.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => {}
        }
        errors
    }

    fn tear_down(&mut self) -> Vec<String> {
        if self.removed {
            return Vec::new();
        }
        let mut errors = self.stop_processes();
        match self.own_mounts() {
            Ok(left) if left.is_empty() => match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => self.removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.removed = true,
                Err(e) => errors.push(format!("remove {}: {e}", self.dir.display())),
            },
            Ok(_) => errors.push(format!(
                "not removing {}: mounts are left under it",
                self.dir.display()
            )),
            Err(e) => errors.push(format!("read mountinfo: {e}")),
        }
        errors
    }
}

impl Drop for DockerDaemon {
    fn drop(&mut self) {
        for e in self.tear_down() {
            eprintln!("testkit: docker daemon at {}: {e}", self.dir.display());
        }
    }
}

/// SIGTERM, up to [`STOP_WAIT`] for the exit, then SIGKILL; reaps the child.
fn stop_child(mut child: Child, program: &str, log: &Path) -> Result<(), String> {
    let pid = Pid::from_raw(child.id() as i32);
    if let Ok(Some(_)) = child.try_wait() {
        return Ok(());
    }
    if let Err(e) = kill(pid, Signal::SIGTERM) {
        if e != nix::errno::Errno::ESRCH {
            return Err(format!("SIGTERM {program} (pid {pid}): {e}"));
        }
    }
    let start = Instant::now();
    while start.elapsed() < STOP_WAIT {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("wait for {program} (pid {pid}): {e}")),
        }
    }
    eprintln!(
        "testkit: {program} (pid {pid}) still running {STOP_WAIT:?} after SIGTERM; \
         sending SIGKILL; log: {}",
        log_tail(log)
    );
    let _ = child.kill();
    child
        .wait()
        .map(|_| ())
        .map_err(|e| format!("wait for killed {program} (pid {pid}): {e}"))
}

fn read_dir_paths(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn checked(args: &[&str], output: Output) -> Result<String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if stderr.trim().is_empty() {
            stderr = String::from_utf8_lossy(&output.stdout).into_owned();
        }
        Err(DockerError::Command {
            args: args.join(" "),
            status: output.status,
            stderr: one_line(&stderr),
        })
    }
}

fn expect_image_id(args: &[&str], id: String) -> Result<String> {
    let hex = id.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(DockerError::Output {
            args: args.join(" "),
            output: one_line(&id),
        })
    }
}

/// Trimmed non-empty lines joined with "; ".
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "no output".to_string()
    } else {
        lines.join("; ")
    }
}

/// The telling end of a daemon log on one line: its last error or fatal
/// lines, else its last lines.
fn log_tail(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return format!("no log at {}", path.display());
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            l.contains("level=error") || l.contains("level=fatal") || l.contains("failed to start")
        })
        .collect();
    let pick = if errors.is_empty() { &lines } else { &errors };
    let tail = &pick[pick.len().saturating_sub(3)..];
    if tail.is_empty() {
        format!("empty log {}", path.display())
    } else {
        tail.join("; ")
    }
}

/// The files for an image that can run commands: a static busybox as
/// `/bin/busybox` (run `/bin/busybox sh -c '...'`), plus `/tmp/`.
pub fn busybox_files(busybox: &[u8]) -> Vec<LayerFile<'_>> {
    vec![("bin/busybox", busybox, 0o755), ("tmp/", &[], 0o1777)]
}

/// An uncompressed layer tar of `files`, every missing parent directory
/// added (mode 0755) before its children; fixed mtimes, owner root.
pub fn layer_tar(files: &[LayerFile<'_>]) -> io::Result<Vec<u8>> {
    let mut dirs = BTreeSet::new();
    let mut explicit_dirs = BTreeSet::new();
    for (path, _, _) in files {
        let path = path.trim_start_matches('/');
        if let Some(dir) = path.strip_suffix('/') {
            explicit_dirs.insert(dir.to_string());
        }
        let mut parent = Path::new(path.trim_end_matches('/')).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    for dir in dirs.difference(&explicit_dirs) {
        append(
            &mut builder,
            &format!("{dir}/"),
            &[],
            0o755,
            tar::EntryType::Directory,
        )?;
    }
    for (path, contents, mode) in files {
        let path = path.trim_start_matches('/');
        let kind = if path.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        };
        append(&mut builder, path, contents, *mode, kind)?;
    }
    builder.into_inner()
}

fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    contents: &[u8],
    mode: u32,
    kind: tar::EntryType,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(TAR_MTIME);
    let data: &[u8] = if kind == tar::EntryType::Directory {
        &[]
    } else {
        contents
    };
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, path, data)
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A `docker save` archive of an image `tag` with `layers` (bottom first),
/// and the image id it loads as.
pub fn save_tar(tag: &str, layers: &[&[LayerFile<'_>]]) -> io::Result<(Vec<u8>, String)> {
    let mut layer_tars = Vec::with_capacity(layers.len());
    for files in layers {
        layer_tars.push(layer_tar(files)?);
    }
    let diff_ids: Vec<String> = layer_tars
        .iter()
        .map(|t| format!("sha256:{}", hex::encode(Sha256::digest(t))))
        .collect();
    let history: Vec<serde_json::Value> = (0..layers.len())
        .map(|i| {
            serde_json::json!({
                "created": "2023-11-14T22:13:20Z",
                "created_by": format!("layerscope testkit layer {i}"),
            })
        })
        .collect();
    let config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    let config = serde_json::to_vec(&config).map_err(io::Error::other)?;
    let config_hex = hex::encode(Sha256::digest(&config));
    let layer_paths: Vec<String> = (0..layers.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": [tag],
        "Layers": layer_paths,
    }]);
    let manifest = serde_json::to_vec(&manifest).map_err(io::Error::other)?;

    let mut builder = tar::Builder::new(Vec::new());
    append(
        &mut builder,
        &format!("{config_hex}.json"),
        &config,
        0o644,
        tar::EntryType::Regular,
    )?;
    for (path, data) in layer_paths.iter().zip(&layer_tars) {
        let dir = path.trim_end_matches("layer.tar");
        append(&mut builder, dir, &[], 0o755, tar::EntryType::Directory)?;
        append(&mut builder, path, data, 0o644, tar::EntryType::Regular)?;
    }
    append(
        &mut builder,
        "manifest.json",
        &manifest,
        0o644,
        tar::EntryType::Regular,
    )?;
    Ok((builder.into_inner()?, format!("sha256:{config_hex}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, u32, u64)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn layer_tar_adds_parent_dirs_first() {
        let tar = layer_tar(&[
            ("a/b/c", b"xyz", 0o600),
            ("d/", b"", 0o700),
            ("d/.wh.e", b"", 0o644),
        ])
        .unwrap();
        let got = entries(&tar);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["a/", "a/b/", "a/b/c", "d/", "d/.wh.e"]);
        assert_eq!(got[2].1, tar::EntryType::Regular);
        assert_eq!(got[2].2, 0o600);
        assert_eq!(got[2].3, 3);
        assert_eq!(got[3].2, 0o700);
    }

    #[test]
    fn layer_tars_are_reproducible() {
        let files: &[LayerFile<'_>] = &[("x", b"1", 0o644)];
        assert_eq!(layer_tar(files).unwrap(), layer_tar(files).unwrap());
    }

    #[test]
    fn save_tar_has_manifest_config_and_layers() {
        let (tar, id) =
            save_tar("t:1", &[&[("a", b"1", 0o644)], &[(".wh.a", b"", 0o644)]]).unwrap();
        let names: Vec<String> = entries(&tar).into_iter().map(|e| e.0).collect();
        let hex = id.strip_prefix("sha256:").unwrap();
        assert_eq!(
            names,
            [
                format!("{hex}.json"),
                "0/".into(),
                "0/layer.tar".into(),
                "1/".into(),
                "1/layer.tar".into(),
                "manifest.json".into()
            ]
        );
    }

    #[test]
    fn only_missing_binaries_and_refused_drivers_count_as_unavailable() {
        let missing = DockerError::Spawn {
            program: "dockerd",
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(missing.is_unavailable());
        let refused = DockerError::Exited {
            program: "dockerd",
            status: ExitStatus::from_raw(1 << 8),
            log: "failed to start daemon: error initializing graphdriver: driver not supported"
                .into(),
        };
        assert!(refused.is_unavailable());
        let other = DockerError::Exited {
            program: "dockerd",
            status: ExitStatus::from_raw(1 << 8),
            log: "unknown flag".into(),
        };
        assert!(!other.is_unavailable());
        assert!(!other.to_string().contains('\n'));
    }
}
