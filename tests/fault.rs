//! Fault injection against a scripted FAKE vineyardd (tests/common): broken
//! frames, bad JSON, error replies, wrong reply types, missing fds, silence.
//! Every case must end in a specific `Error`, quickly, never in a hang or a
//! panic of the client.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{payload, FakeServer, MemFile, Peer};
use serde_json::json;
use vineyard_kedro::{Client, Error, ObjectId, Timeouts};

/// Read timeout used against the fake: short, so "no hang" is cheap to prove.
const READ_TIMEOUT: Duration = Duration::from_millis(300);

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        read: Some(READ_TIMEOUT),
        write: Some(Duration::from_secs(1)),
    }
}

fn connect(fake: &FakeServer) -> Client {
    Client::connect_with(fake.socket(), timeouts()).expect("register with the fake vineyardd")
}

const SOME_ID: ObjectId = ObjectId(0x6889_041a_79c0_0005);
const BLOB: u64 = 0xe889_041a_7940_0000;

/// Registers, answers one `exists_request` with `reply`, then waits for close.
fn answer_exists_with(reply: impl FnOnce(&mut Peer) + Send + 'static) -> FakeServer {
    FakeServer::start(move |p| {
        p.register();
        let req = p.expect("exists_request");
        assert_eq!(
            req["id"],
            json!(SOME_ID.0),
            "exists_request carries a scalar u64 id"
        );
        reply(p);
        p.wait_for_close();
    })
}

/// Runs `exists` against a fake and returns the error and how long it took.
fn exists_error(fake: FakeServer) -> (Error, Duration) {
    let mut c = connect(&fake);
    let t = Instant::now();
    let err = c
        .exists(SOME_ID)
        .expect_err("the fake's reply must be rejected");
    let took = t.elapsed();
    drop(c);
    fake.finish();
    (err, took)
}

fn expect_protocol(err: Error, needle: &str) {
    match &err {
        Error::Protocol {
            detail, request, ..
        } => {
            assert!(
                detail.contains(needle),
                "detail {detail:?} should mention {needle:?}"
            );
            assert!(!request.is_empty());
        }
        other => panic!("expected Error::Protocol mentioning {needle:?}, got {other:?}"),
    }
    assert!(err.is_fatal_to_connection());
}

// ---- framing ---------------------------------------------------------------

#[test]
fn eof_mid_frame_is_an_error() {
    let fake = FakeServer::start(|p| {
        p.register();
        p.expect("exists_request");
        p.write_header(100);
        p.write_raw(br#"{"type":"ex"#);
        p.close();
    });
    let (err, took) = exists_error(fake);
    assert!(
        matches!(err, Error::Closed { ref request, .. } if request == "exists_request"),
        "{err:?}"
    );
    assert!(err.is_fatal_to_connection());
    assert!(
        took < READ_TIMEOUT,
        "EOF must be reported at once, took {took:?}"
    );
}

#[test]
fn eof_mid_header_is_an_error() {
    let fake = FakeServer::start(|p| {
        p.register();
        p.expect("exists_request");
        p.write_raw(&[7, 0, 0]);
        p.close();
    });
    let (err, _) = exists_error(fake);
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
}

#[test]
fn eof_instead_of_reply_is_closed() {
    let fake = FakeServer::start(|p| {
        p.register();
        p.expect("exists_request");
        p.close();
    });
    let (err, _) = exists_error(fake);
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    assert!(err.to_string().contains("closed the connection"), "{err}");
}

#[test]
fn oversized_length_is_a_protocol_error() {
    let fake = answer_exists_with(|p| {
        p.write_header((256 << 20) + 1);
        p.write_raw(b"{}");
    });
    let (err, took) = exists_error(fake);
    expect_protocol(err, "exceeds");
    assert!(
        took < READ_TIMEOUT,
        "the length alone must be refused, took {took:?}"
    );
}

#[test]
fn huge_length_is_refused_without_allocating() {
    let fake = answer_exists_with(|p| p.write_header(u64::MAX));
    let (err, _) = exists_error(fake);
    expect_protocol(err, "exceeds");
}

#[test]
fn invalid_json_is_a_protocol_error() {
    let fake = answer_exists_with(|p| {
        let body = br#"{"type":"exists_reply","exists":tru"#;
        p.write_header(body.len() as u64);
        p.write_raw(body);
    });
    let (err, _) = exists_error(fake);
    expect_protocol(err, "not valid JSON");
}

#[test]
fn empty_frame_is_a_protocol_error() {
    let fake = answer_exists_with(|p| p.write_header(0));
    let (err, _) = exists_error(fake);
    expect_protocol(err, "not valid JSON");
}

#[test]
fn non_object_json_is_a_protocol_error() {
    let fake = answer_exists_with(|p| p.write_frame(&json!([1, 2, 3])));
    let (err, _) = exists_error(fake);
    expect_protocol(err, "not a JSON object");
}

#[test]
fn silent_server_times_out_within_the_read_timeout() {
    let fake = answer_exists_with(|_| {});
    let (err, took) = exists_error(fake);
    match &err {
        Error::Timeout {
            request, seconds, ..
        } => {
            assert_eq!(request, "exists_request");
            assert!(
                (seconds - READ_TIMEOUT.as_secs_f64()).abs() < 1e-6,
                "{seconds}"
            );
        }
        other => panic!("expected Error::Timeout, got {other:?}"),
    }
    assert!(
        took >= READ_TIMEOUT - Duration::from_millis(50),
        "timed out too early: {took:?}"
    );
    assert!(
        took < READ_TIMEOUT + Duration::from_secs(1),
        "timed out too late: {took:?}"
    );
}

// ---- reply checking --------------------------------------------------------

#[test]
fn error_reply_becomes_server_error_with_code_and_message() {
    let fake = FakeServer::start(|p| {
        p.register();
        p.expect("exists_request");
        p.write_frame(&json!({"code": 4, "message": "disk on fire"}));
        // An error reply is an answer, not a broken connection: serve on.
        p.expect("exists_request");
        p.write_frame(&json!({"type": "exists_reply", "exists": true}));
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    let err = c.exists(SOME_ID).unwrap_err();
    match &err {
        Error::Server {
            code,
            message,
            request,
            ..
        } => {
            assert_eq!(*code, 4);
            assert_eq!(message, "disk on fire");
            assert_eq!(request, "exists_request");
        }
        other => panic!("expected Error::Server, got {other:?}"),
    }
    assert!(!err.is_fatal_to_connection());
    let text = err.to_string();
    assert!(
        text.contains("disk on fire") && text.contains("code 4"),
        "{text}"
    );
    assert!(c
        .exists(SOME_ID)
        .expect("the connection survives an error reply"));
    drop(c);
    fake.finish();
}

#[test]
fn object_not_exists_reply_is_not_found() {
    let fake = FakeServer::start(|p| {
        p.register();
        for _ in 0..2 {
            let req = p.expect("get_name_request");
            assert_eq!(req["name"], "nope");
            assert_eq!(
                req["wait"], false,
                "get_name_request needs an explicit wait"
            );
            p.write_frame(&json!({"code": 12, "message": "failed to find name: nope"}));
        }
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    let err = c.get_name("nope", false).unwrap_err();
    assert!(
        matches!(err, Error::NotFound { ref what, .. } if what.contains("nope")),
        "{err:?}"
    );
    assert_eq!(c.try_get_name("nope").unwrap(), None);
    drop(c);
    fake.finish();
}

#[test]
fn not_enough_memory_reply_becomes_store_full() {
    let fake = FakeServer::start(|p| {
        p.register();
        let req = p.expect("create_buffer_request");
        assert_eq!(req["size"], 1000);
        p.write_frame(&json!({"code": 41, "message": "Not enough memory"}));
        p.expect("instance_status_request");
        p.write_frame(&json!({"type": "instance_status_reply",
            "meta": {"instance_id": 0, "memory_usage": 900, "memory_limit": 1024}}));
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    let err = c.create_buffer(1000).unwrap_err();
    match &err {
        Error::StoreFull {
            requested,
            available,
            limit,
            ..
        } => {
            assert_eq!((*requested, *available, *limit), (1000, 124, 1024));
        }
        other => panic!("expected Error::StoreFull, got {other:?}"),
    }
    assert!(err.to_string().contains("1000 bytes"), "{err}");
    drop(c);
    fake.finish();
}

#[test]
fn reply_of_the_wrong_type_is_a_protocol_error() {
    let fake = answer_exists_with(|p| p.write_frame(&json!({"type": "seal_reply"})));
    let (err, _) = exists_error(fake);
    expect_protocol(err, "expected exists_reply, got seal_reply");
}

#[test]
fn reply_without_type_is_a_protocol_error() {
    let fake = answer_exists_with(|p| p.write_frame(&json!({"exists": true})));
    let (err, _) = exists_error(fake);
    expect_protocol(err, "no type");
}

#[test]
fn non_integer_error_code_is_a_protocol_error() {
    let fake = answer_exists_with(|p| p.write_frame(&json!({"code": "41", "message": "?"})));
    let (err, _) = exists_error(fake);
    expect_protocol(err, "not an integer");
}

#[test]
fn zero_code_with_the_right_type_is_success() {
    let fake = answer_exists_with(|p| {
        p.write_frame(&json!({"code": 0, "type": "exists_reply", "exists": false}))
    });
    let mut c = connect(&fake);
    assert!(!c.exists(SOME_ID).unwrap());
    drop(c);
    fake.finish();
}

#[test]
fn reply_missing_a_required_field_is_a_protocol_error() {
    let fake = answer_exists_with(|p| p.write_frame(&json!({"type": "exists_reply"})));
    let (err, _) = exists_error(fake);
    expect_protocol(err, "exists");
}

#[test]
fn refused_register_is_a_server_error() {
    let fake = FakeServer::start(|p| {
        p.expect("register_request");
        p.write_frame(&json!({"code": 34, "message": "authentication failed"}));
        p.wait_for_close();
    });
    let err = Client::connect_with(fake.socket(), timeouts()).unwrap_err();
    assert!(
        matches!(err, Error::Server { code: 34, ref message, .. } if message == "authentication failed"),
        "{err:?}"
    );
    fake.finish();
}

#[test]
fn store_type_mismatch_at_register_is_a_protocol_error() {
    let fake = FakeServer::start(|p| {
        p.expect("register_request");
        let mut reply = common::register_reply();
        reply["store_match"] = json!(false);
        p.write_frame(&reply);
        p.wait_for_close();
    });
    let err = Client::connect_with(fake.socket(), timeouts()).unwrap_err();
    expect_protocol(err, "store type");
    fake.finish();
}

#[test]
fn null_content_means_no_objects() {
    let fake = FakeServer::start(|p| {
        p.register();
        for _ in 0..2 {
            let req = p.expect("get_data_request");
            assert_eq!(
                req["id"],
                json!([SOME_ID.0]),
                "get_data_request carries an id array"
            );
            p.write_frame(&json!({"type": "get_data_reply", "content": null}));
        }
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    assert!(c.get_data(&[SOME_ID], false, false).unwrap().is_empty());
    let err = c.get_meta(SOME_ID, false).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    drop(c);
    fake.finish();
}

#[test]
fn content_keyed_by_a_non_id_is_a_protocol_error() {
    let fake = FakeServer::start(|p| {
        p.register();
        p.expect("get_data_request");
        p.write_frame(&json!({"type": "get_data_reply", "content": {"zzz": {"typename": "x"}}}));
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    expect_protocol(c.get_data(&[SOME_ID], false, false).unwrap_err(), "zzz");
    drop(c);
    fake.finish();
}

// ---- fd passing ------------------------------------------------------------

/// A `create_buffer_reply` promising server fd 5 for a 16-byte blob.
fn create_buffer_reply() -> serde_json::Value {
    json!({"type": "create_buffer_reply", "id": BLOB, "fd": 5, "created": payload(BLOB, 5, 64, 16, 4096, false)})
}

fn create_buffer_error(script: impl FnOnce(&mut Peer) + Send + 'static) -> (Error, Duration) {
    let fake = FakeServer::start(move |p| {
        p.register();
        let req = p.expect("create_buffer_request");
        assert_eq!(req["size"], 16);
        p.write_frame(&create_buffer_reply());
        script(p);
    });
    let mut c = connect(&fake);
    let t = Instant::now();
    let err = c
        .create_buffer(16)
        .expect_err("a missing fd must be an error");
    let took = t.elapsed();
    assert_eq!(c.mapped_files(), 0);
    drop(c);
    fake.finish();
    (err, took)
}

#[test]
fn fd_promised_but_not_sent_times_out_without_hanging() {
    let (err, took) = create_buffer_error(|p| p.wait_for_close());
    assert!(
        matches!(err, Error::Timeout { ref request, .. } if request == "create_buffer_request"),
        "{err:?}"
    );
    assert!(
        took < READ_TIMEOUT + Duration::from_secs(1),
        "took {took:?}"
    );
}

#[test]
fn fd_promised_but_plain_byte_sent_is_a_protocol_error() {
    let (err, took) = create_buffer_error(|p| {
        p.write_raw(&[0x14]);
        p.wait_for_close();
    });
    expect_protocol(err, "file descriptor");
    assert!(took < READ_TIMEOUT, "took {took:?}");
}

#[test]
fn fd_promised_then_connection_closed_is_closed() {
    let (err, took) = create_buffer_error(|p| p.close());
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    assert!(took < READ_TIMEOUT, "took {took:?}");
}

#[test]
fn fd_passing_maps_the_servers_memory_file_once() {
    let fake = FakeServer::start(|p| {
        let mem = MemFile::new(4096, &[]);
        let other = MemFile::new(8192, &[]);
        other.file.write_all_at(b"second file", 1024).unwrap();
        mem.file.write_all_at(b"preloaded bytes!", 256).unwrap();
        p.register();

        p.expect("create_buffer_request");
        p.write_frame(&create_buffer_reply());
        p.send_fd(&mem.fd());

        let req = p.expect("seal_request");
        assert_eq!(req["object_id"], json!(BLOB));
        // The client wrote through its own mapping of our memory file.
        assert_eq!(mem.read_at(64, 16), b"written by rust!");
        p.write_frame(&json!({"type": "seal_reply"}));

        // A blob in the memory file already sent: no fd follows.
        let req = p.expect("get_buffers_request");
        assert_eq!(req["num"], 1);
        assert_eq!(req["0"], json!(BLOB + 1));
        assert_eq!(req["unsafe"], false);
        p.write_frame(&json!({"type": "get_buffers_reply", "num": 1, "fds": [],
            "payloads": [payload(BLOB + 1, 5, 256, 16, 4096, true)]}));

        // A blob in a new memory file: its fd follows the reply.
        p.expect("get_buffers_request");
        p.write_frame(&json!({"type": "get_buffers_reply", "num": 2, "fds": [7],
            "payloads": [payload(BLOB + 2, 7, 1024, 11, 8192, true), payload(BLOB + 1, 5, 256, 16, 4096, true)]}));
        p.send_fd(&other.fd());
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    let blob = c.create_buffer(16).unwrap();
    assert_eq!(blob.id(), ObjectId(BLOB));
    assert_eq!(blob.len(), 16);
    assert_eq!(c.mapped_files(), 1);
    // SAFETY: the blob is unsealed and only this test writes it.
    unsafe { blob.as_mut_slice() }.copy_from_slice(b"written by rust!");
    c.seal(blob.id()).unwrap();

    let got = c.get_buffers(&[ObjectId(BLOB + 1)]).unwrap();
    assert_eq!(got[&ObjectId(BLOB + 1)].as_slice(), b"preloaded bytes!");
    assert_eq!(
        c.mapped_files(),
        1,
        "an fd already sent must be reused from the cache"
    );

    let got = c
        .get_buffers(&[ObjectId(BLOB + 2), ObjectId(BLOB + 1)])
        .unwrap();
    assert_eq!(got[&ObjectId(BLOB + 2)].as_slice(), b"second file");
    assert_eq!(got[&ObjectId(BLOB + 1)].as_slice(), b"preloaded bytes!");
    assert_eq!(c.mapped_files(), 2);
    drop(c);
    fake.finish();
}

#[test]
fn payload_in_a_memory_file_never_sent_is_a_protocol_error() {
    let fake = FakeServer::start(|p| {
        p.register();
        p.expect("get_buffers_request");
        p.write_frame(&json!({"type": "get_buffers_reply", "num": 1, "fds": [],
            "payloads": [payload(BLOB, 9, 64, 16, 4096, true)]}));
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    expect_protocol(c.get_buffers(&[ObjectId(BLOB)]).unwrap_err(), "never sent");
    drop(c);
    fake.finish();
}

#[test]
fn listed_fd_without_a_payload_is_a_protocol_error() {
    let fake = FakeServer::start(|p| {
        p.register();
        p.expect("get_buffers_request");
        p.write_frame(&json!({"type": "get_buffers_reply", "num": 1, "fds": [9],
            "payloads": [payload(BLOB, 5, 64, 16, 4096, true)]}));
        p.send_fd(&MemFile::new(4096, &[]).fd());
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    expect_protocol(c.get_buffers(&[ObjectId(BLOB)]).unwrap_err(), "fd 9");
    drop(c);
    fake.finish();
}

#[test]
fn payload_outside_its_memory_file_is_a_protocol_error() {
    let fake = FakeServer::start(|p| {
        p.register();
        p.expect("get_buffers_request");
        p.write_frame(&json!({"type": "get_buffers_reply", "num": 1, "fds": [5],
            "payloads": [payload(BLOB, 5, 4032, 128, 4096, true)]}));
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    expect_protocol(c.get_buffers(&[ObjectId(BLOB)]).unwrap_err(), "outside");
    drop(c);
    fake.finish();
}

#[test]
fn create_buffers_is_pipelined_and_rolls_back_when_one_does_not_fit() {
    let fake = FakeServer::start(|p| {
        let mem = MemFile::new(4096, &[]);
        p.register();
        // Both requests arrive before any reply is written: one wait, not two.
        let first = p.expect("create_buffer_request");
        let second = p.expect("create_buffer_request");
        assert_eq!(
            (first["size"].clone(), second["size"].clone()),
            (json!(16), json!(5000))
        );
        p.write_frame(&create_buffer_reply());
        p.send_fd(&mem.fd());
        p.write_frame(&json!({"code": 41, "message": "Not enough memory"}));
        // The blob that fit is dropped, then the free memory is asked for.
        let drop = p.expect("drop_buffer_request");
        assert_eq!(drop["id"], json!(BLOB));
        p.write_frame(&json!({"type": "drop_buffer_reply"}));
        p.expect("instance_status_request");
        p.write_frame(&json!({"type": "instance_status_reply",
            "meta": {"instance_id": 0, "memory_usage": 0, "memory_limit": 4096}}));
        p.wait_for_close();
    });
    let mut c = connect(&fake);
    match c.create_buffers(&[16, 5000]).unwrap_err() {
        Error::StoreFull {
            requested, limit, ..
        } => assert_eq!((requested, limit), (5016, 4096)),
        other => panic!("expected Error::StoreFull, got {other:?}"),
    }
    drop(c);
    fake.finish();
}

#[test]
fn client_closes_with_exit_request_on_drop() {
    let fake = FakeServer::start(|p| {
        p.register();
        p.expect("exit_request");
        assert!(p.read_frame().is_none(), "nothing may follow exit_request");
    });
    let c = connect(&fake);
    drop(c);
    fake.finish();
}
