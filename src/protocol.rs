//! The wire format: 8-byte little-endian length, then one JSON object; and
//! the messages, one module per family, as serde types.
//!
//! Pure functions and types only (no sockets), so the decoders can be
//! property-tested and fuzzed. Replies are checked in the order vineyardd
//! requires: an error reply has `code` and no `type`, so `code` is looked at
//! first ([`check_reply`], the one place error replies are read); then the
//! fields are read by [`decode`] into the request's `Reply` type.
//!
//! Requests serialize to exactly what vineyardd 0.24.2 reads (the field
//! names and JSON types of `src/common/util/protocols.cc`); metadata trees
//! inside messages stay `serde_json` values ([`ObjectMeta`]), so the depth
//! bound of [`parse_body`] still holds for them.
//!
//! [`ObjectMeta`]: crate::object::ObjectMeta

/// Implements [`Message`] for a message type: `message!(Type, "x_request")`.
macro_rules! message {
    ($ty:ty, $request:literal) => {
        impl $crate::protocol::Message for $ty {
            const TYPE: &'static str = $request;
        }
    };
}

/// Implements [`Message`] and [`Request`] for a request type:
/// `request!(Type, "x_request" => "x_reply", ReplyType)`.
macro_rules! request {
    ($ty:ty, $request:literal => $reply:literal, $reply_ty:ty) => {
        message!($ty, $request);
        impl $crate::protocol::Request for $ty {
            const REPLY: &'static str = $reply;
            type Reply = $reply_ty;
        }
    };
}

pub mod blobs;
pub mod cluster;
pub mod handshake;
pub mod lifecycle;
pub mod metadata;
pub mod names;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result, CODE_NOT_ENOUGH_MEMORY, CODE_OBJECT_NOT_EXISTS};

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
            let message = shortened(reply.get("message").and_then(Value::as_str).unwrap_or(""));
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

/// The longest error message kept from a reply, in bytes.
const MAX_MESSAGE: usize = 2048;

/// An error reply's message, cut to [`MAX_MESSAGE`] bytes (on a character
/// boundary): vineyardd echoes request contents in some messages, so a
/// refused create of a large tree would otherwise raise an error megabytes
/// long (12 MB seen).
fn shortened(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... ({} more bytes)",
        &message[..end],
        message.len() - end
    )
}

/// True for the server's "not enough memory" code.
pub fn is_out_of_memory(e: &Error) -> bool {
    matches!(e, Error::Server { code, .. } if *code == CODE_NOT_ENOUGH_MEMORY)
}

/// A message to vineyardd: its fields, and the `type` that goes with them
/// (added in front of the fields by [`encode_message`]).
pub trait Message: Serialize {
    /// The `type` of the message.
    const TYPE: &'static str;
}

/// A message vineyardd answers.
pub trait Request: Message {
    /// The `type` of its success reply.
    const REPLY: &'static str;
    /// The fields of its success reply.
    type Reply: DeserializeOwned;
}

/// An empty success reply (or one whose fields nobody reads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Ack {}

/// Encodes one message as a frame: length prefix, then `{"type": .., fields}`.
pub fn encode_message<M: Message>(msg: &M) -> Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Tagged<'a, T> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        fields: &'a T,
    }
    let mut out = vec![0u8; 8];
    let tagged = Tagged {
        kind: M::TYPE,
        fields: msg,
    };
    serde_json::to_writer(&mut out, &tagged)
        .map_err(|e| Error::Internal(format!("cannot encode {}: {e}", M::TYPE)))?;
    let len = (out.len() - 8) as u64;
    out[..8].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// A request encoded as a frame, with the names its reply is checked
/// against: what pipelined calls (`Client::call_many`) send.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub frame: Vec<u8>,
    pub request: &'static str,
    pub reply: &'static str,
}

impl Encoded {
    /// Encodes `req`.
    pub fn new<R: Request>(req: &R) -> Result<Encoded> {
        Ok(Encoded {
            frame: encode_message(req)?,
            request: R::TYPE,
            reply: R::REPLY,
        })
    }
}

/// Reads a reply that passed [`check_reply`] as `T`. Unknown fields are
/// ignored; a missing or mistyped field is a protocol error naming it.
pub fn decode<T: DeserializeOwned>(reply: Map<String, Value>, ctx: Ctx<'_>) -> Result<T> {
    decode_value(&Value::Object(reply), ctx)
}

/// [`decode`] for any part of a reply.
pub fn decode_value<T: DeserializeOwned>(v: &Value, ctx: Ctx<'_>) -> Result<T> {
    T::deserialize(v).map_err(|first| {
        // Again with the path tracked (an allocation per key, so only once
        // we know the reply is bad), to say which field is wrong.
        let detail = match serde_path_to_error::deserialize::<_, T>(v) {
            Err(e) if e.path().iter().next().is_some() => {
                format!("field {}: {}", e.path(), e.inner())
            }
            Err(e) => e.into_inner().to_string(),
            Ok(_) => first.to_string(),
        };
        ctx.protocol(format!("malformed reply: {detail}"))
    })
}

/// `deserialize_with` for reply fields read leniently (with
/// `#[serde(default)]`): a value of the wrong type counts as absent.
pub(crate) fn lenient<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let v = Value::deserialize(d)?;
    Ok(T::deserialize(&v).unwrap_or_default())
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

/// Helpers of the message modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn ctx() -> Ctx<'static> {
        Ctx {
            socket: Path::new("/x.sock"),
            request: "test_request",
        }
    }

    /// The JSON object `msg` is sent as (the frame's length checked).
    pub fn encoded<M: Message>(msg: &M) -> Value {
        let frame = encode_message(msg).expect("encodes");
        let (m, used) = decode_frame(&frame, ctx())
            .expect("a valid frame")
            .expect("a whole frame");
        assert_eq!(used, frame.len());
        Value::Object(m)
    }

    /// The detail of the protocol error that decoding `reply` as `T` gives.
    pub fn decode_err<T: DeserializeOwned>(reply: Value) -> String {
        match decode_value::<T>(&reply, ctx()) {
            Err(Error::Protocol {
                request, detail, ..
            }) => {
                assert_eq!(request, "test_request");
                detail
            }
            Err(other) => panic!("expected a protocol error, got {other:?}"),
            Ok(_) => panic!("{reply} was accepted"),
        }
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
    fn long_error_messages_are_cut() {
        let long = "é".repeat(1_000_000);
        let reply = json!({"code": 7, "message": long})
            .as_object()
            .unwrap()
            .clone();
        let Err(Error::Server { message, code, .. }) = check_reply(reply, "x_reply", ctx()) else {
            panic!("not a server error");
        };
        assert_eq!(code, 7);
        assert!(message.len() < MAX_MESSAGE + 40, "{}", message.len());
        assert!(message.starts_with("éé") && message.ends_with("more bytes)"));
        assert_eq!(shortened("short"), "short");
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
    }
}
