//! Lifetimes across processes: an object is freed only once no process on
//! its instance maps it any more.
//!
//! vineyardd 0.24.2 frees an object's blobs the moment the object is deleted,
//! whoever still maps them. It does track who maps what: every connection
//! holds one reference to each blob it sealed or mapped (`get_buffers`),
//! until it sends `release` or closes, and a process that dies (SIGKILL
//! included) closes its connection. `is_in_use` tells whether any live
//! connection holds a blob. That reference is our lease: it is recorded by
//! vineyardd itself, by the request that maps the blob, and it dies with its
//! holder, whatever host, pid namespace or client library the holder has.
//!
//! The protocol (every party runs its steps in this order):
//! * **Writers** drop their seal references once the object is named
//!   (`store::put`), so afterwards only readers hold references.
//! * **Readers** map the blobs (`get_buffers`: the lease is taken), then
//!   [`confirm`] that the object still exists and is not retired (in the
//!   same wait: `store::get_confirmed`); if it is gone or retired they drop
//!   what they mapped and do not use it. When the last view of a blob goes,
//!   they `release` it and, through [`release`] (or its two halves, which
//!   cost no wait), free the objects of those blobs that are retired and no
//!   longer mapped.
//! * **Deleters** ([`delete`], [`delete_namespace`], `gc`) first *retire* the
//!   object (label it [`RETIRED_LABEL`]), then ask `is_in_use` for each of
//!   its local blobs; only an object none of whose blobs is in use is
//!   deleted. A retired object stays until a later [`release`] or [`sweep`]
//!   finds it unused.
//!
//! vineyardd answers a connection's requests in order and applies metadata
//! changes one at a time, so for a reader R and a deleter D either R's
//! mapping comes before D's `is_in_use` (D sees the lease and only retires),
//! or D's label comes before R's confirm (R sees the retirement, or the
//! object gone, and never hands its mapping out). A freed object was
//! retired first, so a reader that maps it between D's check and D's delete
//! finds it retired or gone when it confirms.
//!
//! Labels go with the object when it is deleted, so nothing is left to clean
//! up after a free, and retiring costs one small metadata write. Objects
//! whose save failed after they were persisted (the writer died or lost its
//! connection before naming them) carry [`SAVED_AS_KEY`] but no name:
//! [`abandoned`] finds them for `gc --orphans`.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::client::{release_msgs, Client};
use crate::error::Result;
use crate::object::{ObjectId, ObjectMeta};
use crate::protocol::blobs::{IsInUse, IsInUseReply};
use crate::protocol::lifecycle::{Exists, ExistsReply, Label};
use crate::protocol::metadata::{DataReply, GetData};
use crate::protocol::names::DropName;
use crate::protocol::{Encoded, Message};

/// Typenames `sweep` and `abandoned` list (a full-match regex): vineyard's
/// layouts and ours, which is everything this package stores or deletes.
/// Listing every object would expand objects of any other typename, and
/// vineyardd 0.24.2 crashes expanding an object that is its own member, or
/// takes minutes on very deep trees (`gc --orphans` lists its blobs without
/// expanding anything: see `cli::store::orphan_blobs`).
const OUR_TYPENAMES: &str = "vineyard(_kedro)?::.*";

/// The label a deleter puts on an object it could not free yet.
pub const RETIRED_LABEL: &str = "vineyard_kedro.retired";

/// The root field of every named object we store: the name it was saved as.
pub const SAVED_AS_KEY: &str = "vineyard_kedro_saved_as_";

/// The root field of an object that references blobs it did not create:
/// the objects they were loaded for (`store::put`). Each of those carries
/// the label [`SHARED_BY_LABEL`]`<id>` back. A blob two objects share may
/// be mapped through either one; whoever lets go of it last looks at both
/// (see [`finish_releases`]), so an object retired while the blob was
/// mapped through the other one is still freed when it becomes unused.
pub const SHARES_KEY: &str = "vineyard_kedro_shares_";

/// Label prefix: `vineyard_kedro.shared_by.<id>` on an object whose blobs
/// object `<id>` references.
pub const SHARED_BY_LABEL: &str = "vineyard_kedro.shared_by.";

/// What a delete did with each object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Deleted (their blobs freed).
    pub freed: Vec<ObjectId>,
    /// Retired: a live connection still maps some of their blobs.
    pub retired: Vec<ObjectId>,
}

impl Outcome {
    fn extend(&mut self, other: Outcome) {
        self.freed.extend(other.freed);
        self.retired.extend(other.retired);
    }
}

/// True when a deleter retired the object.
pub fn is_retired(meta: &ObjectMeta) -> bool {
    match meta.get("__labels") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .ok()
            .is_some_and(|v| v.get(RETIRED_LABEL).is_some()),
        Some(Value::Object(m)) => m.contains_key(RETIRED_LABEL),
        _ => false,
    }
}

/// The objects that share blobs with this one, by [`SHARES_KEY`] and
/// [`SHARED_BY_LABEL`].
pub fn linked(meta: &ObjectMeta) -> Vec<ObjectId> {
    let mut out: Vec<ObjectId> = match meta.get(SHARES_KEY) {
        Some(Value::Array(ids)) => ids.iter().filter_map(ObjectId::from_json).collect(),
        _ => Vec::new(),
    };
    let labels = match meta.get("__labels") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    };
    if let Some(Value::Object(m)) = labels {
        out.extend(
            m.keys()
                .filter_map(|k| k.strip_prefix(SHARED_BY_LABEL))
                .filter_map(ObjectId::parse),
        );
    }
    out
}

/// Labels each of `owners` (objects whose blobs `id` references) with the
/// link back to `id`. Best effort: an owner deleted meanwhile needs none,
/// and a missing label only leaves a retired owner to the deleter's
/// process or `gc`.
pub fn link_shared(client: &mut Client, id: ObjectId, owners: &[ObjectId]) {
    let key = format!("{SHARED_BY_LABEL}{id}");
    let keys = [key.as_str()];
    let Ok(msgs) = owners
        .iter()
        .map(|o| {
            Encoded::new(&Label {
                id: *o,
                keys: &keys,
                values: &["1"],
            })
        })
        .collect::<Result<Vec<_>>>()
    else {
        return;
    };
    if !msgs.is_empty() {
        let _ = client.call_many(&msgs);
    }
}

/// The blobs of the object that live on the client's instance (those a
/// connection of ours can map, and the only ones `is_in_use` knows).
fn local_blobs(client: &Client, id: ObjectId, meta: &ObjectMeta) -> Vec<ObjectId> {
    let me = client.instance_id();
    let mut out: Vec<ObjectId> = meta
        .blobs_with_instance()
        .into_iter()
        .filter(|(b, i)| *b != ObjectId::EMPTY_BLOB && i.is_none_or(|i| i == me))
        .map(|(b, _)| b)
        .collect();
    if id.is_blob() && id != ObjectId::EMPTY_BLOB {
        out.push(id);
    }
    out
}

/// Retires the objects (those not yet retired), then deletes the ones no
/// live connection maps. Objects are `(id, tree)`.
pub fn retire_and_free(
    client: &mut Client,
    objects: &[(ObjectId, ObjectMeta)],
    force: bool,
) -> Result<Outcome> {
    if objects.is_empty() {
        return Ok(Outcome::default());
    }
    // One wait: the labels first, then every `is_in_use` (in this order on
    // the server: the retirement is visible before we look).
    let mut msgs: Vec<Encoded> = Vec::new();
    for (id, meta) in objects {
        if !id.is_blob() && !is_retired(meta) {
            msgs.push(Encoded::new(&Label {
                id: *id,
                keys: &[RETIRED_LABEL],
                values: &["1"],
            })?);
        }
    }
    let labels = msgs.len();
    let blobs: Vec<Vec<ObjectId>> = objects
        .iter()
        .map(|(id, m)| local_blobs(client, *id, m))
        .collect();
    for b in blobs.iter().flatten() {
        msgs.push(Encoded::new(&IsInUse { id: *b })?);
    }
    let replies = client.call_many(&msgs)?;
    // A label that failed means the object is gone already: nothing to do.
    // A blob the server does not know is not in use; a reply we cannot read
    // counts as in use (retiring is always safe).
    let mut in_use = replies
        .into_iter()
        .skip(labels)
        .map(|r| r.map(|m| in_use_reply(client, m)).unwrap_or(false));
    let mut out = Outcome::default();
    for ((id, _), bs) in objects.iter().zip(&blobs) {
        let used = bs
            .iter()
            .fold(false, |acc, _| in_use.next().unwrap_or(true) || acc);
        if used {
            out.retired.push(*id);
        } else {
            out.freed.push(*id);
        }
    }
    client.del_data(&out.freed, force, true)?;
    Ok(out)
}

/// Whether an `is_in_use` reply says the blob is in use; true when it
/// cannot be read.
fn in_use_reply(client: &Client, reply: Map<String, Value>) -> bool {
    client
        .read::<IsInUseReply>(reply, IsInUse::TYPE)
        .map_or(true, |r| r.is_in_use)
}

/// Deletes `ids` (deep) and, in a cluster, the copies migration made of
/// them, retiring instead those some live connection still maps. Ids that
/// do not exist are skipped.
pub fn delete(client: &mut Client, ids: &[ObjectId], force: bool) -> Result<Outcome> {
    let metas: Vec<(ObjectId, ObjectMeta)> = crate::migrate::with_copies_meta(client, ids)?
        .into_iter()
        .filter_map(|(id, m)| m.map(|m| (id, m)))
        .collect();
    retire_and_free(client, &metas, force)
}

/// Frees those of `ids` that are retired and no longer mapped by anyone.
/// Returns what it freed and what stays retired; ids that are gone or not
/// retired are in neither list.
pub fn free_retired(client: &mut Client, ids: &[ObjectId]) -> Result<Outcome> {
    if ids.is_empty() {
        return Ok(Outcome::default());
    }
    let metas = client.get_data(ids, false, false)?;
    let retired: Vec<(ObjectId, ObjectMeta)> =
        metas.into_iter().filter(|(_, m)| is_retired(m)).collect();
    retire_and_free(client, &retired, false)
}

/// Drops this connection's references to `blobs` (the process no longer
/// views them), then frees those of `owners` (the objects they were loaded
/// from) that are retired and mapped by no one.
pub fn release(client: &mut Client, blobs: &[ObjectId], owners: &[ObjectId]) -> Result<Outcome> {
    release_unanswered(client, blobs, owners)?;
    finish_releases(client)
}

/// [`release`] in two halves, so that letting go costs no wait: this one
/// sends the `release`s (the leases end as the server reads them) and asks
/// for the owners' trees; [`finish_releases`] reads the answers, whenever
/// the caller next talks to the server, and frees the retired owners.
pub fn release_unanswered(
    client: &mut Client,
    blobs: &[ObjectId],
    owners: &[ObjectId],
) -> Result<()> {
    let mut msgs = release_msgs(blobs)?;
    if !owners.is_empty() {
        msgs.push(Encoded::new(&GetData {
            id: owners,
            sync_remote: false,
            wait: false,
        })?);
    }
    client.send_unanswered(&msgs)
}

/// The second half of [`release`]: frees what the owners' trees show
/// retired (and no one maps any more).
pub fn finish_releases(client: &mut Client) -> Result<Outcome> {
    let mut retired: Vec<(ObjectId, ObjectMeta)> = Vec::new();
    let mut links: Vec<ObjectId> = Vec::new();
    // Release errors (a blob this connection did not hold) change nothing.
    for (request, reply) in client.take_answered()? {
        let (GetData::TYPE, Ok(reply)) = (request, reply) else {
            continue;
        };
        for (id, m) in client.read::<DataReply>(reply, request)?.trees() {
            links.extend(linked(&m));
            if is_retired(&m) {
                retired.push((id, m));
            }
        }
    }
    // Objects sharing the released blobs may have been retired while they
    // were mapped through these owners: look at them too.
    links.sort_unstable();
    links.dedup();
    links.retain(|l| !retired.iter().any(|(id, _)| id == l));
    // Best effort: a failure here leaves them to their deleter or `gc`,
    // and must not keep the owners above from being freed.
    if let (false, Ok(found)) = (links.is_empty(), client.get_data(&links, false, false)) {
        retired.extend(found.into_iter().filter(|(_, m)| is_retired(m)));
    }
    retired.sort_unstable_by_key(|(id, _)| *id);
    retired.dedup_by_key(|(id, _)| *id);
    retire_and_free(client, &retired, false)
}

/// After mapping an object's blobs: true when the object still exists and
/// is not retired, so the mapping may be used (see the module docs).
/// `store::get_confirmed` sends the same request in the mapping's wait.
pub fn confirm(client: &mut Client, id: ObjectId) -> Result<bool> {
    let reply = client.call(&confirm_request(id)?);
    confirmed(client, id, reply?)
}

/// The request [`confirm`] sends: `exists` for a bare blob, else the tree
/// (whose labels say whether it was retired).
pub(crate) fn confirm_request(id: ObjectId) -> Result<Encoded> {
    if id.is_blob() {
        Encoded::new(&Exists { id })
    } else {
        Encoded::new(&GetData {
            id: &[id],
            sync_remote: false,
            wait: false,
        })
    }
}

/// Reads the reply of [`confirm_request`].
pub(crate) fn confirmed(client: &Client, id: ObjectId, reply: Map<String, Value>) -> Result<bool> {
    if id.is_blob() {
        // A reply we cannot read does not confirm anything.
        return Ok(client
            .read::<ExistsReply>(reply, Exists::TYPE)
            .is_ok_and(|r| r.exists));
    }
    Ok(client
        .read::<DataReply>(reply, GetData::TYPE)?
        .trees()
        .get(&id)
        .is_some_and(|m| !is_retired(m)))
}

/// Upper bound of a listing (vineyardd wants one).
const LIST_LIMIT: usize = 1 << 30;

/// Frees every retired object of the instance that nobody maps any more
/// (the holders died or let go without freeing it). Lists the store: for
/// `gc`, not for the save and load path.
pub fn sweep(client: &mut Client) -> Result<Outcome> {
    let retired: Vec<(ObjectId, ObjectMeta)> = client
        .list_data(OUR_TYPENAMES, true, LIST_LIMIT)?
        .into_iter()
        .filter(|(id, m)| !id.is_blob() && is_retired(m))
        .collect();
    retire_and_free(client, &retired, false)
}

/// Objects whose save failed after they were created: a root carrying
/// [`SAVED_AS_KEY`] that no name points to (nor to an object of the same
/// signature: a migrated copy's original), that is not retired, and none of
/// whose blobs a live connection holds. Lists the store twice.
///
/// A save under way holds its seal references until the request that names
/// the object, and releases them right after it, so an object that is not
/// in use either failed or was named by then: the second listing of names,
/// after the `is_in_use` check, tells which.
pub fn abandoned(client: &mut Client) -> Result<Vec<(ObjectId, ObjectMeta)>> {
    let names = |client: &mut Client| -> Result<HashSet<ObjectId>> {
        Ok(client
            .list_names("*", false, LIST_LIMIT)?
            .into_iter()
            .map(|(_, id)| id)
            .collect())
    };
    let named = names(client)?;
    let listed = client.list_data(OUR_TYPENAMES, true, LIST_LIMIT)?;
    // In a cluster, a migrated copy carries its original's fields (the
    // saved-as one too) and signature, and no name of its own: while its
    // original is named, it is no failed save.
    let named_signatures: HashSet<u64> = listed
        .iter()
        .filter(|(id, _)| named.contains(id))
        .filter_map(|(_, m)| m.get_u64("signature"))
        .collect();
    let candidates: Vec<(ObjectId, ObjectMeta)> = listed
        .into_iter()
        .filter(|(id, m)| {
            !id.is_blob()
                && m.get(SAVED_AS_KEY).is_some()
                && !named.contains(id)
                && !is_retired(m)
                && !m
                    .get_u64("signature")
                    .is_some_and(|s| named_signatures.contains(&s))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let blobs: Vec<Vec<ObjectId>> = candidates
        .iter()
        .map(|(id, m)| local_blobs(client, *id, m))
        .collect();
    let msgs = blobs
        .iter()
        .flatten()
        .map(|b| Encoded::new(&IsInUse { id: *b }))
        .collect::<Result<Vec<_>>>()?;
    // Here an error reply counts as in use too: an object is reported
    // abandoned only when every blob is known to be idle.
    let mut in_use = client
        .call_many(&msgs)?
        .into_iter()
        .map(|r| r.map(|m| in_use_reply(client, m)).unwrap_or(true));
    let idle: Vec<(ObjectId, ObjectMeta)> = candidates
        .into_iter()
        .zip(&blobs)
        .filter(|(_, bs)| {
            !bs.iter()
                .fold(false, |acc, _| in_use.next().unwrap_or(true) || acc)
        })
        .map(|(c, _)| c)
        .collect();
    let named = names(client)?;
    let mut out: Vec<(ObjectId, ObjectMeta)> = idle
        .into_iter()
        .filter(|(id, _)| !named.contains(id))
        .collect();
    out.sort_unstable_by_key(|(id, _)| *id);
    Ok(out)
}

/// What [`delete_namespace`] did.
#[derive(Clone, Debug, Default)]
pub struct NamespaceDeleted {
    /// The names dropped.
    pub names: Vec<String>,
    /// The objects freed or retired (with migrated copies, in a cluster).
    pub outcome: Outcome,
}

impl NamespaceDeleted {
    /// Every object deleted or retired.
    pub fn ids(&self) -> Vec<ObjectId> {
        let mut all: Vec<ObjectId> = self
            .outcome
            .freed
            .iter()
            .chain(&self.outcome.retired)
            .copied()
            .collect();
        all.sort_unstable();
        all
    }
}

/// Drops every name starting with `prefix` and deletes their objects (and,
/// in a cluster, migrated copies and leftovers of earlier copies), retiring
/// the ones still mapped. The one namespace deletion of the package: the
/// CLI's `gc --namespace`, the runners' end of run and the bindings use it.
pub fn delete_namespace(client: &mut Client, prefix: &str) -> Result<NamespaceDeleted> {
    let (names, ids) = crate::migrate::namespace_objects(client, prefix)?;
    let drops = names
        .iter()
        .map(|n| Encoded::new(&DropName { name: n }))
        .collect::<Result<Vec<_>>>()?;
    for r in client.call_many(&drops)? {
        r?;
    }
    let outcome = delete(client, &ids, false)?;
    Ok(NamespaceDeleted { names, outcome })
}

/// Frees what [`sweep`] and [`abandoned`] find, in one pass of `gc`.
pub fn reclaim(client: &mut Client, abandoned_too: bool) -> Result<Outcome> {
    let mut out = sweep(client)?;
    if abandoned_too {
        let found = abandoned(client)?;
        out.extend(retire_and_free(client, &found, false)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> ObjectMeta {
        ObjectMeta::from_value(v).expect("an object")
    }

    #[test]
    fn retired_is_read_from_the_labels_vineyardd_keeps_as_a_json_string() {
        let labelled =
            meta(json!({"typename": "T", "__labels": "{\"vineyard_kedro.retired\":\"1\"}"}));
        assert!(is_retired(&labelled));
        let other = meta(json!({"typename": "T", "__labels": "{\"team\":\"a\"}"}));
        assert!(!is_retired(&other));
        assert!(!is_retired(&meta(json!({"typename": "T"}))));
        assert!(!is_retired(&meta(
            json!({"typename": "T", "__labels": "not json"})
        )));
        assert!(is_retired(&meta(
            json!({"typename": "T", "__labels": {"vineyard_kedro.retired": "1"}})
        )));
    }

    #[test]
    fn namespace_ids_are_freed_and_retired_together_sorted() {
        let done = NamespaceDeleted {
            names: vec![],
            outcome: Outcome {
                freed: vec![ObjectId(9), ObjectId(3)],
                retired: vec![ObjectId(5)],
            },
        };
        assert_eq!(done.ids(), vec![ObjectId(3), ObjectId(5), ObjectId(9)]);
    }
}
