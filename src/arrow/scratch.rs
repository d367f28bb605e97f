//! Scratch memory for what a save must make (rebased offsets).

use std::sync::Arc;

use arrow_buffer::Buffer;

/// Offsets made for a save: large ones in anonymous memory advised to use
/// huge pages (numpy does the same for large arrays): faulting in 4 KiB
/// pages of a fresh heap allocation costs as much as filling them.
pub(super) enum Scratch {
    Heap(Vec<i64>),
    Mapped(memmap2::MmapMut),
}

const HUGE_SCRATCH: usize = 4 << 20;

pub(super) fn scratch(items: usize) -> Scratch {
    let bytes = items * 8;
    if bytes >= HUGE_SCRATCH {
        if let Ok(map) = memmap2::MmapOptions::new().len(bytes).map_anon() {
            // Only a hint: without huge pages the mapping works the same.
            let _ = map.advise(memmap2::Advice::HugePage);
            return Scratch::Mapped(map);
        }
    }
    Scratch::Heap(vec![0; items])
}

impl Scratch {
    pub(super) fn as_mut_slice(&mut self) -> &mut [i64] {
        match self {
            Scratch::Heap(v) => v,
            Scratch::Mapped(m) => {
                // SAFETY: an anonymous mapping is page-aligned, zero-filled
                // (a valid i64 everywhere) and a whole number of i64s long.
                let (head, body, _) = unsafe { m.align_to_mut::<i64>() };
                debug_assert!(head.is_empty());
                body
            }
        }
    }

    pub(super) fn into_buffer(self) -> Buffer {
        match self {
            Scratch::Heap(v) => Buffer::from_vec(v),
            Scratch::Mapped(m) => {
                let ptr = std::ptr::NonNull::new(m.as_ptr().cast_mut());
                let len = m.len();
                match ptr {
                    // SAFETY: `len` bytes at `ptr` are the mapping, which the
                    // buffer owns (and unmaps when the last clone drops).
                    Some(ptr) => unsafe { Buffer::from_custom_allocation(ptr, len, Arc::new(m)) },
                    None => Buffer::from_vec(m.to_vec()),
                }
            }
        }
    }
}
