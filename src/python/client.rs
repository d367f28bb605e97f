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

//! Every `Blob` holds the blob's lease, and its private (copy-on-write)
//! mapping lives no longer than the `Blob`, so both mappings of a loaded
//! blob keep it leased.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use super::convert::{to_json, to_py};
use super::lifetimes::{
    client, delete_ids, finish_releases, free_retired, note_retired, release_blobs,
    release_dropped, Released, State,
};
use crate::shm::Registration;
use crate::store::{self, PutOptions, Source};
use crate::{BlobBytes, Client, Error, ObjectId, PrivateBytes, Timeouts};

/// A mapped blob kept alive while any Python object refers to it. When the
/// last view goes, its connection's reference is released (see `Released`).
pub(super) struct Lease {
    /// This blob's entry in the registry of loaded blobs (the shared
    /// mapping, read only by what we hand out); goes before the bytes.
    pub(super) _shown: Option<Registration>,
    pub(super) bytes: BlobBytes,
    pub(super) released: Arc<Released>,
}

/// The bytes of one blob in shared memory, as loaded once (zero-copy).
///
/// Exposes `__array_interface__`, so `numpy.asarray(blob)` is a writable view
/// of a private, copy-on-write mapping of the blob, made on first use and
/// shared by every array of this load (one load is one value, like one
/// copy of it): a write copies only the pages it touches, and the store,
/// other loads and other processes keep the original. `address` is the
/// blob in the shared mapping, for Arrow, which never writes. The array's
/// base keeps this object, hence the lease and both mappings, alive.
#[pyclass(name = "Blob", module = "vineyard.contrib.kedro._core", frozen)]
pub struct PyBlob {
    lease: Arc<Lease>,
    /// The object this load was of (a save that references the blob links
    /// to it).
    owner: ObjectId,
    /// Mapped on first use; dropped with this object, after every array
    /// over it (they hold it as their base).
    private: OnceLock<PrivateBytes>,
}

impl PyBlob {
    fn new(lease: Arc<Lease>, owner: ObjectId) -> PyBlob {
        PyBlob {
            lease,
            owner,
            private: OnceLock::new(),
        }
    }

    /// This load's private mapping of the blob, made on first use.
    fn private(&self) -> crate::Result<&PrivateBytes> {
        if let Some(p) = self.private.get() {
            return Ok(p);
        }
        let mapped = self.lease.bytes.map_private_for(Some(self.owner))?;
        // Another thread may have won the race: its mapping is the one every
        // array uses, and ours is unmapped here.
        Ok(self.private.get_or_init(|| mapped))
    }
}

#[pymethods]
impl PyBlob {
    /// The blob id.
    #[getter]
    fn id(&self) -> u64 {
        self.lease.bytes.id().value()
    }

    /// Size in bytes.
    #[getter]
    fn size(&self) -> usize {
        self.lease.bytes.len()
    }

    /// Address of the first byte in the shared mapping (read-only: the
    /// sealed blob as stored).
    #[getter]
    fn address(&self) -> usize {
        self.lease.bytes.as_ptr() as usize
    }

    fn __len__(&self) -> usize {
        self.lease.bytes.len()
    }

    /// numpy's array interface: a writable 1-D uint8 view of this load's
    /// private (copy-on-write) mapping.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let private = self.private()?;
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", (private.len(),))?;
        d.set_item("typestr", "|u1")?;
        d.set_item("data", (private.as_mut_ptr() as usize, false))?;
        Ok(d)
    }

    /// A read-only view of the blob as stored, for bytes that are only read
    /// and copied (strings, pickle streams): no private mapping to make.
    fn shared_view(&self) -> SharedView {
        SharedView {
            lease: self.lease.clone(),
        }
    }

    /// A copy of the bytes.
    fn tobytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.lease.bytes.as_slice())
    }

    /// True when `count` Arrow offsets of `itemsize` (4 or 8) bytes, starting
    /// `start` bytes into this blob, never decrease and lie in `0..=data_size`:
    /// then every item of the array lies inside its data buffer. One pass with
    /// the GIL released (the O(n) part of loading a string column safely).
    fn offsets_ok(
        &self,
        py: Python<'_>,
        start: usize,
        count: usize,
        itemsize: usize,
        data_size: u64,
    ) -> PyResult<bool> {
        let bytes = self.lease.bytes.as_slice();
        let end = count
            .checked_mul(itemsize)
            .and_then(|n| n.checked_add(start));
        let range = match end {
            Some(end) if end <= bytes.len() && (itemsize == 4 || itemsize == 8) => start..end,
            _ => {
                return Err(PyValueError::new_err(
                    "offsets outside the blob, or an item size other than 4 or 8",
                ))
            }
        };
        Ok(py.detach(|| crate::validate::offsets_ok(&bytes[range], itemsize, data_size)))
    }

    /// True when every item of the string array whose `count` offsets start
    /// `start` bytes into this blob is valid UTF-8 in `data` (offsets already
    /// checked by `offsets_ok`). One pass with the GIL released.
    fn utf8_ok(
        &self,
        py: Python<'_>,
        start: usize,
        count: usize,
        itemsize: usize,
        data: PyRef<'_, PyBlob>,
    ) -> PyResult<bool> {
        let bytes = self.lease.bytes.as_slice();
        let range = count
            .checked_mul(itemsize)
            .and_then(|n| n.checked_add(start))
            .filter(|end| *end <= bytes.len() && (itemsize == 4 || itemsize == 8))
            .map(|end| start..end)
            .ok_or_else(|| {
                PyValueError::new_err("offsets outside the blob, or an item size other than 4 or 8")
            })?;
        let text = data.lease.bytes.as_slice();
        Ok(py.detach(|| crate::validate::utf8_items_ok(text, &bytes[range], itemsize)))
    }

    fn __repr__(&self) -> String {
        format!(
            "Blob({}, {} bytes)",
            self.lease.bytes.id(),
            self.lease.bytes.len()
        )
    }
}

/// A blob in the shared mapping, read-only: `numpy.asarray(view)` is a
/// read-only uint8 array whose base keeps the lease alive.
#[pyclass(name = "SharedView", module = "vineyard.contrib.kedro._core", frozen)]
pub struct SharedView {
    lease: Arc<Lease>,
}

#[pymethods]
impl SharedView {
    /// numpy's array interface: a read-only 1-D uint8 view.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", (self.lease.bytes.len(),))?;
        d.set_item("typestr", "|u1")?;
        d.set_item("data", (self.lease.bytes.as_ptr() as usize, true))?;
        Ok(d)
    }
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

fn source_of(obj: &Bound<'_, PyAny>) -> PyResult<Source> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Source::from_slice(b.as_bytes()));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return match t.len() {
            2 => {
                let (ptr, len): (usize, usize) = t.extract()?;
                Ok(Source::Contiguous {
                    ptr: ptr as *const u8,
                    len,
                })
            }
            4 => {
                let (ptr, itemsize, count, stride): (usize, usize, usize, isize) = t.extract()?;
                Ok(Source::Strided {
                    ptr: ptr as *const u8,
                    itemsize,
                    count,
                    stride,
                })
            }
            n => Err(PyValueError::new_err(format!(
                "a buffer tuple has 2 or 4 items, not {n}"
            ))),
        };
    }
    Err(PyTypeError::new_err(format!(
        "buffers are bytes, (address, nbytes) or (address, itemsize, count, stride), not {}",
        obj.get_type().name()?
    )))
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
    /// `buffers[i]`) as one object. Returns `(id, replaced_id_or_None,
    /// bytes_copied, bytes_referenced)`: a buffer that is exactly an
    /// unchanged blob this process loaded from this vineyardd is referenced,
    /// not copied, unless `VINEYARD_KEDRO_REFERENCE` is `0`.
    /// The object that `name` pointed to before is deleted (retired while
    /// any process maps it).
    #[pyo3(signature = (tree, buffers, name = None, persist = true))]
    fn put(
        &self,
        py: Python<'_>,
        tree: &Bound<'_, PyAny>,
        buffers: Vec<Bound<'_, PyAny>>,
        name: Option<String>,
        persist: bool,
    ) -> PyResult<(u64, Option<u64>, u64, u64)> {
        let tree = to_json(tree)?;
        let sources = buffers
            .iter()
            .map(source_of)
            .collect::<PyResult<Vec<_>>>()?;
        let opts = PutOptions {
            persist,
            name,
            reference_loaded: reference_enabled(),
        };
        // `buffers` stays alive (and referenced) until we return.
        let res = self.with(py, move |st| {
            // SAFETY: every source points into a Python object held by `buffers`
            // for the whole call (bytes are immutable; arrays are the caller's).
            let r = unsafe { store::put(client(st)?, &tree, &sources, &opts) }?;
            if let Some(old) = r.replaced {
                delete_ids(st, &[old], false)?;
            }
            Ok(r)
        })?;
        Ok((
            res.id.value(),
            res.replaced.map(ObjectId::value),
            res.bytes,
            res.referenced,
        ))
    }

    /// Loads an object: `(id, meta_dict, {blob_id: Blob})`. Objects held by
    /// another instance are migrated first.
    #[pyo3(signature = (id = None, name = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        id: Option<u64>,
        name: Option<String>,
    ) -> PyResult<(u64, Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        let released = self.released.clone();
        let fetched = self.with(py, move |st| {
            // A name moved by a concurrent save may point at an object that
            // is retired or freed by the time it is mapped: look again.
            let mut attempts = 0;
            let f = loop {
                attempts += 1;
                let id = match (id, &name) {
                    (Some(id), _) => oid(id),
                    (None, Some(n)) => client(st)?.get_name(n, false)?,
                    (None, None) => return Err(Error::Usage("get needs an id or a name".into())),
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

    /// Resolves a name to an object id, or None.
    fn resolve(&self, py: Python<'_>, name: String) -> PyResult<Option<u64>> {
        self.with(py, move |st| client(st)?.try_get_name(&name))
            .map(|o| o.map(ObjectId::value))
    }

    /// Names a (persisted) object.
    fn put_name(&self, py: Python<'_>, id: u64, name: String) -> PyResult<()> {
        self.with(py, move |st| client(st)?.put_name(oid(id), &name))
    }

    /// Removes a name (missing names are fine).
    fn drop_name(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.with(py, move |st| client(st)?.drop_name(&name))
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
