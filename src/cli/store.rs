//! Store commands: `ls`, `inspect`, `rm`, `gc`, `status`.
//!
//! Objects of a namespace are named `<namespace>/<dataset>` (the grammar is
//! in `crate::names`); `--namespace NS` selects the names of namespace NS and
//! nothing else (not `NS/x/y`, not `NSx/y`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{json, Map, Value};

use super::{human_bytes, Failure, Io};
use crate::client::Client;
use crate::object::{ObjectId, ObjectMeta};
use crate::protocol::blobs::{IsInUse, IsInUseReply};
use crate::protocol::{Encoded, Message};

/// Upper bound of names asked for in one `list_name` request.
const LIST_LIMIT: usize = 1 << 24;

/// The namespace part of an object name ("" for plain and foreign names).
pub(crate) fn namespace_of(name: &str) -> &str {
    crate::names::namespace_of(name)
}

/// Bytes an object holds: its `nbytes`, else the sizes of its blobs.
pub(crate) fn object_size(meta: &ObjectMeta) -> Option<u64> {
    fn blob_len(m: &Map<String, Value>) -> Option<u64> {
        m.get("length")
            .or_else(|| m.get("nbytes"))
            .and_then(Value::as_u64)
    }
    fn walk(m: &Map<String, Value>, total: &mut Option<u64>) {
        for v in m.values() {
            let Value::Object(sub) = v else { continue };
            match sub.get("id").and_then(ObjectId::from_json) {
                Some(id) if id.is_blob() => {
                    if let Some(n) = blob_len(sub) {
                        *total = Some(total.unwrap_or(0) + n);
                    }
                }
                _ => walk(sub, total),
            }
        }
    }
    if let Some(n) = meta.get_u64("nbytes") {
        return Some(n);
    }
    if meta.id().is_some_and(ObjectId::is_blob) {
        return blob_len(&meta.0);
    }
    let mut total = None;
    walk(&meta.0, &mut total);
    total
}

fn connect(socket: &Path) -> Result<Client, Failure> {
    Ok(Client::connect(socket)?)
}

/// Names (sorted) under `namespace/`, or all names.
fn names_under(
    client: &mut Client,
    namespace: Option<&str>,
) -> Result<Vec<(String, ObjectId)>, Failure> {
    let names = client.list_names("*", false, LIST_LIMIT)?;
    Ok(match namespace {
        None => names,
        Some(ns) => {
            let ns = ns.strip_suffix('/').unwrap_or(ns);
            crate::names::check_namespace(ns)?;
            names
                .into_iter()
                .filter(|(n, _)| crate::names::in_namespace(n, ns))
                .collect()
        }
    })
}

/// The trees of `ids` in one request, and an error for each id without one;
/// when vineyardd refuses that request, one request per object, so that a
/// bad object costs only its own row. Errors that leave the connection
/// unusable still fail the command.
fn metas_each(
    client: &mut Client,
    ids: &[ObjectId],
) -> crate::Result<(HashMap<ObjectId, ObjectMeta>, HashMap<ObjectId, String>)> {
    let mut errors = HashMap::new();
    let metas = match client.get_data(ids, false, false) {
        Ok(metas) => metas,
        Err(e) if e.is_fatal_to_connection() => return Err(e),
        Err(_) => {
            let mut metas = HashMap::new();
            for id in ids {
                match client.get_data(&[*id], false, false) {
                    Ok(m) => metas.extend(m),
                    Err(e) if e.is_fatal_to_connection() => return Err(e),
                    Err(e) => {
                        errors.insert(*id, e.to_string());
                    }
                }
            }
            metas
        }
    };
    for id in ids {
        if !metas.contains_key(id) && !errors.contains_key(id) {
            // vineyardd leaves out a tree it cannot build (a member deleted
            // under it) without failing the request
            errors.insert(
                *id,
                "vineyardd returned no metadata for it (deleted meanwhile, or one of its members is gone)".into(),
            );
        }
    }
    Ok((metas, errors))
}

/// `ls [--namespace NS] [--json]`.
pub(super) fn ls(
    socket: &Path,
    namespace: Option<&str>,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), Failure> {
    let mut client = connect(socket)?;
    let names = names_under(&mut client, namespace)?;
    let mut ids: Vec<ObjectId> = names.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let (metas, errors) = metas_each(&mut client, &ids)?;
    let rows: Vec<Value> = names
        .iter()
        .map(|(name, id)| {
            let meta = metas.get(id);
            let mut row = json!({
                "name": name,
                "id": id.to_string(),
                "typename": meta.and_then(ObjectMeta::typename),
                "size": meta.and_then(object_size),
                "namespace": namespace_of(name),
            });
            if let Some(e) = errors.get(id) {
                row["error"] = e.as_str().into();
            }
            row
        })
        .collect();
    for (name, id) in &names {
        if let Some(e) = errors.get(id) {
            let _ = writeln!(io.err, "warning: cannot read {name} ({id}): {e}");
        }
    }
    if json {
        writeln!(
            io.out,
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        )?;
        return Ok(());
    }
    if rows.is_empty() {
        let _ = writeln!(
            io.err,
            "no named objects{}",
            namespace
                .map(|n| format!(" under {n}/"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let cell = |r: &Value, k: &str| -> String {
        match (k, &r[k]) {
            ("size", Value::Number(n)) => human_bytes(n.as_u64().unwrap_or(0)),
            ("namespace", Value::String(s)) if s.is_empty() => "-".into(),
            (_, Value::String(s)) => s.clone(),
            _ => "-".into(),
        }
    };
    let cols = ["name", "id", "typename", "size", "namespace"];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|k| cell(r, k)).collect())
        .collect();
    let header = ["NAME", "ID", "TYPE", "SIZE", "NAMESPACE"];
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(io.out, "{}", line(header.to_vec()))?;
    for r in &table {
        writeln!(io.out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// `inspect NAME|ID`: the name wins when a name looks like an id.
pub(super) fn inspect(socket: &Path, target: &str, io: &mut Io<'_>) -> Result<(), Failure> {
    let mut client = connect(socket)?;
    let id = match client.try_get_name(target)? {
        Some(id) => id,
        None => ObjectId::parse(target).ok_or_else(|| {
            Failure::Error(format!(
                "no object named {target:?} in vineyardd at {}",
                socket.display()
            ))
        })?,
    };
    let meta = client.get_meta(id, false)?;
    writeln!(
        io.out,
        "{}",
        serde_json::to_string_pretty(&meta).unwrap_or_default()
    )?;
    Ok(())
}

/// `rm NAME...`: every name is tried; missing ones make the exit code 1.
pub(super) fn rm(socket: &Path, names: &[String], io: &mut Io<'_>) -> Result<(), Failure> {
    let mut client = connect(socket)?;
    let mut missing = 0;
    for name in names {
        match client.try_get_name(name)? {
            None => {
                let _ = writeln!(
                    io.err,
                    "error: no object named {name:?} in vineyardd at {}",
                    socket.display()
                );
                missing += 1;
            }
            Some(id) => {
                client.drop_name(name)?;
                let done = crate::lease::delete(&mut client, &[id], false)?;
                if done.retired.is_empty() {
                    writeln!(io.out, "removed {name} ({id})")?;
                } else {
                    writeln!(
                        io.out,
                        "removed {name} ({id}); its memory is freed once the processes viewing it let go"
                    )?;
                }
            }
        }
    }
    if missing > 0 {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

/// `gc [--namespace NS] [--orphans]`: deletes the objects under NS/ (then
/// drops their names), and/or frees orphan blobs (see [`orphan_blobs`]).
pub(super) fn gc(
    socket: &Path,
    namespace: Option<&str>,
    orphans: bool,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), Failure> {
    let ns = namespace.map(|n| n.strip_suffix('/').unwrap_or(n));
    if let Some(Err(e)) = ns.map(crate::names::check_namespace) {
        return Err(Failure::Usage(e.to_string()));
    }
    if ns.is_none() && !orphans {
        return Err(Failure::Usage(
            "gc needs --namespace NS, --orphans, or both".into(),
        ));
    }
    let mut client = connect(socket)?;
    let mut report = Map::new();
    if let Some(ns) = ns {
        // Named objects, plus (in a cluster) migrated copies and leftovers.
        let done = crate::lease::delete_namespace(&mut client, &format!("{ns}/"))?;
        let ids = done.ids();
        let listed: Vec<&str> = done.names.iter().map(String::as_str).collect();
        report.insert("namespace".into(), ns.into());
        report.insert("deleted".into(), ids.len().into());
        report.insert("retired".into(), done.outcome.retired.len().into());
        report.insert("names".into(), json!(listed));
        if !json {
            writeln!(io.out, "deleted {} object(s) under {ns}/", ids.len())?;
            if !done.outcome.retired.is_empty() {
                writeln!(
                    io.out,
                    "{} of them still viewed by a live process: freed once it lets go (or by a later gc)",
                    done.outcome.retired.len()
                )?;
            }
        }
    }
    // Objects retired earlier whose holders have let go or died, and (with
    // --orphans) objects whose save failed after they were created.
    let reclaimed = crate::lease::reclaim(&mut client, orphans)?;
    report.insert("reclaimed".into(), reclaimed.freed.len().into());
    report.insert("still_viewed".into(), reclaimed.retired.len().into());
    if !json && (!reclaimed.freed.is_empty() || !reclaimed.retired.is_empty()) {
        writeln!(
            io.out,
            "reclaimed {} retired or abandoned object(s); {} still viewed by a live process",
            reclaimed.freed.len(),
            reclaimed.retired.len()
        )?;
    }
    if orphans {
        let found = orphan_blobs(&mut client)?;
        let ids: Vec<ObjectId> = found.orphans.iter().map(|(id, _)| *id).collect();
        let bytes: u64 = found.orphans.iter().map(|(_, n)| *n).sum();
        report.insert("orphan_blobs".into(), ids.len().into());
        report.insert("orphan_bytes".into(), bytes.into());
        report.insert("blobs_in_use_skipped".into(), found.in_use.into());
        report.insert("blobs_referenced_kept".into(), found.referenced.into());
        if !json {
            writeln!(
                io.out,
                "freed {} orphan blob(s), {} ({} blob(s) held by a live connection left alone)",
                ids.len(),
                human_bytes(bytes),
                found.in_use
            )?;
        }
    }
    if json {
        writeln!(io.out, "{}", Value::Object(report))?;
    }
    Ok(())
}

/// What [`orphan_blobs`] freed.
#[derive(Debug, Default)]
pub(crate) struct OrphanScan {
    /// Orphan blobs freed, with their sizes.
    pub orphans: Vec<(ObjectId, u64)>,
    /// Blobs left alone because a live connection holds them.
    pub in_use: usize,
    /// Blobs no connection holds that vineyardd kept: an object refers to
    /// them.
    pub referenced: usize,
}

/// A `list_data` pattern that lists every sealed blob and expands no object.
/// vineyardd matches objects' typenames against `pattern` as a regex when
/// `regex` is set, but its blobs always as a glob: `*` is an invalid regex,
/// which matches no object, and a glob that matches `vineyard::Blob`.
pub(crate) const EVERY_BLOB_ONLY: (&str, bool) = ("*", true);

/// The sealed blobs of the instance, with their sizes; no object expanded.
pub(crate) fn list_blobs(client: &mut Client) -> crate::Result<HashMap<ObjectId, u64>> {
    let (pattern, regex) = EVERY_BLOB_ONLY;
    Ok(client
        .list_data(pattern, regex, LIST_LIMIT)?
        .into_iter()
        .filter(|(id, _)| id.is_blob() && *id != ObjectId::EMPTY_BLOB)
        .map(|(id, meta)| {
            let size = meta
                .get_u64("length")
                .or_else(|| meta.get_u64("nbytes"))
                .unwrap_or(0);
            (id, size)
        })
        .collect())
}

/// Frees the sealed blobs that no object references and no live connection
/// holds, without expanding any object.
///
/// The policy, and why it never frees data:
/// * Only blobs are listed ([`EVERY_BLOB_ONLY`]). Expanding an object whose
///   member is itself (vineyardd 0.24.2 accepts member ids that do not exist
///   yet) makes vineyardd recurse until it crashes, and no request shows an
///   object's members without expanding it; so gc never expands one.
/// * Sealing (and mapping) gives the connection a reference that vineyardd
///   drops when the connection ends: a blob with a reference belongs to a
///   live client (a save between its seal and its metadata, or a reader)
///   and is skipped. vineyardd lists only *sealed* blobs, so a blob still
///   being created is never seen.
/// * The others are deleted with `force: false, deep: false`: vineyardd
///   records which objects refer to which members when it stores their
///   metadata, and does not delete a blob that an object still refers to
///   (whichever client made the object, named or not, persisted or not;
///   `tests/odd_store.rs`). The blobs still listed afterwards are the kept
///   ones; the others were the orphans, now freed.
/// * A bare blob that a client stored on purpose without any object (the
///   official client's `put(bytes)`) and then disconnected from looks the
///   same as a leak: do not use this on a store shared with such clients.
/// * Unsealed blobs of a dead writer (killed between its allocation and its
///   seal requests) are invisible to every request but `clear`; only a
///   vineyardd restart or `clear` frees them.
pub(crate) fn orphan_blobs(client: &mut Client) -> crate::Result<OrphanScan> {
    let blobs = list_blobs(client)?;
    let mut scan = OrphanScan::default();
    let mut ids: Vec<ObjectId> = blobs.keys().copied().collect();
    ids.sort_unstable();
    let msgs = ids
        .iter()
        .map(|id| Encoded::new(&IsInUse { id: *id }))
        .collect::<crate::Result<Vec<_>>>()?;
    let mut candidates = Vec::new();
    for (id, reply) in ids.iter().zip(client.call_many(&msgs)?) {
        // A blob gone meanwhile answers with an error: nothing to free. A
        // reply we cannot read counts as in use (keeping is always safe).
        let Ok(reply) = reply else { continue };
        let in_use = client
            .read::<IsInUseReply>(reply, IsInUse::TYPE)
            .map_or(true, |r| r.is_in_use);
        if in_use {
            scan.in_use += 1;
            continue;
        }
        candidates.push(*id);
    }
    if candidates.is_empty() {
        return Ok(scan);
    }
    client.del_data(&candidates, false, false)?;
    let left = list_blobs(client)?;
    for id in candidates {
        if left.contains_key(&id) {
            scan.referenced += 1;
        } else {
            scan.orphans
                .push((id, blobs.get(&id).copied().unwrap_or(0)));
        }
    }
    Ok(scan)
}

/// `status [--json]`.
pub(super) fn status(socket: &Path, json: bool, io: &mut Io<'_>) -> Result<(), Failure> {
    let mut client = connect(socket)?;
    let meta = client.instance_status()?;
    let info = client.info().clone();
    if json {
        let mut m = meta.clone();
        m.insert("socket".into(), socket.display().to_string().into());
        m.insert("server_version".into(), info.version.into());
        writeln!(
            io.out,
            "{}",
            serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default()
        )?;
        return Ok(());
    }
    let used = meta.get("memory_usage").and_then(Value::as_u64);
    let limit = meta.get("memory_limit").and_then(Value::as_u64);
    writeln!(io.out, "socket:   {}", socket.display())?;
    writeln!(io.out, "instance: {}", info.instance_id)?;
    writeln!(
        io.out,
        "version:  {}",
        if info.version.is_empty() {
            "-"
        } else {
            &info.version
        }
    )?;
    if let (Some(u), Some(l)) = (used, limit) {
        let pct = if l > 0 {
            100.0 * u as f64 / l as f64
        } else {
            0.0
        };
        writeln!(
            io.out,
            "memory:   {} used of {} ({pct:.1}%)",
            human_bytes(u),
            human_bytes(l)
        )?;
    }
    let rest: BTreeMap<&String, &Value> = meta
        .iter()
        .filter(|(k, _)| !["memory_usage", "memory_limit", "instance_id"].contains(&k.as_str()))
        .collect();
    for (k, v) in rest {
        let text = v
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string());
        writeln!(io.out, "{k}: {text}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_the_part_before_the_one_slash() {
        assert_eq!(namespace_of("run-1/X_train"), "run-1");
        assert_eq!(namespace_of("a/b/c"), "");
        assert_eq!(namespace_of("plain"), "");
    }

    #[test]
    fn size_is_nbytes_or_the_sum_of_blobs() {
        let m: ObjectMeta = serde_json::from_value(json!({"typename": "T", "nbytes": 40})).unwrap();
        assert_eq!(object_size(&m), Some(40));
        let m: ObjectMeta = serde_json::from_value(json!({
            "typename": "T",
            "a": {"id": "o8000000000000001", "typename": "vineyard::Blob", "length": 10},
            "b": {"typename": "U", "c": {"id": "o8000000000000002", "typename": "vineyard::Blob", "nbytes": 5}},
        }))
        .unwrap();
        assert_eq!(object_size(&m), Some(15));
        let m: ObjectMeta = serde_json::from_value(json!({"typename": "T"})).unwrap();
        assert_eq!(object_size(&m), None);
    }
}
