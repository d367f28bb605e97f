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

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::connection::{Connection, Timeouts};
use crate::error::{Error, Result};
use crate::object::{ObjectId, ObjectMeta};
use crate::protocol::blobs::Release;
use crate::protocol::cluster::{ClusterMeta, InstanceStatus, Memory, MetaReply, MigrateObject};
use crate::protocol::handshake::{Register, RegisterReply};
use crate::protocol::lifecycle::{Clear, DelData, Exists, IfPersist, Label, Persist};
use crate::protocol::metadata::{CreateData, CreateDatas, DataReply, GetData, ListData};
use crate::protocol::names::{DropName, GetName, GetNameReply, ListName, PutName};
use crate::protocol::{self, Encoded, Message, Request};
use crate::shm::Region;

/// Requests written before their replies are read (see `Client::call_many`).
const PIPELINE_BATCH: usize = 64;

/// `release` requests for `ids` (their replies are not worth reading: a
/// blob this connection does not hold gives an error that changes nothing).
pub(crate) fn release_msgs(ids: &[ObjectId]) -> Result<Vec<Encoded>> {
    ids.iter()
        .filter(|b| **b != ObjectId::EMPTY_BLOB)
        .map(|b| Encoded::new(&Release { object_id: *b }))
        .collect()
}

/// Bytes of requests written before their replies are read. Far below the
/// kernel's buffer of a UNIX socket (about 200 KiB each way), so a batch is
/// always written whole while vineyardd may still be writing its replies
/// (error replies echo the request), and neither side can block the other.
const PIPELINE_BYTES: usize = 64 << 10;

pub use crate::protocol::handshake::CLIENT_VERSION;

/// The reply of a request sent by `send_unanswered` (or the error the
/// server answered with), and the type of that request.
pub(crate) type Answered = (&'static str, Result<Map<String, Value>>);

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
    unanswered: Vec<(&'static str, &'static str)>,
    /// Their replies, read before a later request was sent, with the type
    /// of their request.
    answered: Vec<Answered>,
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
        let reply = conn.call(&Encoded::new(&Register::default())?)?;
        conn.set_read_timeout(timeouts.read)?;
        let ctx = conn.ctx(Register::TYPE);
        let reply: RegisterReply = protocol::decode(reply, ctx)?;
        if reply.store_match == Some(false) {
            return Err(ctx.protocol("the server's store type is not the default bulk store"));
        }
        let info = ServerInfo {
            instance_id: reply.instance_id,
            version: reply.version,
            rpc_endpoint: reply.rpc_endpoint,
            ipc_socket: reply.ipc_socket,
        };
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

    /// Sends one request and reads its reply into the request's reply type.
    pub(crate) fn request<R: Request>(&mut self, req: &R) -> Result<R::Reply> {
        let reply = self.call(&Encoded::new(req)?)?;
        self.read(reply, R::TYPE)
    }

    /// Sends one encoded request and returns its checked reply.
    pub(crate) fn call(&mut self, msg: &Encoded) -> Result<Map<String, Value>> {
        self.settle()?;
        self.conn.call(msg)
    }

    /// Reads a checked reply to `request` (from `call_many`, say) as `T`.
    pub(crate) fn read<T: DeserializeOwned>(
        &self,
        reply: Map<String, Value>,
        request: &str,
    ) -> Result<T> {
        protocol::decode(reply, self.conn.ctx(request))
    }

    /// Sends requests whose replies nobody waits for now (`release`s: the
    /// server acts on them at once). Their replies are read before the next
    /// request's, with no wait of their own, and kept for `take_answered`.
    /// Replies must carry no fds.
    pub(crate) fn send_unanswered(&mut self, msgs: &[Encoded]) -> Result<()> {
        for chunk in msgs.chunks(PIPELINE_BATCH) {
            // Never more than a batch of replies waits in the socket, so
            // neither side blocks on a full buffer.
            if self.unanswered.len() + chunk.len() > PIPELINE_BATCH {
                self.settle()?;
            }
            let frames: Vec<u8> = chunk.iter().flat_map(|m| m.frame.iter().copied()).collect();
            self.conn.send_raw(&frames, chunk[0].request)?;
            self.unanswered
                .extend(chunk.iter().map(|m| (m.request, m.reply)));
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
            let reply = self.conn.recv(req)?;
            let checked = protocol::check_reply(reply, expected, self.conn.ctx(req));
            self.answered.push((req, checked));
        }
        Ok(())
    }

    /// The replies of every `send_unanswered` request so far, in order,
    /// each with the type of its request.
    pub(crate) fn take_answered(&mut self) -> Result<Vec<Answered>> {
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
        msgs: &[Encoded],
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
            for msg in rest.iter().take(PIPELINE_BATCH) {
                if n > 0 && frames.len() + msg.frame.len() > PIPELINE_BYTES {
                    break;
                }
                frames.extend_from_slice(&msg.frame);
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            self.conn.send_raw(&frames, chunk[0].request)?;
            for msg in chunk {
                let reply = self.conn.recv(msg.request)?;
                out.push(protocol::check_reply(
                    reply,
                    msg.reply,
                    self.conn.ctx(msg.request),
                ));
            }
        }
        Ok(out)
    }

    // ---- metadata ----------------------------------------------------------

    /// Creates one object from a metadata tree.
    pub fn create_data(&mut self, content: &ObjectMeta) -> Result<Created> {
        let reply = self.request(&CreateData { content })?;
        Ok(Created {
            id: reply.id,
            signature: reply.signature,
            instance_id: reply.instance_id,
        })
    }

    /// Creates many objects in one round trip.
    pub fn create_datas(&mut self, contents: &[ObjectMeta]) -> Result<Vec<Created>> {
        if contents.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self.request(&CreateDatas::new(contents))?;
        let (ids, sigs, insts) = (reply.ids, reply.signatures, reply.instance_ids);
        if ids.len() != contents.len() || sigs.len() != ids.len() || insts.len() != ids.len() {
            return Err(self
                .conn
                .ctx(CreateDatas::TYPE)
                .protocol("create_datas reply lists do not match the request"));
        }
        Ok(ids
            .into_iter()
            .zip(sigs)
            .zip(insts)
            .map(|((id, signature), instance_id)| Created {
                id,
                signature,
                instance_id,
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
        if wait {
            self.conn.set_read_timeout(None)?;
        }
        let res = self.request(&GetData {
            id: ids,
            sync_remote,
            wait,
        });
        if wait {
            let t = self.conn.timeouts().read;
            self.conn.set_read_timeout(t)?;
        }
        Ok(res?.trees())
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
        let reply = self.request(&ListData {
            pattern,
            regex,
            limit,
        })?;
        Ok(reply.trees())
    }

    /// True if the object (or blob) exists.
    pub fn exists(&mut self, id: ObjectId) -> Result<bool> {
        Ok(self.request(&Exists { id })?.exists)
    }

    /// Makes an object visible to other instances (and nameable).
    pub fn persist(&mut self, id: ObjectId) -> Result<()> {
        self.request(&Persist { id }).map(drop)
    }

    /// True if the object has been persisted.
    pub fn if_persist(&mut self, id: ObjectId) -> Result<bool> {
        Ok(self.request(&IfPersist { id })?.persist)
    }

    /// Deletes objects. Unknown ids are ignored by the server.
    pub fn del_data(&mut self, ids: &[ObjectId], force: bool, deep: bool) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.request(&DelData::new(ids, force, deep)).map(drop)
    }

    /// Force-deletes every object and blob of the instance.
    pub fn clear(&mut self) -> Result<()> {
        self.request(&Clear {}).map(drop)
    }

    // ---- names -------------------------------------------------------------

    /// Names a persisted object.
    pub fn put_name(&mut self, id: ObjectId, name: &str) -> Result<()> {
        crate::names::check_length(name)?;
        self.request(&PutName {
            object_id: id,
            name,
        })
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
            Encoded::new(&Persist { id })?,
            Encoded::new(&GetName { name, wait: false })?,
            Encoded::new(&PutName {
                object_id: id,
                name,
            })?,
        ];
        msgs.extend(release_msgs(release)?);
        let mut replies = self.call_many(&msgs)?.into_iter();
        let (Some(persisted), Some(old), Some(named)) =
            (replies.next(), replies.next(), replies.next())
        else {
            return Err(self.conn.ctx(Persist::TYPE).protocol("replies missing"));
        };
        persisted?;
        named?;
        let old = match old {
            Ok(reply) => Some(self.read::<GetNameReply>(reply, GetName::TYPE)?.object_id),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        Ok(old.filter(|o| *o != id))
    }

    /// [`Client::persist_and_name`] for a caller that already knows what
    /// the name points to: no `get_name`. vineyardd 0.24.2 copies its whole
    /// name table on every `get_name` and `drop_name` (`json::value("names")`
    /// returns a copy), so those two cost time in proportion to the names in
    /// the store; `persist` and `put_name` look the object up by id.
    pub fn persist_and_rename(
        &mut self,
        id: ObjectId,
        name: &str,
        release: &[ObjectId],
    ) -> Result<()> {
        crate::names::check_length(name)?;
        let mut msgs = vec![
            Encoded::new(&Persist { id })?,
            Encoded::new(&PutName {
                object_id: id,
                name,
            })?,
        ];
        msgs.extend(release_msgs(release)?);
        let mut replies = self.call_many(&msgs)?.into_iter();
        let (Some(persisted), Some(named)) = (replies.next(), replies.next()) else {
            return Err(self.conn.ctx(Persist::TYPE).protocol("replies missing"));
        };
        persisted?;
        named.map(drop)
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
            msgs.push(Encoded::new(&Persist { id })?);
        }
        msgs.extend(release_msgs(release)?);
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
        self.request(&Label { id, keys, values }).map(drop)
    }

    /// Resolves a name; `wait` blocks (without read timeout) until it exists.
    pub fn get_name(&mut self, name: &str, wait: bool) -> Result<ObjectId> {
        crate::names::check_length(name)?;
        if wait {
            self.conn.set_read_timeout(None)?;
        }
        let res = self.request(&GetName { name, wait });
        if wait {
            let t = self.conn.timeouts().read;
            self.conn.set_read_timeout(t)?;
        }
        match res {
            Ok(reply) => Ok(reply.object_id),
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
        self.request(&DropName { name }).map(drop)
    }

    /// Lists names matching a glob (or regex), with their object ids,
    /// sorted by name.
    pub fn list_names(
        &mut self,
        pattern: &str,
        regex: bool,
        limit: usize,
    ) -> Result<Vec<(String, ObjectId)>> {
        let reply = self.request(&ListName {
            pattern,
            regex,
            limit,
        })?;
        Ok(reply.names.unwrap_or_default().into_iter().collect())
    }

    // ---- cluster -----------------------------------------------------------

    /// The `meta` object of `instance_status` (memory_usage, memory_limit, ...).
    pub fn instance_status(&mut self) -> Result<Map<String, Value>> {
        Ok(self.request(&InstanceStatus {})?.meta)
    }

    /// Bytes of shared memory in use (from `instance_status`).
    pub fn memory_usage(&mut self) -> Result<u64> {
        let status = Value::Object(self.instance_status()?);
        let ctx = self.conn.ctx(InstanceStatus::TYPE);
        protocol::decode_value::<Memory>(&status, ctx)?
            .memory_usage
            .ok_or_else(|| ctx.protocol("memory_usage missing"))
    }

    /// The instances of the cluster, keyed `i<id>`.
    pub fn cluster_meta(&mut self) -> Result<Map<String, Value>> {
        Ok(self.request(&ClusterMeta {})?.meta)
    }

    /// The number of instances in the cluster and the trees of `ids`
    /// (missing ids absent), in one wait.
    pub fn cluster_size_and_data(
        &mut self,
        ids: &[ObjectId],
    ) -> Result<(usize, HashMap<ObjectId, ObjectMeta>)> {
        let msgs = [
            Encoded::new(&ClusterMeta {})?,
            Encoded::new(&GetData {
                id: ids,
                sync_remote: false,
                wait: false,
            })?,
        ];
        let mut replies = self.call_many(&msgs)?.into_iter();
        let (Some(cluster), Some(data)) = (replies.next(), replies.next()) else {
            return Err(self.conn.ctx(ClusterMeta::TYPE).protocol("replies missing"));
        };
        let instances = self.read::<MetaReply>(cluster?, ClusterMeta::TYPE)?;
        let data = self.read::<DataReply>(data?, GetData::TYPE)?;
        Ok((instances.meta.len(), data.trees()))
    }

    /// Asks this instance to copy a persisted object from the instance that
    /// holds it; returns the local id (the same id if already local).
    pub fn migrate_object(&mut self, id: ObjectId) -> Result<ObjectId> {
        Ok(self.request(&MigrateObject { object_id: id })?.object_id)
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
        let msgs: Vec<Encoded> = names
            .iter()
            .map(|n| {
                Encoded::new(&GetName {
                    name: n,
                    wait: false,
                })
                .unwrap()
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
