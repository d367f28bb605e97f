//! Sealing an allocator blob in place: the memory file gets the array's
//! bytes, and the array's pages become private copy-on-write, so that an
//! edit after the save stays in this process and never reaches the stored
//! object.
//!
//! Blobs are not page aligned: a page at either end of a blob may hold
//! bytes of a neighbouring blob of ours too. Once such a page is private,
//! the neighbour's later writes land in the private copy, not in the file;
//! so a seal first writes its bytes that lie in pages already private to
//! the file (`pwrite`, a page or two at most, except for a blob whose
//! pages a freed sealed blob left private), then remaps the rest. Which
//! pages of a mapping are private is recorded here, per mapping. A freed
//! sealed blob remaps its inner pages shared again, so the next blob
//! vineyardd places there is shared from the start.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};

use nix::sys::mman::{mmap, MapFlags, ProtFlags};

use crate::shm::{page_size, BlobBytes, Region};

/// The private pages of each allocator mapping.
#[derive(Default)]
pub(super) struct PrivatePages {
    by_region: HashMap<usize, (Weak<Region>, HashSet<usize>)>,
}

/// The blob's range inside its mapping: (region, offset, len).
fn placement(bytes: &BlobBytes) -> Option<(&Arc<Region>, usize, usize)> {
    let region = bytes.region()?;
    let offset = (bytes.as_ptr() as usize).checked_sub(region.base() as usize)?;
    Some((region, offset, bytes.len()))
}

impl PrivatePages {
    fn pages_of(&mut self, region: &Arc<Region>) -> &mut HashSet<usize> {
        let entry = self
            .by_region
            .entry(region.base() as usize)
            .or_insert_with(|| (Arc::downgrade(region), HashSet::new()));
        if !std::ptr::eq(entry.0.as_ptr(), Arc::as_ptr(region)) {
            // A new mapping at the address of one that is gone.
            *entry = (Arc::downgrade(region), HashSet::new());
        }
        &mut entry.1
    }

    /// Makes the memory file hold `bytes`' current contents and this
    /// mapping's pages of it private. On error some pages may be private
    /// already (recorded), and the blob must not be stored by reference.
    pub(super) fn seal(&mut self, bytes: &BlobBytes) -> std::io::Result<()> {
        let Some((region, offset, len)) = placement(bytes) else {
            return Err(std::io::Error::other("the blob has no mapping"));
        };
        if len == 0 {
            return Ok(());
        }
        let page = page_size();
        let (first, last) = (offset / page, (offset + len - 1) / page);
        let base = region.base();
        let pages = self.pages_of(region);
        for p in (first..=last).filter(|p| pages.contains(p)) {
            let lo = offset.max(p * page);
            let hi = (offset + len).min((p + 1) * page);
            // SAFETY: [lo, hi) lies inside the blob, inside the mapping.
            let mine = unsafe { std::slice::from_raw_parts(base.add(lo), hi - lo) };
            pwrite_all(region, mine, lo)?;
        }
        let mut p = first;
        while p <= last {
            if pages.contains(&p) {
                p += 1;
                continue;
            }
            let start = p;
            while p <= last && !pages.contains(&p) {
                p += 1;
            }
            remap(
                region,
                start * page,
                (p - start) * page,
                MapFlags::MAP_PRIVATE,
            )?;
            pages.extend(start..p);
        }
        Ok(())
    }

    /// A sealed blob is freed: its inner pages (no other blob shares them)
    /// become shared again. On error they stay private, which is correct,
    /// only slower for the next blob there.
    pub(super) fn release(&mut self, bytes: &BlobBytes) {
        let Some((region, offset, len)) = placement(bytes) else {
            return;
        };
        let page = page_size();
        let (first, end) = (offset.div_ceil(page), (offset + len) / page);
        if first >= end {
            return;
        }
        if remap(
            region,
            first * page,
            (end - first) * page,
            MapFlags::MAP_SHARED,
        )
        .is_ok()
        {
            let pages = self.pages_of(region);
            for p in first..end {
                pages.remove(&p);
            }
        }
    }
}

fn pwrite_all(region: &Region, mut buf: &[u8], mut at: usize) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = nix::sys::uio::pwrite(region.fd(), buf, at as i64).map_err(std::io::Error::from)?;
        if n == 0 {
            return Err(std::io::Error::other("pwrite wrote nothing"));
        }
        buf = &buf[n..];
        at += n;
    }
    Ok(())
}

/// Maps `len` bytes at `offset` of the region's file over the same range of
/// the region, shared or private.
fn remap(region: &Region, offset: usize, len: usize, kind: MapFlags) -> std::io::Result<()> {
    let (Some(addr), Some(length)) = (
        NonZeroUsize::new(region.base() as usize + offset),
        NonZeroUsize::new(len),
    ) else {
        return Err(std::io::Error::other("empty range"));
    };
    if offset + len > region.len() {
        return Err(std::io::Error::other("range outside the mapping"));
    }
    // SAFETY: the range is whole pages inside our own mapping of the same
    // file at the same offsets (checked above), so every address stays
    // mapped, with the same contents as the file: for MAP_PRIVATE the pages
    // read the file until written; for MAP_SHARED they are the file. Only
    // blobs of this allocator use this mapping, and the callers keep the
    // file consistent with what they hold (see the module note).
    unsafe {
        mmap(
            Some(addr),
            length,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            kind | MapFlags::MAP_FIXED,
            region.fd(),
            offset as i64,
        )
    }
    .map(drop)
    .map_err(std::io::Error::from)
}
