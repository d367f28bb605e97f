//! numpy's NEP 49 memory handler backed by `crate::alloc`.
//!
//! `allocator_install` makes our handler numpy's current one (numpy keeps it
//! in a context variable, so it applies to this thread's context only) and
//! sets this thread's target; `allocator_restore` puts both back. Requests
//! that `crate::alloc` refuses go to the handler that was current at install
//! (the *previous* handler), and so do frees of the memory it gave. numpy
//! stores the handler with each array and frees the array's data through it,
//! so an array allocated by us is freed by us wherever and whenever it dies.
//!
//! The numpy C API is reached through the `_ARRAY_API` capsule of
//! `numpy._core.multiarray` (numpy 2) or `numpy.core.multiarray` (1.x);
//! `PyDataMem_SetHandler`/`GetHandler` exist from API version 1.22.
//!
//! The callbacks are C callbacks: nothing in them may unwind. Each one runs
//! its body under `catch_unwind` and answers as the previous handler would
//! if anything panics.

use std::ffi::{c_char, c_void, CStr};
use std::panic::catch_unwind;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::alloc::{self, Target};

/// `PyDataMemAllocator` of numpy's `ndarraytypes.h` (version 1).
#[repr(C)]
struct DataMemAllocator {
    ctx: *mut c_void,
    malloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
    calloc: unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void,
    realloc: unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void, *mut c_void, usize),
}

/// `PyDataMem_Handler` of numpy's `ndarraytypes.h`.
#[repr(C)]
struct DataMemHandler {
    name: [c_char; 127],
    version: u8,
    allocator: DataMemAllocator,
}

const CAPSULE_NAME: &CStr = c"mem_handler";
const HANDLER_NAME: &[u8] = b"vineyard_kedro_blobs";
/// Indices in numpy's `PyArray_API` table (`__multiarray_api.h`).
const API_FEATURE_VERSION: usize = 211;
const API_SET_HANDLER: usize = 304;
const API_GET_HANDLER: usize = 305;
/// `NPY_1_22_API_VERSION`: the first with `PyDataMem_SetHandler`.
const FEATURE_1_22: u32 = 0x0f;

/// The numpy C API table, as an address (looked up once per process).
static API: OnceLock<usize> = OnceLock::new();

/// Our handler for one previous handler: `ctx` is the previous handler.
/// Made once per previous handler and never freed (numpy keeps pointers to
/// it in every array it allocated).
struct Ours {
    prev: usize,
    /// Address of our leaked `DataMemHandler`.
    handler: usize,
    capsule: Py<PyAny>,
}

static HANDLERS: Mutex<Vec<Ours>> = Mutex::new(Vec::new());

fn api(py: Python<'_>) -> PyResult<*const *const c_void> {
    if let Some(a) = API.get() {
        return Ok(*a as *const *const c_void);
    }
    let module = py
        .import("numpy._core.multiarray")
        .or_else(|_| py.import("numpy.core.multiarray"))?;
    let capsule = module.getattr("_ARRAY_API")?;
    // SAFETY: `capsule` is a live object (held by the module for the life of
    // the process); a capsule of another name or type sets an error and
    // returns NULL, which is checked.
    let table = unsafe { ffi::PyCapsule_GetPointer(capsule.as_ptr(), std::ptr::null()) };
    if table.is_null() {
        return Err(PyErr::take(py)
            .unwrap_or_else(|| PyRuntimeError::new_err("numpy's _ARRAY_API capsule is empty")));
    }
    // SAFETY: numpy's C API table: entry 211 is
    // `unsigned int PyArray_GetNDArrayCFeatureVersion(void)` in every numpy.
    let version = unsafe {
        let f: unsafe extern "C" fn() -> u32 =
            std::mem::transmute(*(table as *const *const c_void).add(API_FEATURE_VERSION));
        f()
    };
    if version < FEATURE_1_22 {
        return Err(PyRuntimeError::new_err(
            "the vineyard allocator needs numpy >= 1.22 (NEP 49 memory handlers)",
        ));
    }
    Ok(*API.get_or_init(|| table as usize) as *const *const c_void)
}

/// `PyDataMem_GetHandler()`: a new reference to the current handler capsule.
fn get_handler(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let table = api(py)?;
    // SAFETY: entry 305 of the table (numpy >= 1.22, checked in `api`) is
    // `PyObject *PyDataMem_GetHandler(void)`, returning a new reference or
    // NULL with an error set; called with the GIL held.
    unsafe {
        let f: unsafe extern "C" fn() -> *mut ffi::PyObject =
            std::mem::transmute(*table.add(API_GET_HANDLER));
        Bound::from_owned_ptr_or_err(py, f())
    }
}

/// `PyDataMem_SetHandler(handler)`: returns the handler it replaced.
fn set_handler<'py>(py: Python<'py>, handler: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let table = api(py)?;
    // SAFETY: entry 304 (numpy >= 1.22, checked in `api`) is
    // `PyObject *PyDataMem_SetHandler(PyObject *)`: it takes a borrowed
    // "mem_handler" capsule and returns a new reference to the previous one
    // (or NULL with an error set); called with the GIL held.
    unsafe {
        let f: unsafe extern "C" fn(*mut ffi::PyObject) -> *mut ffi::PyObject =
            std::mem::transmute(*table.add(API_SET_HANDLER));
        Bound::from_owned_ptr_or_err(py, f(handler.as_ptr()))
    }
}

fn handler_ptr(py: Python<'_>, capsule: &Bound<'_, PyAny>) -> PyResult<usize> {
    // SAFETY: a live object; a non-capsule or another name sets an error and
    // returns NULL, which is checked.
    let p = unsafe { ffi::PyCapsule_GetPointer(capsule.as_ptr(), CAPSULE_NAME.as_ptr()) };
    if p.is_null() {
        return Err(PyErr::take(py).unwrap_or_else(|| {
            PyRuntimeError::new_err("numpy's current memory handler is not a mem_handler capsule")
        }));
    }
    Ok(p as usize)
}

/// Our handler wrapping the one at `prev` (made on first use).
fn ours_for(py: Python<'_>, prev: usize, prev_capsule: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let mut handlers = HANDLERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = handlers.iter().find(|h| h.prev == prev) {
        return Ok(h.capsule.clone_ref(py));
    }
    let mut name = [0 as c_char; 127];
    for (d, s) in name.iter_mut().zip(HANDLER_NAME) {
        *d = *s as c_char;
    }
    // The previous handler's capsule is kept alive for good: `ctx` points
    // into it, and arrays we hand to it may live as long as the process.
    std::mem::forget(prev_capsule.clone().unbind());
    let handler: &'static DataMemHandler = Box::leak(Box::new(DataMemHandler {
        name,
        version: 1,
        allocator: DataMemAllocator {
            ctx: prev as *mut c_void,
            malloc: blob_malloc,
            calloc: blob_calloc,
            realloc: blob_realloc,
            free: blob_free,
        },
    }));
    // SAFETY: the pointer is to a leaked, hence 'static, handler; the name
    // is numpy's capsule name, a 'static C string; no destructor.
    let capsule = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCapsule_New(
                handler as *const DataMemHandler as *mut c_void,
                CAPSULE_NAME.as_ptr(),
                None,
            ),
        )?
    }
    .unbind();
    handlers.push(Ours {
        prev,
        handler: handler as *const DataMemHandler as usize,
        capsule: capsule.clone_ref(py),
    });
    Ok(capsule)
}

fn is_ours(handler: usize) -> bool {
    let handlers = HANDLERS.lock().unwrap_or_else(|p| p.into_inner());
    handlers.iter().any(|h| h.handler == handler)
}

/// The previous handler's allocator, from our `ctx`.
///
/// # Safety
/// `ctx` must be the `ctx` of one of our handlers: the address of a
/// previous handler whose capsule we keep alive forever.
unsafe fn prev(ctx: *mut c_void) -> &'static DataMemAllocator {
    // SAFETY: caller contract.
    unsafe { &(*(ctx as *const DataMemHandler)).allocator }
}

unsafe extern "C" fn blob_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: numpy calls us with our own ctx (see `prev`).
    let p = unsafe { prev(ctx) };
    match catch_unwind(|| alloc::alloc(size, false)) {
        Ok(Some(ptr)) => ptr.as_ptr() as *mut c_void,
        // SAFETY: the previous handler's own malloc with its own ctx.
        _ => unsafe { (p.malloc)(p.ctx, size) },
    }
}

unsafe extern "C" fn blob_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: numpy calls us with our own ctx (see `prev`).
    let p = unsafe { prev(ctx) };
    let ours = nelem
        .checked_mul(elsize)
        .and_then(|size| catch_unwind(|| alloc::alloc(size, true)).ok().flatten());
    match ours {
        Some(ptr) => ptr.as_ptr() as *mut c_void,
        // SAFETY: the previous handler's own calloc with its own ctx.
        None => unsafe { (p.calloc)(p.ctx, nelem, elsize) },
    }
}

unsafe extern "C" fn blob_realloc(
    ctx: *mut c_void,
    ptr: *mut c_void,
    new_size: usize,
) -> *mut c_void {
    // SAFETY: numpy calls us with our own ctx (see `prev`).
    let p = unsafe { prev(ctx) };
    if ptr.is_null() {
        // SAFETY: same contract as ours.
        return unsafe { blob_malloc(ctx, new_size) };
    }
    let old = catch_unwind(|| alloc::len_of(ptr as *const u8))
        .ok()
        .flatten();
    let Some(old) = old else {
        // Heap memory stays on the heap: its old size is unknown to us, so
        // only its own allocator can move it.
        // SAFETY: `ptr` came from the previous handler (it is not ours).
        return unsafe { (p.realloc)(p.ctx, ptr, new_size) };
    };
    if new_size <= old && new_size > 0 {
        // A blob cannot shrink in place; keeping the larger one is valid.
        return ptr;
    }
    // SAFETY: same contract as ours.
    let fresh = unsafe { blob_malloc(ctx, new_size.max(1)) };
    if fresh.is_null() {
        // realloc's contract: on failure the old block is untouched.
        return std::ptr::null_mut();
    }
    // SAFETY: `ptr` is a live blob of `old` bytes, `fresh` a new block of at
    // least `new_size` bytes; they do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, fresh as *mut u8, old.min(new_size)) };
    // SAFETY: `ptr` is ours and not used by numpy after a successful realloc.
    unsafe { blob_free(ctx, ptr, old) };
    fresh
}

unsafe extern "C" fn blob_free(ctx: *mut c_void, ptr: *mut c_void, size: usize) {
    if ptr.is_null() {
        return;
    }
    match catch_unwind(|| alloc::free(ptr as *const u8)) {
        Ok(true) => {}
        Ok(false) => {
            // SAFETY: numpy calls us with our own ctx, and `ptr` is not ours,
            // so the previous handler gave it.
            let p = unsafe { prev(ctx) };
            // SAFETY: freeing with the allocator that allocated it.
            unsafe { (p.free)(p.ctx, ptr, size) }
        }
        // A panic inside the table: whether `ptr` is a blob is unknown, and
        // handing a blob to the heap's free would corrupt it. Leak it.
        Err(_) => {}
    }
}

/// What `allocator_install` replaced, for `allocator_restore`.
#[pyclass(
    name = "AllocatorToken",
    module = "vineyard.contrib.kedro._core",
    frozen
)]
pub struct AllocatorToken {
    handler: Py<PyAny>,
    target: Mutex<Option<Option<Target>>>,
}

/// Makes blobs of the vineyardd at `socket` this context's array memory for
/// requests of at least `threshold` bytes; returns what to pass to
/// `allocator_restore`.
#[pyfunction]
pub fn allocator_install(
    py: Python<'_>,
    socket: PathBuf,
    threshold: usize,
) -> PyResult<AllocatorToken> {
    let current = get_handler(py)?;
    let current_ptr = handler_ptr(py, &current)?;
    let handler = if is_ours(current_ptr) {
        // Nested (a node run inside a node): keep the handler, new target.
        current.unbind()
    } else {
        let ours = ours_for(py, current_ptr, &current)?;
        set_handler(py, ours.bind(py))?.unbind()
    };
    alloc::reset_broken();
    let previous = alloc::set_target(Some(Target {
        socket,
        threshold: threshold.max(1),
    }));
    Ok(AllocatorToken {
        handler,
        target: Mutex::new(Some(previous)),
    })
}

/// Puts back the handler and target that `token`'s install replaced (once).
#[pyfunction]
pub fn allocator_restore(py: Python<'_>, token: &AllocatorToken) -> PyResult<()> {
    let Some(previous) = token
        .target
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return Ok(());
    };
    alloc::set_target(previous);
    set_handler(py, token.handler.bind(py)).map(drop)
}

/// Closes the allocator's connection to `socket` unless arrays still live
/// in its blobs (the end of a run).
#[pyfunction]
pub fn allocator_release(py: Python<'_>, socket: PathBuf) {
    py.detach(|| alloc::release_idle(&socket));
}

/// The allocator's counters in this process: `live_blobs`, `live_bytes`,
/// `blob_allocs`, `fallbacks`, `sealed` (blobs stored by a save without a
/// copy).
#[pyfunction]
pub fn allocator_stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let s = alloc::stats();
    let d = PyDict::new(py);
    d.set_item("live_blobs", s.live_blobs)?;
    d.set_item("live_bytes", s.live_bytes)?;
    d.set_item("blob_allocs", s.blob_allocs)?;
    d.set_item("fallbacks", s.fallbacks)?;
    d.set_item("sealed", s.sealed)?;
    Ok(d)
}

/// True when numpy's current handler (in this context) is ours.
#[pyfunction]
pub fn allocator_active(py: Python<'_>) -> PyResult<bool> {
    let current = get_handler(py)?;
    Ok(is_ours(handler_ptr(py, &current)?))
}
