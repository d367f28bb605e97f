//! The wire format: 8-byte little-endian length, then one JSON object.
//!
//! Pure functions only (no sockets), so the decoder can be property-tested
//! and fuzzed. Replies are checked in the order vineyardd requires: an error
//! reply has `code` and no `type`, so `code` is looked at first.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result, CODE_NOT_ENOUGH_MEMORY, CODE_OBJECT_NOT_EXISTS};
use crate::object::ObjectId;

/// vineyardd drops connections whose frames exceed 256 MiB; we refuse the same.
pub const MAX_FRAME: u64 = 256 << 20;

/// Where a message was going, for error text.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub socket: &'a Path,
    pub request: &'a str,
}

impl Ctx<'_> {
    /// A protocol error naming the socket and request.
    pub fn protocol(&self, detail: impl Into<String>) -> Error {
        Error::Protocol {
            socket: self.socket.to_path_buf(),
            request: self.request.to_string(),
            detail: detail.into(),
        }
    }
}

/// Encodes one frame: length prefix and body in one buffer (one write).
pub fn encode_frame(msg: &Value) -> Vec<u8> {
    let body = msg.to_string();
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// Reads the length prefix and validates it.
pub fn frame_len(header: [u8; 8], ctx: Ctx<'_>) -> Result<usize> {
    let len = u64::from_le_bytes(header);
    if len > MAX_FRAME {
        return Err(ctx.protocol(format!(
            "frame of {len} bytes exceeds the {MAX_FRAME} byte limit"
        )));
    }
    Ok(len as usize)
}

/// Nesting depth (of JSON objects and arrays, the reply itself being 1) kept
/// from a reply; see [`prune_deep`]. Below serde_json's recursion limit (128),
/// and far above any tree we write (`store::MAX_TREE_DEPTH` member levels
/// sit at reply depth 3 and below).
pub const MAX_REPLY_DEPTH: usize = 120;

/// What stands in a reply for a value nested deeper than [`MAX_REPLY_DEPTH`].
pub const PRUNED: &str = "<vineyard-kedro: nested too deeply, not read>";

/// `body` with every object or array that would sit deeper than `max_depth`
/// replaced by the string [`PRUNED`]; None when nothing is that deep. One pass,
/// no recursion, so any depth is handled; invalid JSON stays invalid.
pub fn prune_deep(body: &[u8], max_depth: usize) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut skip_from = None::<usize>; // depth at which a pruned value started
    let mut copied = 0usize;
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth && skip_from.is_none() {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
                    o.extend_from_slice(&body[copied..i]);
                    o.push(b'"');
                    o.extend_from_slice(PRUNED.as_bytes());
                    o.push(b'"');
                    skip_from = Some(depth);
                }
            }
            b'}' | b']' => {
                if skip_from == Some(depth) {
                    skip_from = None;
                    copied = i + 1;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    let mut o = out?;
    if skip_from.is_none() {
        o.extend_from_slice(&body[copied..]);
    }
    Some(o)
}

/// Parses a frame body into a JSON object. A reply nested deeper than
/// serde_json's recursion limit (a hostile or odd object in the store) is
/// parsed with its deepest values pruned (see [`prune_deep`]) instead of
/// failing, so one such object does not break a whole listing.
pub fn parse_body(body: &[u8], ctx: Ctx<'_>) -> Result<Map<String, Value>> {
    let parsed = match serde_json::from_slice::<Value>(body) {
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            match prune_deep(body, MAX_REPLY_DEPTH) {
                Some(pruned) => serde_json::from_slice::<Value>(&pruned),
                None => Err(e),
            }
        }
        other => other,
    };
    match parsed {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ctx.protocol(format!(
            "reply is not a JSON object: {}",
            short(&other.to_string())
        ))),
        Err(e) => Err(ctx.protocol(format!(
            "reply is not valid JSON ({e}): {}",
            short(&String::from_utf8_lossy(body))
        ))),
    }
}

/// Decodes a complete frame from the front of `buf`: `Ok(None)` if more bytes are
/// needed, otherwise the message and the number of bytes consumed.
pub fn decode_frame(buf: &[u8], ctx: Ctx<'_>) -> Result<Option<(Map<String, Value>, usize)>> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let mut header = [0u8; 8];
    header.copy_from_slice(&buf[..8]);
    let len = frame_len(header, ctx)?;
    if buf.len() - 8 < len {
        return Ok(None);
    }
    let msg = parse_body(&buf[8..8 + len], ctx)?;
    Ok(Some((msg, 8 + len)))
}

/// Checks a reply: error replies become `Error::Server` (or a more specific
/// variant), and the `type` must be the expected one.
pub fn check_reply(
    reply: Map<String, Value>,
    expected: &str,
    ctx: Ctx<'_>,
) -> Result<Map<String, Value>> {
    if let Some(code) = reply.get("code") {
        let code = code
            .as_i64()
            .ok_or_else(|| ctx.protocol("error code is not an integer"))?;
        if code != 0 {
            let message = reply
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(match code {
                CODE_OBJECT_NOT_EXISTS => Error::NotFound {
                    socket: ctx.socket.to_path_buf(),
                    what: format!("{} ({message})", ctx.request),
                },
                _ => Error::Server {
                    socket: ctx.socket.to_path_buf(),
                    request: ctx.request.to_string(),
                    code,
                    message,
                },
            });
        }
    }
    match reply.get("type").and_then(Value::as_str) {
        Some(t) if t == expected => Ok(reply),
        Some(t) => Err(ctx.protocol(format!("expected {expected}, got {t}"))),
        None => Err(ctx.protocol(format!("reply has no type (expected {expected})"))),
    }
}

/// True for the server's "not enough memory" code.
pub fn is_out_of_memory(e: &Error) -> bool {
    matches!(e, Error::Server { code, .. } if *code == CODE_NOT_ENOUGH_MEMORY)
}

/// One blob as described in replies (`created`, `payloads`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub object_id: ObjectId,
    /// The server's fd number: a key for the fd cache, never a local fd.
    pub store_fd: i64,
    pub data_offset: u64,
    pub data_size: u64,
    pub map_size: u64,
}

impl Payload {
    /// Reads a payload object, checking every field's type.
    pub fn from_json(v: &Value, ctx: Ctx<'_>) -> Result<Payload> {
        let m = v
            .as_object()
            .ok_or_else(|| ctx.protocol("payload is not an object"))?;
        let u = |k: &str| {
            m.get(k).and_then(Value::as_u64).ok_or_else(|| {
                ctx.protocol(format!(
                    "payload field {k} missing or not an unsigned integer"
                ))
            })
        };
        let object_id = m
            .get("object_id")
            .and_then(ObjectId::from_json)
            .ok_or_else(|| ctx.protocol("payload object_id missing"))?;
        let store_fd = m
            .get("store_fd")
            .and_then(Value::as_i64)
            .ok_or_else(|| ctx.protocol("payload store_fd missing"))?;
        let p = Payload {
            object_id,
            store_fd,
            data_offset: u("data_offset")?,
            data_size: u("data_size")?,
            map_size: u("map_size")?,
        };
        if p.data_size > 0 {
            let end = p.data_offset.checked_add(p.data_size);
            if store_fd < 0 || end.is_none_or(|end| end > p.map_size) {
                return Err(ctx.protocol(format!(
                    "payload of {} lies outside its memory file (offset {}, size {}, file {})",
                    p.object_id, p.data_offset, p.data_size, p.map_size
                )));
            }
        }
        Ok(p)
    }
}

/// Reads a u64 field of a reply.
pub fn field_u64(m: &Map<String, Value>, key: &str, ctx: Ctx<'_>) -> Result<u64> {
    m.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| ctx.protocol(format!("field {key} missing or not an unsigned integer")))
}

/// Reads an id field of a reply.
pub fn field_id(m: &Map<String, Value>, key: &str, ctx: Ctx<'_>) -> Result<ObjectId> {
    m.get(key)
        .and_then(ObjectId::from_json)
        .ok_or_else(|| ctx.protocol(format!("field {key} missing or not an object id")))
}

/// Reads the list of server fds that follow a reply (`fd` or `fds`).
pub fn listed_fds(m: &Map<String, Value>, ctx: Ctx<'_>) -> Result<Vec<i64>> {
    if let Some(fds) = m.get("fds") {
        let arr = fds
            .as_array()
            .ok_or_else(|| ctx.protocol("fds is not a list"))?;
        return arr
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| ctx.protocol("fd is not an integer"))
            })
            .collect();
    }
    match m.get("fd").and_then(Value::as_i64) {
        Some(fd) if fd >= 0 => Ok(vec![fd]),
        _ => Ok(Vec::new()),
    }
}

fn short(s: &str) -> String {
    if s.len() <= 120 {
        s.to_string()
    } else {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn deep_replies_are_pruned_not_refused() {
        let ctx = Ctx {
            socket: Path::new("/s"),
            request: "list_data_request",
        };
        let deep = format!(
            "{{\"type\":\"get_data_reply\",\"content\":{{\"o1\":{}}},\"s\":\"[{{\\\"\"}}",
            "{\"a\":[".repeat(5000) + "1" + &"]}".repeat(5000)
        );
        let m = parse_body(deep.as_bytes(), ctx).expect("pruned, parsed");
        assert_eq!(m["s"], "[{\"");
        let mut v = &m["content"]["o1"];
        let mut depth = 3;
        while let Some(next) = v.get("a").and_then(|a| a.get(0)) {
            v = next;
            depth += 2;
        }
        assert_eq!(v, PRUNED);
        // the pruned value would have been the first one past the limit
        assert_eq!(depth, MAX_REPLY_DEPTH + 1);
        assert!(prune_deep(b"{\"a\":[1,{\"b\":2}]}", 3).is_none());
        assert_eq!(
            prune_deep(b"{\"a\":[1,{\"b\":[2]}],\"c\":3}", 2).unwrap(),
            format!("{{\"a\":[1,\"{PRUNED}\"],\"c\":3}}").into_bytes()
        );
    }

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx() -> Ctx<'static> {
        Ctx {
            socket: Path::new("/x.sock"),
            request: "test_request",
        }
    }

    #[test]
    fn error_reply_is_checked_before_type() {
        let reply = json!({"code": 41, "message": "no memory"})
            .as_object()
            .unwrap()
            .clone();
        let err = check_reply(reply, "create_buffer_reply", ctx()).unwrap_err();
        assert!(is_out_of_memory(&err), "{err}");
        let reply = json!({"code": 12, "message": "failed to find name: x"})
            .as_object()
            .unwrap()
            .clone();
        assert!(check_reply(reply, "get_name_reply", ctx())
            .unwrap_err()
            .is_not_found());
        let reply = json!({"type": "seal_reply"}).as_object().unwrap().clone();
        assert!(matches!(
            check_reply(reply, "get_name_reply", ctx()),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn oversized_frame_is_refused() {
        let mut buf = (MAX_FRAME + 1).to_le_bytes().to_vec();
        buf.extend_from_slice(b"{}");
        assert!(matches!(
            decode_frame(&buf, ctx()),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn payload_outside_mapping_is_refused() {
        let p = json!({"object_id": 1u64 << 63 | 5, "store_fd": 9, "data_offset": 64, "data_size": 100, "map_size": 128});
        assert!(Payload::from_json(&p, ctx()).is_err());
        let p = json!({"object_id": 1u64 << 63 | 5, "store_fd": 9, "data_offset": u64::MAX, "data_size": 2, "map_size": 128});
        assert!(Payload::from_json(&p, ctx()).is_err());
    }

    proptest! {
        #[test]
        fn frames_round_trip(s in ".*", n in any::<u64>()) {
            let msg = json!({"type": "x", "s": s, "n": n});
            let buf = encode_frame(&msg);
            let (back, used) = decode_frame(&buf, ctx()).unwrap().unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(Value::Object(back), msg);
            // Every strict prefix asks for more bytes.
            for cut in [0, 7, buf.len() - 1] {
                prop_assert!(decode_frame(&buf[..cut], ctx()).unwrap().is_none());
            }
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes, ctx());
        }

        #[test]
        fn payload_decoder_never_panics(off in any::<u64>(), size in any::<u64>(), map in any::<u64>(), fd in any::<i64>()) {
            let p = json!({"object_id": 1u64 << 63, "store_fd": fd, "data_offset": off, "data_size": size, "map_size": map});
            if let Ok(p) = Payload::from_json(&p, ctx()) {
                prop_assert!(p.data_size == 0 || p.data_offset + p.data_size <= p.map_size);
            }
        }
    }
}
