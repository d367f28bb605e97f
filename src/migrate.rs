//! Moving an object held by another instance of the cluster to ours.
//!
//! vineyardd does the copy itself (it pulls the blobs over RPC from the
//! holder) and deduplicates: asking twice returns the same local copy, so
//! concurrent loads of one object migrate it once. Our part is to ask, and to
//! say which instance, which endpoint and why when it fails.

use serde_json::Value;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::object::{ObjectId, ObjectMeta};

/// Migrates `id` (whose tree is `meta`) to the client's instance and returns
/// the local object id.
pub fn migrate(client: &mut Client, id: ObjectId, meta: &ObjectMeta) -> Result<ObjectId> {
    let holder = meta
        .instance_id()
        .filter(|i| *i != client.instance_id())
        .or_else(|| {
            meta.blobs_with_instance()
                .into_iter()
                .filter_map(|(_, i)| i)
                .find(|i| *i != client.instance_id())
        });
    let instance = holder.map_or_else(|| "?".to_string(), |i| i.to_string());
    let fail = |client: &mut Client, reason: String| {
        let endpoint = holder
            .and_then(|i| {
                client
                    .cluster_meta()
                    .ok()
                    .and_then(|m| m.get(&format!("i{i}")).cloned())
            })
            .and_then(|v| {
                v.get("rpc_endpoint")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "unknown endpoint (instance not in the cluster any more)".into());
        Error::Migration {
            socket: client.socket().to_path_buf(),
            id,
            instance: instance.clone(),
            endpoint,
            reason,
        }
    };
    if !meta.is_persistent() {
        return Err(fail(
            client,
            "the object is not persisted, so other instances cannot see it".into(),
        ));
    }
    match client.migrate_object(id) {
        Ok(local) => Ok(local),
        Err(e) if e.is_fatal_to_connection() => Err(e),
        Err(e) => {
            let reason = match &e {
                Error::Server { message, code, .. } => format!("{message} (code {code})"),
                other => other.to_string(),
            };
            Err(fail(client, reason))
        }
    }
}
