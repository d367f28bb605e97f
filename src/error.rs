//! The one error type of the crate.
//!
//! Every failure names what failed and where (the socket path, the object,
//! the request), so a Kedro user reading a `DatasetError` knows what to fix.
//! Nothing here panics on peer data: malformed replies become `Protocol`.

use std::path::PathBuf;

use crate::object::ObjectId;

/// Status code vineyardd uses for an exhausted `--size`.
pub const CODE_NOT_ENOUGH_MEMORY: i64 = 41;
/// Status code vineyardd uses for a missing object or name.
pub const CODE_OBJECT_NOT_EXISTS: i64 = 12;

/// Everything that can go wrong between us and vineyardd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be opened (missing, refused, permission).
    #[error("cannot connect to vineyardd at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An established connection failed while sending or receiving.
    #[error("connection to vineyardd at {socket} failed during {request}: {source}")]
    Io {
        socket: PathBuf,
        request: String,
        #[source]
        source: std::io::Error,
    },
    /// The server did not answer within the configured timeout.
    #[error("vineyardd at {socket} did not answer {request} within {seconds:.1} s")]
    Timeout {
        socket: PathBuf,
        request: String,
        seconds: f64,
    },
    /// The server process is stopped (SIGSTOP, a debugger): it cannot answer.
    #[error("vineyardd at {socket} (pid {pid}) is stopped (SIGSTOP or a debugger) and cannot answer {request}; resume it with `kill -CONT {pid}`")]
    Stopped {
        socket: PathBuf,
        request: String,
        pid: i32,
    },
    /// The server closed the connection (it stopped or was killed).
    #[error(
        "vineyardd at {socket} closed the connection during {request} (server stopped or killed?)"
    )]
    Closed { socket: PathBuf, request: String },
    /// An error reply: `{"code": .., "message": ..}`.
    #[error("vineyardd at {socket} refused {request}: {message} (code {code})")]
    Server {
        socket: PathBuf,
        request: String,
        code: i64,
        message: String,
    },
    /// The store has no room for the requested bytes (`--size` exhausted).
    #[error("vineyardd at {socket} is full: asked for {requested} bytes, {available} of {limit} bytes free ({message})")]
    StoreFull {
        socket: PathBuf,
        requested: u64,
        available: u64,
        limit: u64,
        message: String,
    },
    /// An object id or name that does not exist.
    #[error("{what} not found in vineyardd at {socket}")]
    NotFound { socket: PathBuf, what: String },
    /// The peer broke the protocol: bad frame, bad JSON, missing fd, wrong reply.
    #[error("protocol error from vineyardd at {socket} during {request}: {detail}")]
    Protocol {
        socket: PathBuf,
        request: String,
        detail: String,
    },
    /// A metadata tree that does not have the layout its typename promises.
    #[error("object {id} has an invalid layout: {detail}")]
    Layout { id: ObjectId, detail: String },
    /// The value given to a codec cannot be stored.
    #[error("{0}")]
    Unsupported(String),
    /// Starting, finding or stopping a vineyardd failed.
    #[error("vineyardd launcher: {0}")]
    Launch(String),
    /// Migrating an object from another instance failed.
    #[error("cannot migrate {id} from instance {instance} ({endpoint}) to vineyardd at {socket}: {reason}")]
    Migration {
        socket: PathBuf,
        id: ObjectId,
        instance: String,
        endpoint: String,
        reason: String,
    },
    /// A request that cannot be made in this state.
    #[error("{0}")]
    Usage(String),
    /// An invariant of vineyard-kedro itself broke: a bug, not bad input.
    #[error("internal error in vineyard-kedro (a bug; please report it): {0}")]
    Internal(String),
    /// A loaded blob could not be mapped copy-on-write.
    #[error("cannot map blob {id} copy-on-write: {source}{hint}")]
    Map {
        id: ObjectId,
        #[source]
        source: std::io::Error,
        /// What to check, when the error has a usual cause.
        hint: &'static str,
    },
    /// A namespace or dataset name outside the grammar of `names`.
    #[error("{0}")]
    Name(String),
}

impl Error {
    /// True when the error means "this object or name does not exist".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
            || matches!(self, Error::Server { code, .. } if *code == CODE_OBJECT_NOT_EXISTS)
    }

    /// True when the connection is unusable afterwards (reconnect needed).
    pub fn is_fatal_to_connection(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Timeout { .. }
                | Error::Stopped { .. }
                | Error::Closed { .. }
                | Error::Protocol { .. }
        )
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_say_they_are_bugs_and_keep_the_connection() {
        let e = Error::Internal("blob count mismatch".into());
        assert_eq!(
            e.to_string(),
            "internal error in vineyard-kedro (a bug; please report it): blob count mismatch"
        );
        assert!(!e.is_not_found() && !e.is_fatal_to_connection());
    }
}
