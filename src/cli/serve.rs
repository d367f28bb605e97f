//! `serve`: a vineyardd in the foreground, launched like the runners'
//! embedded default (private directory, killed if we die), until Ctrl-C or
//! SIGTERM stops it.
//!
//! The launcher always puts the socket in its private directory; `--socket
//! PATH` exposes it at PATH through a symlink (connecting follows it), which
//! is removed again when the server stops.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::{Failure, Io, MetaKind, ServeArgs};
use crate::client::Client;
use crate::connection::Timeouts;
use crate::server::{Meta, Server, ServerOptions};

/// The last stop signal received while serving (0: none).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: i32) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
}

/// Our SIGINT/SIGTERM handlers while installed; the previous ones come back on drop
/// (inside Kedro, those are Python's).
struct StopHandlers {
    previous: Vec<(Signal, SigAction)>,
}

impl StopHandlers {
    fn install() -> Result<StopHandlers, Failure> {
        STOP_SIGNAL.store(0, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_stop_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut previous = Vec::new();
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
            let old = unsafe { sigaction(sig, &action) }
                .map_err(|e| Failure::Error(format!("cannot handle {sig}: {e}")))?;
            previous.push((sig, old));
        }
        Ok(StopHandlers { previous })
    }
}

impl Drop for StopHandlers {
    fn drop(&mut self) {
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: restores the disposition that was installed before ours.
            let _ = unsafe { sigaction(sig, &old) };
        }
    }
}

/// A symlink at `path` to the server's socket, removed on drop.
struct Link(PathBuf);

impl Link {
    /// Refuses a path a live server or a file holds; removes a stale socket or link.
    fn clear(path: &Path) -> Result<(), Failure> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            let quick = Timeouts {
                connect: Duration::from_millis(200),
                read: Some(Duration::from_secs(2)),
                write: Some(Duration::from_secs(2)),
            };
            if Client::connect_with(path, quick).is_ok() {
                return Err(Failure::Error(format!(
                    "a vineyardd already listens at {}",
                    path.display()
                )));
            }
            if meta.is_dir() || meta.is_file() {
                return Err(Failure::Error(format!(
                    "{} exists and is not a socket",
                    path.display()
                )));
            }
            // A stale socket or link from a server that is gone.
            std::fs::remove_file(path).map_err(|e| {
                Failure::Error(format!("cannot remove stale {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }

    fn create(path: &Path, target: &Path) -> Result<Link, Failure> {
        std::os::unix::fs::symlink(target, path)
            .map_err(|e| Failure::Error(format!("cannot create {}: {e}", path.display())))?;
        Ok(Link(path.to_path_buf()))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `site-packages` directories of the environment this process runs from
/// (`<env>/bin/python` or `<env>/bin/vineyard-kedro`), so that a `vineyardd`
/// installed next to us is found without an activated virtualenv.
fn site_dirs_of_this_interpreter() -> Vec<PathBuf> {
    let Some(env) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.to_path_buf()))
    else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(env.join("lib")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect()
}

/// `serve [--size] [--meta] [--etcd-endpoint] [--etcd-prefix] [--rpc-port]`,
/// with the global `--socket` as the path to expose.
pub(super) fn serve(
    socket: Option<&Path>,
    args: &ServeArgs,
    io: &mut Io<'_>,
) -> Result<(), Failure> {
    let meta = match args.meta {
        MetaKind::Local => Meta::Local,
        MetaKind::Etcd => Meta::Etcd {
            endpoint: args.etcd_endpoint.clone(),
            prefix: args.etcd_prefix.clone(),
        },
    };
    let opts = ServerOptions {
        binary: args.vineyardd.clone(),
        site_dirs: site_dirs_of_this_interpreter(),
        size: args.size.clone(),
        meta,
        rpc_port: args.rpc_port,
        die_with_parent: true,
        ..ServerOptions::default()
    };
    if let Some(path) = socket {
        Link::clear(path)?;
    }
    let handlers = StopHandlers::install()?;
    let mut server = Server::start(&opts)?;
    let link = match socket {
        Some(path) => Some(Link::create(path, server.socket())?),
        None => None,
    };
    let shown = link
        .as_ref()
        .map_or(server.socket(), |l| l.0.as_path())
        .to_path_buf();
    writeln!(io.out, "{}", shown.display())?;
    io.out.flush()?;
    let _ = writeln!(
        io.err,
        "vineyardd (pid {}) serves {} with {}; Ctrl-C stops it",
        server.pid().unwrap_or(0),
        shown.display(),
        args.size
    );
    if let Some(port) = args.rpc_port {
        // vineyardd 0.24.2 has no option to bind RPC to one address
        let _ = writeln!(
            io.err,
            "warning: vineyardd's RPC port {port} listens on every interface (0.0.0.0) without \
             authentication: whoever can reach it can read, write and delete every object; \
             firewall it to the cluster's instances"
        );
    }
    let _ = io.err.flush();
    let outcome = loop {
        let sig = STOP_SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            break Ok(sig);
        }
        if !server.is_running() {
            // Ctrl-C reaches vineyardd too (same process group): that is a stop, not a crash.
            std::thread::sleep(Duration::from_millis(50));
            let sig = STOP_SIGNAL.load(Ordering::SeqCst);
            break if sig != 0 {
                Ok(sig)
            } else {
                Err(server.wait().map(|s| s.to_string()).unwrap_or_default())
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    server.stop();
    drop(link);
    drop(handlers);
    match outcome {
        Ok(sig) => {
            let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
            let _ = writeln!(io.err, "stopped vineyardd ({name})");
            Ok(())
        }
        Err(status) => Err(Failure::Error(format!(
            "vineyardd exited by itself ({status}): {}",
            server.log_tail()
        ))),
    }
}
