//! The buffers of a put: Python objects that own their memory, turned into
//! `store::Source`s here, which borrow the objects that own their memory.
//!
//! Memory never crosses the seam as an integer. A buffer is `bytes`, a
//! numpy array, or any object with the buffer protocol (bytearray,
//! memoryview, `pyarrow.Buffer`, ...). Pointers are only taken from `bytes`
//! and from numpy's own `ndarray.__array_interface__` (an exact ndarray,
//! whose interface numpy computes from the memory the array owns), and each
//! object they point into is pushed to `Owners`, which the caller keeps
//! until the copy has ended.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};

use super::arrow::PyArrowBuffer;
use crate::arrow::Part;
use crate::store::{RawSource, Source};

/// The Python objects the sources of one put point into. Dropping it may
/// free their memory: it must outlive every use of the sources.
struct Owners<'py>(Vec<Bound<'py, PyAny>>);

/// The sources of one put with the objects that own their memory: only
/// `sources_of` makes one, taking each pointer from an object it holds.
pub(super) struct Borrowed<'py> {
    raw: Vec<Entry>,
    owners: Owners<'py>,
}

/// One source: memory in an owner, or the Arrow IPC stream of the owner at
/// an index, which writes itself into its blob.
enum Entry {
    Raw(RawSource),
    Stream(usize),
}

impl Borrowed<'_> {
    /// The sources, borrowed from this value (so from its owners).
    pub(super) fn sources(&self) -> PyResult<Vec<Source<'_>>> {
        self.raw
            .iter()
            .map(|e| match e {
                // SAFETY: `sources_of` took every raw source from the memory
                // of an object it pushed to `owners`, which this value holds
                // for as long as the sources borrow it. A Python thread
                // writing to an array while it is being saved changes only
                // which bytes are stored, as with any copy made without the
                // GIL.
                Entry::Raw(r) => Ok(unsafe { Source::from_raw(*r) }),
                Entry::Stream(i) => {
                    let owner = self
                        .owners
                        .0
                        .get(*i)
                        .and_then(|o| o.cast::<PyArrowBuffer>().ok());
                    match owner.as_ref().map(|o| &o.get().0) {
                        Some(Part::Ipc(stream)) => Ok(Source::generated(stream.len(), stream)),
                        _ => Err(
                            crate::Error::Internal("a stream source lost its owner".into()).into(),
                        ),
                    }
                }
            })
            .collect()
    }
}

static NDARRAY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static MEMORYVIEW: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static ASARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CONTIGUOUS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The sources of `buffers`, with the objects holding their memory.
pub(super) fn sources_of<'py>(buffers: &[Bound<'py, PyAny>]) -> PyResult<Borrowed<'py>> {
    let mut owners = Owners(Vec::with_capacity(buffers.len()));
    let sources = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| {
            source_of(b, &mut owners).map_err(|e| {
                let py = b.py();
                PyErr::from_type(e.get_type(py), format!("buffer {i}: {}", e.value(py)))
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Borrowed {
        raw: sources,
        owners,
    })
}

fn source_of<'py>(obj: &Bound<'py, PyAny>, owners: &mut Owners<'py>) -> PyResult<Entry> {
    let py = obj.py();
    if let Ok(b) = obj.cast::<PyBytes>() {
        owners.0.push(obj.clone());
        return Ok(Entry::Raw(contiguous(b.as_bytes())));
    }
    if let Ok(b) = obj.cast::<PyArrowBuffer>() {
        owners.0.push(obj.clone());
        return Ok(match &b.get().0 {
            Part::Bytes(bytes) => Entry::Raw(contiguous(bytes.as_slice())),
            Part::Ipc(_) => Entry::Stream(owners.0.len() - 1),
        });
    }
    let ndarray = NDARRAY.import(py, "numpy", "ndarray")?;
    let array = if obj.get_type().is(ndarray) {
        obj.clone()
    } else {
        // Anything else is read through the buffer protocol, as an exact
        // ndarray over the same memory (no copy), which keeps the exporter.
        let view = MEMORYVIEW
            .import(py, "builtins", "memoryview")?
            .call1((obj,))
            .map_err(|_| {
                PyTypeError::new_err(format!(
                "a buffer is bytes, a numpy array or an object with the buffer protocol, not {}",
                obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
            })?;
        let a = ASARRAY.import(py, "numpy", "asarray")?.call1((view,))?;
        if !a.get_type().is(ndarray) {
            return Err(PyTypeError::new_err(
                "numpy.asarray did not give an ndarray",
            ));
        }
        a
    };
    if let Some(src) = array_source(&array)? {
        owners.0.push(array);
        return Ok(Entry::Raw(src));
    }
    // Neither contiguous nor made of contiguous rows: gather it first.
    let c = CONTIGUOUS
        .import(py, "numpy", "ascontiguousarray")?
        .call1((&array,))?;
    let src = array_source(&c)?
        .ok_or_else(|| PyValueError::new_err("numpy.ascontiguousarray gave a strided array"))?;
    owners.0.push(c);
    Ok(Entry::Raw(src))
}

/// The source of an exact ndarray's elements in C order: one contiguous run,
/// or rows of contiguous bytes a constant (possibly negative) stride apart;
/// None for any other layout.
fn array_source(a: &Bound<'_, PyAny>) -> PyResult<Option<RawSource>> {
    let py = a.py();
    let ai = a.getattr(intern!(py, "__array_interface__"))?;
    let ai = ai.cast::<PyDict>()?;
    let item = |key: &'static str| {
        ai.get_item(key)?
            .ok_or_else(|| PyValueError::new_err(format!("__array_interface__ lacks {key}")))
    };
    let typestr: String = item("typestr")?.extract()?;
    let itemsize = itemsize_of(&typestr)?;
    let shape: Vec<usize> = item("shape")?.extract()?;
    let strides = item("strides")?;
    let strides: Option<Vec<isize>> = if strides.is_none() {
        None
    } else {
        Some(strides.cast::<PyTuple>()?.extract()?)
    };
    let (ptr, _readonly): (usize, bool) = item("data")?.extract()?;
    let ptr = ptr as *const u8;
    let nbytes = shape
        .iter()
        .try_fold(itemsize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| PyValueError::new_err("array size overflows"))?;
    if nbytes == 0 {
        return Ok(Some(contiguous(&[])));
    }
    let Some(strides) = strides else {
        return Ok(Some(RawSource::Contiguous { ptr, len: nbytes }));
    };
    if shape.is_empty() {
        return Ok(Some(RawSource::Contiguous { ptr, len: nbytes }));
    }
    if strides.len() != shape.len() {
        return Err(PyValueError::new_err(
            "__array_interface__ strides and shape differ in length",
        ));
    }
    // The bytes of one row (every axis but the first) must be contiguous.
    let mut row = itemsize;
    for (&n, &s) in shape[1..].iter().zip(&strides[1..]).rev() {
        if n != 1 && s != row as isize {
            return Ok(None);
        }
        row *= n;
    }
    let (count, stride) = (shape[0], strides[0]);
    if count == 1 || stride == row as isize {
        return Ok(Some(RawSource::Contiguous { ptr, len: nbytes }));
    }
    Ok(Some(RawSource::Strided {
        ptr,
        itemsize: row,
        count,
        stride,
    }))
}

fn contiguous(bytes: &[u8]) -> RawSource {
    RawSource::Contiguous {
        ptr: bytes.as_ptr(),
        len: bytes.len(),
    }
}

/// Bytes per item of an array-interface typestr (`<f8`, `|u1`, `<M8[ns]`,
/// `|V16`); object arrays are refused (their items are pointers).
fn itemsize_of(typestr: &str) -> PyResult<usize> {
    let kind = typestr.as_bytes().get(1).copied();
    if kind == Some(b'O') {
        return Err(PyTypeError::new_err(
            "an object array has no bytes to store (its items are Python objects)",
        ));
    }
    let digits: String = typestr
        .chars()
        .skip(2)
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .map_err(|_| PyValueError::new_err(format!("unknown array typestr {typestr:?}")))
}
