//! Sources that are already in the store: a buffer that is exactly a blob
//! this process loaded from the same vineyardd, unchanged since, is saved
//! as a reference to that blob instead of a copy.
//!
//! vineyardd counts the objects that reference a blob and frees it only
//! when the last one is deleted, so the new object keeps the blob alive
//! after the object it was loaded from goes.

use super::source::RawSource;
use crate::client::Client;
use crate::shm::{loaded, Loaded, MappingKind};

/// The loaded blob `source` can refer to instead of being copied, if any.
///
/// It must be a loaded blob's whole mapping (a part of a blob is copied),
/// loaded through this connection (a blob of another instance, of a
/// vineyardd since restarted, or of a connection since broken, whose
/// leases went with it, is copied), and
/// unchanged: a shared mapping always is; a private copy-on-write one is
/// if no page of it was written (`crate::pagemap`). The mapping is alive
/// while registered, and the connection that loaded it holds the blob's
/// lease while it is mapped, so the blob exists at least until the
/// caller's sources are released.
pub fn loaded_blob(client: &Client, source: &RawSource) -> Option<Loaded> {
    let (start, len) = match *source {
        RawSource::Contiguous { ptr, len } => (ptr as usize, len),
        RawSource::Strided {
            ptr,
            itemsize,
            count,
            stride,
        } if stride > 0 && stride as usize == itemsize => (ptr as usize, itemsize * count),
        RawSource::Strided { .. } => return None,
    };
    let found = loaded::lookup(start, len)?;
    if !client.owns_region(found.region) {
        return None;
    }
    let unchanged = match found.kind {
        MappingKind::Shared => true,
        MappingKind::Private => crate::pagemap::unchanged(start, len),
    };
    unchanged.then_some(found)
}
