//! `Server`: a vineyardd owned by this process (the embedded default, tests
//! and `serve`), wrapping [`crate::server::Server`].

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;

use crate::server::{self, Meta, Server, ServerOptions};

/// Finds the vineyardd binary (explicit path, `$VINEYARDD`, the given
/// site-packages directories, the virtualenv, `$PATH`).
#[pyfunction]
#[pyo3(signature = (binary = None, site_dirs = Vec::new()))]
pub fn find_vineyardd(binary: Option<PathBuf>, site_dirs: Vec<PathBuf>) -> PyResult<String> {
    Ok(server::find_vineyardd(binary.as_deref(), &site_dirs)?
        .display()
        .to_string())
}

/// A running vineyardd in a private 0700 directory; stopped by `stop()` or
/// when garbage-collected.
#[pyclass(name = "Server", module = "vineyard.contrib.kedro._core", frozen)]
pub struct PyServer {
    inner: Mutex<Option<Server>>,
    socket: String,
    dir: String,
}

#[pymethods]
impl PyServer {
    /// Starts vineyardd and waits until it accepts connections.
    #[new]
    #[pyo3(signature = (size = "256Mi".to_string(), binary = None, site_dirs = Vec::new(), rpc_port = None,
                        etcd_endpoint = None, etcd_prefix = "vineyard".to_string(), parent_dir = None,
                        start_timeout = 30.0, die_with_parent = true, compression = false,
                        advertise_host = None, stop_grace = 5.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        size: String,
        binary: Option<PathBuf>,
        site_dirs: Vec<PathBuf>,
        rpc_port: Option<u16>,
        etcd_endpoint: Option<String>,
        etcd_prefix: String,
        parent_dir: Option<PathBuf>,
        start_timeout: f64,
        die_with_parent: bool,
        compression: bool,
        advertise_host: Option<String>,
        stop_grace: f64,
    ) -> PyResult<Self> {
        let opts = ServerOptions {
            binary,
            site_dirs,
            size,
            meta: match etcd_endpoint {
                Some(endpoint) => Meta::Etcd {
                    endpoint,
                    prefix: etcd_prefix,
                },
                None => Meta::Local,
            },
            rpc_port,
            parent_dir,
            start_timeout: Duration::from_secs_f64(start_timeout.max(0.1)),
            die_with_parent,
            compression,
            advertise_host,
            stop_grace: Duration::from_secs_f64(stop_grace.max(0.0)),
        };
        let server = py.detach(|| Server::start(&opts))?;
        let socket = server.socket().display().to_string();
        let dir = server.dir().display().to_string();
        Ok(PyServer {
            inner: Mutex::new(Some(server)),
            socket,
            dir,
        })
    }

    /// The IPC socket path.
    #[getter]
    fn socket(&self) -> String {
        self.socket.clone()
    }

    /// The private directory holding the socket and logs.
    #[getter]
    fn dir(&self) -> String {
        self.dir.clone()
    }

    /// The server's pid, None once stopped.
    #[getter]
    fn pid(&self) -> Option<u32> {
        self.inner.lock().ok()?.as_ref().and_then(Server::pid)
    }

    /// True while the process runs.
    fn is_running(&self) -> bool {
        self.inner
            .lock()
            .map(|mut g| g.as_mut().is_some_and(Server::is_running))
            .unwrap_or(false)
    }

    /// The last lines vineyardd wrote to stderr.
    fn log_tail(&self) -> String {
        self.inner
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(Server::log_tail))
            .unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after a grace period; removes the directory.
    fn stop(&self, py: Python<'_>) {
        let taken = self.inner.lock().ok().and_then(|mut g| g.take());
        py.detach(move || drop(taken));
    }

    /// SIGKILL at once (fault-injection tests); keeps the directory.
    fn kill(&self, py: Python<'_>) {
        py.detach(|| {
            if let Ok(mut g) = self.inner.lock() {
                if let Some(s) = g.as_mut() {
                    s.kill();
                }
            }
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, py: Python<'_>, _a: Py<PyAny>, _b: Py<PyAny>, _c: Py<PyAny>) -> bool {
        self.stop(py);
        false
    }

    fn __repr__(&self) -> String {
        format!("Server(socket={:?})", self.socket)
    }
}
