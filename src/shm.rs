//! Shared memory: the memory files vineyardd passes over the socket, mapped
//! once per connection, and byte ranges inside them that keep their mapping
//! alive.
//!
//! A [`Region`] owns one mapping (and its fd). A [`BlobBytes`] is a range in a
//! region holding an `Arc<Region>`, so a zero-copy view handed to Python or
//! Arrow can outlive the connection that produced it. A [`PrivateBytes`] is
//! the same range mapped again, privately: writes to it copy the pages they
//! touch and never reach the memory file.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;

use crate::object::ObjectId;

mod detach;
pub mod loaded;
mod populate;
mod worker;

pub use detach::note_activity;
pub use populate::populate_ahead;

pub use loaded::{Loaded, MappingKind, RegionKey, Registration};

use populate::POPULATED_CHUNK;

/// One mapped memory file of vineyardd.
pub struct Region {
    map: MmapRaw,
    _fd: OwnedFd,
    key: RegionKey,
    /// One bit per `POPULATED_CHUNK`: set once `prefault` has faulted the
    /// whole chunk in through this mapping.
    populated: Vec<AtomicU64>,
}

impl Region {
    /// Maps `len` bytes of `fd` shared and writable.
    pub fn map(fd: OwnedFd, len: u64) -> std::io::Result<Region> {
        let len =
            usize::try_from(len).map_err(|_| std::io::Error::other("memory file too large"))?;
        // Mapping past the end of the file would turn reads into SIGBUS.
        let actual = nix::sys::stat::fstat(&fd)
            .map_err(std::io::Error::from)?
            .st_size;
        if (actual as u64) < len as u64 {
            return Err(std::io::Error::other(format!(
                "memory file has {actual} bytes, the server announced {len}"
            )));
        }
        let map = MmapOptions::new().len(len).map_raw(fd.as_raw_fd())?;
        no_recency(&map);
        let chunks = len.div_ceil(POPULATED_CHUNK);
        let populated = (0..chunks.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Ok(Region {
            map,
            _fd: fd,
            key: RegionKey::fresh(),
            populated,
        })
    }

    /// Maps `len` bytes at `offset` of this memory file again, privately
    /// and writable: reads see the file, and a write copies the page it
    /// touches into this process's memory, out of sight of the file and of
    /// every other mapping (copy-on-write is per mapping).
    ///
    /// The mapping covers the whole pages around the range; nothing is
    /// faulted in until it is read or written. It is `MAP_NORESERVE`: pages
    /// that are only read never count against the commit limit.
    pub fn map_private(&self, offset: usize, len: usize) -> std::io::Result<MmapRaw> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| std::io::Error::other("range overflows"))?;
        // Pages past the end of the file would turn reads into SIGBUS.
        let size = nix::sys::stat::fstat(&self._fd)
            .map_err(std::io::Error::from)?
            .st_size;
        if len == 0 || (size as u64) < end as u64 {
            return Err(std::io::Error::other(format!(
                "{len} bytes at offset {offset} do not lie in the memory file of {size} bytes"
            )));
        }
        // A load maps its blobs back to back: the background unmapper
        // waits for a pause rather than hold the address-space lock
        // against them.
        note_activity();
        // SAFETY: the range lies inside the file (checked above, and
        // vineyardd never shrinks its memory files). The mapping is private,
        // so nothing we write through it reaches the file; writes by others
        // to pages we have not copied show through, which is why callers
        // only map sealed blobs, whose bytes nobody changes while they exist.
        let map = unsafe {
            MmapOptions::new()
                .offset(offset as u64)
                .len(len)
                .no_reserve_swap()
                .map_copy(&self._fd)
        }?;
        let map = MmapRaw::from(map);
        no_recency(&map);
        Ok(map)
    }

    /// The memory file (for remapping parts of this mapping: `crate::alloc`).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self._fd.as_fd()
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for an empty mapping.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Base address of the mapping.
    pub fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// This mapping's key in the registry of loaded blobs.
    pub fn key(&self) -> RegionKey {
        self.key
    }
}

/// Advises the kernel that the accesses to `map` are random, which also
/// tells it to keep no recency for its pages: tearing down an entry then
/// skips moving the page up the LRU lists (`vma_has_recency`), the
/// costliest part of an unmap (~40% of the unmapper's samples, fighting
/// over the LRU lock with the other threads). vineyardd's memory has no
/// readahead to lose, and without swap nothing reclaims it anyway. An
/// error leaves the default.
fn no_recency(map: &MmapRaw) {
    let _ = map.advise(memmap2::Advice::Random);
}

/// The system's page size, looked up once.
pub fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    })
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Region({} bytes at {:p})", self.len(), self.base())
    }
}

/// The bytes of one blob, inside a mapping kept alive by this value.
#[derive(Clone, Debug)]
pub struct BlobBytes {
    id: ObjectId,
    region: Option<Arc<Region>>,
    offset: usize,
    len: usize,
}

impl BlobBytes {
    /// A range of a region; `None` if it does not lie inside the mapping.
    pub fn new(id: ObjectId, region: Arc<Region>, offset: u64, len: u64) -> Option<BlobBytes> {
        let offset = usize::try_from(offset).ok()?;
        let len = usize::try_from(len).ok()?;
        if offset.checked_add(len)? > region.len() {
            return None;
        }
        Some(BlobBytes {
            id,
            region: Some(region),
            offset,
            len,
        })
    }

    /// The empty blob (or any zero-length blob): no mapping at all.
    pub fn empty(id: ObjectId) -> BlobBytes {
        BlobBytes {
            id,
            region: None,
            offset: 0,
            len: 0,
        }
    }

    /// The blob id.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for zero-length blobs.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start address (dangling but aligned for empty blobs).
    pub fn as_ptr(&self) -> *const u8 {
        match &self.region {
            // SAFETY: `new` checked offset + len <= region length.
            Some(r) => unsafe { r.base().add(self.offset) },
            None => std::ptr::NonNull::<u64>::dangling().as_ptr() as *const u8,
        }
    }

    /// The bytes. Sealed blobs are immutable, so shared reads are sound.
    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the range lies inside the mapping (checked in `new`) and the
        // mapping lives as long as `self` holds its Arc.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// A mutable view, for filling a blob we created and have not sealed.
    ///
    /// # Safety
    /// The caller must be the only writer of this unsealed blob and no reader
    /// may look at the range until it is sealed.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: range checked in `new`; exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr() as *mut u8, self.len) }
    }

    /// The owning mapping (for liveness tracking).
    pub fn region(&self) -> Option<&Arc<Region>> {
        self.region.as_ref()
    }

    /// Records this range of the shared mapping in the registry of loaded
    /// blobs, as loaded for `owner`, for as long as the returned value
    /// lives (`None` for empty blobs). For bytes handed out read-only,
    /// which stay the blob's.
    pub fn register_shared(&self, owner: Option<ObjectId>) -> Option<Registration> {
        let region = self.region.as_ref()?;
        loaded::register(Loaded {
            blob: self.id,
            owner,
            region: region.key(),
            kind: MappingKind::Shared,
            start: self.as_ptr() as usize,
            len: self.len,
        })
    }

    /// The same bytes in a mapping of their own, copy-on-write: see
    /// [`Region::map_private`]. Each call maps anew, so two calls never see
    /// each other's writes. The mapping is in the registry of loaded blobs
    /// while it lives.
    pub fn map_private(&self) -> Result<PrivateBytes, crate::Error> {
        self.map_private_for(None)
    }

    /// [`BlobBytes::map_private`], registered as loaded for `owner` (the
    /// object a save that references the blob links to, see
    /// `crate::lease::SHARES_KEY`).
    pub fn map_private_for(&self, owner: Option<ObjectId>) -> Result<PrivateBytes, crate::Error> {
        let Some(region) = &self.region else {
            return Ok(PrivateBytes {
                _registration: None,
                map: None,
            });
        };
        let map = region
            .map_private(self.offset, self.len)
            .map_err(|source| crate::Error::Map {
                id: self.id,
                hint: if source.raw_os_error() == Some(Errno::ENOMEM as i32) {
                    " (each loaded array holds one mapping while it lives: the process may have \
                     reached vm.max_map_count, see `sysctl vm.max_map_count`)"
                } else {
                    ""
                },
                source,
            })?;
        let registration = loaded::register(Loaded {
            blob: self.id,
            owner,
            region: region.key(),
            kind: MappingKind::Private,
            start: map.as_mut_ptr() as usize,
            len: map.len(),
        });
        Ok(PrivateBytes {
            _registration: registration,
            map: Some(map),
        })
    }
}

/// A blob's bytes mapped privately and writable (copy-on-write): the pages a
/// write touches are copied into this process's memory; the memory file,
/// other mappings and other processes keep the original. The mapping does
/// not keep the blob allocated: whoever holds one must also keep the
/// blob's [`BlobBytes`] (or a lease on it) alive, so that vineyardd does not
/// reuse the pages not yet copied.
#[derive(Debug)]
pub struct PrivateBytes {
    /// Dropped first: the entry goes before the mapping does.
    _registration: Option<Registration>,
    map: Option<MmapRaw>,
}

impl Drop for PrivateBytes {
    fn drop(&mut self) {
        // Dropped loads are unmapped back to back too (see `note_activity`).
        if self.map.is_some() {
            note_activity();
        }
    }
}

impl PrivateBytes {
    /// Start address, writable (dangling but aligned for empty blobs).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        match &self.map {
            Some(m) => m.as_mut_ptr(),
            None => std::ptr::NonNull::<u64>::dangling().as_ptr() as *mut u8,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, MmapRaw::len)
    }

    /// True for zero-length blobs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Receives one fd sent with SCM_RIGHTS (1 data byte + 1 control message).
pub fn recv_fd(sock: &impl AsRawFd) -> std::io::Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::io::IoSliceMut;
    use std::os::fd::FromRawFd;

    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(std::io::Error::from)?,
        }
    };
    if msg.bytes == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "socket closed while waiting for an fd",
        ));
    }
    let mut fd = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed `raw` in our fd table for us;
                // nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
        }
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{memfd_create, MFdFlags};

    fn region(len: u64) -> Region {
        let fd = memfd_create(c"vineyard-kedro-test", MFdFlags::MFD_CLOEXEC).expect("memfd_create");
        nix::unistd::ftruncate(&fd, len as i64).expect("ftruncate");
        Region::map(fd, len).expect("map")
    }

    #[test]
    fn private_map_writes_stay_private() {
        let page = page_size();
        let r = Arc::new(region(4 * page as u64));
        // SAFETY: the mapping is 4 pages long and only this test uses it.
        unsafe { std::ptr::write_bytes(r.base(), 7, 4 * page) };
        // A blob straddling pages 1 and 2, not page aligned at either end.
        let (offset, len) = (page + 100, page);
        let blob =
            BlobBytes::new(ObjectId(1), r.clone(), offset as u64, len as u64).expect("in range");
        let first = blob.map_private().expect("private map");
        let second = blob.map_private().expect("private map");
        assert_eq!(first.len(), len);
        assert_ne!(first.as_mut_ptr(), second.as_mut_ptr());
        // SAFETY: `len` bytes at each pointer are mapped writable and only
        // this test uses them.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts_mut(first.as_mut_ptr(), len),
                std::slice::from_raw_parts_mut(second.as_mut_ptr(), len),
            )
        };
        assert!(
            a.iter().chain(b.iter()).all(|x| *x == 7),
            "reads see the file"
        );
        a[0] = 1;
        a[len - 1] = 2;
        assert_eq!(
            blob.as_slice()[0],
            7,
            "the shared mapping keeps the original"
        );
        assert_eq!(blob.as_slice()[len - 1], 7);
        assert_eq!(
            (b[0], b[len - 1]),
            (7, 7),
            "another private map keeps the original"
        );
        assert_eq!((a[0], a[len - 1]), (1, 2));
        // The bytes around the blob in the shared mapping are untouched too.
        // SAFETY: inside the 4-page mapping.
        assert_eq!(unsafe { *r.base().add(offset - 1) }, 7);
        drop(first);
        assert_eq!(b[0], 7);
    }

    #[test]
    fn private_map_checks_the_file_size() {
        let page = page_size();
        let r = region(2 * page as u64);
        assert!(r.map_private(page, page).is_ok());
        let err = r
            .map_private(page, page + 1)
            .expect_err("one byte past the end");
        assert!(
            err.to_string().contains("do not lie in the memory file"),
            "{err}"
        );
        assert!(r.map_private(usize::MAX, 2).is_err());
        assert!(r.map_private(0, 0).is_err());
        let empty = BlobBytes::empty(ObjectId(2))
            .map_private()
            .expect("no mapping needed");
        assert!(empty.is_empty());
    }
}
