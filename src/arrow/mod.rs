//! vineyard's Arrow layouts, read (and written) with arrow-rs.
//!
//! The layouts are those the official clients write (protocol sections
//! 11.5, 11.6), plus two of ours for what they cannot carry: chunked arrays
//! and Arrow IPC streams. Buffers are the blobs themselves, mapped: a read
//! copies no data.

pub mod ipc;
pub mod meta;
pub mod narrow;
pub mod read;
mod scratch;
pub mod types;
pub mod write;

pub use ipc::{IpcStream, Part};
pub use narrow::narrow;
pub use read::{is_arrow_layout, read_array, read_value, ArrowValue, Blobs, ARRAY_LAYOUTS};
pub use types::{portable, widen};
pub use write::{write_layout, write_value, Written};

/// A zero-length buffer aligned for any Arrow type (an empty `Vec<u8>`'s
/// dangling pointer is not, and arrow-rs checks alignment).
pub fn empty_buffer() -> arrow_buffer::Buffer {
    arrow_buffer::MutableBuffer::new(0).into()
}

#[cfg(test)]
mod tests;
