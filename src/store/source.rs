//! The bytes a put copies into its blobs, described by the caller.
//!
//! A [`Source`] borrows the memory it describes for its lifetime `'a`, so
//! `store::put`, which reads sources only while it runs, is safe to call:
//! the one `unsafe` step is making a `Source` from raw parts, where the
//! caller knows what owns the memory.

use std::marker::PhantomData;

/// Bytes to store in one blob, borrowed for `'a`: memory to copy, or a
/// writer that produces them straight into the blob.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    kind: Kind<'a>,
    _memory: PhantomData<&'a [u8]>,
}

#[derive(Clone, Copy)]
enum Kind<'a> {
    Raw(RawSource),
    Generated { len: usize, fill: &'a dyn Fill },
}

/// Something that writes a blob's bytes itself (an Arrow IPC stream), so
/// they need not be made somewhere else first and then copied.
pub trait Fill: Sync {
    /// Writes exactly `out.len()` bytes (the length the source declared).
    fn fill(&self, out: &mut [u8]) -> std::result::Result<(), String>;
}

impl std::fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Kind::Raw(r) => r.fmt(f),
            Kind::Generated { len, .. } => write!(f, "Generated({len} bytes)"),
        }
    }
}

impl<'a> Source<'a> {
    /// A source over a slice.
    pub fn from_slice(s: &'a [u8]) -> Source<'a> {
        Source {
            kind: Kind::Raw(RawSource::Contiguous {
                ptr: s.as_ptr(),
                len: s.len(),
            }),
            _memory: PhantomData,
        }
    }

    /// A source over raw memory.
    ///
    /// # Safety
    /// The memory `raw` describes must stay valid and unmodified for `'a`.
    pub unsafe fn from_raw(raw: RawSource) -> Source<'a> {
        Source {
            kind: Kind::Raw(raw),
            _memory: PhantomData,
        }
    }

    /// `len` bytes that `fill` writes into the blob itself.
    pub fn generated(len: usize, fill: &'a dyn Fill) -> Source<'a> {
        Source {
            kind: Kind::Generated { len, fill },
            _memory: PhantomData,
        }
    }

    /// The memory the source reads (None for a generated one).
    pub fn raw(&self) -> Option<RawSource> {
        match self.kind {
            Kind::Raw(r) => Some(r),
            Kind::Generated { .. } => None,
        }
    }

    /// The writer of a generated source.
    pub fn fill(&self) -> Option<&'a dyn Fill> {
        match self.kind {
            Kind::Raw(_) => None,
            Kind::Generated { fill, .. } => Some(fill),
        }
    }

    /// Bytes this source produces.
    pub fn len(&self) -> usize {
        match self.kind {
            Kind::Raw(r) => r.len(),
            Kind::Generated { len, .. } => len,
        }
    }

    /// True when it produces no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
