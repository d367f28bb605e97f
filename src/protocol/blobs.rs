//! Blobs in shared memory: allocation, sealing, mapping, references.
//!
//! The replies that hand out memory (`create_buffer_reply`,
//! `get_buffers_reply`) list the server fds that follow them in-band; see
//! [`fds_to_receive`].

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::{Ack, Ctx};
use crate::error::Result;
use crate::object::ObjectId;

/// One blob as described in replies (`created`, `payloads`). Fields of the
/// server's payload not listed here (`pointer`, `is_sealed`, ...) are not
/// read.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Payload {
    pub object_id: ObjectId,
    /// The server's fd number: a key for the fd cache, never a local fd.
    pub store_fd: i64,
    pub data_offset: u64,
    pub data_size: u64,
    pub map_size: u64,
}

impl Payload {
    /// Checks that a non-empty blob lies inside its memory file: the bytes
    /// we map are only those.
    pub fn validate(self, ctx: Ctx<'_>) -> Result<Payload> {
        if self.data_size > 0 {
            let end = self.data_offset.checked_add(self.data_size);
            if self.store_fd < 0 || end.is_none_or(|end| end > self.map_size) {
                return Err(ctx.protocol(format!(
                    "payload of {} lies outside its memory file (offset {}, size {}, file {})",
                    self.object_id, self.data_offset, self.data_size, self.map_size
                )));
            }
        }
        Ok(self)
    }
}

/// The server fds that follow a reply, in order: its `fds` list, else its
/// `fd` when that is one (-1, or a value that is not a number, means none).
pub fn fds_to_receive(fds: Option<Vec<i64>>, fd: Option<i64>) -> Vec<i64> {
    match (fds, fd) {
        (Some(fds), _) => fds,
        (None, Some(fd)) if fd >= 0 => vec![fd],
        _ => Vec::new(),
    }
}

/// `create_buffer_request`: allocates one blob.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CreateBuffer {
    pub size: u64,
}

request!(CreateBuffer, "create_buffer_request" => "create_buffer_reply", CreateBufferReply);

/// The new blob, and the fd of its memory file when not sent before.
#[derive(Clone, Debug, Deserialize)]
pub struct CreateBufferReply {
    pub created: Payload,
    #[serde(default, deserialize_with = "super::lenient")]
    pub fd: Option<i64>,
}

/// `seal_request`: the blob becomes immutable and readable by others.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Seal {
    pub object_id: ObjectId,
}

request!(Seal, "seal_request" => "seal_reply", Ack);

/// `drop_buffer_request`: frees a blob at once (an unsealed one, to abort).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DropBuffer {
    pub id: ObjectId,
}

request!(DropBuffer, "drop_buffer_request" => "drop_buffer_reply", Ack);

/// `get_buffers_request`: maps sealed local blobs. Sent in the form every
/// server version reads: `num` and the ids under the keys `"0"`..`"n-1"`.
#[derive(Clone, Copy, Debug)]
pub struct GetBuffers<'a> {
    pub ids: &'a [ObjectId],
}

impl Serialize for GetBuffers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.ids.len() + 2))?;
        m.serialize_entry("num", &self.ids.len())?;
        for (i, id) in self.ids.iter().enumerate() {
            m.serialize_entry(&i.to_string(), id)?;
        }
        m.serialize_entry("unsafe", &false)?;
        m.end()
    }
}

request!(GetBuffers<'_>, "get_buffers_request" => "get_buffers_reply", GetBuffersReply);

/// The blobs found (unknown and remote ids are silently left out), and the
/// fds of memory files not sent before on this connection.
#[derive(Clone, Debug, Deserialize)]
pub struct GetBuffersReply {
    pub payloads: Vec<Payload>,
    pub fds: Option<Vec<i64>>,
    #[serde(default, deserialize_with = "super::lenient")]
    pub fd: Option<i64>,
}

/// `release_request`: drops this connection's reference to a blob.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Release {
    pub object_id: ObjectId,
}

request!(Release, "release_request" => "release_reply", Ack);

/// `is_in_use_request`: whether some connection holds the blob.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct IsInUse {
    pub id: ObjectId,
}

request!(IsInUse, "is_in_use_request" => "is_in_use_reply", IsInUseReply);

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct IsInUseReply {
    pub is_in_use: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{ctx, decode_err, encoded};
    use crate::protocol::{decode_value, Error};
    use proptest::prelude::*;
    use serde_json::json;

    const BLOB: ObjectId = ObjectId(0xe889_041a_7940_0000);

    #[test]
    fn requests_are_what_the_protocol_specifies() {
        assert_eq!(
            encoded(&CreateBuffer { size: 16 }),
            json!({"type": "create_buffer_request", "size": 16})
        );
        assert_eq!(
            encoded(&Seal { object_id: BLOB }),
            json!({"type": "seal_request", "object_id": BLOB.0})
        );
        assert_eq!(
            encoded(&DropBuffer { id: BLOB }),
            json!({"type": "drop_buffer_request", "id": BLOB.0})
        );
        let ids = [BLOB, ObjectId::EMPTY_BLOB, ObjectId(777)];
        assert_eq!(
            encoded(&GetBuffers { ids: &ids }),
            json!({"type": "get_buffers_request", "num": 3, "0": BLOB.0,
                   "1": 9223372036854775808u64, "2": 777, "unsafe": false})
        );
        assert_eq!(
            encoded(&GetBuffers { ids: &[] }),
            json!({"type": "get_buffers_request", "num": 0, "unsafe": false})
        );
        assert_eq!(
            encoded(&Release { object_id: BLOB }),
            json!({"type": "release_request", "object_id": BLOB.0})
        );
        assert_eq!(
            encoded(&IsInUse { id: BLOB }),
            json!({"type": "is_in_use_request", "id": BLOB.0})
        );
    }

    fn payload(offset: u64, size: u64) -> serde_json::Value {
        json!({"object_id": BLOB.0, "store_fd": 9, "data_offset": offset, "data_size": size,
               "map_size": 268435464u64, "pointer": 140489557016640u64, "is_sealed": false,
               "is_owner": true, "is_gpu": false})
    }

    #[test]
    fn replies_as_vineyardd_sends_them_are_read() {
        let r: CreateBufferReply = decode_value(
            &json!({"type": "create_buffer_reply", "id": BLOB.0, "fd": 9, "created": payload(64, 16)}),
            ctx(),
        )
        .unwrap();
        assert_eq!((r.created.object_id, r.created.data_size), (BLOB, 16));
        assert_eq!(fds_to_receive(None, r.fd), vec![9]);
        let r: GetBuffersReply = decode_value(
            &json!({"type": "get_buffers_reply", "num": 1, "fds": [9], "compress": false,
                    "payloads": [payload(64, 16)], "0": payload(64, 16)}),
            ctx(),
        )
        .unwrap();
        assert_eq!(r.payloads.len(), 1);
        assert_eq!(fds_to_receive(r.fds, r.fd), vec![9]);
        assert_eq!(fds_to_receive(None, Some(-1)), Vec::<i64>::new());
        let r: IsInUseReply = decode_value(
            &json!({"type": "is_in_use_reply", "is_in_use": true}),
            ctx(),
        )
        .unwrap();
        assert!(r.is_in_use);
    }

    #[test]
    fn malformed_replies_name_the_field() {
        let mut p = payload(64, 16);
        p["store_fd"] = json!("9");
        let e =
            decode_err::<GetBuffersReply>(json!({"type": "get_buffers_reply", "payloads": [p]}));
        assert!(e.contains("payloads[0].store_fd"), "{e}");
        let e = decode_err::<GetBuffersReply>(json!({"type": "get_buffers_reply", "payloads": {}}));
        assert!(e.contains("payloads"), "{e}");
        let e = decode_err::<CreateBufferReply>(json!({"type": "create_buffer_reply", "fd": 9}));
        assert!(e.contains("created"), "{e}");
        let mut p = payload(64, 16);
        p.as_object_mut().unwrap().remove("map_size");
        let e = decode_err::<CreateBufferReply>(json!({"created": p}));
        assert!(e.contains("map_size"), "{e}");
        let e = decode_err::<IsInUseReply>(json!({"type": "is_in_use_reply"}));
        assert!(e.contains("is_in_use"), "{e}");
        let e = decode_err::<IsInUseReply>(json!({"is_in_use": 1}));
        assert!(e.contains("is_in_use"), "{e}");
        // `fds`, when present, must be a list of fds; a bad `fd` means none.
        let e = decode_err::<GetBuffersReply>(json!({"payloads": [], "fds": 9}));
        assert!(e.contains("fds"), "{e}");
        let r: GetBuffersReply = decode_value(&json!({"payloads": [], "fd": "9"}), ctx()).unwrap();
        assert!(fds_to_receive(r.fds, r.fd).is_empty());
    }

    #[test]
    fn payload_outside_mapping_is_refused() {
        let p = json!({"object_id": 1u64 << 63 | 5, "store_fd": 9, "data_offset": 64, "data_size": 100, "map_size": 128});
        let p: Payload = decode_value(&p, ctx()).unwrap();
        assert!(matches!(p.validate(ctx()), Err(Error::Protocol { .. })));
        let p = json!({"object_id": 1u64 << 63 | 5, "store_fd": 9, "data_offset": u64::MAX, "data_size": 2, "map_size": 128});
        let p: Payload = decode_value(&p, ctx()).unwrap();
        assert!(p
            .validate(ctx())
            .unwrap_err()
            .to_string()
            .contains("outside"));
    }

    proptest! {
        #[test]
        fn payload_decoder_never_panics(off in any::<u64>(), size in any::<u64>(), map in any::<u64>(), fd in any::<i64>()) {
            let p = json!({"object_id": 1u64 << 63, "store_fd": fd, "data_offset": off, "data_size": size, "map_size": map});
            if let Ok(p) = decode_value::<Payload>(&p, ctx()).and_then(|p| p.validate(ctx())) {
                prop_assert!(p.data_size == 0 || p.data_offset + p.data_size <= p.map_size);
            }
        }
    }
}
