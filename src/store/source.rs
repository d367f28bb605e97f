//! The bytes a put copies into its blobs, described by the caller.

/// Bytes to copy into one blob.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// `len` contiguous bytes at `ptr`.
    Contiguous { ptr: *const u8, len: usize },
    /// `count` items of `itemsize` bytes, `stride` bytes apart (may be negative).
    Strided {
        ptr: *const u8,
        itemsize: usize,
        count: usize,
        stride: isize,
    },
}

// SAFETY: a Source is only a description of memory that the caller of `put`
// guarantees stays valid and unmodified for the duration of the call.
unsafe impl Send for Source {}
// SAFETY: as above; sources are only read.
unsafe impl Sync for Source {}

impl Source {
    /// A source over a slice that outlives the put.
    pub fn from_slice(s: &[u8]) -> Source {
        Source::Contiguous {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Bytes this source produces.
    pub fn len(&self) -> usize {
        match *self {
            Source::Contiguous { len, .. } => len,
            Source::Strided {
                itemsize, count, ..
            } => itemsize * count,
        }
    }

    /// True when it produces no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
