//! The Python exception hierarchy and the one mapping from [`crate::Error`].
//!
//! Declared under the public module `vineyard.contrib.kedro.errors` (which
//! re-exports them) so they pickle: ParallelRunner ships exceptions between
//! processes.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::PyErr;

use crate::Error;

create_exception!(
    vineyard.contrib.kedro.errors,
    VineyardError,
    PyException,
    "Base class of every error raised by vineyard-kedro's core."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    ConnectError,
    VineyardError,
    "vineyardd is unreachable, stopped or timed out."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    ServerError,
    VineyardError,
    "vineyardd refused a request."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    StoreFullError,
    ServerError,
    "vineyardd's shared memory is exhausted."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    ObjectNotFoundError,
    VineyardError,
    "No object has that id or name."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    ProtocolError,
    VineyardError,
    "vineyardd sent something that breaks the protocol."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    LayoutError,
    VineyardError,
    "An object's metadata does not have the layout its type promises."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    UnsupportedValueError,
    VineyardError,
    "A value that cannot be stored."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    InternalError,
    VineyardError,
    "An invariant of vineyard-kedro itself broke: a bug to report, not bad input."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    LaunchError,
    VineyardError,
    "Starting or finding vineyardd failed."
);
create_exception!(
    vineyard.contrib.kedro.errors,
    MigrationError,
    VineyardError,
    "Copying an object from another instance failed."
);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let msg = e.to_string();
        match e {
            Error::Connect { .. }
            | Error::Io { .. }
            | Error::Timeout { .. }
            | Error::Stopped { .. }
            | Error::Closed { .. } => ConnectError::new_err(msg),
            Error::StoreFull { .. } => StoreFullError::new_err(msg),
            Error::Server { .. } => ServerError::new_err(msg),
            Error::NotFound { .. } => ObjectNotFoundError::new_err(msg),
            Error::Protocol { .. } => ProtocolError::new_err(msg),
            Error::Layout { .. } => LayoutError::new_err(msg),
            Error::Unsupported(_) | Error::Usage(_) | Error::Name(_) => {
                UnsupportedValueError::new_err(msg)
            }
            Error::Internal(_) => InternalError::new_err(msg),
            Error::Launch(_) => LaunchError::new_err(msg),
            Error::Migration { .. } => MigrationError::new_err(msg),
            Error::Map { .. } => VineyardError::new_err(msg),
        }
    }
}

/// Deploy renderer errors are bad input from the `kedro vineyard` commands: `ValueError`.
impl From<crate::deploy::DeployError> for PyErr {
    fn from(e: crate::deploy::DeployError) -> PyErr {
        PyValueError::new_err(e.to_string())
    }
}
