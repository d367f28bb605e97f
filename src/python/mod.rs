//! The PyO3 binding: the native module `vineyard.contrib.kedro._core`.
//!
//! The only code in the crate that imports pyo3. Python arguments are turned
//! into owned Rust values first, then the GIL is released (`py.detach`) for
//! socket I/O, copies and mmap, and results are converted back after.

mod client;
mod convert;
mod deploy;
mod errors;
mod server;

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

#[pymodule]
mod _core {
    #[pymodule_export]
    use super::client::{PyBlob, PyClient};
    #[pymodule_export]
    use super::deploy::{
        argo_file_name, check_workflow, docker_build_command, lint_dockerfile, render_argo,
        render_catalog, render_dockerfile, render_dockerignore, requirements_path,
        run_cli_captured,
    };
    #[pymodule_export]
    use super::errors::{
        ConnectError, LaunchError, LayoutError, MigrationError, ObjectNotFoundError, ProtocolError,
        ServerError, StoreFullError, UnsupportedValueError, VineyardError,
    };
    #[pymodule_export]
    use super::server::{find_vineyardd, PyServer};
    #[pymodule_export]
    use super::{cli_commands, run_cli};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
