//! Finding, starting and stopping a real `vineyardd`.
//!
//! Used by the tests, by the runners' embedded default and by `serve`. A
//! launched server lives in a fresh private directory (mode 0700) holding its
//! socket, its glog files and its stderr, and is stopped when the handle
//! drops: SIGTERM, then SIGKILL after a grace period (with no grace: SIGKILL
//! at once, reaped in the background).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::connection::Timeouts;
use crate::error::{Error, Result};

/// Where the metadata of a launched server lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Meta {
    /// `--meta=local`: one standalone instance.
    Local,
    /// `--meta=etcd` with this endpoint and key prefix.
    Etcd { endpoint: String, prefix: String },
}

/// How to launch a vineyardd.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Explicit path of the binary; otherwise [`find_vineyardd`] decides.
    pub binary: Option<PathBuf>,
    /// Extra directories to search for `vineyard/bdist/vineyardd` (site-packages).
    pub site_dirs: Vec<PathBuf>,
    /// Shared memory limit, in vineyardd's syntax (`256Mi`, `4G`).
    pub size: String,
    /// Metadata service.
    pub meta: Meta,
    /// `Some(port)` enables RPC on that port; `None` passes `--rpc=false`.
    pub rpc_port: Option<u16>,
    /// zstd-compress blobs migrated over RPC (`--compression`). Off by
    /// default: on loopback and fast networks it makes migration ~3x slower.
    pub compression: bool,
    /// Host name other instances use to reach this one's RPC port
    /// (`MY_HOST_NAME`; vineyardd advertises its hostname otherwise).
    pub advertise_host: Option<String>,
    /// Directory to create the private directory in (default: the temp dir).
    pub parent_dir: Option<PathBuf>,
    /// How long to wait for the socket to accept a `register`.
    pub start_timeout: Duration,
    /// How long SIGTERM may take before SIGKILL.
    pub stop_grace: Duration,
    /// Send SIGKILL to the server if this process dies (embedded default).
    pub die_with_parent: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            binary: None,
            site_dirs: Vec::new(),
            size: "256Mi".into(),
            meta: Meta::Local,
            rpc_port: None,
            compression: false,
            advertise_host: None,
            parent_dir: None,
            start_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(5),
            die_with_parent: true,
        }
    }
}

/// Finds the vineyardd binary: `explicit`, then `$VINEYARDD`, then
/// `vineyard/bdist/vineyardd` under the given site-packages directories and
/// those of the active virtualenv, then `$PATH`.
pub fn find_vineyardd(explicit: Option<&Path>, site_dirs: &[PathBuf]) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if is_executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(Error::Launch(format!(
                "{} is not an executable vineyardd",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("VINEYARDD").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(Error::Launch(format!(
                "$VINEYARDD={} is not executable",
                p.display()
            )))
        };
    }
    let mut candidates: Vec<PathBuf> = site_dirs
        .iter()
        .map(|d| d.join("vineyard/bdist/vineyardd"))
        .collect();
    for prefix in [
        std::env::var_os("VIRTUAL_ENV"),
        std::env::var_os("CONDA_PREFIX"),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(entries) = fs::read_dir(Path::new(&prefix).join("lib")) {
            for e in entries.flatten() {
                candidates.push(e.path().join("site-packages/vineyard/bdist/vineyardd"));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("vineyardd")));
    }
    candidates.into_iter().find(|p| is_executable(p)).ok_or_else(|| {
        Error::Launch("vineyardd not found: install it with `pip install vineyard-bdist`, or set VINEYARDD to its path".into())
    })
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A running vineyardd owned by this process.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    grace: Duration,
    instance_id: u64,
    /// Only the process that started the server may stop it: a forked child
    /// (ParallelRunner workers) that drops its copy must leave it running.
    owner: u32,
}

impl Server {
    /// Starts a vineyardd and waits until it accepts a `register`.
    pub fn start(opts: &ServerOptions) -> Result<Server> {
        let binary = find_vineyardd(opts.binary.as_deref(), &opts.site_dirs)?;
        let dir = private_dir(opts.parent_dir.as_deref())?;
        let socket = dir.join("vineyard.sock");
        let logs = dir.join("logs");
        fs::create_dir(&logs)
            .map_err(|e| Error::Launch(format!("cannot create {}: {e}", logs.display())))?;
        let stderr = fs::File::create(dir.join("vineyardd.stderr")).map_err(|e| {
            Error::Launch(format!("cannot create log file in {}: {e}", dir.display()))
        })?;

        let mut cmd = Command::new(&binary);
        cmd.arg(format!("--socket={}", socket.display()))
            .arg(format!("--size={}", opts.size));
        match &opts.meta {
            Meta::Local => {
                cmd.arg("--meta=local");
            }
            Meta::Etcd { endpoint, prefix } => {
                cmd.arg("--meta=etcd")
                    .arg(format!("--etcd_endpoint={endpoint}"))
                    .arg(format!("--etcd_prefix={prefix}"));
            }
        }
        match opts.rpc_port {
            Some(port) => cmd
                .arg("--rpc=true")
                .arg(format!("--rpc_socket_port={port}")),
            None => cmd.arg("--rpc=false"),
        };
        cmd.arg(format!("--compression={}", opts.compression));
        if let Some(host) = &opts.advertise_host {
            cmd.env("MY_HOST_NAME", host);
        }
        cmd.env("GLOG_log_dir", &logs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if opts.die_with_parent {
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::Launch(format!("cannot run {}: {e}", binary.display())))?;
        let mut server = Server {
            child: Some(child),
            dir,
            socket,
            grace: opts.stop_grace,
            instance_id: 0,
            owner: std::process::id(),
        };
        server.wait_ready(opts.start_timeout)?;
        Ok(server)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let quick = Timeouts {
            connect: Duration::from_millis(200),
            read: Some(Duration::from_secs(5)),
            write: Some(Duration::from_secs(5)),
        };
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Launch(format!(
                        "vineyardd exited during start ({status}): {}",
                        self.log_tail()
                    )));
                }
            }
            if self.socket.exists() {
                if let Ok(c) = Client::connect_with(&self.socket, quick) {
                    self.instance_id = c.instance_id();
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Launch(format!(
                    "vineyardd did not accept connections on {} within {:?}: {}",
                    self.socket.display(),
                    timeout,
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The IPC socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The private directory (socket, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The instance id the server reported.
    pub fn instance_id(&self) -> u64 {
        self.instance_id
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines vineyardd wrote to stderr.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("vineyardd.stderr")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(8).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Blocks until the server exits on its own (foreground `serve`).
    pub fn wait(&mut self) -> Result<std::process::ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| Error::Launch("server already stopped".into()))?;
        child
            .wait()
            .map_err(|e| Error::Launch(format!("waiting for vineyardd: {e}")))
    }

    /// Sends SIGKILL at once (fault-injection tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL after the grace period.
    /// With no grace it is SIGKILLed at once and reaped by a background
    /// thread: the kernel takes ~0.1 s per GiB of store to free its memory,
    /// and a caller that is done with the data need not wait for that.
    pub fn stop(&mut self) {
        if std::process::id() != self.owner {
            std::mem::forget(self.child.take());
            return;
        }
        if let Some(mut child) = self.child.take() {
            if self.grace.is_zero() {
                let _ = child.kill();
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                // `Child` neither kills nor waits when dropped; the pid is
                // reaped below (inline if no thread can be spawned).
                drop(child);
                let reap = move || {
                    let _ = nix::sys::wait::waitpid(pid, None);
                };
                if std::thread::Builder::new()
                    .name("vineyardd-reaper".into())
                    .spawn(reap)
                    .is_err()
                {
                    reap();
                }
                return;
            }
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + self.grace;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let owner = std::process::id() == self.owner;
        self.stop();
        if owner {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Prefix of the private directories (`vineyard-kedro-<owner pid>-<suffix>`).
const DIR_PREFIX: &str = "vineyard-kedro-";

/// The owner pid in a private directory's name, if it is one.
fn owner_of(file_name: &str) -> Option<i32> {
    let rest = file_name.strip_prefix(DIR_PREFIX)?;
    let (pid, suffix) = rest.split_once('-')?;
    if suffix.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the private directories in `parent` whose owner process is gone
/// (a run killed with SIGKILL never runs its cleanup). A directory is
/// removed only when it is ours (same uid, a real directory), its owner pid
/// no longer exists, and no server answers on its socket (a `serve` whose
/// owner died may have left a vineyardd running). Returns what it removed.
pub fn remove_stale_dirs(parent: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;

    let me = nix::unistd::geteuid().as_raw();
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(owner_of) else {
            continue;
        };
        let path = e.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me || pid <= 0 {
            continue;
        }
        // kill(pid, 0): ESRCH means no such process; anything else (alive,
        // or not ours to signal) keeps the directory.
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if !gone || std::os::unix::net::UnixStream::connect(path.join("vineyard.sock")).is_ok() {
            continue;
        }
        if fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Creates a fresh directory only this user can enter, after removing the
/// stale ones of dead owners.
fn private_dir(parent: Option<&Path>) -> Result<PathBuf> {
    let parent = parent
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    remove_stale_dirs(&parent);
    let pid = std::process::id();
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!("{DIR_PREFIX}{pid}-{nanos:08x}{attempt}"));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::Launch(format!(
                    "cannot create a private directory in {}: {e}",
                    parent.display()
                )))
            }
        }
    }
    Err(Error::Launch(format!(
        "cannot create a private directory in {}",
        parent.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owner_pids_are_read_from_our_names_only() {
        assert_eq!(owner_of("vineyard-kedro-123-1a2b0"), Some(123));
        assert_eq!(owner_of("vineyard-kedro-glog-abc"), None);
        assert_eq!(owner_of("vineyard-kedro-123-"), None);
        assert_eq!(owner_of("vineyard-kedro-123"), None);
        assert_eq!(owner_of("other-123-x"), None);
    }

    /// A SIGKILLed owner leaves its directory; the next launch removes it,
    /// and keeps those of live owners and of servers still answering.
    #[test]
    fn stale_dirs_of_dead_owners_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = parent.path().join(format!("{DIR_PREFIX}{dead}-0"));
        fs::create_dir(&stale).unwrap();
        fs::create_dir(stale.join("logs")).unwrap();
        fs::write(stale.join("logs/x.INFO"), "log").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o700)).unwrap();
        let live = parent
            .path()
            .join(format!("{DIR_PREFIX}{}-0", std::process::id()));
        fs::create_dir(&live).unwrap();
        let answering = parent.path().join(format!("{DIR_PREFIX}{dead}-1"));
        fs::create_dir(&answering).unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(answering.join("vineyard.sock")).unwrap();
        let not_ours = parent.path().join("vineyard-kedro-glog-x");
        fs::create_dir(&not_ours).unwrap();

        assert_eq!(remove_stale_dirs(parent.path()), vec![stale.clone()]);
        assert!(!stale.exists() && live.exists() && answering.exists() && not_ours.exists());
    }
}
