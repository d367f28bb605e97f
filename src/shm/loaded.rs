//! The process-wide registry of loaded blobs that are mapped right now: the
//! address range each occupies, the blob and the memory file it came from.
//!
//! A put asks it whether a source is exactly a blob this process loaded
//! (`store::put` then references the blob instead of copying it). Entries
//! live exactly as long as their mapping: a [`Registration`] is held next
//! to the mapping and removes the entry when dropped, before the unmap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::object::ObjectId;

/// Which mapping of a memory file a blob was loaded through: a number
/// given to each [`crate::shm::Region`] when it is mapped, never reused in
/// the process. A region belongs to one connection, and that connection's
/// references are the leases that keep the blobs loaded through it
/// allocated: a save references a blob only through the connection that
/// holds it (not after that connection broke and a new one was made, nor
/// through another vineyardd).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionKey(pub u64);

static NEXT_REGION: AtomicU64 = AtomicU64::new(1);

impl RegionKey {
    /// A key no region of this process had before.
    pub fn fresh() -> RegionKey {
        RegionKey(NEXT_REGION.fetch_add(1, Ordering::Relaxed))
    }
}

/// How a loaded blob is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingKind {
    /// The server's shared mapping, read only by what we hand out (Arrow
    /// buffers, read-only views): it always shows the blob as sealed.
    Shared,
    /// A private copy-on-write mapping of the blob: pages written since
    /// the load are no longer the blob's (see `crate::pagemap`).
    Private,
}

/// A loaded blob's mapping, as registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub blob: ObjectId,
    /// The object the blob was loaded for, when the loader said.
    pub owner: Option<ObjectId>,
    pub region: RegionKey,
    pub kind: MappingKind,
    pub start: usize,
    pub len: usize,
}

/// Entries by (start address, registration number): two mappings of one
/// range never coexist, but a new one may be registered at an address
/// whose previous registration is not dropped yet.
struct Registry {
    entries: BTreeMap<(usize, u64), Loaded>,
    /// The process the entries belong to: a forked child inherits the
    /// parent's entries but not the leases that keep their blobs alive.
    pid: u32,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: BTreeMap::new(),
    pid: 0,
});
static NEXT: AtomicU64 = AtomicU64::new(1);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    let mut r = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if r.pid != pid {
        r.entries.clear();
        r.pid = pid;
    }
    r
}

/// Keeps one entry in the registry; removes it when dropped.
#[derive(Debug)]
pub struct Registration {
    key: (usize, u64),
    pid: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut r = registry();
        if r.pid == self.pid {
            r.entries.remove(&self.key);
        }
    }
}

/// Records a mapping of `blob` (empty ranges are not recorded).
pub fn register(loaded: Loaded) -> Option<Registration> {
    if loaded.len == 0 {
        return None;
    }
    let key = (loaded.start, NEXT.fetch_add(1, Ordering::Relaxed));
    let mut r = registry();
    r.entries.insert(key, loaded);
    Some(Registration { key, pid: r.pid })
}

/// The loaded blob whose mapping is exactly `len` bytes at `start`, if any.
pub fn lookup(start: usize, len: usize) -> Option<Loaded> {
    if len == 0 {
        return None;
    }
    let r = registry();
    r.entries
        .range((start, 0)..=(start, u64::MAX))
        .map(|(_, l)| *l)
        .find(|l| l.len == len)
}

/// The loaded blob whose mapping holds address `addr`.
pub fn lookup_containing(addr: usize) -> Option<Loaded> {
    let r = registry();
    r.entries
        .range(..=(addr, u64::MAX))
        .map(|(_, l)| *l)
        .next_back()
        .filter(|l| addr < l.start + l.len)
}

/// Number of registered mappings (for tests and diagnostics).
pub fn count() -> usize {
    registry().entries.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(start: usize, len: usize, blob: u64) -> Loaded {
        Loaded {
            blob: ObjectId(blob),
            owner: None,
            region: RegionKey(u64::MAX),
            kind: MappingKind::Private,
            start,
            len,
        }
    }

    #[test]
    fn lookup_needs_the_exact_range_and_ends_with_the_registration() {
        // Addresses no real mapping of this test process uses.
        let base = usize::MAX - (1 << 20);
        let a = register(loaded(base, 4096, 7)).expect("registered");
        let b = register(loaded(base, 100, 8)).expect("registered");
        assert_eq!(lookup(base, 4096).map(|l| l.blob), Some(ObjectId(7)));
        assert_eq!(lookup(base, 100).map(|l| l.blob), Some(ObjectId(8)));
        assert_eq!(lookup(base, 4095), None, "a part is not the blob");
        assert_eq!(lookup(base + 1, 100), None);
        drop(a);
        assert_eq!(lookup(base, 4096), None);
        assert_eq!(lookup(base, 100).map(|l| l.blob), Some(ObjectId(8)));
        drop(b);
        assert_eq!(lookup(base, 100), None);
        assert!(register(loaded(base, 0, 9)).is_none());
    }
}
