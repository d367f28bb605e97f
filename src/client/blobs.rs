//! Blob requests: allocation in shared memory, sealing, mapping what others
//! sealed, and the file descriptors that come with the replies.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::Client;
use crate::error::{Error, Result};
use crate::object::ObjectId;
use crate::protocol::blobs::{
    fds_to_receive, CreateBuffer, CreateBufferReply, DropBuffer, GetBuffers, GetBuffersReply,
    IsInUse, Payload, Release, Seal,
};
use crate::protocol::cluster::{InstanceStatus, Memory};
use crate::protocol::{self, Encoded, Message, Request};
use crate::shm::{BlobBytes, Region};

/// A reply as read from the server: its fields, or the error it reported.
type ServerReply = Result<Map<String, Value>>;

impl Client {
    /// Allocates one blob; its bytes may be written until `seal`.
    pub fn create_buffer(&mut self, size: u64) -> Result<BlobBytes> {
        self.create_one(size).map_err(|e| self.full(e, size))
    }

    /// `create_buffer` without turning "not enough memory" into `StoreFull`.
    fn create_one(&mut self, size: u64) -> Result<BlobBytes> {
        let reply = self.call(&Encoded::new(&CreateBuffer { size })?)?;
        self.created_blob(reply)
    }

    /// Allocates many blobs, all or nothing: on failure nothing stays
    /// allocated and "not enough memory" becomes `StoreFull` with the total
    /// asked for and the bytes free once the partial allocations are gone.
    ///
    /// One `create_buffer` per blob, sent back to back (one wait per batch,
    /// like `call_many`; each reply's fd follows it on the stream). Not
    /// vineyardd's `create_buffers`: 0.24.2 keeps (leaks) the blobs it
    /// allocated before the one that did not fit and never tells us their
    /// ids, while single allocations fail alone and the created ones can be
    /// dropped here.
    pub fn create_buffers(&mut self, sizes: &[u64]) -> Result<Vec<BlobBytes>> {
        const BATCH: usize = 64;
        let req = CreateBuffer::TYPE;
        let total = sizes.iter().fold(0u64, |a, s| a.saturating_add(*s));
        self.settle()?;
        let mut out = Vec::with_capacity(sizes.len());
        let mut failed = None;
        for chunk in sizes.chunks(BATCH) {
            let mut frames = Vec::with_capacity(chunk.len() * 48);
            for size in chunk {
                frames.extend_from_slice(&protocol::encode_message(&CreateBuffer { size: *size })?);
            }
            self.conn.send_raw(&frames, req)?;
            for _ in chunk {
                let reply = self.conn.recv(req)?;
                match protocol::check_reply(reply, CreateBuffer::REPLY, self.conn.ctx(req)) {
                    Ok(reply) => out.push(self.created_blob(reply)?),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if failed.is_some() {
                break;
            }
        }
        match failed {
            None => Ok(out),
            Some(e) => {
                for b in &out {
                    let _ = self.drop_buffer(b.id());
                }
                Err(self.full(e, total))
            }
        }
    }

    /// The blob of a `create_buffer_reply`, its memory file received and
    /// mapped if new.
    fn created_blob(&mut self, reply: Map<String, Value>) -> Result<BlobBytes> {
        let req = CreateBuffer::TYPE;
        let reply: CreateBufferReply = self.read(reply, req)?;
        let payload = reply.created.validate(self.conn.ctx(req))?;
        let fds = fds_to_receive(None, reply.fd);
        self.receive_fds(fds, std::slice::from_ref(&payload), req)?;
        self.blob_of(&payload, req)
    }

    /// Seals a blob: it becomes immutable and readable by others.
    pub fn seal(&mut self, id: ObjectId) -> Result<()> {
        self.request(&Seal { object_id: id }).map(drop)
    }

    /// Seals many blobs with one wait per batch (`call_many`).
    pub fn seal_many(&mut self, ids: &[ObjectId]) -> Result<()> {
        let msgs = ids
            .iter()
            .map(|id| Encoded::new(&Seal { object_id: *id }))
            .collect::<Result<Vec<_>>>()?;
        self.call_many(&msgs)?
            .into_iter()
            .try_for_each(|r| r.map(drop))
    }

    /// Frees an unsealed blob at once (abort of a save).
    pub fn drop_buffer(&mut self, id: ObjectId) -> Result<()> {
        self.request(&DropBuffer { id }).map(drop)
    }

    /// Maps the given sealed local blobs. Missing ids are absent from the map.
    pub fn get_buffers(&mut self, ids: &[ObjectId]) -> Result<HashMap<ObjectId, BlobBytes>> {
        self.get_buffers_then(ids, None).map(|(blobs, _)| blobs)
    }

    /// `get_buffers`, with `then` (a request whose reply carries no fds)
    /// sent right behind it: one wait for both, and the server handles
    /// `then` after the mapping (see `lease::confirm`). Returns its reply.
    pub fn get_buffers_then(
        &mut self,
        ids: &[ObjectId],
        then: Option<Encoded>,
    ) -> Result<(HashMap<ObjectId, BlobBytes>, Option<ServerReply>)> {
        let req = GetBuffers::TYPE;
        self.settle()?;
        let mut frames = protocol::encode_message(&GetBuffers { ids })?;
        if let Some(then) = &then {
            frames.extend_from_slice(&then.frame);
        }
        self.conn.send_raw(&frames, req)?;
        let reply = self.conn.recv(req)?;
        // Every reply is read before any error is returned, so the
        // connection stays in step.
        let reply = protocol::check_reply(reply, GetBuffers::REPLY, self.conn.ctx(req));
        let mapped = match reply {
            Ok(reply) => {
                let reply: GetBuffersReply = self.read(reply, req)?;
                let payloads = reply
                    .payloads
                    .into_iter()
                    .map(|p| p.validate(self.conn.ctx(req)))
                    .collect::<Result<Vec<_>>>()?;
                self.receive_fds(fds_to_receive(reply.fds, reply.fd), &payloads, req)?;
                let mut out = HashMap::with_capacity(payloads.len());
                for p in &payloads {
                    out.insert(p.object_id, self.blob_of(p, req)?);
                }
                Ok(out)
            }
            Err(e) => Err(e),
        };
        let then_reply = match &then {
            Some(then) => {
                let r = self.conn.recv(then.request)?;
                Some(protocol::check_reply(
                    r,
                    then.reply,
                    self.conn.ctx(then.request),
                ))
            }
            None => None,
        };
        Ok((mapped?, then_reply))
    }

    /// Drops this connection's reference to a blob.
    pub fn release(&mut self, id: ObjectId) -> Result<()> {
        self.request(&Release { object_id: id }).map(drop)
    }

    /// True while some connection holds a reference to the blob (sealed it,
    /// mapped it with `get_buffers`, or increased its count) and has not
    /// released it or disconnected.
    pub fn is_in_use(&mut self, id: ObjectId) -> Result<bool> {
        Ok(self.request(&IsInUse { id })?.is_in_use)
    }

    /// Receives the fds listed in a reply and maps each new memory file.
    fn receive_fds(&mut self, fds: Vec<i64>, payloads: &[Payload], req: &str) -> Result<()> {
        for server_fd in fds {
            let map_size = payloads
                .iter()
                .find(|p| p.store_fd == server_fd)
                .map(|p| p.map_size)
                .ok_or_else(|| {
                    self.conn
                        .ctx(req)
                        .protocol(format!("fd {server_fd} listed but no payload uses it"))
                })?;
            let fd = self.conn.recv_fd(req)?;
            let region = Region::map(fd, map_size).map_err(|e| Error::Io {
                socket: self.socket().to_path_buf(),
                request: format!("{req} (mmap of {map_size} bytes)"),
                source: e,
            })?;
            self.regions.insert(server_fd, Arc::new(region));
        }
        Ok(())
    }

    fn blob_of(&self, p: &Payload, req: &str) -> Result<BlobBytes> {
        if p.data_size == 0 {
            return Ok(BlobBytes::empty(p.object_id));
        }
        let region = self.regions.get(&p.store_fd).ok_or_else(|| {
            self.conn.ctx(req).protocol(format!(
                "blob {} is in memory file {} that was never sent",
                p.object_id, p.store_fd
            ))
        })?;
        BlobBytes::new(p.object_id, region.clone(), p.data_offset, p.data_size).ok_or_else(|| {
            self.conn
                .ctx(req)
                .protocol(format!("blob {} lies outside its mapping", p.object_id))
        })
    }

    /// Turns "not enough memory" into `StoreFull` with the bytes asked for.
    fn full(&mut self, e: Error, requested: u64) -> Error {
        if !protocol::is_out_of_memory(&e) {
            return e;
        }
        let message = match &e {
            Error::Server { message, .. } => message.clone(),
            _ => String::new(),
        };
        // Best effort: the figures only make the error clearer.
        let memory = self
            .instance_status()
            .and_then(|s| {
                protocol::decode_value::<Memory>(
                    &Value::Object(s),
                    self.conn.ctx(InstanceStatus::TYPE),
                )
            })
            .unwrap_or_default();
        let (used, limit) = (
            memory.memory_usage.unwrap_or(0),
            memory.memory_limit.unwrap_or(0),
        );
        Error::StoreFull {
            socket: self.socket().to_path_buf(),
            requested,
            available: limit.saturating_sub(used),
            limit,
            message,
        }
    }
}
