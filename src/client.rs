//! Typed requests to vineyardd over IPC: blobs in shared memory, metadata,
//! names, persistence, deletion, status and migration.
//!
//! A `Client` is one connection plus its cache of mapped memory files (each
//! server fd arrives at most once per connection, so the cache lives as long
//! as the connection). It is not `Sync`: wrap it in a mutex to share it.

mod blobs;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::connection::{Connection, Timeouts};
use crate::error::{Error, Result};
use crate::object::{ObjectId, ObjectMeta};
use crate::protocol::{self, field_id, field_u64};
use crate::shm::Region;

/// Requests written before their replies are read (see `Client::call_many`).
const PIPELINE_BATCH: usize = 64;

/// `release` requests for `ids` (their replies are not worth reading: a
/// blob this connection does not hold gives an error that changes nothing).
pub(crate) fn release_msgs(ids: &[ObjectId]) -> impl Iterator<Item = (Value, &'static str)> + '_ {
    ids.iter().filter(|b| **b != ObjectId::EMPTY_BLOB).map(|b| {
        (
            json!({"type": "release_request", "object_id": b}),
            "release_reply",
        )
    })
}

/// Bytes of requests written before their replies are read. Far below the
/// kernel's buffer of a UNIX socket (about 200 KiB each way), so a batch is
/// always written whole while vineyardd may still be writing its replies
/// (error replies echo the request), and neither side can block the other.
const PIPELINE_BYTES: usize = 64 << 10;

/// The `type` of a request, for error messages.
fn request_type(msg: &Value) -> &str {
    msg.get("type").and_then(Value::as_str).unwrap_or("request")
}

/// The version string we announce; the server never checks it.
pub const CLIENT_VERSION: &str = "0.24.2";

/// What the server said about itself when we registered.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub instance_id: u64,
    pub version: String,
    pub rpc_endpoint: String,
    pub ipc_socket: String,
}

/// Result of `create_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Created {
    pub id: ObjectId,
    pub signature: u64,
    pub instance_id: u64,
}

/// A registered IPC connection to one vineyardd.
pub struct Client {
    conn: Connection,
    info: ServerInfo,
    regions: HashMap<i64, Arc<Region>>,
    /// Requests sent by `send_unanswered` whose replies are still unread:
    /// `(request type, expected reply type)`.
    unanswered: Vec<(String, &'static str)>,
    /// Their replies, read before a later request was sent.
    answered: Vec<Result<Map<String, Value>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Client({}, instance {})",
            self.conn.socket().display(),
            self.info.instance_id
        )
    }
}

impl Client {
    /// Connects with default timeouts and registers.
    pub fn connect(socket: impl AsRef<Path>) -> Result<Client> {
        Client::connect_with(socket.as_ref(), Timeouts::default())
    }

    /// Connects with explicit timeouts and registers.
    pub fn connect_with(socket: &Path, timeouts: Timeouts) -> Result<Client> {
        let mut conn = Connection::connect(socket, timeouts)?;
        // The handshake is part of connecting: a server that accepts but
        // never answers (stopped, wedged) fails within the connect timeout.
        let handshake = timeouts
            .read
            .map_or(timeouts.connect, |r| r.min(timeouts.connect));
        conn.set_read_timeout(Some(handshake))?;
        let reply = conn.call(
            &json!({"type": "register_request", "version": CLIENT_VERSION, "store_type": 1,
                    "session_id": 0, "username": "", "password": ""}),
            "register_reply",
        )?;
        conn.set_read_timeout(timeouts.read)?;
        let ctx = conn.ctx("register_request");
        let info = ServerInfo {
            instance_id: field_u64(&reply, "instance_id", ctx)?,
            version: reply
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            rpc_endpoint: reply
                .get("rpc_endpoint")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            ipc_socket: reply
                .get("ipc_socket")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        };
        if reply.get("store_match").and_then(Value::as_bool) == Some(false) {
            return Err(ctx.protocol("the server's store type is not the default bulk store"));
        }
        Ok(Client {
            conn,
            info,
            regions: HashMap::new(),
            unanswered: Vec::new(),
            answered: Vec::new(),
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        self.conn.socket()
    }

    /// What the server reported at registration.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// This server's instance id (goes into every metadata tree we create).
    pub fn instance_id(&self) -> u64 {
        self.info.instance_id
    }

    /// Number of memory files mapped on this connection.
    pub fn mapped_files(&self) -> usize {
        self.regions.len()
    }

    /// True when `region` is one of this connection's mappings: then the
    /// blobs in it are this server's, mapped through this connection.
    pub fn owns_region(&self, region: crate::shm::RegionKey) -> bool {
        self.regions.values().any(|r| r.key() == region)
    }

    pub(crate) fn call(&mut self, msg: Value, expected: &str) -> Result<Map<String, Value>> {
        self.settle()?;
        self.conn.call(&msg, expected)
    }

    /// Sends requests whose replies nobody waits for now (`release`s: the
    /// server acts on them at once). Their replies are read before the next
    /// request's, with no wait of their own, and kept for `take_answered`.
    /// Replies must carry no fds.
    pub(crate) fn send_unanswered(&mut self, msgs: &[(Value, &'static str)]) -> Result<()> {
        for chunk in msgs.chunks(PIPELINE_BATCH) {
            // Never more than a batch of replies waits in the socket, so
            // neither side blocks on a full buffer.
            if self.unanswered.len() + chunk.len() > PIPELINE_BATCH {
                self.settle()?;
            }
            let mut frames = Vec::with_capacity(chunk.len() * 96);
            for (msg, _) in chunk {
                frames.extend_from_slice(&protocol::encode_frame(msg));
            }
            self.conn.send_raw(&frames, request_type(&chunk[0].0))?;
            self.unanswered.extend(
                chunk
                    .iter()
                    .map(|(msg, expected)| (request_type(msg).to_string(), *expected)),
            );
        }
        Ok(())
    }

    /// True while replies of `send_unanswered` requests wait to be read or
    /// taken.
    pub fn has_unanswered(&self) -> bool {
        !self.unanswered.is_empty() || !self.answered.is_empty()
    }

    /// Reads the replies of `send_unanswered` requests still in the socket.
    pub(crate) fn settle(&mut self) -> Result<()> {
        for (req, expected) in std::mem::take(&mut self.unanswered) {
            let reply = self.conn.recv(&req)?;
            self.answered
                .push(protocol::check_reply(reply, expected, self.conn.ctx(&req)));
        }
        Ok(())
    }

    /// The replies of every `send_unanswered` request so far, in order.
    pub(crate) fn take_answered(&mut self) -> Result<Vec<Result<Map<String, Value>>>> {
        self.settle()?;
        Ok(std::mem::take(&mut self.answered))
    }

    /// Sends requests back to back, then reads their replies in order: one
    /// wait instead of one per request. vineyardd reads a connection's next
    /// request only after answering the previous one, so replies come in
    /// request order; batches of `PIPELINE_BATCH` keep both socket buffers
    /// from filling up while nobody reads them. Replies must carry no fds.
    ///
    /// The outer error is a broken connection; the inner ones are the
    /// server's answers, one per request (every reply is read even after an
    /// error reply, so the connection stays in step).
    pub(crate) fn call_many(
        &mut self,
        msgs: &[(Value, &str)],
    ) -> Result<Vec<Result<Map<String, Value>>>> {
        self.settle()?;
        let mut out = Vec::with_capacity(msgs.len());
        let mut rest = msgs;
        while !rest.is_empty() {
            // A batch: at most PIPELINE_BATCH requests and PIPELINE_BYTES
            // bytes, and always at least one request (a single request never
            // deadlocks: vineyardd reads all of it before it answers).
            let mut frames = Vec::new();
            let mut n = 0;
            for (msg, _) in rest.iter().take(PIPELINE_BATCH) {
                let frame = protocol::encode_frame(msg);
                if n > 0 && frames.len() + frame.len() > PIPELINE_BYTES {
                    break;
                }
                frames.extend_from_slice(&frame);
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let first = request_type(&chunk[0].0);
            self.conn.send_raw(&frames, first)?;
            for (msg, expected) in chunk {
                let req = request_type(msg);
                let reply = self.conn.recv(req)?;
                out.push(protocol::check_reply(reply, expected, self.conn.ctx(req)));
            }
        }
        Ok(out)
    }

    // ---- metadata ----------------------------------------------------------

    /// Creates one object from a metadata tree.
    pub fn create_data(&mut self, content: &ObjectMeta) -> Result<Created> {
        let reply = self.call(
            json!({"type": "create_data_request", "content": content}),
            "create_data_reply",
        )?;
        let ctx = self.conn.ctx("create_data_request");
        Ok(Created {
            id: field_id(&reply, "id", ctx)?,
            signature: field_u64(&reply, "signature", ctx)?,
            instance_id: field_u64(&reply, "instance_id", ctx)?,
        })
    }

    /// Creates many objects in one round trip.
    pub fn create_datas(&mut self, contents: &[ObjectMeta]) -> Result<Vec<Created>> {
        if contents.is_empty() {
            return Ok(Vec::new());
        }
        let req = "create_datas_request";
        let reply = self.call(
            json!({"type": req, "num": contents.len(), "contents": contents}),
            "create_datas_reply",
        )?;
        let ctx = self.conn.ctx(req);
        let list = |k: &str| -> Result<Vec<u64>> {
            let a = reply
                .get(k)
                .and_then(Value::as_array)
                .ok_or_else(|| ctx.protocol(format!("{k} missing")))?;
            a.iter()
                .map(|v| {
                    v.as_u64()
                        .ok_or_else(|| ctx.protocol(format!("{k} entry is not an integer")))
                })
                .collect()
        };
        let (ids, sigs, insts) = (list("ids")?, list("signatures")?, list("instance_ids")?);
        if ids.len() != contents.len() || sigs.len() != ids.len() || insts.len() != ids.len() {
            return Err(ctx.protocol("create_datas reply lists do not match the request"));
        }
        Ok(ids
            .into_iter()
            .zip(sigs)
            .zip(insts)
            .map(|((i, s), n)| Created {
                id: ObjectId(i),
                signature: s,
                instance_id: n,
            })
            .collect())
    }

    /// Fetches metadata trees; missing ids are absent from the map.
    pub fn get_data(
        &mut self,
        ids: &[ObjectId],
        sync_remote: bool,
        wait: bool,
    ) -> Result<HashMap<ObjectId, ObjectMeta>> {
        let req = "get_data_request";
        if wait {
            self.conn.set_read_timeout(None)?;
        }
        let res = self.call(
            json!({"type": req, "id": ids, "sync_remote": sync_remote, "wait": wait}),
            "get_data_reply",
        );
        if wait {
            let t = self.conn.timeouts().read;
            self.conn.set_read_timeout(t)?;
        }
        self.content_map(res?, req)
    }

    /// Fetches one metadata tree or fails with `NotFound`.
    pub fn get_meta(&mut self, id: ObjectId, sync_remote: bool) -> Result<ObjectMeta> {
        self.get_data(&[id], sync_remote, false)?
            .remove(&id)
            .ok_or_else(|| Error::NotFound {
                socket: self.socket().to_path_buf(),
                what: format!("object {id}"),
            })
    }

    /// Lists objects whose typename matches a glob (or regex).
    pub fn list_data(
        &mut self,
        pattern: &str,
        regex: bool,
        limit: usize,
    ) -> Result<HashMap<ObjectId, ObjectMeta>> {
        let req = "list_data_request";
        let reply = self.call(
            json!({"type": req, "pattern": pattern, "regex": regex, "limit": limit}),
            "get_data_reply",
        )?;
        self.content_map(reply, req)
    }

    pub(crate) fn content_map(
        &self,
        reply: Map<String, Value>,
        req: &str,
    ) -> Result<HashMap<ObjectId, ObjectMeta>> {
        let ctx = self.conn.ctx(req);
        match reply.get("content") {
            None | Some(Value::Null) => Ok(HashMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let id = ObjectId::parse(k)
                        .ok_or_else(|| ctx.protocol(format!("content key {k:?} is not an id")))?;
                    let meta = ObjectMeta::from_value(v.clone())
                        .ok_or_else(|| ctx.protocol(format!("content of {k} is not an object")))?;
                    Ok((id, meta))
                })
                .collect(),
            Some(_) => Err(ctx.protocol("content is neither an object nor null")),
        }
    }

    /// True if the object (or blob) exists.
    pub fn exists(&mut self, id: ObjectId) -> Result<bool> {
        let reply = self.call(json!({"type": "exists_request", "id": id}), "exists_reply")?;
        reply
            .get("exists")
            .and_then(Value::as_bool)
            .ok_or_else(|| self.conn.ctx("exists_request").protocol("exists missing"))
    }

    /// Makes an object visible to other instances (and nameable).
    pub fn persist(&mut self, id: ObjectId) -> Result<()> {
        self.call(
            json!({"type": "persist_request", "id": id}),
            "persist_reply",
        )
        .map(drop)
    }

    /// True if the object has been persisted.
    pub fn if_persist(&mut self, id: ObjectId) -> Result<bool> {
        let reply = self.call(
            json!({"type": "if_persist_request", "id": id}),
            "if_persist_reply",
        )?;
        reply
            .get("persist")
            .and_then(Value::as_bool)
            .ok_or_else(|| {
                self.conn
                    .ctx("if_persist_request")
                    .protocol("persist missing")
            })
    }

    /// Deletes objects. Unknown ids are ignored by the server.
    pub fn del_data(&mut self, ids: &[ObjectId], force: bool, deep: bool) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.call(
            json!({"type": "del_data_request", "id": ids, "force": force, "deep": deep, "fastpath": false, "memory_trim": false}),
            "del_data_reply",
        )
        .map(drop)
    }

    /// Force-deletes every object and blob of the instance.
    pub fn clear(&mut self) -> Result<()> {
        self.call(json!({"type": "clear_request"}), "clear_reply")
            .map(drop)
    }

    // ---- names -------------------------------------------------------------

    /// Names a persisted object.
    pub fn put_name(&mut self, id: ObjectId, name: &str) -> Result<()> {
        crate::names::check_length(name)?;
        self.call(
            json!({"type": "put_name_request", "object_id": id, "name": name}),
            "put_name_reply",
        )
        .map(drop)
    }

    /// Persists `id` and points `name` at it (names need persisted
    /// objects), in one wait, and drops this connection's references to
    /// `release` (the blobs the put sealed). Returns the object the name
    /// pointed to before, if any and not `id`. Requests run in order, so a
    /// failed persist fails the naming too and the name keeps its old object.
    pub fn persist_and_name(
        &mut self,
        id: ObjectId,
        name: &str,
        release: &[ObjectId],
    ) -> Result<Option<ObjectId>> {
        crate::names::check_length(name)?;
        let mut msgs = vec![
            (
                json!({"type": "persist_request", "id": id}),
                "persist_reply",
            ),
            (
                json!({"type": "get_name_request", "name": name, "wait": false}),
                "get_name_reply",
            ),
            (
                json!({"type": "put_name_request", "object_id": id, "name": name}),
                "put_name_reply",
            ),
        ];
        msgs.extend(release_msgs(release));
        let mut replies = self.call_many(&msgs)?.into_iter();
        let (Some(persisted), Some(old), Some(named)) =
            (replies.next(), replies.next(), replies.next())
        else {
            return Err(self.conn.ctx("persist_request").protocol("replies missing"));
        };
        persisted?;
        named?;
        let old = match old {
            Ok(reply) => Some(field_id(
                &reply,
                "object_id",
                self.conn.ctx("get_name_request"),
            )?),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        Ok(old.filter(|o| *o != id))
    }

    /// Persists `id` (unless `persist` is false) and drops this
    /// connection's references to `release`, in one wait.
    pub fn persist_and_release(
        &mut self,
        id: ObjectId,
        persist: bool,
        release: &[ObjectId],
    ) -> Result<()> {
        let mut msgs = Vec::with_capacity(release.len() + 1);
        if persist {
            msgs.push((
                json!({"type": "persist_request", "id": id}),
                "persist_reply",
            ));
        }
        msgs.extend(release_msgs(release));
        if msgs.is_empty() {
            return Ok(());
        }
        let replies = self.call_many(&msgs)?;
        match replies.into_iter().next() {
            Some(Err(e)) if persist => Err(e),
            _ => Ok(()),
        }
    }

    /// Adds `keys` = `values` to the object's `__labels`.
    pub fn label(&mut self, id: ObjectId, keys: &[&str], values: &[&str]) -> Result<()> {
        self.call(
            json!({"type": "label_request", "id": id, "keys": keys, "values": values}),
            "label_reply",
        )
        .map(drop)
    }

    /// Resolves a name; `wait` blocks (without read timeout) until it exists.
    pub fn get_name(&mut self, name: &str, wait: bool) -> Result<ObjectId> {
        crate::names::check_length(name)?;
        let req = "get_name_request";
        if wait {
            self.conn.set_read_timeout(None)?;
        }
        let res = self.call(
            json!({"type": req, "name": name, "wait": wait}),
            "get_name_reply",
        );
        if wait {
            let t = self.conn.timeouts().read;
            self.conn.set_read_timeout(t)?;
        }
        match res {
            Ok(reply) => field_id(&reply, "object_id", self.conn.ctx(req)),
            Err(e) if e.is_not_found() => Err(Error::NotFound {
                socket: self.socket().to_path_buf(),
                what: format!("name {name:?}"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Resolves a name, `None` when it does not exist.
    pub fn try_get_name(&mut self, name: &str) -> Result<Option<ObjectId>> {
        match self.get_name(name, false) {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a name (missing names are not an error).
    pub fn drop_name(&mut self, name: &str) -> Result<()> {
        crate::names::check_length(name)?;
        self.call(
            json!({"type": "drop_name_request", "name": name}),
            "drop_name_reply",
        )
        .map(drop)
    }

    /// Lists names matching a glob (or regex), with their object ids.
    pub fn list_names(
        &mut self,
        pattern: &str,
        regex: bool,
        limit: usize,
    ) -> Result<Vec<(String, ObjectId)>> {
        let req = "list_name_request";
        let reply = self.call(
            json!({"type": req, "pattern": pattern, "regex": regex, "limit": limit}),
            "list_name_reply",
        )?;
        let ctx = self.conn.ctx(req);
        let names = match reply.get("names") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(_) => return Err(ctx.protocol("names is not an object")),
        };
        let mut out: Vec<(String, ObjectId)> = names
            .iter()
            .map(|(k, v)| {
                ObjectId::from_json(v)
                    .map(|id| (k.clone(), id))
                    .ok_or_else(|| ctx.protocol(format!("name {k:?} maps to a non-id")))
            })
            .collect::<Result<_>>()?;
        out.sort();
        Ok(out)
    }

    // ---- cluster -----------------------------------------------------------

    /// The `meta` object of `instance_status` (memory_usage, memory_limit, ...).
    pub fn instance_status(&mut self) -> Result<Map<String, Value>> {
        let reply = self.call(
            json!({"type": "instance_status_request"}),
            "instance_status_reply",
        )?;
        match reply.get("meta") {
            Some(Value::Object(m)) => Ok(m.clone()),
            _ => Err(self
                .conn
                .ctx("instance_status_request")
                .protocol("meta missing")),
        }
    }

    /// Bytes of shared memory in use (from `instance_status`).
    pub fn memory_usage(&mut self) -> Result<u64> {
        let s = self.instance_status()?;
        s.get("memory_usage")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                self.conn
                    .ctx("instance_status_request")
                    .protocol("memory_usage missing")
            })
    }

    /// The instances of the cluster, keyed `i<id>`.
    pub fn cluster_meta(&mut self) -> Result<Map<String, Value>> {
        let reply = self.call(json!({"type": "cluster_meta"}), "cluster_meta")?;
        match reply.get("meta") {
            Some(Value::Object(m)) => Ok(m.clone()),
            _ => Err(self.conn.ctx("cluster_meta").protocol("meta missing")),
        }
    }

    /// The number of instances in the cluster and the trees of `ids`
    /// (missing ids absent), in one wait.
    pub fn cluster_size_and_data(
        &mut self,
        ids: &[ObjectId],
    ) -> Result<(usize, HashMap<ObjectId, ObjectMeta>)> {
        let msgs = [
            (json!({"type": "cluster_meta"}), "cluster_meta"),
            (
                json!({"type": "get_data_request", "id": ids, "sync_remote": false, "wait": false}),
                "get_data_reply",
            ),
        ];
        let mut replies = self.call_many(&msgs)?.into_iter();
        let (Some(cluster), Some(data)) = (replies.next(), replies.next()) else {
            return Err(self.conn.ctx("cluster_meta").protocol("replies missing"));
        };
        let instances = match cluster?.get("meta") {
            Some(Value::Object(m)) => m.len(),
            _ => return Err(self.conn.ctx("cluster_meta").protocol("meta missing")),
        };
        Ok((instances, self.content_map(data?, "get_data_request")?))
    }

    /// Asks this instance to copy a persisted object from the instance that
    /// holds it; returns the local id (the same id if already local).
    pub fn migrate_object(&mut self, id: ObjectId) -> Result<ObjectId> {
        let req = "migrate_object_request";
        let reply = self.call(
            json!({"type": req, "object_id": id}),
            "migrate_object_reply",
        )?;
        field_id(&reply, "object_id", self.conn.ctx(req))
    }

    /// Changes the read timeout of the underlying connection.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.conn.set_read_timeout(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Server, ServerOptions};

    /// Three pipelined requests of 400 KB each, whose error replies echo
    /// them: written at once they would fill both socket buffers and stall
    /// until the write timeout. In bounded batches each gets its own reply.
    #[test]
    fn pipelined_huge_requests_never_block_on_a_full_socket() {
        let opts = ServerOptions {
            size: "32Mi".into(),
            ..ServerOptions::default()
        };
        let server = Server::start(&opts).expect("a real vineyardd (set VINEYARDD)");
        let mut c = Client::connect(server.socket()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let names: Vec<String> = (0..3)
            .map(|i| format!("{i}{}", "n".repeat(400_000)))
            .collect();
        let msgs: Vec<(Value, &str)> = names
            .iter()
            .map(|n| {
                (
                    json!({"type": "get_name_request", "name": n, "wait": false}),
                    "get_name_reply",
                )
            })
            .collect();
        let start = std::time::Instant::now();
        let replies = c.call_many(&msgs).expect("no stall, no timeout");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(replies.len(), 3);
        for r in replies {
            let e = r.expect_err("no such name");
            assert!(e.is_not_found(), "{e}");
        }
        assert!(
            c.exists(ObjectId::EMPTY_BLOB).is_ok(),
            "the connection still works"
        );
    }
}
