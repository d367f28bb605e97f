//! `Client` and `Blob`: the Python face of a vineyardd connection.
//!
//! One mutex serialises requests on the socket (Kedro's ThreadRunner calls
//! from several threads). After `fork` the child never touches the parent's
//! socket: it notices the pid changed and connects anew.
//!
//! Deletes are deferred while this process still holds views of the object's
//! blobs: vineyardd frees blob memory at once on delete, and would otherwise
//! reuse it under arrays that Python code is still reading.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use super::convert::{to_json, to_py};
use crate::store::{self, PutOptions, Source};
use crate::{BlobBytes, Client, Error, ObjectId, Timeouts};

/// A mapped blob kept alive while any Python object refers to it.
struct Lease {
    bytes: BlobBytes,
}

/// Read-only bytes of one blob in shared memory (zero-copy).
///
/// Exposes `__array_interface__`, so `numpy.asarray(blob)` is a read-only view
/// whose base keeps the mapping alive.
#[pyclass(name = "Blob", module = "vineyard.contrib.kedro._core", frozen)]
pub struct PyBlob {
    lease: Arc<Lease>,
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

    /// Address of the first byte in this process.
    #[getter]
    fn address(&self) -> usize {
        self.lease.bytes.as_ptr() as usize
    }

    fn __len__(&self) -> usize {
        self.lease.bytes.len()
    }

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

/// A delete waiting for local views to go away.
struct Deferred {
    id: ObjectId,
    blobs: Vec<ObjectId>,
    force: bool,
}

struct State {
    client: Option<Client>,
    pid: u32,
    live: HashMap<ObjectId, Weak<Lease>>,
    deferred: Vec<Deferred>,
}

/// A connection to one vineyardd (`vineyard.contrib.kedro._core.Client`).
#[pyclass(name = "Client", module = "vineyard.contrib.kedro._core", frozen)]
pub struct PyClient {
    socket: PathBuf,
    timeouts: Timeouts,
    state: Mutex<State>,
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
            st.deferred.clear();
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
            flush_deferred(&mut st, false);
            let res = f(&mut st);
            if let Err(e) = &res {
                if e.is_fatal_to_connection() {
                    st.client = None;
                }
            }
            res
        })
        .map_err(PyErr::from)
    }
}

fn client(st: &mut State) -> crate::Result<&mut Client> {
    st.client
        .as_mut()
        .ok_or_else(|| Error::Usage("not connected".into()))
}

/// Sends the deferred deletes whose blobs are no longer viewed (all of them
/// when `all`).
fn flush_deferred(st: &mut State, all: bool) {
    if st.deferred.is_empty() {
        return;
    }
    let pending = std::mem::take(&mut st.deferred);
    for d in pending {
        let viewed = !all
            && d.blobs
                .iter()
                .any(|b| st.live.get(b).is_some_and(|w| w.strong_count() > 0));
        if viewed {
            st.deferred.push(d);
        } else if let Some(c) = st.client.as_mut() {
            let _ = c.del_data(&[d.id], d.force, true);
        }
    }
    st.live.retain(|_, w| w.strong_count() > 0);
}

/// Deletes `ids` and their migrated copies, deferring those whose blobs this
/// process still views. Returns how many were deferred.
fn delete_ids(st: &mut State, ids: &[ObjectId], force: bool) -> crate::Result<usize> {
    let metas = crate::migrate::with_copies_meta(client(st)?, ids)?;
    let mut now = Vec::new();
    let mut deferred = 0;
    for (id, meta) in metas {
        let blobs = meta.map(|m| m.blob_ids()).unwrap_or_default();
        if blobs
            .iter()
            .any(|b| st.live.get(b).is_some_and(|w| w.strong_count() > 0))
        {
            st.deferred.push(Deferred { id, blobs, force });
            deferred += 1;
        } else {
            now.push(id);
        }
    }
    client(st)?.del_data(&now, force, true)?;
    Ok(deferred)
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
        let state = State {
            client: None,
            pid: std::process::id(),
            live: HashMap::new(),
            deferred: Vec::new(),
        };
        Ok(PyClient {
            socket,
            timeouts,
            state: Mutex::new(state),
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
    /// `buffers[i]`) as one object. Returns `(id, replaced_id_or_None, nbytes)`.
    /// The object that `name` pointed to before is deleted (deferred while
    /// viewed here).
    #[pyo3(signature = (tree, buffers, name = None, persist = true))]
    fn put(
        &self,
        py: Python<'_>,
        tree: &Bound<'_, PyAny>,
        buffers: Vec<Bound<'_, PyAny>>,
        name: Option<String>,
        persist: bool,
    ) -> PyResult<(u64, Option<u64>, u64)> {
        let tree = to_json(tree)?;
        let sources = buffers
            .iter()
            .map(source_of)
            .collect::<PyResult<Vec<_>>>()?;
        let opts = PutOptions { persist, name };
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
        Ok((res.id.value(), res.replaced.map(ObjectId::value), res.bytes))
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
        let fetched = self.with(py, move |st| {
            let id = match (id, &name) {
                (Some(id), _) => oid(id),
                (None, Some(n)) => client(st)?.get_name(n, false)?,
                (None, None) => return Err(Error::Usage("get needs an id or a name".into())),
            };
            let f = store::get(client(st)?, id)?;
            let mut leases = HashMap::with_capacity(f.blobs.len());
            for (bid, bytes) in f.blobs {
                let lease = match st.live.get(&bid).and_then(Weak::upgrade) {
                    Some(l) if l.bytes.len() == bytes.len() => l,
                    _ => {
                        let l = Arc::new(Lease { bytes });
                        st.live.insert(bid, Arc::downgrade(&l));
                        l
                    }
                };
                leases.insert(bid, lease);
            }
            Ok((f.id, f.meta, leases))
        })?;
        let (id, meta, leases) = fetched;
        let blobs = PyDict::new(py);
        for (bid, lease) in leases {
            blobs.set_item(bid.value(), Bound::new(py, PyBlob { lease })?)?;
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

    /// Deletes objects (deep). Deletes of objects whose blobs are still viewed
    /// in this process are deferred until the views are gone; returns how many
    /// were deferred.
    #[pyo3(signature = (ids, force = false))]
    fn delete(&self, py: Python<'_>, ids: Vec<u64>, force: bool) -> PyResult<usize> {
        let ids: Vec<ObjectId> = ids.into_iter().map(oid).collect();
        self.with(py, move |st| delete_ids(st, &ids, force))
    }

    /// Drops every name under `prefix` and deletes the objects (and, in a
    /// cluster, their migrated copies). Returns the number of objects.
    fn delete_namespace(&self, py: Python<'_>, prefix: String) -> PyResult<usize> {
        self.with(py, move |st| {
            let (names, ids) = crate::migrate::namespace_objects(client(st)?, &prefix)?;
            for n in &names {
                client(st)?.drop_name(n)?;
            }
            delete_ids(st, &ids, false)?;
            Ok(ids.len())
        })
    }

    /// Sends deferred deletes now; `all=True` ignores live views (at exit).
    #[pyo3(signature = (all = false))]
    fn flush(&self, py: Python<'_>, all: bool) -> PyResult<usize> {
        self.with(py, move |st| {
            flush_deferred(st, all);
            Ok(st.deferred.len())
        })
    }

    /// Number of deletes still waiting for views to go away.
    #[getter]
    fn deferred(&self) -> usize {
        self.lock().deferred.len()
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

    /// Closes the connection (the next call reconnects). Deletes still
    /// waiting for views keep it open, unless `abandon`: then they are
    /// dropped (for a server about to be stopped; views stay readable, since
    /// the mappings they hold keep the memory).
    #[pyo3(signature = (abandon = false))]
    fn close(&self, py: Python<'_>, abandon: bool) {
        py.detach(|| {
            let mut st = self.lock();
            flush_deferred(&mut st, false);
            if abandon {
                st.deferred.clear();
            }
            if st.deferred.is_empty() {
                match st.client.take() {
                    Some(c) if abandon => drop_in_background(c),
                    other => drop(other),
                }
            }
        })
    }

    fn __repr__(&self) -> String {
        format!("Client({:?})", self.socket.display().to_string())
    }
}
