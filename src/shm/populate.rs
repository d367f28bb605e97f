//! Faulting store memory in before it is written.
//!
//! A write to a page of the memory file that this process has not mapped
//! yet takes a page fault; a fresh page also has to be allocated and
//! zeroed by the kernel (vineyardd's memory file has 4 KiB pages: shmem
//! gets no transparent huge pages by default). One `MADV_POPULATE_WRITE`
//! over the range does the same work in one call, and a background thread
//! can do it before the bytes are needed: the allocator asks it to fault
//! in the memory its next blob will most likely get.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::worker::Worker;
use super::{page_size, Region};

/// Granularity of the record of what a mapping has already faulted in.
pub(super) const POPULATED_CHUNK: usize = 256 << 10;

/// The background populator works in pieces this long: each holds the
/// address-space lock (shared) for ~1 ms, so a seal's `mmap` never waits
/// longer than that.
const PIECE: usize = 2 << 20;

/// The most one [`populate_ahead`] faults in.
const AHEAD_MAX: usize = 256 << 20;

/// A range to fault in, of a mapping that may be gone by then.
type Ahead = (Weak<Region>, usize, usize);

static POPULATOR: Worker<Ahead> = Worker::new("vineyard-populate", Duration::ZERO, populate_all);

impl Region {
    /// Faults in, writable, the pages of `len` bytes at `offset` that a
    /// write is about to touch, skipping the chunks this mapping already
    /// faulted in.
    ///
    /// A copy into pages this process has not mapped yet otherwise takes
    /// one fault per 4 KiB page inside the copy loop. One
    /// `MADV_POPULATE_WRITE` is faster: 1.5x for pages new to the store,
    /// 1.8x for pages an earlier process used (a long-lived vineyardd).
    /// Pages this mapping already faulted in would only cost a page walk
    /// (~25 ms per GiB), hence the record. Only page tables change: contents
    /// are untouched, so the pages the range shares with a neighbouring blob
    /// are safe. An error (a kernel before 5.14, a memory limit) just leaves
    /// the faults to the writer.
    pub fn prefault(&self, offset: usize, len: usize) {
        let Some(end) = offset.checked_add(len).filter(|e| *e <= self.len()) else {
            return;
        };
        if len == 0 {
            return;
        }
        let (mut c, last) = (offset / POPULATED_CHUNK, (end - 1) / POPULATED_CHUNK);
        while c <= last {
            if self.is_populated(c) {
                c += 1;
                continue;
            }
            let first = c;
            while c <= last && !self.is_populated(c) {
                c += 1;
            }
            let lo = offset.max(first * POPULATED_CHUNK);
            let hi = end.min(c * POPULATED_CHUNK);
            if !self.populate(lo, hi - lo) {
                return;
            }
            for whole in lo.div_ceil(POPULATED_CHUNK)..hi / POPULATED_CHUNK {
                self.populated[whole / 64].fetch_or(1 << (whole % 64), Ordering::Relaxed);
            }
        }
    }

    /// Forgets that the chunks around `len` bytes at `offset` were faulted
    /// in (their page-table entries were moved away or replaced).
    pub fn forget_populated(&self, offset: usize, len: usize) {
        let Some(end) = offset
            .checked_add(len)
            .filter(|e| *e <= self.len() && len > 0)
        else {
            return;
        };
        for c in offset / POPULATED_CHUNK..end.div_ceil(POPULATED_CHUNK) {
            self.populated[c / 64].fetch_and(!(1 << (c % 64)), Ordering::Relaxed);
        }
    }

    pub(super) fn is_populated(&self, chunk: usize) -> bool {
        self.populated[chunk / 64].load(Ordering::Relaxed) & (1 << (chunk % 64)) != 0
    }

    /// One `MADV_POPULATE_WRITE` over the pages of `[lo, hi)` (in range).
    fn populate(&self, lo: usize, len: usize) -> bool {
        let start = self.base() as usize + lo;
        let aligned = start & !(page_size() - 1);
        let Some(addr) = std::ptr::NonNull::new(aligned as *mut std::ffi::c_void) else {
            return false;
        };
        // SAFETY: [aligned, start + len) lies inside this mapping (the
        // callers check the range and the mapping starts page aligned); the
        // advice only populates page tables and never changes memory
        // contents.
        unsafe {
            nix::sys::mman::madvise(
                addr,
                start + len - aligned,
                nix::sys::mman::MmapAdvise::MADV_POPULATE_WRITE,
            )
        }
        .is_ok()
    }
}

/// Faults in, on a background thread, up to `len` bytes (at most 256 MiB)
/// at `offset` of `region`, which a write will probably need soon; nothing
/// if they are already faulted in or out of range. Pages faulted in for
/// nothing are pages of the memory file that vineyardd would hand out
/// next, so at most `len` bytes of it become resident early.
pub fn populate_ahead(region: &Arc<Region>, offset: usize, len: usize) {
    let len = len.min(AHEAD_MAX).min(region.len().saturating_sub(offset));
    if len == 0 {
        return;
    }
    let chunks = offset / POPULATED_CHUNK..(offset + len).div_ceil(POPULATED_CHUNK);
    if chunks.clone().all(|c| region.is_populated(c)) {
        return;
    }
    POPULATOR.send((Arc::downgrade(region), offset, len));
}

fn populate_all(batch: Vec<Ahead>) {
    for (region, offset, len) in batch {
        let mut at = offset;
        while at < offset + len {
            let Some(region) = region.upgrade() else {
                break;
            };
            let n = PIECE.min(offset + len - at);
            region.prefault(at, n);
            at += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{memfd_create, MFdFlags};

    fn region(len: u64) -> Region {
        let fd =
            memfd_create(c"vineyard-kedro-populate", MFdFlags::MFD_CLOEXEC).expect("memfd_create");
        nix::unistd::ftruncate(&fd, len as i64).expect("ftruncate");
        Region::map(fd, len).expect("map")
    }

    /// MADV_POPULATE_WRITE exists since Linux 5.14.
    fn populate_supported() -> bool {
        let r = region(page_size() as u64);
        let addr = std::ptr::NonNull::new(r.base() as *mut std::ffi::c_void).expect("mapped");
        // SAFETY: one page of our own mapping; contents are not changed.
        unsafe {
            nix::sys::mman::madvise(
                addr,
                page_size(),
                nix::sys::mman::MmapAdvise::MADV_POPULATE_WRITE,
            )
        }
        .is_ok()
    }

    #[test]
    fn prefault_records_whole_chunks_and_keeps_contents() {
        let r = region(8 * POPULATED_CHUNK as u64);
        // SAFETY: the mapping is 8 chunks long and nobody else uses it.
        unsafe { *r.base().add(POPULATED_CHUNK + 7) = 42 };
        // From the middle of chunk 0 to the middle of chunk 3: 1 and 2 are whole.
        let (offset, len) = (POPULATED_CHUNK / 2, 3 * POPULATED_CHUNK);
        r.prefault(offset, len);
        let marked: Vec<bool> = (0..8).map(|c| r.is_populated(c)).collect();
        if populate_supported() {
            assert_eq!(
                marked,
                [false, true, true, false, false, false, false, false]
            );
        } else {
            assert!(
                marked.iter().all(|m| !m),
                "nothing is recorded when the kernel refuses"
            );
        }
        // SAFETY: as above.
        assert_eq!(unsafe { *r.base().add(POPULATED_CHUNK + 7) }, 42);
        // Out of range: nothing happens, nothing is recorded.
        r.prefault(7 * POPULATED_CHUNK, 2 * POPULATED_CHUNK);
        r.prefault(usize::MAX, 2);
        assert!(!r.is_populated(7));
    }

    #[test]
    fn forgotten_chunks_are_faulted_in_again() {
        if !populate_supported() {
            return;
        }
        let r = region(8 * POPULATED_CHUNK as u64);
        r.prefault(0, 8 * POPULATED_CHUNK);
        assert!((0..8).all(|c| r.is_populated(c)));
        // Part of chunks 2 and 3: both are forgotten, the others kept.
        r.forget_populated(2 * POPULATED_CHUNK + 5, POPULATED_CHUNK);
        let marked: Vec<bool> = (0..8).map(|c| r.is_populated(c)).collect();
        assert_eq!(marked, [true, true, false, false, true, true, true, true]);
        r.prefault(0, 8 * POPULATED_CHUNK);
        assert!((0..8).all(|c| r.is_populated(c)));
    }

    #[test]
    fn ahead_is_faulted_in_on_the_background_thread() {
        if !populate_supported() {
            return;
        }
        let r = Arc::new(region(64 * POPULATED_CHUNK as u64));
        // SAFETY: inside the mapping, used by this test only.
        unsafe { *r.base().add(20 * POPULATED_CHUNK + 1) = 9 };
        populate_ahead(&r, 16 * POPULATED_CHUNK, 16 * POPULATED_CHUNK);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !(16..32).all(|c| r.is_populated(c)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!((16..32).all(|c| r.is_populated(c)));
        assert!(
            !r.is_populated(15) && !r.is_populated(32),
            "nothing outside"
        );
        // SAFETY: as above.
        let kept = unsafe { *r.base().add(20 * POPULATED_CHUNK + 1) };
        assert_eq!(kept, 9, "contents kept");
        // Past the end: clamped; a region gone before its turn: skipped.
        populate_ahead(&r, 60 * POPULATED_CHUNK, 100 * POPULATED_CHUNK);
        let gone = Arc::new(region(8 * POPULATED_CHUNK as u64));
        populate_ahead(&gone, 0, 8 * POPULATED_CHUNK);
        drop(gone);
        while !(60..64).all(|c| r.is_populated(c)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!((60..64).all(|c| r.is_populated(c)));
    }
}
