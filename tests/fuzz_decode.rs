//! Property-based fuzzing of everything that decodes what vineyardd sends:
//! frames (`protocol::decode_frame`), reply checking (`check_reply`), blob
//! payloads (`Payload` and its range check), the typed replies, metadata trees,
//! and whole `Client` calls against a fake vineyardd that answers with random
//! bytes, random JSON, or valid replies with random mutations (plus random
//! memory files passed as fds).
//!
//! The property is always the same: an `Ok` that satisfies the invariants,
//! or an `Err`; never a panic, a hang, or a read outside a mapping (which
//! would crash the test process with SIGSEGV/SIGBUS).
//!
//! Case counts come from the environment so CI stays fast:
//! * `FUZZ_CASES` (default 20 000): cases per pure-decoder property;
//! * `FUZZ_CLIENT_CASES` (default `FUZZ_CASES / 10`): client calls over a
//!   socket, each a connection of its own.
//!
//! A million cases per decoder property:
//! `FUZZ_CASES=1000000 cargo test --release --test fuzz_decode`.

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};
use vineyard_kedro::protocol::blobs::{
    fds_to_receive, CreateBufferReply, GetBuffersReply, IsInUseReply, Payload,
};
use vineyard_kedro::protocol::cluster::{Instance, Memory, MetaReply, MigrateObjectReply};
use vineyard_kedro::protocol::handshake::RegisterReply;
use vineyard_kedro::protocol::lifecycle::{ExistsReply, IfPersistReply};
use vineyard_kedro::protocol::metadata::{CreateDataReply, CreateDatasReply, DataReply};
use vineyard_kedro::protocol::names::{GetNameReply, ListNameReply};
use vineyard_kedro::protocol::{
    check_reply, decode_frame, decode_value, encode_frame, Ack, Ctx, MAX_FRAME,
};
use vineyard_kedro::{store, Client, Error, ObjectId, ObjectMeta, Timeouts};

fn env_cases(key: &str, default: u32) -> u32 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn decoder_cases() -> u32 {
    env_cases("FUZZ_CASES", 20_000)
}

fn client_cases() -> u32 {
    env_cases("FUZZ_CLIENT_CASES", (decoder_cases() / 10).max(1))
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

fn ctx() -> Ctx<'static> {
    Ctx {
        socket: Path::new("/fuzz.sock"),
        request: "fuzz_request",
    }
}

/// Keys the decoders look at, so random maps hit real code paths.
const KEYS: &[&str] = &[
    "type",
    "code",
    "message",
    "payloads",
    "fds",
    "fd",
    "num",
    "0",
    "1",
    "object_id",
    "store_fd",
    "data_offset",
    "data_size",
    "map_size",
    "created",
    "content",
    "names",
    "meta",
    "ids",
    "signatures",
    "instance_ids",
    "id",
    "exists",
    "instance_id",
    "typename",
    "buffer_",
    "length",
    "signature",
    "is_in_use",
    "memory_usage",
    "memory_limit",
    "store_match",
];

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z0-9_]{0,8}",
        1 => "o[0-9a-f]{16}",
    ]
}

fn arb_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        proptest::sample::select(
            &[
                0u64,
                1,
                5,
                8,
                16,
                64,
                4095,
                4096,
                1 << 31,
                1 << 32,
                MAX_FRAME,
                1 << 63,
                u64::MAX,
                u64::MAX - 1,
            ][..]
        )
        .prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        arb_number(),
        ".{0,12}".prop_map(Value::from),
        proptest::sample::select(
            &[
                "get_data_reply",
                "exists_reply",
                "create_buffer_reply",
                "get_buffers_reply",
                "o8000000000000000",
                "oe889041a79400000",
                "vineyard::Blob",
                "[1, 2]",
            ][..]
        )
        .prop_map(Value::from),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((arb_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_map() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::vec((arb_key(), arb_json()), 0..8).prop_map(|kv| kv.into_iter().collect())
}

// ---- pure decoders ------------------------------------------------------------

#[test]
fn frames_of_random_bytes_decode_or_fail_cleanly() {
    let mut runner = TestRunner::new(config(decoder_cases()));
    let bytes = prop_oneof![
        // anything at all
        proptest::collection::vec(any::<u8>(), 0..96),
        // a header announcing exactly the random body that follows
        proptest::collection::vec(any::<u8>(), 0..88).prop_map(|body| {
            let mut out = (body.len() as u64).to_le_bytes().to_vec();
            out.extend(body);
            out
        }),
        // a random header before a JSON-looking body
        (any::<u64>(), "\\{.{0,40}\\}?").prop_map(|(n, s)| {
            let mut out = n.to_le_bytes().to_vec();
            out.extend(s.into_bytes());
            out
        }),
    ];
    runner
        .run(&bytes, |buf| {
            match decode_frame(&buf, ctx()) {
                Ok(None) => {
                    // Only ever "need more" when the frame really is incomplete.
                    if buf.len() >= 8 {
                        let len = u64::from_le_bytes(buf[..8].try_into().unwrap());
                        prop_assert!(len <= MAX_FRAME && (buf.len() as u64) < 8 + len);
                    }
                }
                Ok(Some((msg, used))) => {
                    prop_assert!(used >= 8 && used <= buf.len());
                    let len = u64::from_le_bytes(buf[..8].try_into().unwrap());
                    prop_assert_eq!(used as u64, 8 + len);
                    // What came out is an object that re-encodes to a frame.
                    let again = encode_frame(&Value::Object(msg));
                    prop_assert!(again.len() >= 8);
                }
                Err(e) => prop_assert!(matches!(e, Error::Protocol { .. }), "{e:?}"),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn frames_of_random_json_round_trip() {
    let mut runner = TestRunner::new(config(decoder_cases()));
    runner
        .run(&(arb_json(), any::<u16>()), |(v, cut)| {
            let buf = encode_frame(&v);
            match decode_frame(&buf, ctx()) {
                Ok(Some((m, used))) => {
                    prop_assert_eq!(used, buf.len());
                    // (serde_json's float parsing may differ in the last
                    // digit from the printed value; compare with a re-parse.)
                    let reparsed: Value = serde_json::from_str(&v.to_string()).unwrap();
                    prop_assert_eq!(&Value::Object(m), &reparsed);
                }
                Ok(None) => prop_assert!(false, "a complete frame asked for more"),
                Err(_) => prop_assert!(!v.is_object(), "an object frame was refused"),
            }
            let cut = cut as usize % buf.len();
            prop_assert!(decode_frame(&buf[..cut], ctx()).unwrap().is_none());
            Ok(())
        })
        .unwrap();
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    for depth in [200usize, 10_000, 1_000_000] {
        let body = "[".repeat(depth) + &"]".repeat(depth);
        let mut buf = (body.len() as u64).to_le_bytes().to_vec();
        buf.extend(body.as_bytes());
        assert!(
            decode_frame(&buf, ctx()).is_err(),
            "depth {depth} was accepted"
        );
    }
}

#[test]
fn reply_checking_never_accepts_an_error_or_a_wrong_type() {
    let mut runner = TestRunner::new(config(decoder_cases()));
    let expected = proptest::sample::select(&["exists_reply", "get_data_reply", ""][..]);
    runner
        .run(&(arb_map(), expected), |(m, expected)| {
            let code = m.get("code").cloned();
            let ty = m.get("type").cloned();
            match check_reply(m, expected, ctx()) {
                Ok(back) => {
                    prop_assert_eq!(back.get("type").and_then(Value::as_str), Some(expected));
                    if let Some(c) = code {
                        prop_assert_eq!(c.as_i64(), Some(0));
                    }
                }
                Err(_) => {
                    let fine = code.as_ref().is_none_or(|c| c.as_i64() == Some(0))
                        && ty.as_ref().and_then(Value::as_str) == Some(expected);
                    prop_assert!(!fine, "a good reply was refused");
                }
            }
            Ok(())
        })
        .unwrap();
}

fn arb_payload() -> impl Strategy<Value = Value> {
    let field = prop_oneof![4 => arb_number(), 1 => arb_json()];
    (
        proptest::collection::vec(
            (
                proptest::sample::select(
                    &[
                        "object_id",
                        "store_fd",
                        "data_offset",
                        "data_size",
                        "map_size",
                    ][..],
                ),
                field,
            ),
            0..6,
        ),
        any::<bool>(),
    )
        .prop_map(|(fields, base)| {
            let mut m = if base {
                json!({"object_id": 1u64 << 63 | 64, "store_fd": 5, "data_offset": 64,
                       "data_size": 16, "map_size": 4096})
                .as_object()
                .unwrap()
                .clone()
            } else {
                Map::new()
            };
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            Value::Object(m)
        })
}

#[test]
fn payloads_are_accepted_only_inside_their_memory_file() {
    let mut runner = TestRunner::new(config(decoder_cases()));
    runner
        .run(&prop_oneof![4 => arb_payload(), 1 => arb_json()], |v| {
            if let Ok(p) = decode_value::<Payload>(&v, ctx()).and_then(|p| p.validate(ctx())) {
                if p.data_size > 0 {
                    prop_assert!(p.store_fd >= 0);
                    let end = p.data_offset.checked_add(p.data_size);
                    prop_assert!(end.is_some_and(|e| e <= p.map_size));
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn reply_decoders_and_metadata_walks_never_panic() {
    let mut runner = TestRunner::new(config(decoder_cases()));
    runner
        .run(&(arb_map(), arb_key(), 0..15u8), |(m, key, which)| {
            // One reply type per case (the cases spread over all of them).
            let v = Value::Object(m.clone());
            let _ = match which {
                0 => decode_value::<RegisterReply>(&v, ctx()).map(drop),
                1 => decode_value::<CreateBufferReply>(&v, ctx()).map(drop),
                2 => decode_value::<IsInUseReply>(&v, ctx()).map(drop),
                3 => decode_value::<Instance>(&v, ctx()).map(drop),
                4 => decode_value::<Memory>(&v, ctx()).map(drop),
                5 => decode_value::<MetaReply>(&v, ctx()).map(drop),
                6 => decode_value::<MigrateObjectReply>(&v, ctx()).map(drop),
                7 => decode_value::<ExistsReply>(&v, ctx()).map(drop),
                8 => decode_value::<IfPersistReply>(&v, ctx()).map(drop),
                9 => decode_value::<Ack>(&v, ctx()).map(drop),
                10 => decode_value::<CreateDataReply>(&v, ctx()).map(drop),
                11 => decode_value::<CreateDatasReply>(&v, ctx()).map(drop),
                12 => decode_value::<GetNameReply>(&v, ctx()).map(drop),
                13 => decode_value::<ListNameReply>(&v, ctx()).map(drop),
                _ => Ok(()),
            };
            if let Ok(r) = decode_value::<GetBuffersReply>(&v, ctx()) {
                prop_assert!(fds_to_receive(r.fds, r.fd).len() <= 8);
            }
            if let Ok(r) = decode_value::<DataReply>(&v, ctx()) {
                // Trees come back exactly as sent, under their id.
                let sent = m.get("content").and_then(Value::as_object);
                for (id, meta) in r.trees() {
                    let tree = meta.into_value();
                    prop_assert!(sent.is_some_and(|c| c
                        .iter()
                        .any(|(k, t)| ObjectId::parse(k) == Some(id) && *t == tree)));
                }
            }
            let meta = ObjectMeta::from_value(Value::Object(m)).unwrap();
            for b in meta.blob_ids() {
                prop_assert!(b.is_blob());
            }
            let _ = meta.blobs_with_instance();
            let _ = (meta.typename(), meta.id(), meta.instance_id(), meta.name());
            let _ = (meta.json_field(&key), meta.member(&key), meta.get_u64(&key));
            let _ = meta.is_persistent();
            Ok(())
        })
        .unwrap();
}

// ---- whole client calls against a hostile fake ----------------------------------

const BLOB: u64 = 0xe889_041a_7940_0040;
const OBJ: u64 = 0x6889_041a_79c0_0005;

/// What the fake does on one connection.
#[derive(Clone, Debug)]
struct Script {
    /// Raw bytes written as the reply to register, then to each request.
    replies: Vec<Vec<u8>>,
    /// Memory files sent (as fds) after each reply: their sizes.
    fds: Vec<Vec<u64>>,
    /// Hang up after this reply (the corrupted one: a client left waiting
    /// for bytes that never come must see EOF, not wait for its timeout).
    last: usize,
}

/// A fake vineyardd serving one scripted connection after another.
struct MultiFake {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    scripts: Option<mpsc::Sender<Script>>,
    handle: Option<JoinHandle<()>>,
}

impl MultiFake {
    fn start() -> MultiFake {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fuzz.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (tx, rx) = mpsc::channel::<Script>();
        let handle = std::thread::spawn(move || {
            for script in rx {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                serve(stream, script);
            }
        });
        MultiFake {
            _dir: dir,
            socket,
            scripts: Some(tx),
            handle: Some(handle),
        }
    }
}

impl Drop for MultiFake {
    fn drop(&mut self) {
        self.scripts.take();
        // Unblock a pending accept (none is pending when every script was used).
        let _ = UnixStream::connect(&self.socket);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Reads one request frame; false when the client is gone or sent garbage.
fn read_request(s: &mut UnixStream) -> bool {
    let mut header = [0u8; 8];
    if s.read_exact(&mut header).is_err() {
        return false;
    }
    let len = u64::from_le_bytes(header);
    if len > 1 << 20 {
        return false;
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).is_ok()
}

fn memfd(len: u64) -> OwnedFd {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(c"vineyard-bulk-fuzz", MFdFlags::MFD_CLOEXEC).unwrap();
    let file = std::fs::File::from(fd);
    file.set_len(len).unwrap();
    OwnedFd::from(file)
}

fn send_fd(s: &UnixStream, fd: &OwnedFd) -> bool {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw = [fd.as_raw_fd()];
    let iov = [IoSlice::new(&[0x14])];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).is_ok()
}

fn serve(mut s: UnixStream, script: Script) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let steps = script.replies.iter().zip(&script.fds).take(script.last + 1);
    for (reply, fds) in steps {
        if !read_request(&mut s) || s.write_all(reply).is_err() {
            return;
        }
        for &len in fds {
            if !send_fd(&s, &memfd(len)) {
                return;
            }
        }
    }
    // Then the fake hangs up: the client sees EOF, never silence.
}

fn frame(v: &Value) -> Vec<u8> {
    encode_frame(v)
}

fn payload(id: u64, fd: i64, off: u64, size: u64, map: u64) -> Value {
    json!({"object_id": id, "store_fd": fd, "data_offset": off, "data_size": size,
           "map_size": map, "pointer": 140489557016640u64, "is_sealed": true,
           "is_owner": true, "is_gpu": false})
}

fn register_reply() -> Value {
    json!({"type": "register_reply", "instance_id": 0, "version": "0.24.2",
           "rpc_endpoint": "0.0.0.0:0", "ipc_socket": "x", "session_id": 0, "store_match": true})
}

fn status_reply() -> Value {
    json!({"type": "instance_status_reply",
           "meta": {"memory_usage": 0, "memory_limit": 1u64 << 30, "instance_id": 0}})
}

fn tree() -> Value {
    json!({"id": format!("o{OBJ:016x}"), "typename": "vineyard::Tensor<int64>", "instance_id": 0,
           "shape_": "[2]", "value_type_": "int64",
           "buffer_": {"id": format!("o{BLOB:016x}"), "typename": "vineyard::Blob",
                       "instance_id": 0, "length": 0, "nbytes": 0, "transient": true}})
}

/// The client calls under test, each with the valid replies it expects
/// (after register) and the memory files that follow each reply.
#[derive(Clone, Copy, Debug)]
enum Call {
    Register,
    Exists,
    GetMeta,
    ListData,
    ListNames,
    GetName,
    Status,
    IsInUse,
    CreateData,
    CreateDatas,
    CreateBuffer,
    CreateBuffers,
    GetBuffers,
    ClusterMeta,
    StoreGet,
}

const CALLS: &[Call] = &[
    Call::Register,
    Call::Exists,
    Call::GetMeta,
    Call::ListData,
    Call::ListNames,
    Call::GetName,
    Call::Status,
    Call::IsInUse,
    Call::CreateData,
    Call::CreateDatas,
    Call::CreateBuffer,
    Call::CreateBuffers,
    Call::GetBuffers,
    Call::ClusterMeta,
    Call::StoreGet,
];

impl Call {
    /// Valid replies after register, with the memfd sizes each passes.
    fn replies(self) -> Vec<(Value, Vec<u64>)> {
        let content =
            json!({"type": "get_data_reply", "content": {format!("o{OBJ:016x}"): tree()}});
        let buffers = json!({"type": "get_buffers_reply", "num": 1, "fds": [5],
                             "payloads": [payload(BLOB, 5, 64, 16, 4096)]});
        match self {
            Call::Register => vec![],
            Call::Exists => vec![(json!({"type": "exists_reply", "exists": true}), vec![])],
            Call::GetMeta | Call::ListData => vec![(content, vec![])],
            Call::ListNames => vec![(
                json!({"type": "list_name_reply", "size": 1, "names": {"a/b": OBJ}}),
                vec![],
            )],
            Call::GetName => vec![(json!({"type": "get_name_reply", "object_id": OBJ}), vec![])],
            Call::Status => vec![(status_reply(), vec![])],
            Call::IsInUse => vec![(
                json!({"type": "is_in_use_reply", "is_in_use": false}),
                vec![],
            )],
            Call::CreateData => vec![(
                json!({"type": "create_data_reply", "id": OBJ, "signature": 7, "instance_id": 0}),
                vec![],
            )],
            Call::CreateDatas => vec![(
                json!({"type": "create_datas_reply", "num": 2, "ids": [OBJ, OBJ + 1],
                       "signatures": [7, 8], "instance_ids": [0, 0]}),
                vec![],
            )],
            Call::CreateBuffer => vec![(
                json!({"type": "create_buffer_reply", "id": BLOB, "fd": 5,
                       "created": payload(BLOB, 5, 64, 16, 4096)}),
                vec![4096],
            )],
            Call::CreateBuffers => vec![
                (status_reply(), vec![]),
                (
                    json!({"type": "create_buffers_reply", "num": 2, "ids": [BLOB, BLOB + 64], "fds": [5],
                           "payloads": [payload(BLOB, 5, 64, 16, 4096), payload(BLOB + 64, 5, 128, 16, 4096)]}),
                    vec![4096],
                ),
            ],
            Call::GetBuffers => vec![(buffers, vec![4096])],
            Call::ClusterMeta => vec![(
                json!({"type": "cluster_meta", "meta": {"i0": {"ipc_socket": "x", "rpc_endpoint": "h:9600"}}}),
                vec![],
            )],
            Call::StoreGet => vec![(content, vec![]), (buffers, vec![4096])],
        }
    }

    /// Runs the call on a fresh connection; reads every byte of any blob it
    /// returns (a bad mapping would crash here).
    fn run(self, socket: &Path) -> Result<u64, Error> {
        let t = Timeouts {
            connect: Duration::from_secs(2),
            read: Some(Duration::from_secs(2)),
            write: Some(Duration::from_secs(2)),
        };
        let mut c = Client::connect_with(socket, t)?;
        let touch =
            |b: &vineyard_kedro::BlobBytes| b.as_slice().iter().map(|x| *x as u64).sum::<u64>();
        Ok(match self {
            Call::Register => c.instance_id(),
            Call::Exists => c.exists(ObjectId(OBJ))? as u64,
            Call::GetMeta => c.get_meta(ObjectId(OBJ), false)?.blob_ids().len() as u64,
            Call::ListData => c.list_data("*", false, 10)?.len() as u64,
            Call::ListNames => c.list_names("*", false, 10)?.len() as u64,
            Call::GetName => c.get_name("a/b", false)?.value(),
            Call::Status => c.memory_usage()?,
            Call::IsInUse => c.is_in_use(ObjectId(BLOB))? as u64,
            Call::CreateData => {
                let mut m = ObjectMeta::new("t::T");
                m.set("instance_id", 0u64);
                c.create_data(&m)?.id.value()
            }
            Call::CreateDatas => {
                let mut m = ObjectMeta::new("t::T");
                m.set("instance_id", 0u64);
                c.create_datas(&[m.clone(), m])?.len() as u64
            }
            Call::CreateBuffer => {
                let b = c.create_buffer(16)?;
                // SAFETY: a blob just created on this connection; nobody else
                // writes it (the fake's memory file is private to this case).
                unsafe { b.as_mut_slice() }.fill(7);
                touch(&b)
            }
            Call::CreateBuffers => c.create_buffers(&[16, 16])?.iter().map(touch).sum(),
            Call::GetBuffers => c.get_buffers(&[ObjectId(BLOB)])?.values().map(touch).sum(),
            Call::ClusterMeta => c.cluster_meta()?.len() as u64,
            Call::StoreGet => store::get(&mut c, ObjectId(OBJ))?
                .blobs
                .values()
                .map(touch)
                .sum(),
        })
    }
}

/// A deterministic stream of choices for one mutation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Replaces, removes or adds one entry somewhere in `v` (often deep inside).
fn mutate(v: &mut Value, rng: &mut Rng, replacement: Value, key: &str) {
    let descend = rng.below(3) != 0;
    match v {
        Value::Object(m) if !m.is_empty() => {
            let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
            let child = m.get_mut(&k).unwrap();
            if descend && (child.is_object() || child.is_array()) {
                return mutate(child, rng, replacement, key);
            }
            match rng.below(3) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert(k, replacement);
                }
                _ => {
                    m.insert(key.to_string(), replacement);
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.below(a.len());
            if descend && (a[i].is_object() || a[i].is_array()) {
                return mutate(&mut a[i], rng, replacement, key);
            }
            match rng.below(3) {
                0 => {
                    a.remove(i);
                }
                1 => a[i] = replacement,
                _ => a.push(replacement),
            }
        }
        _ => *v = replacement,
    }
}

/// How one reply of the script is corrupted.
#[derive(Clone, Debug)]
enum Corruption {
    None,
    RandomBytes(Vec<u8>),
    RandomJson(Value),
    Mutated {
        seed: u64,
        edits: Vec<(Value, String)>,
    },
    LengthOff(i8),
    ErrorReply(i64, String),
    Truncated(u16),
}

fn arb_corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        1 => Just(Corruption::None),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Corruption::RandomBytes),
        1 => arb_json().prop_map(Corruption::RandomJson),
        6 => (any::<u64>(), proptest::collection::vec((arb_json(), arb_key()), 1..4))
            .prop_map(|(seed, edits)| Corruption::Mutated { seed: seed | 1, edits }),
        1 => any::<i8>().prop_map(Corruption::LengthOff),
        1 => (any::<i64>(), ".{0,20}").prop_map(|(c, m)| Corruption::ErrorReply(c, m)),
        1 => any::<u16>().prop_map(Corruption::Truncated),
    ]
}

fn corrupt(valid: &Value, how: &Corruption) -> Vec<u8> {
    match how {
        Corruption::None => frame(valid),
        Corruption::RandomBytes(b) => b.clone(),
        Corruption::RandomJson(v) => frame(v),
        Corruption::Mutated { seed, edits } => {
            let mut v = valid.clone();
            let mut rng = Rng(*seed);
            for (replacement, key) in edits {
                mutate(&mut v, &mut rng, replacement.clone(), key);
            }
            frame(&v)
        }
        Corruption::LengthOff(d) => {
            let mut f = frame(valid);
            let len = u64::from_le_bytes(f[..8].try_into().unwrap()) as i64 + *d as i64;
            f[..8].copy_from_slice(&(len.max(0) as u64).to_le_bytes());
            f
        }
        Corruption::ErrorReply(code, message) => frame(&json!({"code": code, "message": message})),
        Corruption::Truncated(n) => {
            let f = frame(valid);
            f[..(*n as usize % f.len())].to_vec()
        }
    }
}

/// memfd sizes that differ from the valid ones (too small, empty, more fds).
fn arb_fd_sizes() -> impl Strategy<Value = Option<Vec<u64>>> {
    prop_oneof![
        4 => Just(None),
        1 => proptest::collection::vec(proptest::sample::select(&[0u64, 8, 64, 100, 4096, 1 << 20][..]), 0..3)
            .prop_map(Some),
    ]
}

#[test]
fn client_calls_against_a_hostile_fake_end_in_ok_or_err_quickly() {
    let fake = MultiFake::start();
    let tx = fake.scripts.clone().unwrap();
    let socket = fake.socket.clone();
    let mut runner = TestRunner::new(config(client_cases()));
    let case = (
        proptest::sample::select(CALLS),
        proptest::collection::vec((arb_corruption(), arb_fd_sizes()), 3),
        0usize..3,
    );
    let outcomes = [std::cell::Cell::new(0u32), std::cell::Cell::new(0u32)];
    runner
        .run(&case, |(call, corruptions, which)| {
            // Register plus the call's replies; corrupt one of them (or none).
            let mut valid = vec![(register_reply(), vec![])];
            valid.extend(call.replies());
            let target = which % valid.len();
            let mut script = Script {
                replies: Vec::new(),
                fds: Vec::new(),
                last: if matches!(corruptions[0].0, Corruption::None) {
                    usize::MAX - 1
                } else {
                    target
                },
            };
            for (i, (reply, fds)) in valid.iter().enumerate() {
                let (how, sizes) = if i == target {
                    corruptions[0].clone()
                } else {
                    (Corruption::None, None)
                };
                script.replies.push(corrupt(reply, &how));
                script.fds.push(sizes.unwrap_or_else(|| fds.clone()));
            }
            tx.send(script).unwrap();
            let start = Instant::now();
            let res = call.run(&socket);
            let took = start.elapsed();
            prop_assert!(took < Duration::from_secs(3), "{call:?} took {took:?}");
            let slot = &outcomes[res.is_ok() as usize];
            slot.set(slot.get() + 1);
            Ok(())
        })
        .unwrap();
    drop(tx);
    drop(fake);
    // Both outcomes occur, so the generator really exercises both paths.
    let (errors, successes) = (outcomes[0].get(), outcomes[1].get());
    assert!(
        errors > 0 && successes > 0,
        "{errors} errors, {successes} successes"
    );
    eprintln!(
        "client fuzz: {} cases, {errors} errors, {successes} successes",
        client_cases()
    );
}

#[test]
fn a_frame_announcing_more_than_the_limit_is_refused_before_allocating() {
    let fake = MultiFake::start();
    let tx = fake.scripts.clone().unwrap();
    for len in [MAX_FRAME + 1, u64::MAX, 1 << 62] {
        tx.send(Script {
            replies: vec![len.to_le_bytes().to_vec()],
            fds: vec![vec![]],
            last: 0,
        })
        .unwrap();
        let err = Call::Register.run(&fake.socket).unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    }
    drop(tx);
}

#[test]
fn a_connection_that_accepts_but_never_registers_fails_within_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accept and say nothing (a stopped or wedged vineyardd).
    let hold = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut s = s;
        let mut buf = [0u8; 256];
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    let t = Timeouts {
        connect: Duration::from_millis(500),
        read: Some(Duration::from_secs(300)),
        write: Some(Duration::from_secs(60)),
    };
    let start = Instant::now();
    let err = Client::connect_with(&socket, t).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("0.5 s"), "{err}");
    assert!(
        took < Duration::from_secs(2),
        "the register wait used the read timeout: {took:?}"
    );
    hold.join().unwrap();
}
