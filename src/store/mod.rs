//! Whole objects: an atomic put of a metadata tree with its buffers, and a get
//! that returns the tree with every blob mapped.
//!
//! A tree to put is JSON whose object-valued entries are members. Two marker
//! objects stand for leaves: `{"__blob__": i}` (the i-th source buffer) and
//! `{"__object__": id}` (an existing object). Members are created bottom-up,
//! one `create_datas` per tree level, so a DataFrame of any width costs a few
//! round trips. Any failure deletes everything the put created.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::object::{ObjectId, ObjectMeta};
use crate::shm::BlobBytes;

mod allocated;
mod copy;
mod reference;
mod source;

pub use source::{Fill, RawSource, Source};

/// The deepest tree a put accepts: members nested at most this many levels
/// below the root. Far above any layout of ours (a DataFrame column's blob
/// is 3 levels down); it keeps every tree we write readable by every client
/// (replies stay under JSON parsers' recursion limits) and cheap for
/// vineyardd, whose cost to persist a chain grows much faster than its depth.
pub const MAX_TREE_DEPTH: usize = 64;

/// Levels of members below `root` (0 for a tree without members).
fn tree_depth(root: &Map<String, Value>) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Map<String, Value>, usize)> = vec![(root, 0)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        for v in node.values() {
            if let Value::Object(child) = v {
                if !child.contains_key("__blob__") && !child.contains_key("__object__") {
                    stack.push((child, depth + 1));
                }
            }
        }
    }
    deepest
}

/// Options of a put.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// Persist the object (required for names and for other instances).
    pub persist: bool,
    /// Name to point at the new object once it is complete.
    pub name: Option<String>,
    /// The object `name` points to now, when the caller knows it for sure
    /// (`Some(None)`: none): the put then does not ask vineyardd, whose
    /// `get_name` costs time in proportion to the names in the store.
    /// `None`: ask (the default).
    pub previous: Option<Option<ObjectId>>,
    /// Reference, instead of copying, a source that is exactly an
    /// unchanged blob this process loaded from the same vineyardd.
    pub reference_loaded: bool,
}

/// What a put did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The new object.
    pub id: ObjectId,
    /// The object the name pointed to before, now unnamed (the caller deletes it).
    pub replaced: Option<ObjectId>,
    /// Bytes copied into shared memory.
    pub bytes: u64,
    /// Bytes of sources that were already blobs of the store, referenced
    /// by the new object instead of copied.
    pub referenced: u64,
}

/// Stores a tree and its buffers as one object, atomically. The sources
/// are borrowed for the call (see [`Source`]).
pub fn put(
    client: &mut Client,
    tree: &Value,
    sources: &[Source<'_>],
    opts: &PutOptions,
) -> Result<PutResult> {
    let mut created: Vec<ObjectId> = Vec::new();
    let mut blobs: Vec<BlobBytes> = Vec::new();
    let mut in_place: Vec<ObjectId> = Vec::new();
    let res = put_inner(
        client,
        tree,
        sources,
        opts,
        &mut created,
        &mut blobs,
        &mut in_place,
    );
    match &res {
        Ok(r) => allocated::stored(&in_place, r.id),
        Err(_) => cleanup(client, &created, &blobs),
    }
    res
}

fn put_inner(
    client: &mut Client,
    tree: &Value,
    sources: &[Source<'_>],
    opts: &PutOptions,
    created: &mut Vec<ObjectId>,
    blobs: &mut Vec<BlobBytes>,
    in_place: &mut Vec<ObjectId>,
) -> Result<PutResult> {
    let root = tree
        .as_object()
        .ok_or_else(|| Error::Unsupported("the tree to put must be a JSON object".into()))?;
    // Checked before anything is allocated, so a refused put leaves nothing.
    if let Some(name) = &opts.name {
        crate::names::check_length(name)?;
    }
    let depth = tree_depth(root);
    if depth > MAX_TREE_DEPTH {
        return Err(Error::Unsupported(format!(
            "the value is nested {depth} levels deep; at most {MAX_TREE_DEPTH} levels of member objects are stored"
        )));
    }
    // Sources that are blobs of the allocator are sealed where they are,
    // sources already in the store become references, the rest get blobs.
    let sealed_here: Vec<Option<ObjectId>> = sources
        .iter()
        .map(|s| {
            (!s.is_empty())
                .then(|| s.raw().and_then(|r| allocated::seal_in_place(client, &r)))
                .flatten()
        })
        .collect();
    in_place.extend(sealed_here.iter().flatten());
    let reused: Vec<Option<crate::shm::Loaded>> = sources
        .iter()
        .zip(&sealed_here)
        .map(|(s, here)| {
            (opts.reference_loaded && !s.is_empty() && here.is_none())
                .then(|| s.raw().and_then(|r| reference::loaded_blob(client, &r)))
                .flatten()
        })
        .collect();
    let sizes: Vec<u64> = sources
        .iter()
        .zip(sealed_here.iter().zip(&reused))
        .filter(|(s, (here, r))| !s.is_empty() && here.is_none() && r.is_none())
        .map(|(s, _)| s.len() as u64)
        .collect();
    *blobs = client.create_buffers(&sizes)?;
    let mut blob_ids = Vec::with_capacity(sources.len());
    let mut jobs = Vec::new();
    let mut fills = Vec::new();
    let mut next = blobs.iter();
    let mut referenced = 0u64;
    for (s, (here, reused)) in sources.iter().zip(sealed_here.iter().zip(&reused)) {
        if s.is_empty() {
            blob_ids.push(ObjectId::EMPTY_BLOB);
        } else if let Some(id) = here {
            blob_ids.push(*id);
        } else if let Some(found) = reused {
            blob_ids.push(found.blob);
            referenced += s.len() as u64;
        } else {
            let b = next
                .next()
                .ok_or_else(|| Error::Internal("blob count mismatch".into()))?;
            blob_ids.push(b.id());
            let dest = copy::Dest {
                ptr: b.as_ptr() as *mut u8,
                region: b.region().map(|r| &**r),
            };
            match (s.raw(), s.fill()) {
                (Some(raw), _) => jobs.push((raw, dest)),
                (None, Some(fill)) => fills.push((fill, dest, s.len())),
                (None, None) => {
                    return Err(Error::Internal("a source with nothing to store".into()))
                }
            }
        }
    }
    // Seal before filling. Nobody else knows these ids until the metadata
    // exists, so nobody reads them half written; but a writer killed during
    // the copy (the long part of a big save) leaves sealed blobs, which
    // vineyardd lists, and which its death marks as no longer in use: `gc
    // --orphans` (`reclaim_orphans`) can find and free them. Unsealed blobs
    // of a dead writer are invisible and stay allocated until a restart.
    let sealed: Vec<ObjectId> = blobs.iter().map(BlobBytes::id).collect();
    client.seal_many(&sealed)?;
    // SAFETY: destinations are fresh blobs of exactly the source sizes, owned
    // by this put and unknown to anyone else until `create_datas` below;
    // sources are borrowed (`Source<'_>`) for at least this call, valid and
    // unmodified per `Source::from_raw`'s contract.
    unsafe { copy::copy_all(&jobs) };
    for (fill, dest, len) in fills {
        // SAFETY: as above, `dest` is a fresh blob of `len` bytes that only
        // this put knows.
        let out = unsafe { std::slice::from_raw_parts_mut(dest.ptr, len) };
        fill.fill(out).map_err(Error::Unsupported)?;
    }
    let bytes: u64 = sizes.iter().sum();

    // Create members level by level, deepest first.
    let instance = client.instance_id();
    let mut levels: Vec<Vec<(Vec<String>, ObjectMeta)>> = Vec::new();
    flatten(
        root,
        &mut Vec::new(),
        0,
        &mut levels,
        &blob_ids,
        instance,
        sources.len(),
    )?;
    // A named object says so in its tree: if the save dies before the
    // naming, `gc --orphans` can tell the leftover from others' objects.
    if let (Some(name), Some((_, root))) =
        (&opts.name, levels.first_mut().and_then(|l| l.first_mut()))
    {
        root.set(crate::lease::SAVED_AS_KEY, name.as_str());
    }
    // The objects whose blobs this one shares (see `lease::SHARES_KEY`).
    let mut shares: Vec<ObjectId> = reused.iter().flatten().filter_map(|l| l.owner).collect();
    shares.sort_unstable();
    shares.dedup();
    if let (false, Some((_, root))) = (
        shares.is_empty(),
        levels.first_mut().and_then(|l| l.first_mut()),
    ) {
        let ids: Vec<Value> = shares.iter().map(|s| s.to_string().into()).collect();
        root.set(crate::lease::SHARES_KEY, Value::Array(ids));
    }
    let mut ids: HashMap<Vec<String>, ObjectId> = HashMap::new();
    for level in levels.into_iter().rev() {
        let mut contents = Vec::with_capacity(level.len());
        for (path, mut meta) in level.iter().cloned() {
            resolve_children(&mut meta, &path, &ids)?;
            contents.push(meta);
        }
        let out = client.create_datas(&contents)?;
        for ((path, _), c) in level.into_iter().zip(out) {
            created.push(c.id);
            ids.insert(path, c.id);
        }
    }
    let id = *ids
        .get(&Vec::new())
        .ok_or_else(|| Error::Internal("the root object was not created".into()))?;
    // Names need persisted objects.
    // The seals' references go with the naming: from here on only readers
    // hold references, which is what deletes look at (see `lease`).
    let replaced = match (&opts.name, opts.previous) {
        (Some(name), None) => client.persist_and_name(id, name, &sealed)?,
        (Some(name), Some(previous)) => {
            client.persist_and_rename(id, name, &sealed)?;
            previous.filter(|p| *p != id)
        }
        (None, _) => {
            client.persist_and_release(id, opts.persist, &sealed)?;
            None
        }
    };
    crate::lease::link_shared(client, id, &shares);
    Ok(PutResult {
        id,
        replaced,
        bytes,
        referenced,
    })
}

/// Splits the tree into per-depth lists of nodes; children are left as
/// `{"__child__": true}` markers to be resolved once they exist.
fn flatten(
    node: &Map<String, Value>,
    path: &mut Vec<String>,
    depth: usize,
    levels: &mut Vec<Vec<(Vec<String>, ObjectMeta)>>,
    blob_ids: &[ObjectId],
    instance: u64,
    nsources: usize,
) -> Result<()> {
    if levels.len() <= depth {
        levels.push(Vec::new());
    }
    let mut meta = Map::new();
    for (k, v) in node {
        let Value::Object(child) = v else {
            meta.insert(k.clone(), v.clone());
            continue;
        };
        if let Some(i) = child.get("__blob__") {
            let i = i
                .as_u64()
                .filter(|i| (*i as usize) < nsources)
                .ok_or_else(|| Error::Unsupported(format!("member {k}: bad blob index {i}")))?;
            let bid = blob_ids[i as usize];
            meta.insert(k.clone(), json!({"id": bid.to_string(), "typename": "vineyard::Blob", "instance_id": instance, "transient": true}));
        } else if let Some(id) = child.get("__object__") {
            let id = ObjectId::from_json(id)
                .ok_or_else(|| Error::Unsupported(format!("member {k}: bad object id")))?;
            meta.insert(k.clone(), json!({"id": id.to_string()}));
        } else {
            path.push(k.clone());
            flatten(child, path, depth + 1, levels, blob_ids, instance, nsources)?;
            path.pop();
            meta.insert(k.clone(), json!({"__child__": true}));
        }
    }
    if !meta.contains_key("typename") {
        return Err(Error::Unsupported(format!(
            "object at {:?} has no typename",
            path.join(".")
        )));
    }
    meta.insert("instance_id".into(), instance.into());
    levels[depth].push((path.clone(), ObjectMeta(meta)));
    Ok(())
}

fn resolve_children(
    meta: &mut ObjectMeta,
    path: &[String],
    ids: &HashMap<Vec<String>, ObjectId>,
) -> Result<()> {
    for (k, v) in meta.0.iter_mut() {
        if v.get("__child__").is_some() {
            let mut p = path.to_vec();
            p.push(k.clone());
            let id = ids
                .get(&p)
                .ok_or_else(|| Error::Internal(format!("member {k} was not created")))?;
            *v = json!({"id": id.to_string()});
        }
    }
    Ok(())
}

/// Best-effort removal of a failed put's objects and blobs: the objects one
/// by one, not deep, and the put's own blobs explicitly.
fn cleanup(client: &mut Client, created: &[ObjectId], blobs: &[BlobBytes]) {
    // Not deep: members the put did not make (allocator blobs sealed in
    // place, loaded blobs referenced) belong to others; everything the put
    // made is in `created` or `blobs`.
    if !created.is_empty() {
        let _ = client.del_data(created, true, false);
    }
    for b in blobs {
        let _ = client.drop_buffer(b.id());
    }
    if !blobs.is_empty() {
        let ids: Vec<ObjectId> = blobs.iter().map(BlobBytes::id).collect();
        let _ = client.del_data(&ids, true, false);
    }
}

/// An object read back: its tree and every local blob, mapped.
#[derive(Debug)]
pub struct Fetched {
    pub id: ObjectId,
    pub meta: ObjectMeta,
    pub blobs: HashMap<ObjectId, BlobBytes>,
}

/// Fetches a tree and maps its blobs (one `get_data`, one `get_buffers`).
/// An object held by another instance is migrated here first.
pub fn get(client: &mut Client, id: ObjectId) -> Result<Fetched> {
    get_inner(client, id, false).map(|(f, _)| f)
}

/// `get`, then, in the same wait as the mapping, [`crate::lease::confirm`]:
/// the object and whether it may be used (it still exists and is not
/// retired). An unusable mapping must be released, not handed out.
pub fn get_confirmed(client: &mut Client, id: ObjectId) -> Result<(Fetched, bool)> {
    get_inner(client, id, true)
}

fn get_inner(client: &mut Client, id: ObjectId, confirm: bool) -> Result<(Fetched, bool)> {
    let mut id = id;
    // An object just persisted by another instance may not have reached this
    // instance's view of the metadata yet: ask it to sync before giving up.
    let mut meta = match client.get_meta(id, false) {
        Err(e) if e.is_not_found() => client.get_meta(id, true)?,
        other => other?,
    };
    let me = client.instance_id();
    if meta.instance_id().is_some_and(|i| i != me)
        || meta
            .blobs_with_instance()
            .iter()
            .any(|(_, i)| i.is_some_and(|i| i != me))
    {
        id = crate::migrate::migrate(client, id, &meta)?;
        meta = client.get_meta(id, false)?;
    }
    let mut wanted: Vec<ObjectId> = meta
        .blob_ids()
        .into_iter()
        .filter(|b| *b != ObjectId::EMPTY_BLOB)
        .collect();
    // A bare blob (the official client stores `bytes` that way) is its own data.
    if id.is_blob() && id != ObjectId::EMPTY_BLOB {
        wanted.push(id);
    }
    let then = confirm
        .then(|| crate::lease::confirm_request(id))
        .transpose()?;
    let (mut blobs, confirmed) = client.get_buffers_then(&wanted, then)?;
    let usable = match confirmed {
        Some(reply) => crate::lease::confirmed(client, id, reply?)?,
        None => true,
    };
    for b in &wanted {
        if !blobs.contains_key(b) {
            return Err(Error::Layout {
                id,
                detail: format!("blob {b} of the object is missing from vineyardd"),
            });
        }
    }
    blobs.insert(ObjectId::EMPTY_BLOB, BlobBytes::empty(ObjectId::EMPTY_BLOB));
    Ok((Fetched { id, meta, blobs }, usable))
}
