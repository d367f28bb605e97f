//! `Client` and `Blob`: the Python face of a vineyardd connection.
//!
//! One mutex serialises requests on the socket (Kedro's ThreadRunner calls
//! from several threads). After `fork` the child never touches the parent's
//! socket: it notices the pid changed and connects anew.
//!
//! Lifetimes follow `crate::lease`: a load keeps this connection's
//! reference to each blob it mapped while any view of the blob lives, and
//! `release`s it when the last view goes (then frees the objects retired
//! meanwhile that nobody maps any more); deletes retire what any process
//! still maps instead of freeing it.

//! Every `Blob` (`super::blob`) holds the blob's lease.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::blob::PyBlob;
use super::convert::{to_json, to_py};
use super::lifetimes::{
    client, delete_ids, finish_releases, free_retired, note_retired, release_blobs,
    release_dropped, Released, State,
};
use super::sources::sources_of;
use crate::shm::Registration;
use crate::store::{self, PutOptions};
use crate::{BlobBytes, Client, Error, ObjectId, Timeouts};

/// A mapped blob kept alive while any Python object refers to it. When the
/// last view goes, its connection's reference is released (see `Released`).
pub(super) struct Lease {
    /// This blob's entry in the registry of loaded blobs (the shared
    /// mapping, read only by what we hand out); goes before the bytes.
    pub(super) _shown: Option<Registration>,
    pub(super) bytes: BlobBytes,
    pub(super) released: Arc<Released>,
}

/// A connection to one vineyardd (`vineyard.contrib.kedro._core.Client`).
#[pyclass(name = "Client", module = "vineyard.contrib.kedro._core", frozen)]
pub struct PyClient {
    socket: PathBuf,
    timeouts: Timeouts,
    state: Arc<Mutex<State>>,
    released: Arc<Released>,
}

impl PyClient {
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.pid != std::process::id() {
            // A forked child: the socket and mappings belong to the parent's
            // connection. Forget them without closing or sending anything.
            if let Some(old) = st.client.take() {
                std::mem::forget(old);
            }
            st.live.clear();
            st.held.clear();
            st.retired.clear();
            st.own_names.clear();
            st.pid = std::process::id();
        }
        st
    }

    /// Runs `f` on a connected client with the GIL released. A connection
    /// broken by the call is dropped so the next call reconnects.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut State) -> crate::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut st = self.lock();
            if st.client.is_none() {
                st.client = Some(Client::connect_with(&self.socket, self.timeouts)?);
            }
            release_dropped(&mut st, &self.released);
            finish_releases(&mut st);
            let res = f(&mut st);
            if let Err(e) = &res {
                if e.is_fatal_to_connection() {
                    st.forget_connection();
                }
            }
            release_dropped(&mut st, &self.released);
            res
        })
        .map_err(PyErr::from)
    }
}

/// Drops a client on a thread of its own: unmapping a store whose pages
/// this process touched takes the kernel ~50 ms per GiB, which the end of a
/// run need not wait for. If no thread can be spawned, `spawn` drops the
/// closure, and with it the client, right here.
fn drop_in_background(c: Client) {
    let _ = std::thread::Builder::new()
        .name("vineyard-unmap".into())
        .spawn(move || drop(c));
}

/// Saves reference the loaded blobs they contain unchanged, unless the
/// environment says `VINEYARD_KEDRO_REFERENCE=0` (to compare with copying).
fn reference_enabled() -> bool {
    std::env::var_os("VINEYARD_KEDRO_REFERENCE").is_none_or(|v| v != "0")
}

fn oid(id: u64) -> ObjectId {
    ObjectId(id)
}

#[pymethods]
impl PyClient {
    /// Connects lazily to the vineyardd at `socket`.
    #[new]
    #[pyo3(signature = (socket, connect_timeout = 2.0, read_timeout = 300.0, write_timeout = 60.0))]
    fn new(
        socket: PathBuf,
        connect_timeout: f64,
        read_timeout: Option<f64>,
        write_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let secs = |s: f64| {
            if s.is_finite() && s > 0.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(PyValueError::new_err(format!(
                    "timeouts must be positive seconds, got {s}"
                )))
            }
        };
        let timeouts = Timeouts {
            connect: secs(connect_timeout)?,
            read: read_timeout.map(secs).transpose()?,
            write: write_timeout.map(secs).transpose()?,
        };
        let state = Arc::new(Mutex::new(State {
            client: None,
            pid: std::process::id(),
            live: HashMap::new(),
            held: HashMap::new(),
            retired: Vec::new(),
            own_names: HashMap::new(),
        }));
        let released = Arc::new(Released {
            blobs: Mutex::new(Vec::new()),
            state: Arc::downgrade(&state),
            finishing: AtomicBool::new(false),
        });
        Ok(PyClient {
            socket,
            timeouts,
            state,
            released,
        })
    }

    /// The socket path.
    #[getter]
    fn socket(&self) -> String {
        self.socket.display().to_string()
    }

    /// Connects now (if not yet) and returns the server's instance id.
    fn connect(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |st| Ok(client(st)?.instance_id()))
    }

    /// Stores `tree` (a dict; nested dicts are members, `{"__blob__": i}` is
    /// `buffers[i]`) as one object. A buffer is an object that owns its
    /// memory: bytes, a numpy array (copied in C order; rows that are
    /// contiguous are gathered in place), or any buffer-protocol object.
    /// Returns `(id, replaced_id_or_None, bytes_copied, bytes_referenced)`:
    /// a buffer that is exactly an unchanged blob this process loaded
    /// through this connection is referenced, not copied, unless
    /// `VINEYARD_KEDRO_REFERENCE` is `0`.
    /// The object that `name` pointed to before is deleted (retired while
    /// any process maps it).
    ///
    /// `private`: `name` is in a run's private namespace, which only this
    /// run writes, each name from one process (Kedro runs a dataset's
    /// producer once). The object the name points to is then the one this
    /// process last saved under it, or none: the put does not ask vineyardd
    /// (see `Client::persist_and_rename`), and loads of the name in this
    /// process start from the object saved.
    #[pyo3(signature = (tree, buffers, name = None, persist = true, private = false))]
    fn put(
        &self,
        py: Python<'_>,
        tree: &Bound<'_, PyAny>,
        buffers: Vec<Bound<'_, PyAny>>,
        name: Option<String>,
        persist: bool,
        private: bool,
    ) -> PyResult<(u64, Option<u64>, u64, u64)> {
        let tree = to_json(tree)?;
        // The sources borrow `borrowed`, which holds the objects owning
        // their memory: it outlives the put.
        let borrowed = sources_of(&buffers)?;
        let sources = borrowed.sources()?;
        let reference_loaded = reference_enabled();
        let res = self.with(py, move |st| {
            let private = private.then_some(name.as_ref()).flatten().cloned();
            let previous = private.as_ref().map(|n| st.own_names.get(n).copied());
            let opts = PutOptions {
                persist,
                name,
                previous,
                reference_loaded,
            };
            let r = store::put(client(st)?, &tree, &sources, &opts)?;
            if let Some(n) = private {
                st.own_names.insert(n, r.id);
            }
            if let Some(old) = r.replaced {
                delete_ids(st, &[old], false)?;
            }
            Ok(r)
        })?;
        drop(borrowed);
        Ok((
            res.id.value(),
            res.replaced.map(ObjectId::value),
            res.bytes,
            res.referenced,
        ))
    }

    /// Loads an object: `(id, meta_dict, {blob_id: Blob})`. Objects held by
    /// another instance are migrated first. `private`: `name` is in a run's
    /// private namespace (see `put`); the object this process saved under
    /// it, else `saved` (the id its producer recorded for the run), if it
    /// still exists and is not retired, is what the name points to, and
    /// vineyardd is asked only otherwise.
    #[pyo3(signature = (id = None, name = None, private = false, saved = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        id: Option<u64>,
        name: Option<String>,
        private: bool,
        saved: Option<u64>,
    ) -> PyResult<(u64, Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        let released = self.released.clone();
        let fetched = self.with(py, move |st| {
            let mut saved = match (id, &name) {
                (None, Some(n)) if private => st.own_names.get(n).copied().or(saved.map(oid)),
                _ => None,
            };
            // A name moved by a concurrent save may point at an object that
            // is retired or freed by the time it is mapped: look again (the
            // object this process saved, if it is gone, is not an attempt).
            let mut attempts = if saved.is_some() { -1 } else { 0 };
            let f = loop {
                attempts += 1;
                let id = match (id, &name, saved.take()) {
                    (Some(id), _, _) => oid(id),
                    (None, Some(_), Some(mine)) => mine,
                    (None, Some(n), None) => {
                        if private {
                            st.own_names.remove(n);
                        }
                        client(st)?.get_name(n, false)?
                    }
                    (None, None, _) => {
                        return Err(Error::Usage("get needs an id or a name".into()))
                    }
                };
                let gone = |st: &State| Error::NotFound {
                    socket: st
                        .client
                        .as_ref()
                        .map(|c| c.socket().to_path_buf())
                        .unwrap_or_default(),
                    what: format!("object {id} (deleted while it was being loaded)"),
                };
                let (f, usable) = match store::get_confirmed(client(st)?, id) {
                    Err(e)
                        if (e.is_not_found() || matches!(e, Error::Layout { .. }))
                            && name.is_some()
                            && attempts < 3 =>
                    {
                        continue
                    }
                    other => other?,
                };
                // The lease is taken (the mapping), and no deleter retired
                // the object before it could see the lease: use it.
                if usable {
                    break f;
                }
                let mapped: Vec<ObjectId> = f
                    .blobs
                    .keys()
                    .filter(|b| !st.held.contains_key(b))
                    .copied()
                    .collect();
                let loaded = f.id;
                drop(f);
                release_blobs(st, &mapped, &[loaded]);
                if name.is_none() || attempts >= 3 {
                    return Err(gone(st));
                }
            };
            let mut leases = HashMap::with_capacity(f.blobs.len());
            for (bid, bytes) in f.blobs {
                let lease = match st.live.get(&bid).and_then(Weak::upgrade) {
                    Some(l) if l.bytes.len() == bytes.len() => l,
                    _ => {
                        let l = Arc::new(Lease {
                            _shown: bytes.register_shared(Some(f.id)),
                            bytes,
                            released: released.clone(),
                        });
                        st.live.insert(bid, Arc::downgrade(&l));
                        l
                    }
                };
                if bid != ObjectId::EMPTY_BLOB {
                    // Objects may share a blob (a save references what it
                    // loaded): the release frees whichever was retired.
                    let owners = st.held.entry(bid).or_default();
                    if !owners.contains(&f.id) {
                        owners.push(f.id);
                    }
                }
                leases.insert(bid, lease);
            }
            Ok((f.id, f.meta, leases))
        })?;
        let (id, meta, leases) = fetched;
        let blobs = PyDict::new(py);
        for (bid, lease) in leases {
            blobs.set_item(bid.value(), Bound::new(py, PyBlob::new(lease, id))?)?;
        }
        Ok((id.value(), to_py(py, &meta.into_value())?, blobs))
    }

    /// The metadata tree of an object.
    #[pyo3(signature = (id, sync_remote = false))]
    fn get_meta<'py>(
        &self,
        py: Python<'py>,
        id: u64,
        sync_remote: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let meta = self.with(py, move |st| client(st)?.get_meta(oid(id), sync_remote))?;
        to_py(py, &meta.into_value())
    }

    /// Resolves a name to an object id, or None. `private`: `name` is in a
    /// run's private namespace (see `put`): the object this process saved
    /// under it, else `saved` (see `get`), while it exists and is not retired.
    #[pyo3(signature = (name, private = false, saved = None))]
    fn resolve(
        &self,
        py: Python<'_>,
        name: String,
        private: bool,
        saved: Option<u64>,
    ) -> PyResult<Option<u64>> {
        self.with(py, move |st| {
            let known = st.own_names.get(&name).copied().or(saved.map(oid));
            if let Some(mine) = known.filter(|_| private) {
                // Retired: a later save moved the name elsewhere.
                if crate::lease::confirm(client(st)?, mine)? {
                    return Ok(Some(mine));
                }
                st.own_names.remove(&name);
            }
            client(st)?.try_get_name(&name)
        })
        .map(|o| o.map(ObjectId::value))
    }

    /// Names a (persisted) object.
    fn put_name(&self, py: Python<'_>, id: u64, name: String) -> PyResult<()> {
        self.with(py, move |st| client(st)?.put_name(oid(id), &name))
    }

    /// Removes a name (missing names are fine).
    fn drop_name(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.with(py, move |st| {
            st.own_names.remove(&name);
            client(st)?.drop_name(&name)
        })
    }

    /// `[(name, id)]` of names matching a glob.
    #[pyo3(signature = (pattern = "*".to_string(), regex = false, limit = 1 << 20))]
    fn list_names(
        &self,
        py: Python<'_>,
        pattern: String,
        regex: bool,
        limit: usize,
    ) -> PyResult<Vec<(String, u64)>> {
        let v = self.with(py, move |st| client(st)?.list_names(&pattern, regex, limit))?;
        Ok(v.into_iter().map(|(n, i)| (n, i.value())).collect())
    }

    /// `{id: meta}` of objects whose typename matches a glob.
    #[pyo3(signature = (pattern = "*".to_string(), regex = false, limit = 1 << 20))]
    fn list_data<'py>(
        &self,
        py: Python<'py>,
        pattern: String,
        regex: bool,
        limit: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let v = self.with(py, move |st| client(st)?.list_data(&pattern, regex, limit))?;
        let d = PyDict::new(py);
        for (id, meta) in v {
            d.set_item(id.value(), to_py(py, &meta.into_value())?)?;
        }
        Ok(d)
    }

    /// True if the object exists.
    fn exists(&self, py: Python<'_>, id: u64) -> PyResult<bool> {
        self.with(py, move |st| client(st)?.exists(oid(id)))
    }

    /// Persists an object.
    fn persist(&self, py: Python<'_>, id: u64) -> PyResult<()> {
        self.with(py, move |st| client(st)?.persist(oid(id)))
    }

    /// Deletes objects (deep). Objects that some process (this one
    /// included) still maps are retired instead: freed once the last of
    /// them lets go. Returns how many were retired.
    #[pyo3(signature = (ids, force = false))]
    fn delete(&self, py: Python<'_>, ids: Vec<u64>, force: bool) -> PyResult<usize> {
        let ids: Vec<ObjectId> = ids.into_iter().map(oid).collect();
        self.with(py, move |st| delete_ids(st, &ids, force))
    }

    /// Drops every name under `prefix` and deletes the objects (and, in a
    /// cluster, their migrated copies and leftovers of earlier copies),
    /// retiring those still mapped. Returns their ids, sorted.
    fn delete_namespace(&self, py: Python<'_>, prefix: String) -> PyResult<Vec<u64>> {
        self.with(py, move |st| {
            st.own_names.retain(|n, _| !n.starts_with(&prefix));
            let done = crate::lease::delete_namespace(client(st)?, &prefix)?;
            note_retired(st, &done.outcome);
            Ok(done.ids().into_iter().map(ObjectId::value).collect())
        })
    }

    /// Frees the objects this client retired that nobody maps any more;
    /// returns how many are still retired. `all=True` (at exit) first lets
    /// go of every blob this process still views.
    #[pyo3(signature = (all = false))]
    fn flush(&self, py: Python<'_>, all: bool) -> PyResult<usize> {
        self.with(py, move |st| {
            if all {
                let held: Vec<(ObjectId, Vec<ObjectId>)> = st.held.drain().collect();
                let blobs: Vec<ObjectId> = held.iter().map(|(b, _)| *b).collect();
                let mut owners: Vec<ObjectId> = held.into_iter().flat_map(|(_, o)| o).collect();
                owners.sort_unstable();
                owners.dedup();
                release_blobs(st, &blobs, &owners);
            }
            finish_releases(st);
            free_retired(st)?;
            Ok(st.retired.len())
        })
    }

    /// Number of objects this client retired that are not freed yet.
    #[getter]
    fn deferred(&self) -> usize {
        self.lock().retired.len()
    }

    /// `instance_status` as a dict (memory_usage, memory_limit, ...).
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = self.with(py, |st| client(st)?.instance_status())?;
        to_py(py, &serde_json::Value::Object(m))
    }

    /// The cluster's instances, keyed `i<id>`.
    fn cluster_meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = self.with(py, |st| client(st)?.cluster_meta())?;
        to_py(py, &serde_json::Value::Object(m))
    }

    /// Migrates an object here; returns the local id.
    fn migrate(&self, py: Python<'_>, id: u64) -> PyResult<u64> {
        self.with(py, move |st| {
            let meta = client(st)?.get_meta(oid(id), true)?;
            crate::migrate::migrate(client(st)?, oid(id), &meta)
        })
        .map(ObjectId::value)
    }

    /// Force-deletes every object of the instance.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |st| client(st)?.clear())
    }

    /// The server's instance id.
    #[getter]
    fn instance_id(&self, py: Python<'_>) -> PyResult<u64> {
        self.connect(py)
    }

    /// Closes the connection (the next call reconnects). While this process
    /// still views blobs it loaded, the connection stays open: its
    /// references are what keeps other processes from freeing them. With
    /// `abandon` it closes anyway (for a server about to be stopped; views
    /// stay readable, since the mappings they hold keep the memory).
    #[pyo3(signature = (abandon = false))]
    fn close(&self, py: Python<'_>, abandon: bool) {
        py.detach(|| {
            let mut st = self.lock();
            release_dropped(&mut st, &self.released);
            if abandon {
                st.retired.clear();
                st.held.clear();
                if let Some(c) = st.client.take() {
                    drop_in_background(c);
                }
                return;
            }
            finish_releases(&mut st);
            if st.held.is_empty() {
                let _ = free_retired(&mut st);
                st.forget_connection();
            }
        })
    }

    fn __repr__(&self) -> String {
        format!("Client({:?})", self.socket.display().to_string())
    }
}
