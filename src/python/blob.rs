//! `Blob` and `SharedView`: the bytes of a loaded blob, exported to Python
//! only through objects that hold the blob's lease.
//!
//! Python never sees an address: numpy reads the array interface, and the
//! array it makes keeps the exporting object (its base) alive, so every
//! view of a blob, numpy's or pyarrow's (`pyarrow.py_buffer` over such an
//! array), keeps the blob leased and mapped. Both mappings of a loaded blob
//! (shared, and this load's private copy-on-write one) live as long as the
//! `Blob` that made them.

use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::client::Lease;
use crate::{ObjectId, PrivateBytes};

/// The bytes of one blob in shared memory, as loaded once (zero-copy).
///
/// Exposes `__array_interface__`, so `numpy.asarray(blob)` is a writable view
/// of a private, copy-on-write mapping of the blob, made on first use and
/// shared by every array of this load (one load is one value, like one
/// copy of it): a write copies only the pages it touches, and the store,
/// other loads and other processes keep the original. `shared_view()` is
/// the blob as stored, read-only, for Arrow, which never writes. An array's
/// base keeps the object it views, hence the lease and the mapping, alive.
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
    pub(super) fn new(lease: Arc<Lease>, owner: ObjectId) -> PyBlob {
        PyBlob {
            lease,
            owner,
            private: OnceLock::new(),
        }
    }

    /// The lease of the blob (what an Arrow buffer over it holds).
    pub(super) fn lease(&self) -> &Arc<Lease> {
        &self.lease
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
