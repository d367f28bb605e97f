//! Lifetimes of what a `Client` loaded and deleted (`crate::lease` on the
//! binding's side): the views a load hands out hold this connection's
//! references (the leases); when the last view of a blob goes its reference
//! is released, without waiting, and the objects retired meanwhile that
//! nobody maps any more are freed; deletes retire what any process maps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::client::Lease;
use crate::{Client, Error, ObjectId};

/// What a client holds, behind its mutex.
pub(super) struct State {
    pub(super) client: Option<Client>,
    pub(super) pid: u32,
    /// Views of mapped blobs, by blob id.
    pub(super) live: HashMap<ObjectId, Weak<Lease>>,
    /// Blobs this connection holds a reference to (a lease), with the
    /// objects each was loaded for (several when objects share the blob).
    pub(super) held: HashMap<ObjectId, Vec<ObjectId>>,
    /// Objects this client retired and has not seen freed yet.
    pub(super) retired: Vec<ObjectId>,
    /// Names in a run's private namespace that this process saved, with the
    /// object each points to (see `PyClient::put`'s `private`).
    pub(super) own_names: HashMap<String, ObjectId>,
}

impl State {
    /// The connection is gone: so are its references, and what they held.
    pub(super) fn forget_connection(&mut self) {
        self.client = None;
        self.held.clear();
        self.own_names.clear();
    }
}

/// Blobs whose last view went, waiting for their `release`, and the state
/// of the client that holds their references.
pub(super) struct Released {
    pub(super) blobs: Mutex<Vec<ObjectId>>,
    pub(super) state: Weak<Mutex<State>>,
    /// A `finish_later` thread is waiting.
    pub(super) finishing: AtomicBool,
}

/// How long the answers to releases may wait for a request of the process
/// before a thread of ours reads them (and frees what they show unused).
const FINISH_DELAY: Duration = Duration::from_millis(20);

/// Reads the answers to the releases just sent once `FINISH_DELAY` has
/// passed, unless the process talks to the server first (then its next
/// request does). Drops happen on the hot path: sending costs no wait, and
/// a process that goes idle still frees what it was the last to view.
fn finish_later(released: &Arc<Released>) {
    if released.finishing.swap(true, Ordering::AcqRel) {
        return;
    }
    let waiting = released.clone();
    let spawned = std::thread::Builder::new()
        .name("vineyard-release".into())
        .spawn(move || {
            std::thread::sleep(FINISH_DELAY);
            waiting.finishing.store(false, Ordering::Release);
            if let Some(state) = waiting.state.upgrade() {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                if st.pid == std::process::id() {
                    finish_releases(&mut st);
                }
            }
        });
    if spawned.is_err() {
        // No thread: the next request of the process reads the answers.
        released.finishing.store(false, Ordering::Release);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let id = self.bytes.id();
        if id == ObjectId::EMPTY_BLOB {
            return;
        }
        let mut q = self
            .released
            .blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        q.push(id);
        drop(q);
        // Release now unless a request of this client is under way (it
        // releases when it ends): never wait for the lock here, the last
        // view may go while a thread of ours holds it.
        if let Some(state) = self.released.state.upgrade() {
            if let Ok(mut st) = state.try_lock() {
                if st.pid == std::process::id() {
                    release_dropped(&mut st, &self.released);
                    if st.client.as_ref().is_some_and(Client::has_unanswered) {
                        finish_later(&self.released);
                    }
                }
            }
        }
    }
}

pub(super) fn client(st: &mut State) -> crate::Result<&mut Client> {
    st.client
        .as_mut()
        .ok_or_else(|| Error::Internal("not connected".into()))
}

/// Releases the blobs whose last view went (unless a newer load views them
/// again). The `release`s are only sent: letting go costs no wait, and the
/// server ends the leases as it reads them. `finish_releases` later frees
/// the objects they were loaded for if those were retired meanwhile.
pub(super) fn release_dropped(st: &mut State, released: &Released) {
    let dropped = std::mem::take(&mut *released.blobs.lock().unwrap_or_else(|p| p.into_inner()));
    if dropped.is_empty() {
        return;
    }
    let mut blobs = Vec::with_capacity(dropped.len());
    let mut owners = Vec::new();
    for b in dropped {
        if st.live.get(&b).is_some_and(|w| w.strong_count() > 0) {
            continue;
        }
        st.live.remove(&b);
        if let Some(of) = st.held.remove(&b) {
            blobs.push(b);
            owners.extend(of);
        }
    }
    owners.sort_unstable();
    owners.dedup();
    release_blobs(st, &blobs, &owners);
}

/// Sends `lease::release_unanswered` on the client's connection.
pub(super) fn release_blobs(st: &mut State, blobs: &[ObjectId], owners: &[ObjectId]) {
    if blobs.is_empty() && owners.is_empty() {
        return;
    }
    let Some(c) = st.client.as_mut() else {
        return;
    };
    if let Err(e) = crate::lease::release_unanswered(c, blobs, owners) {
        if e.is_fatal_to_connection() {
            st.forget_connection();
        }
    }
}

/// Reads the answers to the releases sent so far and frees the retired
/// objects they show unused. A failure only delays a free (to the next
/// release, delete or gc).
pub(super) fn finish_releases(st: &mut State) {
    let Some(c) = st.client.as_mut() else {
        return;
    };
    match crate::lease::finish_releases(c) {
        Ok(done) => st.retired.retain(|id| !done.freed.contains(id)),
        Err(e) if e.is_fatal_to_connection() => st.forget_connection(),
        Err(_) => {}
    }
}

/// Deletes `ids` and their migrated copies, retiring those some process
/// (this one included) still maps. Returns how many were retired.
pub(super) fn delete_ids(st: &mut State, ids: &[ObjectId], force: bool) -> crate::Result<usize> {
    let done = crate::lease::delete(client(st)?, ids, force)?;
    note_retired(st, &done);
    Ok(done.retired.len())
}

pub(super) fn note_retired(st: &mut State, done: &crate::lease::Outcome) {
    st.retired.retain(|id| !done.freed.contains(id));
    for id in &done.retired {
        if !st.retired.contains(id) {
            st.retired.push(*id);
        }
    }
}

/// Frees the objects this client retired that nobody maps any more, and
/// forgets those freed elsewhere.
pub(super) fn free_retired(st: &mut State) -> crate::Result<()> {
    if st.retired.is_empty() {
        return Ok(());
    }
    let ids = st.retired.clone();
    let c = client(st)?;
    let done = crate::lease::free_retired(c, &ids)?;
    st.retired = done.retired;
    Ok(())
}
