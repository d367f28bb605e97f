//! Blob requests: allocation in shared memory, sealing, mapping what others
//! sealed, and the file descriptors that come with the replies.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::Client;
use crate::error::{Error, Result};
use crate::object::ObjectId;
use crate::protocol::{self, field_u64, Payload};
use crate::shm::{BlobBytes, Region};

/// Allocator bytes a blob may cost beyond its size (alignment and headers),
/// counted when deciding whether a batch allocation surely fits.
const BATCH_OVERHEAD_PER_BLOB: u64 = 128;

impl Client {
    /// Allocates one blob; its bytes may be written until `seal`.
    pub fn create_buffer(&mut self, size: u64) -> Result<BlobBytes> {
        self.create_one(size).map_err(|e| self.full(e, size))
    }

    /// `create_buffer` without turning "not enough memory" into `StoreFull`.
    fn create_one(&mut self, size: u64) -> Result<BlobBytes> {
        let req = "create_buffer_request";
        let reply = self.call(json!({"type": req, "size": size}), "create_buffer_reply")?;
        let created = reply
            .get("created")
            .ok_or_else(|| self.conn.ctx(req).protocol("reply has no created payload"))?;
        let payload = Payload::from_json(created, self.conn.ctx(req))?;
        self.receive_fds(&reply, std::slice::from_ref(&payload), req)?;
        self.blob_of(&payload, req)
    }

    /// Allocates many blobs, all or nothing: on failure nothing stays
    /// allocated and "not enough memory" becomes `StoreFull` with the total
    /// asked for and the bytes free once the partial allocations are gone.
    ///
    /// One `create_buffers` round trip when the store clearly has room. When
    /// it might not, the blobs are created one by one and the created ones
    /// dropped if one fails: vineyardd 0.24.2's `create_buffers` keeps (leaks)
    /// the blobs it allocated before the one that did not fit, and never tells
    /// us their ids, so a batch that can fail half way must not be sent.
    pub fn create_buffers(&mut self, sizes: &[u64]) -> Result<Vec<BlobBytes>> {
        if sizes.is_empty() {
            return Ok(Vec::new());
        }
        let total = sizes.iter().fold(0u64, |a, s| a.saturating_add(*s));
        let allocations = sizes.iter().filter(|s| **s > 0).count() as u64;
        if allocations > 1 && !self.room_for_batch(total, allocations)? {
            return self.create_buffers_one_by_one(sizes, total);
        }
        let req = "create_buffers_request";
        let reply = self
            .call(
                json!({"type": req, "num": sizes.len(), "sizes": sizes}),
                "create_buffers_reply",
            )
            .map_err(|e| self.full(e, total))?;
        let payloads = self.payloads(&reply, req)?;
        if payloads.len() != sizes.len() {
            return Err(self.conn.ctx(req).protocol(format!(
                "asked for {} blobs, got {}",
                sizes.len(),
                payloads.len()
            )));
        }
        self.receive_fds(&reply, &payloads, req)?;
        payloads.iter().map(|p| self.blob_of(p, req)).collect()
    }

    /// True when a batch of `allocations` blobs totalling `total` bytes
    /// cannot run out of memory half way: it takes at most half of what is
    /// free (headroom for allocator overhead, fragmentation and concurrent
    /// writers between this check and the batch).
    fn room_for_batch(&mut self, total: u64, allocations: u64) -> Result<bool> {
        let status = self.instance_status()?;
        let field = |k: &str| status.get(k).and_then(Value::as_u64);
        let (Some(used), Some(limit)) = (field("memory_usage"), field("memory_limit")) else {
            return Ok(false);
        };
        let free = limit.saturating_sub(used);
        let need = total
            .saturating_add(allocations.saturating_mul(BATCH_OVERHEAD_PER_BLOB))
            .saturating_mul(2);
        Ok(need <= free)
    }

    /// The careful path of `create_buffers`: one request per blob, and a
    /// rollback of the created ones when one fails.
    fn create_buffers_one_by_one(&mut self, sizes: &[u64], total: u64) -> Result<Vec<BlobBytes>> {
        let mut out = Vec::with_capacity(sizes.len());
        for &size in sizes {
            match self.create_one(size) {
                Ok(b) => out.push(b),
                Err(e) => {
                    if !e.is_fatal_to_connection() {
                        for b in &out {
                            let _ = self.drop_buffer(b.id());
                        }
                    }
                    return Err(self.full(e, total));
                }
            }
        }
        Ok(out)
    }

    /// Seals a blob: it becomes immutable and readable by others.
    pub fn seal(&mut self, id: ObjectId) -> Result<()> {
        self.call(
            json!({"type": "seal_request", "object_id": id}),
            "seal_reply",
        )
        .map(drop)
    }

    /// Seals many blobs with few round trips: requests are written in
    /// batches and the replies read after each batch. Seal replies carry no
    /// fds, so this pipelining is safe; batches keep both socket buffers from
    /// filling up. Every reply is read even after an error reply.
    pub fn seal_many(&mut self, ids: &[ObjectId]) -> Result<()> {
        const BATCH: usize = 128;
        let req = "seal_request";
        for chunk in ids.chunks(BATCH) {
            let mut frames = Vec::with_capacity(chunk.len() * 64);
            for id in chunk {
                frames.extend_from_slice(&protocol::encode_frame(
                    &json!({"type": req, "object_id": id}),
                ));
            }
            self.conn.send_raw(&frames, req)?;
            let mut first_error = None;
            for _ in chunk {
                let reply = self.conn.recv(req)?;
                if let Err(e) = protocol::check_reply(reply, "seal_reply", self.conn.ctx(req)) {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Frees an unsealed blob at once (abort of a save).
    pub fn drop_buffer(&mut self, id: ObjectId) -> Result<()> {
        self.call(
            json!({"type": "drop_buffer_request", "id": id}),
            "drop_buffer_reply",
        )
        .map(drop)
    }

    /// Maps the given sealed local blobs. Missing ids are absent from the map.
    pub fn get_buffers(&mut self, ids: &[ObjectId]) -> Result<HashMap<ObjectId, BlobBytes>> {
        let req = "get_buffers_request";
        let mut msg = Map::new();
        msg.insert("type".into(), req.into());
        msg.insert("num".into(), ids.len().into());
        for (i, id) in ids.iter().enumerate() {
            msg.insert(i.to_string(), id.0.into());
        }
        msg.insert("unsafe".into(), false.into());
        let reply = self.call(Value::Object(msg), "get_buffers_reply")?;
        let payloads = self.payloads(&reply, req)?;
        self.receive_fds(&reply, &payloads, req)?;
        let mut out = HashMap::with_capacity(payloads.len());
        for p in &payloads {
            out.insert(p.object_id, self.blob_of(p, req)?);
        }
        Ok(out)
    }

    /// Drops this connection's reference to a blob.
    pub fn release(&mut self, id: ObjectId) -> Result<()> {
        self.call(
            json!({"type": "release_request", "object_id": id}),
            "release_reply",
        )
        .map(drop)
    }

    /// True while some connection holds a reference to the blob (sealed it,
    /// mapped it with `get_buffers`, or increased its count) and has not
    /// released it or disconnected.
    pub fn is_in_use(&mut self, id: ObjectId) -> Result<bool> {
        let req = "is_in_use_request";
        let reply = self.call(json!({"type": req, "id": id}), "is_in_use_reply")?;
        reply
            .get("is_in_use")
            .and_then(Value::as_bool)
            .ok_or_else(|| self.conn.ctx(req).protocol("is_in_use missing"))
    }

    fn payloads(&self, reply: &Map<String, Value>, req: &str) -> Result<Vec<Payload>> {
        let ctx = self.conn.ctx(req);
        match reply.get("payloads") {
            Some(Value::Array(a)) => a.iter().map(|v| Payload::from_json(v, ctx)).collect(),
            _ => {
                let num = field_u64(reply, "num", ctx)? as usize;
                (0..num)
                    .map(|i| {
                        Payload::from_json(
                            reply
                                .get(&i.to_string())
                                .ok_or_else(|| ctx.protocol(format!("payload {i} missing")))?,
                            ctx,
                        )
                    })
                    .collect()
            }
        }
    }

    /// Receives the fds listed in a reply and maps each new memory file.
    fn receive_fds(
        &mut self,
        reply: &Map<String, Value>,
        payloads: &[Payload],
        req: &str,
    ) -> Result<()> {
        let fds = protocol::listed_fds(reply, self.conn.ctx(req))?;
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
        let (used, limit) = match self.instance_status() {
            Ok(s) => (
                s.get("memory_usage").and_then(Value::as_u64).unwrap_or(0),
                s.get("memory_limit").and_then(Value::as_u64).unwrap_or(0),
            ),
            Err(_) => (0, 0),
        };
        Error::StoreFull {
            socket: self.socket().to_path_buf(),
            requested,
            available: limit.saturating_sub(used),
            limit,
            message,
        }
    }
}
