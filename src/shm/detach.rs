//! Turning pages of a shared mapping private copy-on-write where they are,
//! without paying for the unmap on the caller's time.
//!
//! Mapping a private mapping over populated shared pages (`MAP_FIXED`)
//! first tears down their page-table entries: ~40 to 100 ms per GiB of
//! written pages, on the save that seals an allocator blob. Instead, one
//! `mremap(MREMAP_DONTUNMAP)` moves those entries to a scratch address
//! (whole page tables at a time when both addresses have the same offset
//! in a 2 MiB page: ~0.2 ms per GiB) and leaves the range mapped, shared,
//! with no entries; the private mapping then replaces it for nothing. The
//! scratch range, which only maps pages of the memory file and which
//! nothing knows about, is unmapped by a background thread.
//!
//! The range is never unmapped on the way, so no other thread can be given
//! its addresses, and an access from another thread meanwhile sees the
//! file. A kernel without `MREMAP_DONTUNMAP` for shared mappings (before
//! 5.13), or a range that spans two mappings, takes the plain `MAP_FIXED`.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::mman::{
    madvise, mmap, mmap_anonymous, mremap, munmap, MRemapFlags, MapFlags, MmapAdvise, ProtFlags,
};

use super::worker::Worker;
use super::{page_size, Region};

/// Page-table pages cover 2 MiB on x86-64 and arm64 (4 KiB pages): moves
/// between addresses with the same offset in it move whole tables.
const TABLE_SPAN: usize = 2 << 20;

impl Region {
    /// Makes the `len` bytes at `offset` of this mapping (whole pages)
    /// private copy-on-write in place: reads show the memory file until
    /// a page is written, and writes from now on stay in this process.
    pub fn make_private(&self, offset: usize, len: usize) -> std::io::Result<()> {
        self.check_whole_pages(offset, len)?;
        if let Some(scratch) = detach_entries(self.base() as usize + offset, len) {
            unmap_later(scratch);
        }
        self.remap_in_place(offset, len, true)
    }

    /// Maps the `len` bytes at `offset` of this mapping (whole pages) again
    /// over themselves, from the same offsets of the memory file: private
    /// copy-on-write, or shared (the file itself). Their page-table entries
    /// go, so the record of what was faulted in forgets them.
    pub fn remap_in_place(&self, offset: usize, len: usize, private: bool) -> std::io::Result<()> {
        self.check_whole_pages(offset, len)?;
        self.forget_populated(offset, len);
        let addr = self.base() as usize + offset;
        let (Some(at), Some(length)) = (NonZeroUsize::new(addr), NonZeroUsize::new(len)) else {
            return Err(std::io::Error::other("empty range"));
        };
        let kind = if private {
            MapFlags::MAP_PRIVATE
        } else {
            MapFlags::MAP_SHARED
        };
        // SAFETY: whole pages inside our own mapping of this file, mapped
        // again at the same file offsets (checked above): every address
        // stays mapped and reads the same bytes (the file's; for a private
        // mapping, until written). Callers keep the file consistent with
        // what the pages held (`crate::alloc`).
        let mapped = unsafe {
            mmap(
                Some(at),
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                kind | MapFlags::MAP_FIXED,
                self.fd(),
                offset as i64,
            )
        }
        .map_err(std::io::Error::from)?;
        // A new mapping has the default advice: the same as the rest of the
        // region's (see `no_recency`), which also lets the kernel merge it
        // back with its neighbours.
        // SAFETY: the range just mapped; advice changes no contents.
        let _ = unsafe { madvise(mapped, len, MmapAdvise::MADV_RANDOM) };
        Ok(())
    }

    fn check_whole_pages(&self, offset: usize, len: usize) -> std::io::Result<()> {
        let page = page_size();
        let in_range = offset.checked_add(len).is_some_and(|end| end <= self.len());
        if len == 0 || !offset.is_multiple_of(page) || !len.is_multiple_of(page) || !in_range {
            return Err(std::io::Error::other(format!(
                "{len} bytes at offset {offset} are not whole pages of the mapping"
            )));
        }
        Ok(())
    }
}

/// What the background thread unmaps at a time: ~0.2 ms of work.
const UNMAP_PIECE: usize = 4 << 20;

/// A reserved range to unmap, as (address, length).
type Scratch = (usize, usize);

/// Moves the page-table entries of `len` bytes at `addr` (part of one
/// shared file mapping) to fresh scratch address space and returns that
/// space, leaving the range mapped as it was with no entries; `None` (and
/// nothing changed) when the kernel refuses.
fn detach_entries(addr: usize, len: usize) -> Option<Scratch> {
    let reserve = len.checked_add(TABLE_SPAN)?;
    // SAFETY: a fresh anonymous reservation, inaccessible, that nothing
    // else knows about.
    let base = unsafe {
        mmap_anonymous(
            None,
            NonZeroUsize::new(reserve)?,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    }
    .ok()?;
    let start = base.as_ptr() as usize;
    // Same offset within a 2 MiB span as `addr`, inside the reservation.
    let target = start.next_multiple_of(TABLE_SPAN) + addr % TABLE_SPAN;
    let target = if target + len <= start + reserve {
        target
    } else {
        target - TABLE_SPAN
    };
    let (Some(from), Some(to)) = (
        NonNull::new(addr as *mut c_void),
        NonNull::new(target as *mut c_void),
    ) else {
        unmap_now((start, reserve));
        return None;
    };
    // SAFETY: `addr..addr + len` is ours (the caller's mapping); the
    // target lies inside our reservation, which MREMAP_FIXED replaces.
    // DONTUNMAP leaves the source mapped (same file, offsets and access)
    // with empty page tables, so its contents read the file as before.
    let moved = unsafe {
        mremap(
            from,
            len,
            len,
            MRemapFlags::MREMAP_MAYMOVE | MRemapFlags::MREMAP_FIXED | MRemapFlags::MREMAP_DONTUNMAP,
            Some(to),
        )
    };
    if moved.is_err() {
        unmap_now((start, reserve));
        return None;
    }
    Some((start, reserve))
}

fn unmap_now((addr, len): Scratch) {
    if let Some(p) = NonNull::new(addr as *mut c_void) {
        // SAFETY: a reservation of ours (plus what was moved into it),
        // whose addresses nothing refers to.
        let _ = unsafe { munmap(p, len) };
    }
}

/// Unmaps detached ranges. It waits for a pause in the seals first: a
/// save seals its blobs back to back, and an unmap running meanwhile
/// competes with them for the address-space lock and for a core (a 1 GiB
/// save of 16 blobs took 57 to 174 ms with the unmap running alongside,
/// 9 to 26 ms with it deferred).
static UNMAPPER: Worker<Scratch> = Worker::new("vineyard-unmap", QUIET, unmap_all);

/// The pause in seals, and in the allocator's traffic, the unmapper waits for.
const QUIET: Duration = Duration::from_millis(30);

/// The longest the unmapper defers its work for the allocator's traffic.
const MAX_DEFER: Duration = Duration::from_secs(2);

/// When the allocator last mapped, sealed or freed a blob, in milliseconds
/// since `EPOCH`.
static LAST_ACTIVITY: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ms() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Tells the unmapper that this process is busy mapping blobs (the
/// allocator mapping, sealing or freeing them, a load mapping them): it
/// waits for a pause before tearing entries down, since both need the
/// address-space lock. After a save, Kedro drops the node's outputs and
/// their blobs are freed back to back, then the next node's inputs are
/// loaded: an unmap running meanwhile made those frees wait up to 0.3 s,
/// and a 17-column load 50 ms instead of 5.
pub fn note_activity() {
    LAST_ACTIVITY.store(now_ms(), Ordering::Relaxed);
}

/// Unmaps `scratch` on the background thread of this process (or here if
/// none can be started).
fn unmap_later(scratch: Scratch) {
    UNMAPPER.send(scratch);
}

/// In pieces: an unmap holds the address-space lock that the next seal's
/// `mmap` needs, for as long as it tears entries down (~40 ms per GiB).
fn unmap_all(batch: Vec<Scratch>) {
    let started = Instant::now();
    while now_ms().saturating_sub(LAST_ACTIVITY.load(Ordering::Relaxed)) < QUIET.as_millis() as u64
        && started.elapsed() < MAX_DEFER
    {
        std::thread::sleep(QUIET / 3);
    }
    for (addr, len) in batch {
        let mut at = 0;
        while at < len {
            let n = UNMAP_PIECE.min(len - at);
            unmap_now((addr + at, n));
            at += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{memfd_create, MFdFlags};

    fn region_named(name: &std::ffi::CStr, len: usize) -> Region {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).expect("memfd");
        nix::unistd::ftruncate(&fd, len as i64).expect("ftruncate");
        Region::map(fd, len as u64).expect("map")
    }

    fn region(len: usize) -> Region {
        region_named(c"vineyard-kedro-detach", len)
    }

    fn file_byte(r: &Region, at: usize) -> u8 {
        let mut b = [0u8; 1];
        assert_eq!(
            nix::sys::uio::pread(r.fd(), &mut b, at as i64).expect("pread"),
            1
        );
        b[0]
    }

    #[test]
    fn written_pages_become_private_and_keep_their_contents() {
        let page = page_size();
        // Larger than a page table's span, at an offset that is not aligned to it.
        let len = 3 * TABLE_SPAN;
        let r = region(len + 4 * page);
        let (offset, n) = (3 * page, len);
        // SAFETY: inside the mapping, used by this test only.
        let bytes = unsafe { std::slice::from_raw_parts_mut(r.base(), r.len()) };
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        r.make_private(offset, n).expect("private");
        assert!(
            bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
            "every byte reads as before"
        );
        // Inside the range: the write stays here. Outside: it reaches the file.
        bytes[offset + 5] = 0xEE;
        bytes[offset + n - 1] = 0xEE;
        bytes[offset - 1] = 0xEE;
        bytes[offset + n] = 0xEE;
        assert_eq!(file_byte(&r, offset + 5), ((offset + 5) % 251) as u8);
        assert_eq!(
            file_byte(&r, offset + n - 1),
            ((offset + n - 1) % 251) as u8
        );
        assert_eq!(file_byte(&r, offset - 1), 0xEE);
        assert_eq!(file_byte(&r, offset + n), 0xEE);
        assert_eq!((bytes[offset + 5], bytes[offset + n - 1]), (0xEE, 0xEE));
        // The file written through another path shows through unwritten pages.
        let at = offset + 7 * page + 3;
        nix::sys::uio::pwrite(r.fd(), &[0x42], at as i64).expect("pwrite");
        assert_eq!(bytes[at], 0x42);
    }

    #[test]
    fn the_unmapper_exits_when_idle_and_comes_back() {
        let page = page_size();
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .filter_map(|t| t.ok())
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "vineyard-unmap")
                })
                .count()
        };
        let wait_for = |want: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while threads() != want && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            threads()
        };
        let mappings = || {
            std::fs::read_to_string("/proc/self/maps")
                .expect("maps")
                .lines()
                .filter(|l| l.contains("vineyard-kedro-idle"))
                .count()
        };
        for _ in 0..2 {
            let r = region_named(c"vineyard-kedro-idle", TABLE_SPAN + 2 * page);
            // SAFETY: inside the mapping, used by this test only.
            unsafe { std::ptr::write_bytes(r.base(), 1, r.len()) };
            r.make_private(page, TABLE_SPAN).expect("private");
            // The region, split in three around its private part; the
            // scratch range goes once the unmapper has run.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while mappings() > 3 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(mappings(), 3, "the scratch range was unmapped");
            assert_eq!(wait_for(0), 0, "no unmapper thread once idle");
        }
    }

    #[test]
    fn ranges_that_are_not_whole_pages_are_refused() {
        let page = page_size();
        let r = region(4 * page);
        assert!(r.make_private(1, page).is_err());
        assert!(r.make_private(0, page + 1).is_err());
        assert!(r.make_private(2 * page, 4 * page).is_err());
        assert!(r.make_private(0, 0).is_err());
        assert!(r.make_private(usize::MAX - page + 1, page).is_err());
    }

    #[test]
    fn scratch_ranges_are_unmapped_in_the_background() {
        let page = page_size();
        let r = region_named(c"vineyard-kedro-scratch", TABLE_SPAN + 2 * page);
        // SAFETY: inside the mapping, used by this test only.
        unsafe { std::ptr::write_bytes(r.base(), 1, r.len()) };
        let Some(scratch) = detach_entries(r.base() as usize + page, TABLE_SPAN) else {
            return; // a kernel without MREMAP_DONTUNMAP for shared mappings
        };
        unmap_later(scratch);
        // The moved entries map the memory file at the scratch address.
        let mapped = |addr: usize| {
            std::fs::read_to_string("/proc/self/maps")
                .expect("maps")
                .lines()
                .filter(|l| l.contains("vineyard-kedro-scratch"))
                .filter_map(|l| l.split_whitespace().next())
                .filter_map(|range| range.split_once('-'))
                .any(|(a, b)| {
                    let (a, b) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16));
                    matches!((a, b), (Ok(a), Ok(b)) if a <= addr && addr < b)
                })
        };
        let target =
            scratch.0.next_multiple_of(TABLE_SPAN) + (r.base() as usize + page) % TABLE_SPAN;
        let target = if target + TABLE_SPAN <= scratch.0 + scratch.1 {
            target
        } else {
            target - TABLE_SPAN
        };
        // While the allocator is busy, the unmap waits (up to MAX_DEFER).
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_millis(300) {
            note_activity();
            assert!(mapped(target), "unmapped while the allocator was busy");
            std::thread::sleep(Duration::from_millis(5));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while mapped(target) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!mapped(target), "the scratch range is unmapped");
        // SAFETY: the detached range is still mapped and reads the file.
        assert_eq!(unsafe { *r.base().add(page + 9) }, 1);
    }
}
