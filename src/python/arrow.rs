//! Arrow values cross the seam through the Arrow PyCapsule interface
//! (the C Data Interface in capsules): a load hands Python an `ArrowValue`
//! that any Arrow library imports zero-copy (`pyarrow.array(v)`,
//! `pyarrow.RecordBatchReader._import_from_c_capsule(...)`, polars, ...).
//! Its buffers are the mapped blobs, each holding the blob's lease, so the
//! imported arrays keep the blobs leased and mapped, as numpy views do.

use std::collections::HashMap;
use std::ffi::CStr;
use std::ptr::NonNull;
use std::sync::Arc;

use arrow_array::ffi::{from_ffi, to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{
    make_array, Array, ArrayRef, RecordBatch, RecordBatchIterator, RecordBatchReader, StructArray,
};
use arrow_buffer::Buffer;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyTuple};

use super::blob::PyBlob;
use super::client::Lease;
use super::convert::{to_json, to_py};
use crate::arrow::{read_array, read_value, write_layout, write_value, ArrowValue, Blobs, Part};
use crate::shm::loaded;
use crate::ObjectId;

const SCHEMA: &CStr = c"arrow_schema";
const ARRAY: &CStr = c"arrow_array";
const STREAM: &CStr = c"arrow_array_stream";

/// The leases of one load's blobs, by id.
struct Leases(HashMap<u64, Arc<Lease>>);

/// What keeps one blob's bytes valid under an Arrow buffer: its lease.
struct Held {
    _lease: Arc<Lease>,
}

// SAFETY (RefUnwindSafe): a `Lease` is never mutated through a shared
// reference except its drop, which pushes onto a mutex-guarded queue that
// tolerates poisoning (`unwrap_or_else(into_inner)`); a panic cannot leave
// it half-updated in a way a later reader would see.
impl std::panic::RefUnwindSafe for Held {}

impl Blobs for Leases {
    fn buffer(&self, id: ObjectId) -> Option<Buffer> {
        let lease = self.0.get(&id.value())?;
        let len = lease.bytes.len();
        let Some(ptr) = NonNull::new(lease.bytes.as_ptr().cast_mut()).filter(|_| len > 0) else {
            return Some(crate::arrow::empty_buffer());
        };
        // SAFETY: `ptr..ptr+len` is the blob in the shared mapping (checked
        // against the mapping when the lease was made); the mapping lives as
        // long as the lease, which the buffer owns. Sealed blobs never
        // change, and Arrow never writes through a Buffer.
        Some(unsafe {
            Buffer::from_custom_allocation(
                ptr,
                len,
                Arc::new(Held {
                    _lease: lease.clone(),
                }),
            )
        })
    }
}

fn leases(blobs: &Bound<'_, PyDict>) -> PyResult<Leases> {
    let mut out = HashMap::with_capacity(blobs.len());
    for (k, v) in blobs.iter() {
        let blob = v.cast::<PyBlob>().map_err(|_| {
            PyTypeError::new_err("blobs maps ids to vineyard.contrib.kedro._core.Blob")
        })?;
        out.insert(k.extract::<u64>()?, blob.get().lease().clone());
    }
    Ok(Leases(out))
}

/// Reads the Arrow layout `meta` over the blobs of its load (a dict of id
/// to `Blob`), with the GIL released while arrow-rs validates it.
#[pyfunction]
pub fn arrow_read(
    py: Python<'_>,
    meta: &Bound<'_, PyAny>,
    blobs: &Bound<'_, PyDict>,
) -> PyResult<PyArrowValue> {
    read_with(py, meta, blobs, |m, b| read_value(m, b))
}

/// Reads an Arrow array layout in its stored types (strings with 64-bit
/// offsets), as other codecs embed it.
#[pyfunction]
pub fn arrow_read_array(
    py: Python<'_>,
    meta: &Bound<'_, PyAny>,
    blobs: &Bound<'_, PyDict>,
) -> PyResult<PyArrowValue> {
    read_with(py, meta, blobs, |m, b| {
        read_array(m, b).map(ArrowValue::Array)
    })
}

fn read_with(
    py: Python<'_>,
    meta: &Bound<'_, PyAny>,
    blobs: &Bound<'_, PyDict>,
    read: impl FnOnce(&serde_json::Value, &Leases) -> crate::Result<ArrowValue> + Send,
) -> PyResult<PyArrowValue> {
    let meta = to_json(meta)?;
    let blobs = leases(blobs)?;
    let value = py.detach(|| read(&meta, &blobs))?;
    Ok(PyArrowValue(value))
}

/// An Arrow value read from vineyard, exported through the Arrow
/// PyCapsule interface (`kind` says which: array, record_batch, table,
/// chunked_array, schema).
#[pyclass(name = "ArrowValue", module = "vineyard.contrib.kedro._core", frozen)]
pub struct PyArrowValue(ArrowValue);

fn capsule_error(e: ArrowError) -> PyErr {
    PyValueError::new_err(format!("cannot export the Arrow value: {e}"))
}

fn schema_capsule<'py>(
    py: Python<'py>,
    schema: FFI_ArrowSchema,
) -> PyResult<Bound<'py, PyCapsule>> {
    PyCapsule::new_with_value(py, schema, SCHEMA)
}

impl PyArrowValue {
    fn batch_schema(b: &RecordBatch) -> SchemaRef {
        b.schema()
    }

    /// The value as one stream of record batches (or of plain arrays, for
    /// a chunked array: a stream whose schema is not a struct).
    fn stream(&self) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
        match &self.0 {
            ArrowValue::Table(schema, batches) => Ok((schema.clone(), batches.clone())),
            ArrowValue::Batch(b) => Ok((Self::batch_schema(b), vec![b.clone()])),
            _ => Err(PyTypeError::new_err(format!(
                "a {} is not a stream of record batches",
                self.kind()
            ))),
        }
    }
}

#[pymethods]
impl PyArrowValue {
    /// array, record_batch, table, chunked_array or schema.
    #[getter]
    fn kind(&self) -> &'static str {
        match &self.0 {
            ArrowValue::Array(_) => "array",
            ArrowValue::Batch(_) => "record_batch",
            ArrowValue::Table(..) => "table",
            ArrowValue::Chunked(..) => "chunked_array",
            ArrowValue::Schema(_) => "schema",
        }
    }

    /// The chunks of a chunked array, each an `ArrowValue` of kind array.
    fn chunks(&self) -> PyResult<Vec<PyArrowValue>> {
        match &self.0 {
            ArrowValue::Chunked(_, chunks) => Ok(chunks
                .iter()
                .map(|c| PyArrowValue(ArrowValue::Array(c.clone())))
                .collect()),
            _ => Err(PyTypeError::new_err(format!(
                "a {} has no chunks",
                self.kind()
            ))),
        }
    }

    /// The schema (tables, batches, schemas) or the field of the elements
    /// (arrays, chunked arrays), as an `arrow_schema` capsule.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let ffi = match &self.0 {
            ArrowValue::Array(a) => {
                FFI_ArrowSchema::try_from(&Field::new("", a.data_type().clone(), true))
            }
            ArrowValue::Chunked(f, _) => FFI_ArrowSchema::try_from(f.as_ref()),
            ArrowValue::Batch(b) => FFI_ArrowSchema::try_from(b.schema().as_ref()),
            ArrowValue::Table(s, _) | ArrowValue::Schema(s) => {
                FFI_ArrowSchema::try_from(s.as_ref())
            }
        }
        .map_err(capsule_error)?;
        schema_capsule(py, ffi)
    }

    /// An array, or a record batch as a struct array, as a pair of
    /// `arrow_schema` and `arrow_array` capsules.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema; // a request may be ignored (the interface allows it)
        let (data, field) = match &self.0 {
            ArrowValue::Array(a) => (a.to_data(), Field::new("", a.data_type().clone(), true)),
            ArrowValue::Batch(b) => {
                let s = StructArray::from(b.clone());
                let field = Field::new("", DataType::Struct(b.schema().fields().clone()), false)
                    .with_metadata(b.schema().metadata().clone());
                (s.to_data(), field)
            }
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "a {} is not one array",
                    self.kind()
                )))
            }
        };
        let (array, _) = to_ffi(&data).map_err(capsule_error)?;
        let schema = FFI_ArrowSchema::try_from(&field).map_err(capsule_error)?;
        let schema = schema_capsule(py, schema)?;
        let array = PyCapsule::new_with_value(py, array, ARRAY)?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }

    /// A table or record batch as an `arrow_array_stream` capsule.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let (schema, batches) = self.stream()?;
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, STREAM)
    }

    fn __repr__(&self) -> String {
        match &self.0 {
            ArrowValue::Array(a) => format!("ArrowValue(array of {} {})", a.len(), a.data_type()),
            ArrowValue::Batch(b) => format!(
                "ArrowValue(record_batch of {} rows x {} columns)",
                b.num_rows(),
                b.num_columns()
            ),
            ArrowValue::Table(s, b) => format!(
                "ArrowValue(table of {} batches x {} columns)",
                b.len(),
                s.fields().len()
            ),
            ArrowValue::Chunked(f, c) => format!(
                "ArrowValue(chunked_array of {} chunks of {})",
                c.len(),
                f.data_type()
            ),
            ArrowValue::Schema(s) => format!("ArrowValue(schema of {} fields)", s.fields().len()),
        }
    }
}

/// One blob's worth of an Arrow value being saved: a buffer that owns (a
/// reference to) its memory, which a put reads while it holds this object,
/// or an Arrow IPC stream that the put writes straight into the blob.
#[pyclass(name = "ArrowBuffer", module = "vineyard.contrib.kedro._core", frozen)]
pub struct PyArrowBuffer(pub(super) Part);

#[pymethods]
impl PyArrowBuffer {
    fn __len__(&self) -> usize {
        self.0.len()
    }

    /// A copy of the bytes.
    fn tobytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.0.to_buffer()?;
        Ok(PyBytes::new(py, bytes.as_slice()))
    }

    fn __repr__(&self) -> String {
        match &self.0 {
            Part::Bytes(b) => format!("ArrowBuffer({} bytes)", b.len()),
            Part::Ipc(s) => format!("ArrowBuffer(Arrow IPC stream of {} bytes)", s.len()),
        }
    }
}

/// The C struct a capsule named `name` carries.
fn capsule_ptr<T>(obj: &Bound<'_, PyAny>, name: &'static CStr) -> PyResult<NonNull<T>> {
    let capsule = obj.cast::<PyCapsule>().map_err(|_| {
        PyTypeError::new_err(format!(
            "expected a PyCapsule named {}",
            name.to_string_lossy()
        ))
    })?;
    Ok(capsule.pointer_checked(Some(name))?.cast())
}

fn import_error(e: ArrowError) -> PyErr {
    crate::Error::Unsupported(format!("cannot import the Arrow value: {e}")).into()
}

/// An array (or a record batch, as a struct array) from `__arrow_c_array__`.
fn import_array(value: &Bound<'_, PyAny>) -> PyResult<(ArrayRef, Field)> {
    let pair = value.call_method0("__arrow_c_array__")?;
    let (schema, array): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
    let schema = capsule_ptr::<FFI_ArrowSchema>(&schema, SCHEMA)?;
    let array = capsule_ptr::<FFI_ArrowArray>(&array, ARRAY)?;
    // SAFETY: the capsules are named as the Arrow PyCapsule interface says,
    // so they point to a valid ArrowSchema and ArrowArray. The array is
    // moved out (its release callback now ours, the capsule's left empty,
    // as the interface prescribes); the schema is only borrowed.
    let (data, field) = unsafe {
        let array = std::ptr::replace(array.as_ptr(), FFI_ArrowArray::empty());
        let schema = schema.as_ref();
        let field = Field::try_from(schema).map_err(import_error)?;
        (from_ffi(array, schema).map_err(import_error)?, field)
    };
    Ok((make_array(data), field))
}

/// The schema and batches of an `__arrow_c_stream__` of record batches.
fn import_stream(value: &Bound<'_, PyAny>) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    let capsule = value.call_method0("__arrow_c_stream__")?;
    let stream = capsule_ptr::<FFI_ArrowArrayStream>(&capsule, STREAM)?;
    // SAFETY: a capsule named arrow_array_stream holds an ArrowArrayStream;
    // `from_raw` moves it out and leaves the capsule's struct released.
    let reader =
        unsafe { RecordBatchStreamReader::from_raw(stream.as_ptr()) }.map_err(import_error)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(import_error)?;
    Ok((schema, batches))
}

/// The Arrow value `value` (pyarrow, or anything with the Arrow PyCapsule
/// interface) as the tree of its vineyard layout and the buffers its blobs
/// hold, numbered from `base`. `kind`: array, record_batch, table,
/// chunked_array (given as a stream of one column), or layout (an array's
/// bare layout, embedded in another codec's tree: no type note, and the
/// type must be one the official layouts carry).
#[pyfunction]
pub fn arrow_write<'py>(
    py: Python<'py>,
    kind: &str,
    value: &Bound<'py, PyAny>,
    base: usize,
) -> PyResult<(Bound<'py, PyAny>, Vec<PyArrowBuffer>)> {
    let value = match kind {
        "array" | "layout" => ArrowValue::Array(import_array(value)?.0),
        "record_batch" => {
            let (array, field) = import_array(value)?;
            let structs = array
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or_else(|| {
                    PyTypeError::new_err(format!(
                        "a record batch exports a struct array, not {}",
                        array.data_type()
                    ))
                })?;
            let batch = RecordBatch::from(structs.clone());
            let schema = Schema::new_with_metadata(
                batch.schema().fields().clone(),
                field.metadata().clone(),
            );
            ArrowValue::Batch(batch.with_schema(Arc::new(schema)).map_err(import_error)?)
        }
        "table" => {
            let (schema, batches) = import_stream(value)?;
            ArrowValue::Table(schema, batches)
        }
        "chunked_array" => {
            let (schema, batches) = import_stream(value)?;
            let field = schema.fields().first().cloned().ok_or_else(|| {
                PyValueError::new_err("a chunked array is given as a stream of one column")
            })?;
            ArrowValue::Chunked(field, batches.iter().map(|b| b.column(0).clone()).collect())
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown Arrow value kind {other:?}"
            )))
        }
    };
    // A blob loaded through any connection: one of another vineyardd is
    // then copied whole rather than as the slice (rare).
    let whole = |b: &Buffer| -> Option<(Buffer, usize)> {
        let blob = loaded::lookup_containing(b.as_ptr() as usize)?;
        let at = b.as_ptr() as usize - blob.start;
        if at.checked_add(b.len())? > blob.len {
            return None;
        }
        let ptr = NonNull::new(blob.start as *mut u8)?;
        // SAFETY: the registry holds only live mappings (each entry dropped
        // before its unmap): `blob.len` bytes at `blob.start` are a loaded
        // blob's mapping, and `b` lies inside it, so `b`'s owner holds the
        // lease that keeps the mapping. The new buffer owns `b`.
        Some((
            unsafe { Buffer::from_custom_allocation(ptr, blob.len, Arc::new(b.clone())) },
            at,
        ))
    };
    let written = py.detach(|| {
        if kind == "layout" {
            write_layout(&value, &whole, base)
        } else {
            write_value(&value, &whole, base)
        }
    })?;
    let tree = to_py(py, &written.tree)?;
    Ok((
        tree,
        written.buffers.into_iter().map(PyArrowBuffer).collect(),
    ))
}
