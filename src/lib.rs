//! vineyard-kedro's core: a client for vineyardd's IPC protocol with shared
//! memory, a launcher for vineyardd, and the layouts Kedro data is stored in.
//!
//! Layers, top to bottom (arrows point down only):
//! `python` (PyO3, feature `python`) -> `store` (typed object trees, atomic
//! puts) -> `client` (typed requests) -> `connection` / `shm` (framing, fds,
//! mappings) -> `protocol` (pure framing, and the messages as serde types,
//! one module per family).
//!
//! Inside `store`, the order is `store` (put/get, tree flattening) ->
//! `store::reference` (sources that are loaded blobs, checked with
//! `pagemap` against `shm::loaded`) and `store::copy` (the parallel copy
//! into blobs) -> `store::source` (what a put copies from); nothing below
//! imports what is above it.

pub mod alloc;
pub mod arrow;
pub mod cli;
pub mod client;
pub mod connection;
pub mod deploy;
pub mod error;
pub mod lease;
pub mod migrate;
pub mod names;
pub mod object;
pub mod pagemap;
pub mod protocol;
pub mod server;
pub mod shm;
pub mod store;

#[cfg(feature = "python")]
mod python;

pub use client::{Client, Created, ServerInfo};
pub use connection::Timeouts;
pub use error::{Error, Result};
pub use object::{ObjectId, ObjectMeta};
pub use server::{Meta, Server, ServerOptions};
pub use shm::{BlobBytes, PrivateBytes};
