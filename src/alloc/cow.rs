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
//! pages a freed sealed blob left private), then makes the rest private
//! in place (`Region::make_private`). Which pages of a mapping are
//! private is recorded here, per mapping. A freed
//! sealed blob remaps its inner pages shared again, so the next blob
//! vineyardd places there is shared from the start.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::shm::{page_size, BlobBytes, Region};

/// The private pages of each allocator mapping.
#[derive(Default)]
pub(super) struct PrivatePages {
    by_region: HashMap<usize, (Weak<Region>, PageBits)>,
}

/// One bit per page of a mapping (a set would cost more than the remap:
/// a GiB is 262,144 pages).
#[derive(Default)]
pub(super) struct PageBits(Vec<u64>);

impl PageBits {
    fn contains(&self, p: &usize) -> bool {
        self.0.get(p / 64).is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    fn set(&mut self, pages: std::ops::Range<usize>, on: bool) {
        if pages.end.div_ceil(64) > self.0.len() {
            self.0.resize(pages.end.div_ceil(64), 0);
        }
        for p in pages {
            if on {
                self.0[p / 64] |= 1 << (p % 64);
            } else {
                self.0[p / 64] &= !(1 << (p % 64));
            }
        }
    }
}

/// The blob's range inside its mapping: (region, offset, len).
fn placement(bytes: &BlobBytes) -> Option<(&Arc<Region>, usize, usize)> {
    let region = bytes.region()?;
    let offset = (bytes.as_ptr() as usize).checked_sub(region.base() as usize)?;
    Some((region, offset, bytes.len()))
}

impl PrivatePages {
    fn pages_of(&mut self, region: &Arc<Region>) -> &mut PageBits {
        let entry = self
            .by_region
            .entry(region.base() as usize)
            .or_insert_with(|| (Arc::downgrade(region), PageBits::default()));
        if !std::ptr::eq(entry.0.as_ptr(), Arc::as_ptr(region)) {
            // A new mapping at the address of one that is gone.
            *entry = (Arc::downgrade(region), PageBits::default());
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
            region.make_private(start * page, (p - start) * page)?;
            pages.set(start..p, true);
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
        if region
            .remap_in_place(first * page, (end - first) * page, false)
            .is_ok()
        {
            self.pages_of(region).set(first..end, false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectId;
    use nix::sys::memfd::{memfd_create, MFdFlags};

    fn region(len: usize) -> Arc<Region> {
        let fd = memfd_create(c"vineyard-kedro-cow", MFdFlags::MFD_CLOEXEC).expect("memfd_create");
        nix::unistd::ftruncate(&fd, len as i64).expect("ftruncate");
        Arc::new(Region::map(fd, len as u64).expect("map"))
    }

    fn file_bytes(r: &Region, at: usize, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        let n = nix::sys::uio::pread(r.fd(), &mut buf, at as i64).expect("pread");
        assert_eq!(n, len);
        buf
    }

    fn fill(b: &BlobBytes, v: u8) {
        // SAFETY: test blobs in a private memfd, written by this test only.
        unsafe { b.as_mut_slice() }.fill(v);
    }

    #[test]
    fn sealed_blobs_reach_the_file_and_later_edits_do_not() {
        let page = page_size();
        let r = region(8 * page);
        // Two blobs sharing page 2, neither page aligned.
        let (a_off, a_len) = (page / 2, 2 * page);
        let (b_off, b_len) = (a_off + a_len, 3 * page);
        let a = BlobBytes::new(ObjectId(1), r.clone(), a_off as u64, a_len as u64).expect("a");
        let b = BlobBytes::new(ObjectId(2), r.clone(), b_off as u64, b_len as u64).expect("b");
        let mut pages = PrivatePages::default();
        fill(&a, 1);
        fill(&b, 2);
        pages.seal(&a).expect("seal a");
        assert_eq!(file_bytes(&r, a_off, a_len), vec![1; a_len]);
        fill(&a, 9); // an edit after the save
        assert_eq!(
            file_bytes(&r, a_off, a_len),
            vec![1; a_len],
            "stays private"
        );
        assert!(
            a.as_slice().iter().all(|x| *x == 9),
            "and visible to the array"
        );
        fill(&b, 3); // b written after the page it shares with a went private
        pages.seal(&b).expect("seal b");
        assert_eq!(
            file_bytes(&r, b_off, b_len),
            vec![3; b_len],
            "b's bytes in a's page reached the file"
        );
        assert_eq!(file_bytes(&r, a_off, a_len), vec![1; a_len]);
        // a freed: its inner page is shared again, the shared edge page stays private.
        pages.release(&a);
        let inner = a_off.div_ceil(page);
        assert!(!pages.pages_of(&r).contains(&inner));
        assert!(pages.pages_of(&r).contains(&((a_off + a_len) / page)));
        // SAFETY: inside the mapping, written by this test only.
        unsafe { *r.base().add(inner * page) = 42 };
        assert_eq!(file_bytes(&r, inner * page, 1), vec![42], "shared again");
    }
}
