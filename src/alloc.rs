//! Array memory from vineyard blobs: the allocation side of the NEP 49
//! handler (`python::allocator` plugs it into numpy).
//!
//! While a node runs, its thread has a *target*: the vineyardd of the run
//! and a size threshold. An allocation of at least the threshold becomes an
//! unsealed blob of that vineyardd, mapped writable in this process; every
//! other request (smaller, no target, the store full, the server gone) is
//! refused here and the caller uses the previous allocator instead.
//!
//! A blob lives exactly as long as the memory numpy asked for: `free` drops
//! it. The table entry holds the blob's mapping (`BlobBytes` keeps its
//! `Region` alive), so an array that outlives the run, its connection, or
//! even the embedded vineyardd stays readable and writable until numpy
//! frees it. After a `fork` the child inherits the parent's arrays and
//! entries: it never talks to the parent's connection, and a free of an
//! inherited blob only forgets it (the parent still owns the blob).
//!
//! A save of an array that is exactly one of these blobs stores the blob
//! itself ([`seal_for_put`]): its pages become private copy-on-write (see
//! `cow`), it is sealed through the allocator's connection, and that
//! connection's reference (a lease, see `crate::lease`) lasts as long as the
//! array: a delete of the stored object meanwhile only retires it. When the
//! array is freed, the reference is released and the object freed if it
//! was retired.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::client::Client;
use crate::connection::Timeouts;
use crate::object::ObjectId;
use crate::shm::BlobBytes;

mod cow;

/// Where this thread's large allocations go while a node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The run's vineyardd.
    pub socket: PathBuf,
    /// Smallest request served from a blob, in bytes.
    pub threshold: usize,
}

thread_local! {
    static TARGET: RefCell<Option<Target>> = const { RefCell::new(None) };
}

/// Sets this thread's target and returns the one it replaces (to restore).
pub fn set_target(target: Option<Target>) -> Option<Target> {
    TARGET.with(|t| std::mem::replace(&mut *t.borrow_mut(), target))
}

fn current_target() -> Option<Target> {
    TARGET.with(|t| t.borrow().clone())
}

/// One blob handed out as array memory.
struct Entry {
    bytes: BlobBytes,
    socket: PathBuf,
    /// The process that allocated it (a forked child inherits entries).
    pid: u32,
    /// Sealed for a save: `Some(owner)`, the stored object once the save
    /// completed (`None` inside: a save that failed after the seal).
    sealed: Option<Option<ObjectId>>,
}

/// Counters, for tests and the run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blobs currently handed out by this process.
    pub live_blobs: usize,
    /// Their bytes.
    pub live_bytes: usize,
    /// Blobs handed out since the process started.
    pub blob_allocs: u64,
    /// Requests above the threshold that went to the previous allocator
    /// (store full, server unreachable).
    pub fallbacks: u64,
    /// Blobs stored by a save as they were, without a copy.
    pub sealed: u64,
}

#[derive(Default)]
struct State {
    pid: u32,
    clients: HashMap<PathBuf, Client>,
    /// Sockets whose connection failed since the target was last set:
    /// not retried on every allocation.
    broken: Vec<PathBuf>,
    blobs: HashMap<usize, Entry>,
    private: cow::PrivatePages,
    stats: Stats,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Entries in the table: frees of heap memory skip the lock while it is 0.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Connection timeouts of the allocator: a hung server must not hang numpy
/// for long; the request then falls back to the heap.
const TIMEOUTS: Timeouts = Timeouts {
    connect: std::time::Duration::from_secs(2),
    read: Some(std::time::Duration::from_secs(30)),
    write: Some(std::time::Duration::from_secs(30)),
};

fn state() -> MutexGuard<'static, Option<State>> {
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    let st = guard.get_or_insert_with(|| State {
        pid,
        ..State::default()
    });
    if st.pid != pid {
        // A forked child: the connections are the parent's. Forget them
        // without closing or sending anything; keep the entries, whose
        // mappings the child's copies of the arrays still use.
        for (_, c) in st.clients.drain() {
            std::mem::forget(c);
        }
        st.broken.clear();
        st.pid = pid;
    }
    guard
}

/// Forgets that connections failed, so the next allocation tries again
/// (called when a node starts).
pub fn reset_broken() {
    if let Some(st) = state().as_mut() {
        st.broken.clear();
    }
}

/// A blob of `size` bytes for this thread's target, zeroed when `zeroed`,
/// or `None`: the caller must use the previous allocator.
pub fn alloc(size: usize, zeroed: bool) -> Option<NonNull<u8>> {
    let target = current_target()?;
    if size < target.threshold || size == 0 {
        return None;
    }
    crate::shm::note_activity();
    let mut guard = state();
    let st = guard.as_mut()?;
    if st.broken.contains(&target.socket) {
        st.stats.fallbacks += 1;
        return None;
    }
    if !st.clients.contains_key(&target.socket) {
        match Client::connect_with(&target.socket, TIMEOUTS) {
            Ok(c) => {
                st.clients.insert(target.socket.clone(), c);
            }
            Err(_) => {
                st.broken.push(target.socket.clone());
                st.stats.fallbacks += 1;
                return None;
            }
        }
    }
    let client = st.clients.get_mut(&target.socket)?;
    let bytes = match client.create_buffer(size as u64) {
        Ok(b) if b.len() == size && !b.is_empty() => b,
        Ok(b) => {
            let _ = client.drop_buffer(b.id());
            st.stats.fallbacks += 1;
            return None;
        }
        Err(e) => {
            if e.is_fatal_to_connection() {
                st.clients.remove(&target.socket);
                st.broken.push(target.socket.clone());
            }
            st.stats.fallbacks += 1;
            return None;
        }
    };
    let ptr = bytes.as_ptr() as *mut u8;
    if let Some(region) = bytes.region() {
        let offset = ptr as usize - region.base() as usize;
        region.prefault(offset, size);
        // vineyardd carves fresh blobs out of its memory file in order, so
        // a node that allocates one large array usually allocates the next
        // right after it: fault that in meanwhile, on another core.
        crate::shm::populate_ahead(region, offset + size, size);
    }
    if zeroed {
        // SAFETY: the blob is fresh, unsealed, `size` bytes long, and known
        // to nobody but this process until numpy gets the pointer.
        unsafe { std::ptr::write_bytes(ptr, 0, size) };
    }
    st.stats.blob_allocs += 1;
    st.stats.live_blobs += 1;
    st.stats.live_bytes += size;
    st.blobs.insert(
        ptr as usize,
        Entry {
            bytes,
            socket: target.socket,
            pid: st.pid,
            sealed: None,
        },
    );
    LIVE.fetch_add(1, Ordering::Release);
    NonNull::new(ptr)
}

/// The length of the blob at `ptr`, or `None` if `ptr` is not one of ours.
pub fn len_of(ptr: *const u8) -> Option<usize> {
    if LIVE.load(Ordering::Acquire) == 0 {
        return None;
    }
    let guard = state();
    guard
        .as_ref()?
        .blobs
        .get(&(ptr as usize))
        .map(|e| e.bytes.len())
}

/// Frees the blob at `ptr`; false if `ptr` is not one of ours (the caller
/// frees it with the previous allocator).
pub fn free(ptr: *const u8) -> bool {
    if LIVE.load(Ordering::Acquire) == 0 {
        return false;
    }
    let mut guard = state();
    let Some(st) = guard.as_mut() else {
        return false;
    };
    let Some(entry) = st.blobs.remove(&(ptr as usize)) else {
        return false;
    };
    LIVE.fetch_sub(1, Ordering::Release);
    crate::shm::note_activity();
    st.stats.live_blobs -= 1;
    st.stats.live_bytes -= entry.bytes.len();
    if entry.pid != st.pid {
        // Inherited through fork: the parent owns the blob.
        std::mem::forget(entry);
        return true;
    }
    if entry.sealed.is_some() {
        st.private.release(&entry.bytes);
    }
    if let Some(client) = st.clients.get_mut(&entry.socket) {
        let id = entry.bytes.id();
        let done = match entry.sealed {
            None => client.drop_buffer(id),
            // Stored: the object's lease ends, and the object goes if a
            // delete retired it meanwhile.
            Some(Some(owner)) => crate::lease::release(client, &[id], &[owner]).map(drop),
            // Sealed for a save that failed: nobody else knows the blob.
            Some(None) => client
                .release(id)
                .and_then(|()| client.del_data(&[id], true, false)),
        };
        if let Err(e) = done {
            if e.is_fatal_to_connection() {
                st.clients.remove(&entry.socket);
            }
        }
    }
    // Without a connection (the server stopped) there is nothing to tell:
    // unmapping is all that is left, when the last entry of the region goes.
    drop(entry);
    true
}

/// For a save to `socket`: if the `len` bytes at `ptr` are exactly a live,
/// unsealed blob of ours on that vineyardd, makes them the stored bytes
/// (pages private copy-on-write, then sealed by the allocator's connection)
/// and returns the blob's id; otherwise `None`, and the save copies.
/// The caller reports the stored object with [`stored_in`] (or nothing, if
/// its save fails).
pub fn seal_for_put(ptr: *const u8, len: usize, socket: &Path) -> Option<ObjectId> {
    if LIVE.load(Ordering::Acquire) == 0 || len == 0 {
        return None;
    }
    let mut guard = state();
    let st = guard.as_mut()?;
    let pid = st.pid;
    let entry = st.blobs.get_mut(&(ptr as usize))?;
    if entry.bytes.len() != len
        || entry.pid != pid
        || entry.sealed.is_some()
        || entry.socket != socket
    {
        return None;
    }
    let client = st.clients.get_mut(&entry.socket)?;
    crate::shm::note_activity();
    // Private first: an edit from now on stays in this process. If this
    // fails the blob stays unsealed and the save copies from the array.
    st.private.seal(&entry.bytes).ok()?;
    let id = entry.bytes.id();
    match client.seal(id) {
        Ok(()) => {
            entry.sealed = Some(None);
            st.stats.sealed += 1;
            Some(id)
        }
        Err(e) => {
            if e.is_fatal_to_connection() {
                st.clients.remove(socket);
            }
            None
        }
    }
}

/// The save that sealed `blobs` (with [`seal_for_put`]) stored them in `owner`.
pub fn stored_in(blobs: &[ObjectId], owner: ObjectId) {
    if blobs.is_empty() {
        return;
    }
    let mut guard = state();
    let Some(st) = guard.as_mut() else {
        return;
    };
    for e in st.blobs.values_mut() {
        if e.sealed == Some(None) && blobs.contains(&e.bytes.id()) {
            e.sealed = Some(Some(owner));
        }
    }
}

/// Closes the connection to `socket` if no blob of it is live (the end of
/// a run); with live blobs (arrays that escaped the run) it stays open
/// until they are freed, so that their frees reach vineyardd.
pub fn release_idle(socket: &Path) {
    let mut guard = state();
    let Some(st) = guard.as_mut() else {
        return;
    };
    st.broken.retain(|s| s != socket);
    if !st.blobs.values().any(|e| e.socket == socket) {
        st.clients.remove(socket);
    }
}

/// The counters of this process.
pub fn stats() -> Stats {
    state().as_ref().map(|s| s.stats).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_target_nothing_is_allocated() {
        assert_eq!(set_target(None), None);
        assert!(alloc(64 << 20, false).is_none());
        let local = 0u8;
        assert!(!free(&local));
        assert_eq!(len_of(&local), None);
    }

    #[test]
    fn below_the_threshold_nothing_is_allocated() {
        let previous = set_target(Some(Target {
            socket: "/nonexistent/vineyard.sock".into(),
            threshold: 1 << 20,
        }));
        let before = stats().fallbacks;
        assert!(alloc((1 << 20) - 1, false).is_none());
        assert_eq!(
            stats().fallbacks,
            before,
            "small requests are not fallbacks"
        );
        // An unreachable server falls back (and counts).
        assert!(alloc(1 << 20, false).is_none());
        assert!(stats().fallbacks > before);
        release_idle(Path::new("/nonexistent/vineyard.sock"));
        set_target(previous);
    }
}
