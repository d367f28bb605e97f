//! The bytes a put copies into its blobs, described by the caller.
//!
//! A [`Source`] borrows the memory it describes for its lifetime `'a`, so
//! `store::put`, which reads sources only while it runs, is safe to call:
//! the one `unsafe` step is making a `Source` from raw parts, where the
//! caller knows what owns the memory.

use std::marker::PhantomData;

/// Bytes to copy into one blob, borrowed for `'a`.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    raw: RawSource,
    _memory: PhantomData<&'a [u8]>,
}

impl<'a> Source<'a> {
    /// A source over a slice.
    pub fn from_slice(s: &'a [u8]) -> Source<'a> {
        Source {
            raw: RawSource::Contiguous {
                ptr: s.as_ptr(),
                len: s.len(),
            },
            _memory: PhantomData,
        }
    }

    /// A source over raw memory.
    ///
    /// # Safety
    /// The memory `raw` describes must stay valid and unmodified for `'a`.
    pub unsafe fn from_raw(raw: RawSource) -> Source<'a> {
        Source {
            raw,
            _memory: PhantomData,
        }
    }

    /// What the source reads.
    pub fn raw(&self) -> RawSource {
        self.raw
    }

    /// Bytes this source produces.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// True when it produces no bytes.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// The memory a source reads, as raw parts.
#[derive(Clone, Copy, Debug)]
pub enum RawSource {
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

// SAFETY: a RawSource is only a description of memory; whoever made a
// `Source` of it guarantees the memory stays valid and unmodified while
// that `Source` lives, whichever thread reads it.
unsafe impl Send for RawSource {}
// SAFETY: as above; sources are only read.
unsafe impl Sync for RawSource {}

impl RawSource {
    /// Bytes this source produces.
    pub fn len(&self) -> usize {
        match *self {
            RawSource::Contiguous { len, .. } => len,
            RawSource::Strided {
                itemsize, count, ..
            } => itemsize * count,
        }
    }

    /// True when it produces no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
