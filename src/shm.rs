//! Shared memory: the memory files vineyardd passes over the socket, mapped
//! once per connection, and byte ranges inside them that keep their mapping
//! alive.
//!
//! A [`Region`] owns one mapping (and its fd). A [`BlobBytes`] is a range in a
//! region holding an `Arc<Region>`, so a zero-copy view handed to Python or
//! Arrow can outlive the connection that produced it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::object::ObjectId;

/// One mapped memory file of vineyardd.
pub struct Region {
    map: MmapRaw,
    _fd: OwnedFd,
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
        Ok(Region { map, _fd: fd })
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
