//! The PyO3 binding: the native module `vineyard.contrib.kedro._core`.
//!
//! The only code in the crate that imports pyo3. Python arguments are turned
//! into owned Rust values first, then the GIL is released (`py.detach`) for
//! socket I/O, copies and mmap, and results are converted back after.

mod allocator;
mod arrow;
mod blob;
mod client;
mod convert;
mod deploy;
mod errors;
mod lifetimes;
mod server;
mod sources;

use pyo3::prelude::*;

/// Runs the `vineyard-kedro` command line with `argv` (program name first).
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| crate::cli::run(argv))
}

/// `(name, one-line help)` of every `vineyard-kedro` subcommand (for
/// `kedro vineyard`, which forwards them).
#[pyfunction]
fn cli_commands() -> Vec<(String, String)> {
    crate::cli::subcommands()
}

/// The object name of `ds_name` in `namespace` (None or "": no namespace),
/// checked against the grammar of `crate::names`.
#[pyfunction]
#[pyo3(signature = (namespace, ds_name))]
fn object_name(namespace: Option<&str>, ds_name: &str) -> PyResult<String> {
    Ok(crate::names::object_name(namespace, ds_name)?)
}

/// True when `name` is `<namespace>/<dataset>` (nothing deeper, no prefix match).
#[pyfunction]
fn in_namespace(name: &str, namespace: &str) -> bool {
    crate::names::in_namespace(name, namespace)
}

/// The id that `text` spells (`o` and 1 to 16 hex digits, as vineyardd writes
/// them), or `ValueError`: the one id grammar of the package, `ObjectId::parse`.
#[pyfunction]
fn parse_id(text: &str) -> PyResult<u64> {
    text.parse::<crate::ObjectId>()
        .map(crate::ObjectId::value)
        .map_err(pyo3::exceptions::PyValueError::new_err)
}

#[pymodule]
mod _core {
    #[pymodule_export]
    use super::allocator::{
        allocator_active, allocator_install, allocator_release, allocator_restore, allocator_stats,
        AllocatorToken,
    };
    #[pymodule_export]
    use super::arrow::{arrow_read, arrow_read_array, arrow_write, PyArrowBuffer, PyArrowValue};
    #[pymodule_export]
    use super::blob::{PyBlob, SharedView};
    #[pymodule_export]
    use super::client::PyClient;
    #[pymodule_export]
    use super::deploy::{
        argo_file_name, check_workflow, docker_build_command, lint_dockerfile, render_argo,
        render_catalog, render_dockerfile, render_dockerignore, requirements_path,
        run_cli_captured,
    };
    #[pymodule_export]
    use super::errors::{
        ConnectError, InternalError, LaunchError, LayoutError, MigrationError, ObjectNotFoundError,
        ProtocolError, ServerError, StoreFullError, UnsupportedValueError, VineyardError,
    };
    #[pymodule_export]
    use super::server::{find_vineyardd, PyServer};
    #[pymodule_export]
    use super::{cli_commands, in_namespace, object_name, parse_id, run_cli};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("MAX_NAME_BYTES", crate::names::MAX_NAME_BYTES)?;
        m.add("EMPTY_BLOB_ID", crate::ObjectId::EMPTY_BLOB.value())?;
        m.add("ARROW_ARRAY_LAYOUTS", crate::arrow::ARRAY_LAYOUTS.to_vec())
    }
}
