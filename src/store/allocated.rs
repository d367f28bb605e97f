//! Sources that are exactly a blob the NEP 49 allocator (`crate::alloc`)
//! handed out to an array of this process: stored as they are, sealed in
//! place, instead of copied.

use super::source::RawSource;
use crate::client::Client;
use crate::object::ObjectId;

/// The blob `s` is, sealed for this put, or `None` (copy it).
pub(super) fn seal_in_place(client: &Client, s: &RawSource) -> Option<ObjectId> {
    match *s {
        RawSource::Contiguous { ptr, len } => crate::alloc::seal_for_put(ptr, len, client.socket()),
        RawSource::Strided { .. } => None,
    }
}

/// The put completed: `owner` holds the blobs sealed in place.
pub(super) fn stored(sealed: &[ObjectId], owner: ObjectId) {
    crate::alloc::stored_in(sealed, owner);
}
