//! Whether the pages of a private file mapping are still the file's:
//! `/proc/self/pagemap` has one 64-bit entry per virtual page.
//!
//! A page of a `MAP_PRIVATE` file mapping is the file's page until the
//! process writes to it; the write gives the process an anonymous copy.
//! So a page is unchanged when it is not present (never touched, or
//! dropped again) or present with bit 61 ("file page or shared anon") set;
//! a present page without it is an anonymous copy, and a swapped page
//! (bit 62) is one too (file pages are never swapped, only dropped).
//! Unprivileged readers see these flag bits (only the frame numbers are
//! hidden from them). Anything we cannot read counts as changed.

use std::fs::File;
use std::os::unix::fs::FileExt;

const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_PAGE: u64 = 1 << 61;

/// Pagemap entries read per `pread`: 8192 pages, 32 MiB of 4 KiB pages.
const BATCH: usize = 8192;

/// True when every page of the `len` bytes at `start` (part of a private
/// file mapping of this process) is still the file's page. False for an
/// empty range and whenever the pagemap cannot be read.
pub fn unchanged(start: usize, len: usize) -> bool {
    if len == 0 {
        return false;
    }
    let page = crate::shm::page_size();
    let Some(end) = start.checked_add(len) else {
        return false;
    };
    let (first, last) = (start / page, (end - 1) / page);
    // Opened per call: a descriptor kept from before a fork would show the
    // parent's pages.
    let Ok(file) = File::open("/proc/self/pagemap") else {
        return false;
    };
    let mut buf = vec![0u8; 8 * BATCH.min(last - first + 1)];
    let mut next = first;
    while next <= last {
        let n = BATCH.min(last - next + 1);
        let chunk = &mut buf[..8 * n];
        let Some(offset) = (next as u64).checked_mul(8) else {
            return false;
        };
        if file.read_exact_at(chunk, offset).is_err() {
            return false;
        }
        for entry in chunk.chunks_exact(8) {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(entry);
            let e = u64::from_ne_bytes(raw);
            if e & SWAPPED != 0 || (e & PRESENT != 0 && e & FILE_PAGE == 0) {
                return false;
            }
        }
        next += n;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    use memmap2::MmapOptions;
    use nix::sys::memfd::{memfd_create, MFdFlags};

    #[test]
    fn written_pages_are_changed_read_pages_are_not() {
        let page = crate::shm::page_size();
        let fd = memfd_create(c"vineyard-kedro-pagemap", MFdFlags::MFD_CLOEXEC).expect("memfd");
        nix::unistd::ftruncate(&fd, 8 * page as i64).expect("ftruncate");
        // The file's contents, written through a shared mapping.
        let shared = MmapOptions::new()
            .len(8 * page)
            .map_raw(fd.as_raw_fd())
            .expect("shared map");
        // SAFETY: 8 pages of our own mapping, used only here.
        unsafe { std::ptr::write_bytes(shared.as_mut_ptr(), 3, 8 * page) };
        // SAFETY: a private mapping of a file only this test uses.
        let private = unsafe { MmapOptions::new().len(8 * page).map_copy(&fd) }.expect("private");
        let base = private.as_ptr() as usize;
        assert!(unchanged(base, 8 * page), "untouched pages are the file's");
        let read: u64 = private.iter().map(|b| u64::from(*b)).sum();
        assert_eq!(read, 3 * 8 * page as u64);
        assert!(unchanged(base, 8 * page), "read pages are the file's");
        let mut private = private;
        private[5 * page + 17] = 4;
        assert!(
            !unchanged(base, 8 * page),
            "one written byte changes its page"
        );
        assert!(!unchanged(base + 5 * page + 100, 10));
        assert!(unchanged(base, 5 * page), "pages before it are unchanged");
        assert!(unchanged(base + 6 * page, 2 * page), "pages after it too");
        assert!(!unchanged(base, 0));
        assert!(!unchanged(usize::MAX - 3, 10));
    }

    #[test]
    fn anonymous_memory_is_never_a_file_page() {
        let mut v = vec![1u8; 64 << 10];
        v[100] = 2;
        assert!(!unchanged(v.as_ptr() as usize, v.len()));
    }
}
