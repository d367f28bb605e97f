//! Moving an object held by another instance of the cluster to ours, and
//! deleting objects together with the copies migration made of them.
//!
//! vineyardd does the copy itself (it pulls the blobs over RPC from the
//! holder) and deduplicates: asking twice returns the same local copy, and a
//! second request for an object whose migration is under way waits for it,
//! so concurrent loads of one object migrate it once. Our part is to ask, and
//! to say which instance, which endpoint and why when it fails.
//!
//! Two behaviours of vineyardd 0.24.2 shape the code below:
//! * When the holder's RPC endpoint is unreachable, vineyardd retries for
//!   10 s (blocking its I/O thread), answers with an error, and leaves the
//!   object's migration marked as under way: every later `migrate_object`
//!   of that object on that instance then waits forever. So we check the
//!   endpoint ourselves first and never send a request that cannot succeed.
//! * A migrated copy keeps the original's `signature` (and its `__name`
//!   entry), is persisted, and is *not* deleted with the original. Deleting a
//!   namespace cluster-wide therefore also deletes every object with the
//!   signature of one of its objects.

use std::collections::{BTreeSet, HashSet};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::object::{ObjectId, ObjectMeta};
use crate::protocol::cluster::Instance;

/// How long we try to open a TCP connection to the holder's RPC endpoint.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `limit` of our `list_data` and `list_name` requests (vineyardd wants one).
const LIST_LIMIT: usize = 1 << 30;

/// The instance that holds the object (or one of its blobs), if not ours.
fn holder_of(client: &Client, meta: &ObjectMeta) -> Option<u64> {
    let me = client.instance_id();
    meta.instance_id().filter(|i| *i != me).or_else(|| {
        meta.blobs_with_instance()
            .into_iter()
            .filter_map(|(_, i)| i)
            .find(|i| *i != me)
    })
}

/// The `rpc_endpoint` of instance `i` in `cluster_meta`, if listed.
fn endpoint_of(cluster: &Map<String, Value>, i: u64) -> Option<String> {
    let instance = cluster.get(&format!("i{i}"))?;
    Instance::deserialize(instance).ok()?.rpc_endpoint
}

/// Opens (and closes) a TCP connection to `host:port`, as vineyardd would to
/// pull the blobs. `Err` says why it cannot.
fn probe(endpoint: &str) -> std::result::Result<(), String> {
    let addrs: Vec<_> = endpoint
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {endpoint}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{endpoint} resolves to no address"));
    }
    let mut last = String::new();
    for a in &addrs {
        match TcpStream::connect_timeout(a, PROBE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

/// A copy of the object (same signature) that already lives on the client's
/// instance, if any.
fn local_copy(client: &mut Client, id: ObjectId, meta: &ObjectMeta) -> Result<Option<ObjectId>> {
    let Some(sig) = meta.get_u64("signature") else {
        return Ok(None);
    };
    let me = client.instance_id();
    let listed = client.list_data(&typename_pattern(meta.typename()), false, LIST_LIMIT)?;
    Ok(listed
        .into_iter()
        .filter(|(cid, m)| {
            *cid != id && m.get_u64("signature") == Some(sig) && m.instance_id() == Some(me)
        })
        .map(|(cid, _)| cid)
        .min())
}

/// A glob that matches exactly `typename` (or everything when it contains
/// glob syntax).
fn typename_pattern(typename: Option<&str>) -> String {
    match typename {
        Some(t) if !t.is_empty() && !t.contains(['*', '?', '[', ']', '\\']) => t.to_string(),
        _ => "*".to_string(),
    }
}

/// Migrates `id` (whose tree is `meta`) to the client's instance and returns
/// the local object id.
///
/// Fails with [`Error::Migration`] naming the holder, its endpoint and the
/// reason: the object is not persisted, its instance left the cluster, its
/// RPC endpoint does not resolve or refuses connections, or vineyardd's own
/// error. An unreachable holder is detected here, before vineyardd is asked
/// (see the module docs); a copy made earlier is still returned then.
pub fn migrate(client: &mut Client, id: ObjectId, meta: &ObjectMeta) -> Result<ObjectId> {
    let holder = holder_of(client, meta);
    let Some(holder) = holder else {
        return Ok(id); // already local
    };
    let cluster = client.cluster_meta()?;
    let endpoint = endpoint_of(&cluster, holder);
    let fail = |client: &Client, endpoint: Option<&str>, reason: String| Error::Migration {
        socket: client.socket().to_path_buf(),
        id,
        instance: holder.to_string(),
        endpoint: endpoint
            .unwrap_or("unknown endpoint: the instance is not in the cluster any more")
            .to_string(),
        reason,
    };
    if !meta.is_persistent() {
        return Err(fail(
            client,
            endpoint.as_deref(),
            "the object is not persisted, so other instances cannot see it".into(),
        ));
    }
    let unreachable = match &endpoint {
        None => Some("the holder left the cluster".to_string()),
        Some(ep) if ep.ends_with(":0") => {
            Some("the holder runs without RPC (--rpc=false)".to_string())
        }
        Some(ep) => probe(ep).err().map(|why| {
            format!("its RPC endpoint is unreachable ({why}); is instance {holder} running?")
        }),
    };
    if let Some(reason) = unreachable {
        // A copy made while the holder was up is still good.
        if let Some(copy) = local_copy(client, id, meta)? {
            return Ok(copy);
        }
        return Err(fail(client, endpoint.as_deref(), reason));
    }
    match client.migrate_object(id) {
        Ok(local) => Ok(local),
        Err(e) if e.is_fatal_to_connection() => Err(e),
        Err(e) => {
            let reason = match &e {
                Error::Server { message, code, .. } => format!("{message} (code {code})"),
                other => other.to_string(),
            };
            Err(fail(client, endpoint.as_deref(), reason))
        }
    }
}

/// Every copy of the given objects that migration made, on any instance of
/// the cluster: objects with the signature of one of them (the objects
/// themselves excluded). `metas` are the objects' trees.
pub fn find_copies(
    client: &mut Client,
    metas: &[(ObjectId, ObjectMeta)],
) -> Result<Vec<(ObjectId, Option<u64>)>> {
    let originals: HashSet<ObjectId> = metas.iter().map(|(id, _)| *id).collect();
    let sigs: HashSet<u64> = metas
        .iter()
        .filter_map(|(_, m)| m.get_u64("signature"))
        .collect();
    if sigs.is_empty() {
        return Ok(Vec::new());
    }
    let patterns: BTreeSet<String> = metas
        .iter()
        .map(|(_, m)| typename_pattern(m.typename()))
        .collect();
    let patterns = if patterns.contains("*") {
        BTreeSet::from(["*".to_string()])
    } else {
        patterns
    };
    let mut out = BTreeSet::new();
    for p in patterns {
        for (cid, m) in client.list_data(&p, false, LIST_LIMIT)? {
            if !originals.contains(&cid)
                && m.get_u64("signature").is_some_and(|s| sigs.contains(&s))
            {
                out.insert((cid, m.instance_id()));
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// vineyardd keeps an object's `__name` entry escaped as a JSON-pointer
/// token (`/` as `~1`, `~` as `~0`).
fn unescape_pointer(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

/// `ids` plus every migrated copy of them. Only a cluster (more than one
/// instance) can hold copies, so a standalone vineyardd costs one request.
pub fn with_copies(client: &mut Client, ids: &[ObjectId]) -> Result<Vec<ObjectId>> {
    let mut all: Vec<ObjectId> = ids.to_vec();
    if !ids.is_empty() && client.cluster_meta()?.len() > 1 {
        let metas: Vec<(ObjectId, ObjectMeta)> =
            client.get_data(ids, true, false)?.into_iter().collect();
        all.extend(find_copies(client, &metas)?.into_iter().map(|(id, _)| id));
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

/// `with_copies` with each object's tree (`None` for ids that do not
/// exist here), for callers that look at the blobs before deleting. A
/// standalone vineyardd costs one wait.
pub fn with_copies_meta(
    client: &mut Client,
    ids: &[ObjectId],
) -> Result<Vec<(ObjectId, Option<ObjectMeta>)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (instances, mut metas) = client.cluster_size_and_data(ids)?;
    let all = if instances > 1 {
        let all = with_copies(client, ids)?;
        metas = client.get_data(&all, false, false)?;
        all
    } else {
        let mut all = ids.to_vec();
        all.sort_unstable();
        all.dedup();
        all
    };
    Ok(all.into_iter().map(|id| (id, metas.remove(&id))).collect())
}

/// The names of namespace `namespace` (see [`crate::names::in_namespace`];
/// a trailing `/` is ignored) and its objects: the named ones and, in a
/// cluster, leftovers of earlier copies (their `__name` entry is in it).
pub fn namespace_objects(
    client: &mut Client,
    namespace: &str,
) -> Result<(Vec<String>, Vec<ObjectId>)> {
    let ns = namespace.strip_suffix('/').unwrap_or(namespace);
    crate::names::check_namespace(ns)?;
    let names: Vec<(String, ObjectId)> = client
        .list_names("*", false, LIST_LIMIT)?
        .into_iter()
        .filter(|(n, _)| crate::names::in_namespace(n, ns))
        .collect();
    let mut ids: BTreeSet<ObjectId> = names.iter().map(|(_, id)| *id).collect();
    if client.cluster_meta()?.len() > 1 {
        for (id, m) in client.list_data("*", false, LIST_LIMIT)? {
            if m.name()
                .is_some_and(|n| crate::names::in_namespace(&unescape_pointer(n), ns))
            {
                ids.insert(id);
            }
        }
    }
    Ok((
        names.into_iter().map(|(n, _)| n).collect(),
        ids.into_iter().collect(),
    ))
}
